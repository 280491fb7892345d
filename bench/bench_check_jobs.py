#!/usr/bin/env python
"""`lstm-inspect check` over many small files: the cost of isolation and the speed-up of --jobs (not a test).

Usage: python bench/bench_check_jobs.py [--files 1000] [--jobs 1,2] [--rounds 3]

The directory is filled with copies of the repository's Keras fixtures (every file kind, tf-keras 2 and Keras 3),
each copy with its LSTM weights perturbed so no two files are the same. Each round runs, one after the other,
`check --format json` isolated with every --jobs value and `--no-isolation` (the runs of a round see the same load),
in fresh processes with Python's bytecode caches on (as after `pip install`). Reported per variant: the best and
median wall time, the CPU time (user + system of the whole process tree) and page faults per file — the faults do
not depend on the load — and the ratios the issue asks for:

- isolated CPU (and wall) per file / `--no-isolation`'s;
- `--jobs 1` wall / `--jobs N` wall;
- the machine's headroom for N processes at the time: N CPU-bound Python loops at once against one alone (N x the
  one's time / the N's time). When other work keeps the CPUs busy this is near 1, and no --jobs can be faster.
"""
from __future__ import annotations

import argparse
import itertools
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
BUSY_LOOP = "x = 0\nfor i in range(4_000_000):\n    x += i * i\n"


def build(directory: Path, count: int) -> None:
    import h5py
    import numpy as np

    sources = sorted(p for p in FIXTURES.iterdir() if p.suffix in (".h5", ".keras") and not p.name.endswith(".npz"))
    rng = np.random.default_rng(0)
    for i, source in zip(range(count), itertools.cycle(sources)):
        target = directory / f"{i:04d}_{source.name}"
        shutil.copy(source, target)
        if source.suffix == ".h5":
            with h5py.File(target, "r+") as f:
                def bump(name, obj):
                    if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" and obj.size:
                        obj[...] = obj[...] * (1 + 1e-3 * rng.standard_normal())
                f.visititems(bump)


def run(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds and minor page faults of `command` and every process it started."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return (wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
            after.ru_minflt - before.ru_minflt)


def headroom(processes: int, env: dict[str, str]) -> float:
    """How many CPUs `processes` CPU-bound processes got at once, relative to one alone (1.0 to `processes`)."""
    command = [sys.executable, "-c", BUSY_LOOP]
    alone = run(command, env)[0]
    start = time.perf_counter()
    running = [subprocess.Popen(command, env=env) for _ in range(processes)]
    for proc in running:
        proc.wait()
    return processes * alone / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    jobs = [int(j) for j in args.jobs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        directory, cache = Path(tmp) / "models", Path(tmp) / "pycache"
        directory.mkdir()
        build(directory, args.files)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(cache)
        check = [sys.executable, "-m", "lstm_inspect"]
        variants = {f"--jobs {n}": check + ["check", "--format", "json", "--jobs", str(n), str(directory)]
                    for n in jobs}
        variants["--no-isolation"] = check + ["--no-isolation", "check", "--format", "json", str(directory)]
        run(check + ["--version"], env)  # writes the bytecode caches
        results: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
        rooms = []
        load_before = os.getloadavg()
        for _ in range(args.rounds):
            for name, command in variants.items():
                results[name].append(run(command, env))
            rooms.append(headroom(max(jobs), env))
        load_after = os.getloadavg()
        size = sum(p.stat().st_size for p in directory.iterdir()) / 1e6
        print(f"{args.files} files, {size:.1f} MB, {os.cpu_count()} CPUs, {args.rounds} rounds, "
              f"{time.strftime('%Y-%m-%d %H:%M')}; load average {load_before[0]:.1f} before, {load_after[0]:.1f} "
              f"after; headroom for {max(jobs)} processes: {', '.join(f'{r:.2f}' for r in rooms)}")
        print(f"{'variant':<16} {'best s':>8} {'median s':>9} {'CPU ms/file':>12} {'wall ms/file':>13} "
              f"{'faults/file':>12}")
        summary = {}
        for name, runs in results.items():
            walls = [r[0] for r in runs]
            cpu = statistics.median(r[1] for r in runs) / args.files
            faults = statistics.median(r[2] for r in runs) / args.files
            summary[name] = (min(walls), statistics.median(walls), cpu)
            print(f"{name:<16} {min(walls):>8.2f} {statistics.median(walls):>9.2f} {cpu * 1000:>12.1f} "
                  f"{statistics.median(walls) / args.files * 1000:>13.1f} {faults:>12.0f}")
        base = summary["--no-isolation"]
        one = summary[f"--jobs {jobs[0]}"]
        print(f"isolated / --no-isolation per file: CPU {one[2] / base[2]:.2f}x, wall {one[1] / base[1]:.2f}x "
              f"(median), {one[0] / base[0]:.2f}x (best)")
        for n in jobs[1:]:
            many = summary[f"--jobs {n}"]
            print(f"--jobs {jobs[0]} / --jobs {n} wall: {one[1] / many[1]:.2f}x (median), {one[0] / many[0]:.2f}x "
                  f"(best); per-round: " + ", ".join(f"{a[0] / b[0]:.2f}" for a, b in
                                                      zip(results[f'--jobs {jobs[0]}'], results[f'--jobs {n}'])))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Start-up of lstm-inspect on a small file against the floor `python -c "import numpy, h5py"` (not a test).

    python bench/bench_startup.py [MODEL] [--rounds 21] [--importtime]

Every command runs as a fresh process, the commands interleaved round by round (the machine's load then weighs on
all of them alike); each row gives the median and the best wall time and the median CPU time (user + system of the
process and its children), and the ratios to the floor's. Python's bytecode caches are on, as after `pip install`
(they are written to a temporary directory first: the caller's PYTHONDONTWRITEBYTECODE would otherwise make every
run compile lstm-inspect's sources again). --importtime also prints the largest imports of `inspect --json`.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def commands(model: str) -> list[tuple[str, list[str]]]:
    py = sys.executable
    run = [py, "-m", "lstm_inspect"]
    return [
        ("python -c 'import numpy, h5py' (floor)", [py, "-c", "import numpy, h5py"]),
        ("python -c pass", [py, "-c", "pass"]),
        ("lstm-inspect --version", run + ["--version"]),
        ("lstm-inspect inspect --help", run + ["inspect", "--help"]),
        ("lstm-inspect inspect", run + ["inspect", model]),
        ("lstm-inspect inspect --json", run + ["inspect", "--json", model]),
        ("lstm-inspect --no-isolation inspect", run + ["--no-isolation", "inspect", model]),
        ("lstm-inspect --no-isolation inspect --json", run + ["--no-isolation", "inspect", "--json", model]),
    ]


def environment(cache: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPYCACHEPREFIX=cache, TF_CPP_MIN_LOG_LEVEL="3")
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system, children included) of one fresh run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def largest_imports(command: list[str], env: dict[str, str], count: int = 25) -> list[tuple[int, str]]:
    """The `count` largest cumulative import times (µs) of `command`, top-level packages only."""
    err = subprocess.run([command[0], "-X", "importtime", *command[1:]], env=env, capture_output=True,
                         text=True).stderr
    rows = []
    for line in err.splitlines():
        if line.startswith("import time:") and "|" in line and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if len(name) - len(name.lstrip()) <= 3:  # the package itself or one level below
                rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:count]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--importtime", action="store_true")
    args = parser.parse_args()
    import lstm_inspect

    model = args.model or lstm_inspect.example_path()
    rows = commands(model)
    with tempfile.TemporaryDirectory() as cache:
        env = environment(cache)
        for _, command in rows:  # writes the bytecode caches
            timed(command, env)
            timed(command, env)
        load_before = os.getloadavg()
        walls: list[list[float]] = [[] for _ in rows]
        cpus: list[list[float]] = [[] for _ in rows]
        for round_ in range(args.rounds):
            order = list(range(len(rows)))
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            for i in order:
                wall, cpu = timed(rows[i][1], env)
                walls[i].append(wall)
                cpus[i].append(cpu)
        load_after = os.getloadavg()
        print(f"model: {model} ({os.path.getsize(model):,} bytes); {args.rounds} interleaved rounds; "
              f"{time.strftime('%Y-%m-%d %H:%M')}; {os.cpu_count()} CPUs; load average {load_before[0]:.1f} before, "
              f"{load_after[0]:.1f} after")
        print(f"{'command':<44} {'median s':>9} {'x floor':>8} {'best s':>8} {'x floor':>8} {'CPU s':>7} "
              f"{'x floor':>8}")
        floor_wall, floor_best, floor_cpu = (statistics.median(walls[0]), min(walls[0]), statistics.median(cpus[0]))
        for (label, _), wall, cpu in zip(rows, walls, cpus):
            print(f"{label:<44} {statistics.median(wall):>9.3f} {statistics.median(wall) / floor_wall:>8.2f} "
                  f"{min(wall):>8.3f} {min(wall) / floor_best:>8.2f} {statistics.median(cpu):>7.3f} "
                  f"{statistics.median(cpu) / floor_cpu:>8.2f}")
        if args.importtime:
            print("\nlargest imports of `inspect --json` (cumulative µs):")
            for micros, name in largest_imports(rows[5][1], env):
                print(f"{micros:>9} {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

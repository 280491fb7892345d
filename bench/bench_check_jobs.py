#!/usr/bin/env python
"""Benchmark `lstm-inspect check --jobs N` over a directory of a few hundred model files (not a test).

Usage: python bench/bench_check_jobs.py [--files 300] [--jobs 1,2] [--repeat 3]

The directory is filled with copies of the repository's Keras fixtures (every file kind, tf-keras 2 and Keras 3),
each copy with its LSTM weights perturbed so no two files are the same. Prints the best wall time per --jobs.
"""
from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"


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


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--jobs", default="1,2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build(directory, args.files)
        print(f"{args.files} files, {sum(p.stat().st_size for p in directory.iterdir()) / 1e6:.1f} MB, "
              f"{os.cpu_count()} CPUs")
        for jobs in (int(j) for j in args.jobs.split(",")):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "lstm_inspect", "check", "--format", "json",
                                       "--jobs", str(jobs), str(directory)], capture_output=True)
                times.append(time.perf_counter() - start)
                if proc.returncode not in (0, 1):
                    print(proc.stderr.decode()[-500:])
                    return 1
            print(f"--jobs {jobs}: best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s "
                  f"over {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

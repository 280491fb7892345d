#!/usr/bin/env python
"""Whole-process time and peak memory of lstm-inspect's commands, against the floor of importing numpy and h5py
and, where Keras is installed, against `keras.saving.load_model` + `get_weights()`.

    python bench/bench_inspect.py [MODEL] [--repeat N]

MODEL defaults to the bundled example (a 77,681-parameter .keras file). Each command runs in a fresh process;
the figure is the median over N runs. Peak memory is the child's maximum resident set size. For the start-up
ratios, with the commands interleaved and CPU time too, see bench/bench_startup.py.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter(); subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


#: Python's bytecode caches on, in a directory of their own, as after `pip install`: with the caller's
#: PYTHONDONTWRITEBYTECODE every run would compile lstm-inspect's sources again (about 0.1 s).
_CACHE = tempfile.mkdtemp(prefix="bench-pycache-")


def measure(command: list[str], repeat: int) -> tuple[float, float]:
    """Median seconds and median peak MiB of `command`, each run in a fresh process (after one unmeasured run,
    which writes the bytecode caches)."""
    times, peaks = [], []
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPYCACHEPREFIX=_CACHE)
    subprocess.run(command, check=True, capture_output=True, env=env)
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", MEASURE, *command], check=True, capture_output=True, text=True,
                             env=env).stdout.split()
        times.append(float(out[0]))
        peaks.append(int(out[1]) / 1024)
    return statistics.median(times), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    import lstm_inspect

    model = args.model or lstm_inspect.example_path()
    out = os.path.join(tempfile.mkdtemp(), "gates.npz")
    py = sys.executable
    rows = [
        ("import numpy, h5py (floor)", [py, "-c", "import numpy, h5py"]),
        ("lstm-inspect inspect", [py, "-m", "lstm_inspect", "inspect", model]),
        ("lstm-inspect --no-isolation inspect", [py, "-m", "lstm_inspect", "--no-isolation", "inspect", model]),
        ("lstm-inspect inspect --no-stats", [py, "-m", "lstm_inspect", "inspect", "--no-stats", model]),
        ("lstm-inspect inspect --json", [py, "-m", "lstm_inspect", "inspect", "--json", model]),
        ("lstm-inspect export", [py, "-m", "lstm_inspect", "export", model, "-o", out]),
    ]
    try:
        import importlib.util

        if importlib.util.find_spec("keras") and model.endswith(".keras"):
            rows.append(("keras load_model + get_weights",
                         [py, "-c", f"import keras; keras.saving.load_model({model!r}).get_weights()"]))
    except Exception:
        pass
    print(f"model: {model} ({os.path.getsize(model):,} bytes), median of {args.repeat} runs, "
          f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'command':<36} {'seconds':>8} {'x floor':>8} {'peak MiB':>9}")
    floor = None
    for label, command in rows:
        seconds, peak = measure(command, args.repeat)
        floor = floor or seconds
        print(f"{label:<36} {seconds:>8.3f} {seconds / floor:>8.2f} {peak:>9.1f}")


if __name__ == "__main__":
    main()

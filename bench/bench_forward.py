#!/usr/bin/env python
"""Benchmark `lstm-inspect forward` (numpy) against Keras's `predict` and a direct `model(x)` call.

Usage::

    python bench/bench_forward.py [--repeat 5] [--quick]

Models: the bundled example (LSTM(120, relu) -> Dense(100) -> Dense(50) -> Dense(1), input (10, 5)) and a larger
stacked LSTM built here with Keras 3 (LSTM(256, seq) -> LSTM(256) -> Dense(10), input (100, 64)), saved to a
temporary .keras file. Prints a Markdown table: best-of-`repeat` wall time per call, and the largest absolute
difference between the numpy output and Keras's. Keras (TensorFlow backend) is needed for the comparison.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# numpy's BLAS single-threaded by default (set OPENBLAS_NUM_THREADS to change it): on a busy machine multi-threaded
# OpenBLAS on these small matrices was erratic (the same call took 3 ms or 160 ms). TensorFlow uses its own threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import lstm_inspect  # noqa: E402
from lstm_inspect.run.forward import OUTPUT_KEY, run  # noqa: E402


def best_of(func, repeat: int) -> float:
    func()  # warm-up (graph tracing, file reads)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def stacked_model(path: str, keras) -> None:
    L = keras.layers
    model = keras.Sequential([keras.Input((100, 64)), L.LSTM(256, return_sequences=True), L.LSTM(256), L.Dense(10)])
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(-0.1, 0.1, size=w.shape).astype("float32"))
    model.save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small batches only")
    args = ap.parse_args()
    import keras

    example = lstm_inspect.example_path()
    if not os.path.exists(example):  # fall back to the test fixture of the same architecture
        example = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models", "k3_classic.keras")
    tmp = tempfile.mkdtemp()
    stacked = os.path.join(tmp, "stacked.keras")
    stacked_model(stacked, keras)
    cases = [("example LSTM(120, relu) stack", example, (10, 5), [1, 32, 256]),
             ("stacked LSTM(256)x2, 100 steps", stacked, (100, 64), [1, 32] if args.quick else [1, 32, 128])]
    print(f"numpy {np.__version__} (OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}), keras "
          f"{keras.__version__} ({keras.backend.backend()}), {os.cpu_count()} CPUs; best of {args.repeat}\n")
    print("| model | batch | numpy forward (float64) | numpy forward (float32) | keras predict | keras model(x) "
          "| max abs diff |")
    print("|---|---|---|---|---|---|---|")
    # numpy first, Keras second: TensorFlow's thread pools keep spinning for a while after each call and would
    # steal the 2 CPUs from numpy if the two were interleaved.
    rows = []
    for label, path, shape, batches in cases:
        with lstm_inspect.open_model(path) as model:
            for batch in batches:
                x = np.random.default_rng(1).standard_normal((batch,) + shape).astype("float32")
                t64 = best_of(lambda: run(model, x), args.repeat)
                t32 = best_of(lambda: run(model, x, dtype=np.float32), args.repeat)
                rows.append((label, path, batch, x, t64, t32, run(model, x)[OUTPUT_KEY]))
    models = {}
    for label, path, batch, x, t64, t32, ours in rows:
        if path not in models:
            models[path] = keras.saving.load_model(path, compile=False)
        kmodel = models[path]
        tpred = best_of(lambda: kmodel.predict(x, verbose=0, batch_size=batch), args.repeat)
        tcall = best_of(lambda: kmodel(x, training=False), args.repeat)
        diff = float(np.abs(ours - np.asarray(kmodel(x, training=False))).max())
        print(f"| {label} | {batch} | {t64 * 1e3:.1f} ms | {t32 * 1e3:.1f} ms | {tpred * 1e3:.1f} ms "
              f"| {tcall * 1e3:.1f} ms | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

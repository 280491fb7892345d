#!/usr/bin/env python
"""Reading TensorFlow's own files: lstm-inspect's readers against TensorFlow's loaders, each in a fresh process.

Writes (with tf-keras, once, into a temporary directory) LSTM(512) -> LSTM(512) -> Dense(10) on 128 features
(3,417,098 parameters, 13.7 MB of float32) as a SavedModel (``save_format="tf"``) and a TF2 checkpoint
(``save_weights``), then times, median of --repeat fresh processes each:

- lstm-inspect: ``import lstm_inspect`` and ``open_model(path)`` + reading every tensor (CRC-32C checked);
- TensorFlow: ``import tensorflow`` and ``tf.train.load_checkpoint`` + ``get_tensor`` of every variable, or
  ``tf.saved_model.load`` + every variable's ``numpy()``.

Usage: ``python bench/bench_tf_formats.py [--repeat N]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

MAKE = """
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import tf_keras as k
m = k.Sequential([k.Input((20, 128)), k.layers.LSTM(512, return_sequences=True), k.layers.LSTM(512), k.layers.Dense(10)])
m.save("sm", save_format="tf")
m.save_weights("ckpt")
"""
OURS = """
import sys, time
t0 = time.perf_counter()
from lstm_inspect import open_model
t1 = time.perf_counter()
with open_model(sys.argv[1]) as m:
    n = sum(t.read().size for layer in m.layers for t in layer.weights)
print(t1 - t0, time.perf_counter() - t1, n)
"""
THEIRS = """
import sys, time
t0 = time.perf_counter()
import tensorflow as tf
t1 = time.perf_counter()
if sys.argv[1] == "ckpt":
    r = tf.train.load_checkpoint("ckpt")
    n = sum(r.get_tensor(k).size for k, d in r.get_variable_to_dtype_map().items() if d != tf.string)
else:
    n = sum(int(v.numpy().size) for v in tf.saved_model.load("sm").variables)
print(t1 - t0, time.perf_counter() - t1, n)
"""


def timed(code: str, arg: str, cwd: str, repeat: int) -> tuple[float, float, int]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", code, arg], cwd=cwd, capture_output=True, text=True, check=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}).stdout.split()
        runs.append((float(out[0]), float(out[1]), int(out[2])))
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs), runs[0][2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        subprocess.run([sys.executable, "-c", MAKE], cwd=work, check=True, capture_output=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        print(f"load average {os.getloadavg()[0]:.1f}")
        print("| file | reader | import s | read s | values |")
        print("|---|---|---|---|---|")
        for arg, loader in (("ckpt", "tf.train.load_checkpoint"), ("sm", "tf.saved_model.load")):
            for who, code in (("lstm-inspect", OURS), (loader, THEIRS)):
                imp, read, n = timed(code, arg, work, args.repeat)
                print(f"| {arg} | {who} | {imp:.2f} | {read:.2f} | {n:,} |")


if __name__ == "__main__":
    main()

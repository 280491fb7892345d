#!/usr/bin/env python
"""Benchmark `lstm-inspect forward` (numpy) against Keras's `predict` and against the BLAS floor.

Usage::

    python bench/bench_forward.py [--repeat 5] [--quick] [--batches 1,32,128,512] [--threads 1,default] [--float64]

Models: the bundled example (LSTM(120, relu) -> Dense(100) -> Dense(50) -> Dense(1), input (10, 5)) and a stacked
LSTM built here with Keras 3 (LSTM(256, seq) -> LSTM(256) -> Dense(10), input (100, 64)), saved to a temporary
.keras file.

Three things are timed per batch size, interleaved in the same rounds (the machine may be shared: a slow patch
hits all three alike), `--repeat` rounds, medians reported:

- ours: `run(model, x, threads=1)` on the open model, in the file's precision (float32), per BLAS thread setting:
  one thread of Python, the batch unsplit;
- ours, the CLI's default: `run(model, x)` with numpy's BLAS held to one thread and OPENBLAS_NUM_THREADS=1 in the
  environment (what `lstm-inspect forward` runs): a large batch's rows split over the usable CPUs (`run.row_split`)
  unless the machine is busy; "row ranges" says how many each round used (1: not split);
- the floor: the same matmuls done directly in numpy (each recurrent layer's input projection for the whole
  sequence, then one h · recurrent_kernel per step into a preallocated buffer; each Dense layer's matmul), same
  dtype and thread setting — what the numpy pass would cost with free activations and no Python;
- Keras: `model.predict(x, batch_size=batch)` (TensorFlow backend, its own threads).

`--threads 1,default`: numpy's BLAS limited to one thread (what the CLI sets, see docs/benchmarks.md) and left at
its default (the API's), with threadpoolctl (without it: only the default, and the CLI's default is not timed).
The header names the BLAS library, its kernel (the CPU architecture
OpenBLAS picked, which OPENBLAS_CORETYPE overrides), its version and thread count, and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402

import lstm_inspect  # noqa: E402
from lstm_inspect.cpus import usable_cpus  # noqa: E402
from lstm_inspect.run import row_split  # noqa: E402
from lstm_inspect.run.forward import OUTPUT_KEY, run  # noqa: E402

RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def stacked_model(path: str, keras) -> None:
    L = keras.layers
    model = keras.Sequential([keras.Input((100, 64)), L.LSTM(256, return_sequences=True), L.LSTM(256), L.Dense(10)])
    rng = np.random.default_rng(0)
    for w in model.weights:
        w.assign(rng.uniform(-0.1, 0.1, size=w.shape).astype("float32"))
    model.save(path)


class Floor:
    """The model's matmuls and nothing else, on preallocated buffers (float32)."""

    def __init__(self, kmodel, batch: int, steps: int, features: int):
        self.plan = []
        width, sequence = features, True
        for layer in kmodel.layers:
            kind = type(layer).__name__
            if kind in RECURRENT:
                kernel, recurrent = (np.ascontiguousarray(w, dtype=np.float32) for w in layer.get_weights()[:2])
                units = recurrent.shape[0]
                rows = steps * batch
                self.plan.append(("rnn", kernel, recurrent, np.full((rows, width), 0.1, np.float32),
                                  np.empty((rows, kernel.shape[1]), np.float32), np.full((batch, units), 0.1, np.float32),
                                  np.empty((batch, recurrent.shape[1]), np.float32), steps))
                width, sequence = units, bool(layer.return_sequences)
            elif kind == "Dense":
                kernel = np.ascontiguousarray(layer.get_weights()[0], dtype=np.float32)
                rows = steps * batch if sequence else batch
                self.plan.append(("dense", kernel, np.full((rows, width), 0.1, np.float32),
                                  np.empty((rows, kernel.shape[1]), np.float32)))
                width = kernel.shape[1]

    def __call__(self) -> None:
        for item in self.plan:
            if item[0] == "rnn":
                _, kernel, recurrent, seq, proj, h, z, steps = item
                np.matmul(seq, kernel, out=proj)
                for _ in range(steps):
                    np.matmul(h, recurrent, out=z)
            else:
                _, kernel, x, y = item
                np.matmul(x, kernel, out=y)


def blas_info() -> tuple[str, object]:
    """(a one-line description of numpy's BLAS, threadpoolctl's limiter or None)."""
    try:
        import threadpoolctl
    except ImportError:
        return "BLAS unknown (pip install threadpoolctl to see it and to vary its threads)", None
    infos = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
    text = "; ".join(f"{i.get('internal_api')} {i.get('version')} kernel {i.get('architecture', '?')}, "
                     f"{i.get('num_threads')} threads by default" for i in infos) or "no BLAS found"
    return text, threadpoolctl


def limited(threadpoolctl, setting: str):
    if threadpoolctl is None or setting == "default":
        import contextlib

        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(limits=int(setting), user_api="blas")


def as_the_cli(model, x) -> None:
    """`run(model, x)` as `lstm-inspect forward` runs it: the CLI sets these variables before numpy loads (here
    threadpoolctl holds the BLAS to one thread and the variables say so, which `row_split` reads)."""
    saved = {v: os.environ.get(v) for v in CLI_VARIABLES}
    os.environ.update({v: "1" for v in CLI_VARIABLES})
    try:
        run(model, x)
    finally:
        for variable, value in saved.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value


CLI_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
PARTS_USED: list[int] = []
"""How many row ranges each recurrent layer ran in (the automatic choice also looks at the load average)."""
_parts = row_split.parts


def _counted_parts(batch: int, units: int, threads):
    rows = _parts(batch, units, threads)
    PARTS_USED.append(len(rows))
    return rows


row_split.parts = _counted_parts


def timed(func) -> float:
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small batches only")
    ap.add_argument("--batches", default=None, help="batch sizes of the stacked LSTM (default 1,32,128,512)")
    ap.add_argument("--threads", default="1,default", help="numpy BLAS thread settings to time (default 1,default)")
    ap.add_argument("--float64", action="store_true", help="also time a float64 reference run (first setting)")
    ap.add_argument("--no-example", action="store_true", help="only the stacked LSTM")
    args = ap.parse_args()
    import keras
    import tensorflow as tf

    blas, threadpoolctl = blas_info()
    settings = [s.strip() for s in args.threads.split(",") if s.strip()]
    if threadpoolctl is None:
        settings = ["default"]
    example = lstm_inspect.example_path()
    if not os.path.exists(example):  # fall back to the test fixture of the same architecture
        example = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "models", "k3_classic.keras")
    tmp = tempfile.mkdtemp()
    stacked = os.path.join(tmp, "stacked.keras")
    stacked_model(stacked, keras)
    batches = [int(b) for b in args.batches.split(",")] if args.batches else ([1, 32] if args.quick else [1, 32, 128, 512])
    cases = [] if args.no_example else [("example LSTM(120, relu) stack", example, (10, 5), [1, 32, 256])]
    cases.append(("stacked LSTM(256)x2, 100 steps", stacked, (100, 64), batches))
    print(f"numpy {np.__version__}: {blas}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"keras {keras.__version__} on tensorflow {tf.__version__} (intra-op threads "
          f"{tf.config.threading.get_intra_op_parallelism_threads() or 'default'}); {os.cpu_count()} CPUs; "
          f"load average at start {os.getloadavg()[0]:.1f}; median of {args.repeat} interleaved rounds\n", flush=True)
    cli = threadpoolctl is not None
    cpus = usable_cpus()
    cols = [f"ours f32 ({s} thr)" for s in settings] + ([f"ours, CLI default (rows on {cpus} CPUs)"] if cli else [])
    cols += [f"floor ({s} thr)" for s in settings]
    cols += ["ours f64"] if args.float64 else []
    cols += ["keras predict"] + [f"ours/keras ({s})" for s in settings] + (["CLI default/keras"] if cli else [])
    cols += [f"ours/floor ({s})" for s in settings] + ([f"CLI default/floor ({settings[0]})"] if cli else [])
    cols += ["CLI default: row ranges"] if cli else []
    print("| model | batch | " + " | ".join(cols) + " | max abs diff | split = unsplit | load |")
    print("|" + "---|" * (len(cols) + 5))
    for label, path, shape, case_batches in cases:
        kmodel = keras.saving.load_model(path, compile=False)
        with lstm_inspect.open_model(path) as model:
            for batch in case_batches:
                x = np.random.default_rng(1).standard_normal((batch,) + shape).astype("float32")
                floor = Floor(kmodel, batch, shape[0], shape[-1])
                jobs = {}
                for s in settings:
                    jobs[f"ours {s}"] = (s, lambda: run(model, x, threads=1))
                    jobs[f"floor {s}"] = (s, floor)
                if cli:
                    jobs["cli"] = ("1", lambda: as_the_cli(model, x))
                if args.float64:
                    jobs["ours f64"] = (settings[0], lambda: run(model, x, dtype=np.float64, threads=1))
                jobs["keras"] = ("default", lambda: kmodel.predict(x, verbose=0, batch_size=batch))
                times: dict[str, list[float]] = {name: [] for name in jobs}
                loads = []
                for name, (s, func) in jobs.items():  # warm-up: weights read and laid out, graphs traced
                    with limited(threadpoolctl, s):
                        func()
                ranges = set()
                for _ in range(args.repeat):
                    for name, (s, func) in jobs.items():
                        PARTS_USED.clear()
                        with limited(threadpoolctl, s):
                            times[name].append(timed(func))
                        if name == "cli":
                            ranges.add(max(PARTS_USED))
                        if name == "keras":
                            time.sleep(0.05)  # TensorFlow's worker threads spin for a moment after a call
                    loads.append(os.getloadavg()[0])
                med = {name: statistics.median(values) for name, values in times.items()}
                ours = run(model, x, threads=1)[OUTPUT_KEY]
                identical = all(np.array_equal(a, b) for a, b in zip(run(model, x, threads=cpus).values(),
                                                                      run(model, x, threads=1).values()))
                diff = float(np.abs(ours - np.asarray(kmodel.predict(x, verbose=0, batch_size=batch))).max())
                cells = [med[f"ours {s}"] for s in settings] + ([med["cli"]] if cli else [])
                cells += [med[f"floor {s}"] for s in settings]
                cells += [med["ours f64"]] if args.float64 else []
                shown = [f"{t * 1e3:.1f} ms" for t in cells + [med["keras"]]]
                shown += [f"{med[f'ours {s}'] / med['keras']:.2f}" for s in settings]
                shown += [f"{med['cli'] / med['keras']:.2f}"] if cli else []
                shown += [f"{med[f'ours {s}'] / med[f'floor {s}']:.2f}" for s in settings]
                shown += [f"{med['cli'] / med[f'floor {settings[0]}']:.2f}"] if cli else []
                shown += ["/".join(str(n) for n in sorted(ranges))] if cli else []
                print(f"| {label} | {batch} | " + " | ".join(shown) + f" | {diff:.1e} | {'yes' if identical else 'NO'} | "
                      f"{statistics.median(loads):.1f} |", flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

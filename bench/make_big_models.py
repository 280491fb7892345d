#!/usr/bin/env python
"""Build the large benchmark models: ``Sequential(LSTM(u) x n)`` saved as ``.keras`` and as legacy ``.h5``.

    python bench/make_big_models.py OUT_DIR [--sizes 0.5,1,2,4]

| size | model | largest array |
|---|---|---|
| 0.125 GB | LSTM(2048) x 1 on 2048 inputs (tests/test_bounded_memory.py) | 64 MiB |
| 0.5 GB | LSTM(4096) x 1 on 4096 inputs | 256 MiB |
| 1 GB | LSTM(4096) x 2 | 256 MiB |
| 2 GB | LSTM(4096) x 4 | 256 MiB |
| 4 GB | LSTM(8192) x 2 on 8192 inputs | 1 GiB |

How they are made (stated because it matters): Keras 3 itself saves the *same architecture* with 8 units per layer
(`model.save` to ``.keras`` and to ``.h5``); this script then writes the large file with h5py in exactly that
layout — every group, attribute and the config copied from Keras's save, with the units in the config and the
dataset shapes scaled up, filled with random float32 values (biases non-zero) written in row blocks. The ``.keras``
archive is stored (uncompressed), as Keras writes it. Building the multi-GB models with Keras itself needs several
times their size in memory and, for LSTM(8192), an orthogonal initialiser on an 8192 x 32768 matrix.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import zipfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

SIZES = {"0.125": (2048, 1), "0.5": (4096, 1), "1": (4096, 2), "2": (4096, 4), "4": (8192, 2)}
SMALL = 8
ROW_BLOCK_BYTES = 64 << 20


def small_templates(layers: int, workdir: str) -> tuple[str, str]:
    """A real Keras 3 save of LSTM(8) x `layers` on 8 inputs, as .keras and .h5."""
    import keras

    L = keras.layers
    stack = [L.LSTM(SMALL, return_sequences=i < layers - 1) for i in range(layers)]
    model = keras.Sequential([keras.Input((10, SMALL)), *stack])
    keras_path, h5_path = os.path.join(workdir, "t.keras"), os.path.join(workdir, "t.h5")
    model.save(keras_path)
    model.save(h5_path)
    return keras_path, h5_path


def scale_config(text: str, units: int) -> str:
    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "units" and value == SMALL:
                    node[key] = units
                elif key in ("batch_shape", "batch_input_shape", "shape") and isinstance(value, list) \
                        and value and value[-1] == SMALL:
                    node[key] = value[:-1] + [units]
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        return node

    return json.dumps(walk(json.loads(text)))


def copy_scaled(src: h5py.Group, dst: h5py.Group, units: int, rng: np.random.Generator) -> None:
    for key, value in src.attrs.items():
        if key == "model_config":
            value = scale_config(value.decode() if isinstance(value, bytes) else value, units)
        dst.attrs[key] = value
    for name, node in src.items():
        if isinstance(node, h5py.Group):
            copy_scaled(node, dst.create_group(name), units, rng)
            continue
        shape = tuple(n // SMALL * units for n in node.shape)
        ds = dst.create_dataset(name, shape=shape, dtype=node.dtype)
        for key, value in node.attrs.items():
            ds.attrs[key] = value
        rows = max(1, ROW_BLOCK_BYTES // max(1, int(np.prod(shape[1:], dtype=np.int64)) * 4))
        for start in range(0, shape[0], rows):
            stop = min(shape[0], start + rows)
            block = rng.standard_normal((stop - start, *shape[1:]), dtype=np.float32)
            block *= 0.05
            if len(shape) == 1:
                block += 0.5
            ds[start:stop] = block


def make(out_dir: str, size: str) -> None:
    units, layers = SIZES[size]
    rng = np.random.default_rng(14)
    with tempfile.TemporaryDirectory() as work:
        keras_template, h5_template = small_templates(layers, work)
        h5_out = os.path.join(out_dir, f"lstm_{size}gb.h5")
        with h5py.File(h5_template, "r") as src, h5py.File(h5_out, "w") as dst:
            copy_scaled(src, dst, units, rng)
        keras_out = os.path.join(out_dir, f"lstm_{size}gb.keras")
        weights = os.path.join(work, "model.weights.h5")
        with zipfile.ZipFile(keras_template) as src, zipfile.ZipFile(keras_out, "w", zipfile.ZIP_STORED) as dst:
            for info in src.infolist():
                data = src.read(info)
                if info.filename == "config.json":
                    data = scale_config(data.decode(), units).encode()
                if info.filename == "model.weights.h5":
                    with open(os.path.join(work, "small.h5"), "wb") as handle:
                        handle.write(data)
                    with h5py.File(os.path.join(work, "small.h5"), "r") as s, h5py.File(weights, "w") as d:
                        copy_scaled(s, d, units, rng)
                    dst.write(weights, info.filename)
                    os.remove(weights)
                    continue
                dst.writestr(info.filename, data)
    for path in (h5_out, keras_out):
        print(f"{path}: {os.path.getsize(path) / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--sizes", default="0.5,1,2,4")
    args = parser.parse_args()
    os.makedirs(args.out_dir, exist_ok=True)
    for size in args.sizes.split(","):
        if size not in SIZES:
            sys.exit(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
        make(args.out_dir, size)


if __name__ == "__main__":
    main()

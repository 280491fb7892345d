#!/usr/bin/env python
"""Full-read commands on a ~1 GB ``np.savez_compressed`` file against ``np.load`` reading every array once.

    python bench/bench_compressed.py --make DIR            # writes DIR/lstm_1gb_compressed.npz and DIR/lstm_1gb.npz
    python bench/bench_compressed.py --rezip DIR/lstm_1gb.keras --make DIR   # also DIR/lstm_1gb_deflated.keras
    python bench/bench_compressed.py DIR/lstm_1gb_compressed.npz [DIR/lstm_1gb.npz] [--commands json,check,export,diff]
                                     [--repeat 1] [--options '--max-memory 300M']

The file: the state dict of ``torch.nn.LSTM(4096, 4096, num_layers=2)`` (four 256 MiB matrices, 1 GiB), dense
N(0, 0.05) values (biases around 0.5), written by ``np.savez_compressed`` (deflate, ~1.08:1 on random floats) and, for
comparison, by ``np.savez`` (stored). The floor is numpy itself: ``np.load`` reading each array once (inflated into
memory, released after each). Every command is a fresh whole process on a warm page cache; figures are wall time,
MB/s of the file's size, the ratio to the floor of the same round, the CPU seconds of the process tree and their
ratio, and the peak RSS of the whole process tree (the command and its forked reading child, summed, from /proc;
`bench_big.run`). ``diff`` compares the file with itself, against twice the floor. lstm-inspect inflates a large
compressed member once into an anonymous temporary file (``TMPDIR``) and memory-maps it a row chunk at a time; the
stored file's rows show what the inflating costs. ``--rezip`` re-zips a ``.keras`` (from bench/make_big_models.py)
with every member deflated, as a user re-zipping the archive would; its floor is then inflating ``model.weights.h5`` into a temporary file
and h5py reading every dataset of it once (what any reader of a deflated HDF5 member must do; bench_big.py on the
stored original gives the in-place figures). Run from the checkout you mean to measure.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_big import TABLE_HEADER, measure_rows  # noqa: E402

FLOOR = r"""
import sys
import numpy as np
total = 0
with np.load(sys.argv[1]) as f:
    for key in f.files:
        total += f[key].nbytes   # read once (inflated whole), then released
print(total, file=sys.stderr)
"""
#: The deflated .keras floor: inflate model.weights.h5 into a temporary file, then h5py reads every dataset once.
INFLATE_H5_FLOOR = r"""
import shutil, sys, tempfile, zipfile
import h5py
with zipfile.ZipFile(sys.argv[1]) as archive, tempfile.TemporaryFile() as copy:
    with archive.open("model.weights.h5") as member:
        shutil.copyfileobj(member, copy, 4 << 20)
    copy.seek(0)
    total = 0
    def visit(name, node):
        global total
        if isinstance(node, h5py.Dataset):
            total += node[()].nbytes
    with h5py.File(copy, "r") as f:
        f.visititems(visit)
print(total, file=sys.stderr)
"""
UNITS, LAYERS = 4096, 2


def rezip(source: str, out_dir: str) -> None:
    """`source` re-zipped with every member deflated (zipfile's default level 6, like ``zip``)."""
    import zipfile

    target = os.path.join(out_dir, os.path.basename(source).replace(".keras", "_deflated.keras"))
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with src.open(info) as reader, dst.open(info.filename, "w", force_zip64=True) as out:
                while chunk := reader.read(4 << 20):
                    out.write(chunk)
    print(f"{os.path.basename(target)}: {os.path.getsize(target) / 2**30:.2f} GiB")


def make(out_dir: str) -> None:
    import numpy as np

    rng = np.random.default_rng(14)
    arrays = {}
    for layer in range(LAYERS):
        for kind, shape in (("weight_ih", (4 * UNITS, UNITS)), ("weight_hh", (4 * UNITS, UNITS)),
                            ("bias_ih", (4 * UNITS,)), ("bias_hh", (4 * UNITS,))):
            values = rng.standard_normal(shape, dtype=np.float32)
            values *= 0.05
            if len(shape) == 1:
                values += 0.5
            arrays[f"{kind}_l{layer}"] = values
    os.makedirs(out_dir, exist_ok=True)
    np.savez_compressed(os.path.join(out_dir, "lstm_1gb_compressed.npz"), **arrays)
    np.savez(os.path.join(out_dir, "lstm_1gb.npz"), **arrays)
    for name in ("lstm_1gb_compressed.npz", "lstm_1gb.npz"):
        print(f"{name}: {os.path.getsize(os.path.join(out_dir, name)) / 2**30:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*")
    parser.add_argument("--make", metavar="DIR")
    parser.add_argument("--rezip", metavar="KERAS", action="append", default=[],
                        help="with --make: also write a deflated copy of this .keras into DIR")
    parser.add_argument("--commands", default="json,inspect,check,snapshot,export,diff")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--options", default="", help="extra group options, e.g. '--max-memory 300M'")
    args = parser.parse_args()
    if args.make:
        if args.rezip:
            os.makedirs(args.make, exist_ok=True)
            for source in args.rezip:
                rezip(source, args.make)
        else:
            make(args.make)
    if not args.models:
        return
    py = [sys.executable, "-m", "lstm_inspect", *args.options.split()]
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(TABLE_HEADER)
    with tempfile.TemporaryDirectory(prefix="bench_compressed_") as out_dir:
        for model in args.models:
            measure(model, args, py, out_dir)


def measure(model: str, args: argparse.Namespace, py: list[str], out_dir: str) -> None:
    size, name = os.path.getsize(model), os.path.basename(model)
    with open(model, "rb") as handle:  # warm the page cache
        while handle.read(64 << 20):
            pass
    commands = {
        "inspect": ["inspect", model], "json": ["inspect", "--json", model],
        "check": ["check", "--format", "json", model],
        "snapshot": ["snapshot", model, "-o", os.path.join(out_dir, "snap.json")],
        "export": ["export", model, "-o", os.path.join(out_dir, "gates.npz")], "diff": ["diff", model, model],
    }
    if model.endswith(".keras"):
        floor = [sys.executable, "-c", INFLATE_H5_FLOOR, model]
        rows = [("floor (inflate `model.weights.h5`, h5py every dataset once)", floor)]
    else:
        rows = [("floor (`np.load`, every array once)", [sys.executable, "-c", FLOOR, model])]
    rows += [(f"`{key}`", py + commands[key]) for key in args.commands.split(",")]
    measure_rows(name, size, rows, args.repeat, args.timeout, out_dir)

if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Full-read commands on a large ONNX file against the floor, side by side.

    python bench/bench_onnx.py DIR [--hidden 4096] [--layers 2] [--repeat 1] [--commands json,check,export,diff]
                               [--options '--max-memory 300M'] [--also OTHER_CHECKOUT]

Writes ``DIR/lstm_<hidden>x<layers>.onnx`` once (a torch ``nn.LSTM(hidden, hidden, num_layers)`` exported by
torch.onnx.export — the real writer, TorchScript exporter with constant folding, so W, R, B are initializers; 4096 x
2 is 1.0 GiB, each W and R 256 MiB), then measures as bench_big does (fresh whole processes, warm page cache, peak
RSS of the process tree, CPU seconds; rounds interleaved, medians shown, the load average printed with each row):

- the floor: every initializer's bytes read once with plain ``os.preadv`` into one reused 16 MiB buffer (their
  offsets found beforehand, outside the timing, by lstm-inspect's own walk);
- ``onnx.load`` of the file, what the reader did before it read through a skeleton;
- each command, and with ``--also`` the same commands run from another checkout (e.g. the code before the change,
  extracted with ``git archive``), for a side-by-side ratio.

``diff`` compares the file with itself, against twice the floor.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

FLOOR = r"""
import json, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
buffer = memoryview(bytearray(16 << 20))
total = 0
for offset, length in json.loads(sys.argv[2]):
    done = 0
    while done < length:
        n = os.preadv(fd, [buffer[:min(len(buffer), length - done)]], offset + done)
        done += n
    total += done
print(total, file=sys.stderr)
"""

ONNX_LOAD = "import sys, onnx; onnx.load(sys.argv[1], load_external_data=False)"


def _bench_big():
    spec = importlib.util.spec_from_file_location("bench_big", HERE / "bench_big.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build(directory: Path, hidden: int, layers: int) -> Path:
    path = directory / f"lstm_{hidden}x{layers}.onnx"
    if path.exists():
        return path
    import warnings

    import torch

    torch.manual_seed(14)
    module = torch.nn.LSTM(hidden, hidden, num_layers=layers, batch_first=True).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.randn(1, 2, hidden),), str(path), dynamo=False, input_names=["x"])
    return path


def payloads(path: Path) -> list[tuple[int, int]]:
    """(offset, length) of every tensor payload lstm-inspect leaves in the file."""
    sys.path.insert(0, str(HERE.parent))
    from lstm_inspect.readers import onnx_wire

    fd = os.open(path, os.O_RDONLY)
    try:
        return [(offset, length) for offset, length, _ in onnx_wire.skeleton(fd, str(path), 16).payloads]
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--commands", default="json,check,export,diff")
    parser.add_argument("--options", default="", help="extra group options, e.g. '--max-memory 300M'")
    parser.add_argument("--also", default="", help="another checkout to run the same commands from")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    args.directory.mkdir(parents=True, exist_ok=True)
    model = build(args.directory, args.hidden, args.layers)
    big = _bench_big()
    size = os.path.getsize(model)
    stored = payloads(model)
    print(f"{model.name}: {size / 2**20:,.0f} MiB, {len(stored)} payloads left in the file "
          f"({sum(n for _, n in stored) / 2**20:,.0f} MiB)")
    with open(model, "rb") as handle:  # warm the page cache
        while handle.read(64 << 20):
            pass
    with tempfile.TemporaryDirectory(prefix="bench_onnx_") as out:
        def commands(checkout: str) -> list[tuple[str, list[str], dict[str, str]]]:
            env = {"PYTHONPATH": checkout}
            py = [sys.executable, "-m", "lstm_inspect", *args.options.split()]
            table = {"json": ["inspect", "--json", str(model)], "check": ["check", "--format", "json", str(model)],
                     "export": ["export", str(model), "-o", os.path.join(out, "gates.npz")],
                     "diff": ["diff", str(model), str(model)]}
            tag = "" if checkout == str(HERE.parent) else f" ({os.path.basename(checkout.rstrip('/'))})"
            return [(f"`{key}`{tag}", py + table[key], env) for key in args.commands.split(",")]

        rows = [("floor (preadv of every payload once)", [sys.executable, "-c", FLOOR, str(model), json.dumps(stored)],
                 {}),
                ("`onnx.load`", [sys.executable, "-c", ONNX_LOAD, str(model)], {})]
        rows += commands(str(HERE.parent))
        if args.also:
            rows += commands(args.also)
        print(big.TABLE_HEADER)
        big.measure_rows(model.name, size, rows, args.repeat, args.timeout, out)


if __name__ == "__main__":
    main()

"""Every full-read command reads a file far larger than its memory limit: arrays are read in bounded row chunks,
summarised in one pass and written / compared as they come (no timing here; figures are in docs/benchmarks.md).

The file: ``Sequential(LSTM(2048))`` on 2048 inputs, 128 MiB, largest array 64 MiB — written by
bench/make_big_models.py with h5py in Keras 3's exact layout (groups, attributes and config copied from a real
Keras 3 save of the same architecture with 8 units, arrays enlarged and filled with random values).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import assert_json_block_stats

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("big")
    subprocess.run([sys.executable, str(BENCH / "make_big_models.py"), str(out), "--sizes", "0.125"], check=True,
                   capture_output=True)
    return {"keras": out / "lstm_0.125gb.keras", "h5": out / "lstm_0.125gb.h5"}


def run_cli(*args: str) -> tuple[subprocess.CompletedProcess, int]:
    """The CLI as a whole process; returns its result and the peak resident bytes of its process tree (the command
    and its forked reading child, summed), sampled from /proc."""
    tree_rss = _bench_module("bench_big").tree_rss
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    process = subprocess.Popen([sys.executable, "-m", "lstm_inspect", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
    peak = 0
    while process.poll() is None:
        peak = max(peak, tree_rss(process.pid))
        time.sleep(0.005)
    out, err = process.communicate()
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode()), peak


@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_inspect_json_under_a_limit_smaller_than_the_file(big, kind):
    """128 MiB of weights, a 64 MiB kernel: read under --max-memory 100M (the old reader made a float64 copy of
    each array, 128 MiB for the kernel alone), the whole process tree under 200 MiB, the statistics right."""
    result, peak = run_cli("--max-memory", "100M", "inspect", "--json", str(big[kind]))
    assert result.returncode == 0, result.stderr
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    layer = next(entry for entry in json.loads(result.stdout)["layers"] if entry["recurrent"])
    with _weights(big[kind]) as f:
        w_f = _dataset(f, "kernel")[:, 2048:4096].astype(np.float64)
    stats = next(b for b in layer["recurrent"]["blocks"] if b["key"] == "W_f")["stats"]
    assert stats["max"] == w_f.max() and stats["min"] == w_f.min()
    assert stats["mean"] == pytest.approx(w_f.mean(), rel=1e-9, abs=1e-12)
    assert stats["std"] == pytest.approx(w_f.std(), rel=1e-9)


def _weights(path: Path) -> h5py.File:
    """The HDF5 weights of a .h5 file or of a .keras archive (its stored model.weights.h5, read in place)."""
    if path.suffix == ".keras":
        import zipfile

        return h5py.File(zipfile.ZipFile(path).open("model.weights.h5"), "r")
    return h5py.File(path, "r")


def _dataset(f: h5py.File, role: str) -> h5py.Dataset:
    """The LSTM's kernel / recurrent_kernel (the first and second 2-D arrays in file order: vars/0, vars/1 in a
    .keras, kernel:0, recurrent_kernel:0 in a .h5)."""
    found = []
    f.visititems(lambda name, node: found.append(node) if isinstance(node, h5py.Dataset) and node.ndim == 2 else None)
    return found[0 if role == "kernel" else 1]


@pytest.mark.parametrize("command", ["check", "snapshot", "export-npz", "export-safetensors", "diff"])
def test_full_read_commands_under_a_small_limit(big, command, tmp_path):
    path = str(big["keras"])
    args = {"check": ["check", "--format", "json", path],
            "snapshot": ["snapshot", path, "-o", str(tmp_path / "s.json")],
            "export-npz": ["export", path, "-o", str(tmp_path / "e.npz")],
            "export-safetensors": ["export", path, "-o", str(tmp_path / "e.safetensors")],
            "diff": ["diff", path, path]}[command]
    result, peak = run_cli("--max-memory", "100M", *args)
    assert result.returncode == 0, result.stderr
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    if command == "check":
        assert json.loads(result.stdout)["summary"]["passed"] == 1
    if command == "export-npz":
        with np.load(tmp_path / "e.npz") as exported, _weights(big["keras"]) as f:
            assert np.array_equal(exported["lstm/W_c"], _dataset(f, "kernel")[:, 4096:6144])
    if command == "export-safetensors":
        from safetensors.numpy import load_file

        with _weights(big["keras"]) as f:
            expected = _dataset(f, "recurrent_kernel")[:, 6144:]
        assert np.array_equal(load_file(str(tmp_path / "e.safetensors"))["lstm/U_o"], expected)
    if command == "diff":
        assert "identical" in result.stdout.lower()


@pytest.fixture(scope="module")
def flat(tmp_path_factory) -> dict[str, Path]:
    """A torch ``nn.LSTM(2048, 2048)`` state dict (128 MiB, two 64 MiB arrays), values drawn from N(0, 0.05), saved
    by torch (.pt), by safetensors (.safetensors) and by numpy (np.savez: stored members, .npz)."""
    import torch
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("flat")
    torch.manual_seed(14)
    lstm = torch.nn.LSTM(2048, 2048, batch_first=True)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.normal_(0, 0.05)
    state = {key: value.contiguous() for key, value in lstm.state_dict().items()}
    torch.save(state, out / "lstm.pt")
    save_file(state, str(out / "lstm.safetensors"))
    np.savez(out / "lstm.npz", **{key: value.numpy() for key, value in state.items()})
    return {"pt": out / "lstm.pt", "safetensors": out / "lstm.safetensors", "npz": out / "lstm.npz",
            "U_f": state["weight_hh_l0"][2048:4096].numpy().T.copy()}


@pytest.mark.parametrize("kind", ["pt", "safetensors", "npz"])
@pytest.mark.parametrize("command", ["json", "check", "export", "diff"])
def test_flat_formats_under_a_small_limit(flat, kind, command, tmp_path):
    """The arrays of a .pt / .safetensors / .npz are read a row chunk at a time (a memory map of the file's plain
    runs), not whole: under --max-memory 100M, whose address space cannot hold a 64 MiB array next to the rest."""
    path = str(flat[kind])
    args = {"json": ["inspect", "--json", path], "check": ["check", "--format", "json", path],
            "export": ["export", path, "-o", str(tmp_path / "e.npz")], "diff": ["diff", path, path]}[command]
    result, peak = run_cli("--max-memory", "100M", *args)
    assert result.returncode == 0, result.stderr
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    if command == "json":
        assert_json_block_stats(result.stdout, "U_f", flat["U_f"])
    if command == "check":
        assert json.loads(result.stdout)["summary"]["passed"] == 1
    if command == "export":
        with np.load(tmp_path / "e.npz") as exported:
            key = next(k for k in exported.files if k.endswith("U_f"))
            assert np.array_equal(exported[key], flat["U_f"])
    if command == "diff":
        assert "identical" in result.stdout.lower()


@pytest.mark.parametrize("command", ["json", "check", "snapshot", "export", "diff"])
def test_a_limit_too_small_names_max_memory(big, command, tmp_path):
    """Under a limit too small for one row chunk, every full-read command fails in one line that names the limit —
    also where the memory map or the write is what the limit refuses (an OSError ENOMEM, which readers and writers
    turn into their own errors): never 'cannot read' / 'cannot write' / an internal error."""
    path = str(big["keras"])
    args = {"json": ["inspect", "--json", path], "check": ["check", "--format", "json", path],
            "snapshot": ["snapshot", path, "-o", str(tmp_path / "s.json")],
            "export": ["export", path, "-o", str(tmp_path / "e.npz")], "diff": ["diff", path, path]}[command]
    seen = set()
    for limit in ("8M", "20M", "40M"):
        result, _ = run_cli("--max-memory", limit, *args)
        lines = result.stderr.strip().splitlines()
        if result.returncode == 0:
            continue
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert f"--max-memory {int(limit[:-1])} MiB" in lines[0] and "raise --max-memory" in lines[0], lines[0]
        seen.add(limit)
    assert "8M" in seen

"""Hostile shapes, sizes and external data in the readers: exact integer arithmetic (no wrap, no OverflowError),
ONNX external data refused on every path the reader reads (weights, initial states, ConstantOfShape fills, Reshape
shapes), and one bad file never stopping `check` from reporting the others.

Every file is written by the real writer (onnx.helper / onnx.save, h5py over a tf-keras .h5, numpy's .npy header
writer, the safetensors layout) and then edited to be hostile: all are labelled hand-built.
"""
from __future__ import annotations

import io
import json
import shutil
import struct
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest

from hostile import one_line_error, run
from onnx import TensorProto, helper, numpy_helper

from lstm_inspect.model import Tensor, element_count

FIXTURES = Path(__file__).parent / "fixtures" / "models"
SECRET = b"\x00" * 64  # what a CI checkout's file would hold; all zeros, so reading it would look harmless


# ---------------------------------------------------------------------------------------------------------------
# ONNX

def _external(tensor: TensorProto, location: str = "secret.bin") -> TensorProto:
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "48")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return tensor


def lstm_onnx(hidden: int = 4, inputs: int = 3, extra_nodes=(), extra_inits=(), initial_h: str = "",
              name: str = "lstm") -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * hidden, inputs)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.normal(0, 0.5, (1, 4 * hidden, hidden)).astype(np.float32), "R"),
             numpy_helper.from_array(rng.normal(0, 0.5, (1, 8 * hidden)).astype(np.float32), "B"), *extra_inits]
    node = helper.make_node("LSTM", ["X", "W", "R", "B", "", initial_h], ["Y", "Y_h", "Y_c"], name=name,
                            hidden_size=hidden)
    graph = helper.make_graph([*extra_nodes, node], "hostile",
                              [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", inputs])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture
def in_checkout(tmp_path, monkeypatch):
    """A working directory holding the file external data would name."""
    (tmp_path / "secret.bin").write_bytes(SECRET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_onnx_external_initial_state_is_not_read(in_checkout):
    h0 = _external(numpy_helper.from_array(np.zeros((1, 1, 4), np.float32), "h0"))
    onnx.save(lstm_onnx(extra_inits=[h0], initial_h="h0"), "m.onnx")
    one_line_error(run("inspect", "--no-stats", "m.onnx"), "'h0'", "external data")


def test_onnx_external_constant_of_shape_fill_is_not_read(in_checkout):
    fill = _external(numpy_helper.from_array(np.zeros((1,), np.float32), "fill"))
    shape = numpy_helper.from_array(np.array([1, 1, 4], np.int64), "h0_shape")
    node = helper.make_node("ConstantOfShape", ["h0_shape"], ["h0"], name="zeros", value=fill)
    onnx.save(lstm_onnx(extra_nodes=[node], extra_inits=[shape], initial_h="h0"), "m.onnx")
    one_line_error(run("inspect", "--no-stats", "m.onnx"), "external data")


def test_onnx_external_reshape_shape_is_not_read(in_checkout):
    """Two nodes as torch.onnx.export chains them (/lstm/LSTM -> Transpose -> Reshape -> /lstm/LSTM_1): the
    Reshape's shape is external."""
    model = lstm_onnx(name="/lstm/LSTM")
    shape = _external(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape"))
    rng = np.random.default_rng(1)
    model.graph.initializer.extend([
        shape,
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 16, 4)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(0, 0.5, (1, 16, 4)).astype(np.float32), "R1")])
    model.graph.node.extend([
        helper.make_node("Transpose", ["Y"], ["Yt"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Yt", "shape"], ["X1"]),
        helper.make_node("LSTM", ["X1", "W1", "R1"], ["Y1"], name="/lstm/LSTM_1", hidden_size=4)])
    onnx.save(model, "m.onnx")
    one_line_error(run("inspect", "--no-stats", "m.onnx"), "'shape'", "external data")


def test_onnx_external_weight_is_not_read(in_checkout):
    model = lstm_onnx()
    _external(model.graph.initializer[0])
    model.graph.initializer[0].ClearField("float_data")
    onnx.save(model, "m.onnx")
    one_line_error(run("inspect", "m.onnx"), "'W'", "external data")


@pytest.mark.parametrize("case", ["raw-data-short", "huge-dims", "negative-dim", "dims-past-limit",
                                  "unknown-data-type", "typed-values-short"])
def test_onnx_damaged_tensor_is_one_line(tmp_path, case):
    model = lstm_onnx()
    w = model.graph.initializer[0]
    if case == "raw-data-short":
        w.raw_data = w.raw_data[:-4]
    elif case == "huge-dims":
        w.ClearField("dims")
        w.dims.extend([1, 1 << 20, 1 << 20])  # 4 TiB declared in 192 bytes
    elif case == "negative-dim":
        w.dims[1] = -16
    elif case == "dims-past-limit":
        w.dims[2] = 1 << 62
    elif case == "unknown-data-type":
        w.data_type = 99
    elif case == "typed-values-short":
        values = numpy_helper.to_array(w).ravel()[:-1]
        w.ClearField("raw_data")
        w.float_data.extend(values.tolist())
    path = tmp_path / f"{case}.onnx"
    path.write_bytes(model.SerializeToString())
    one_line_error(run("inspect", path), "'W'")


# ---------------------------------------------------------------------------------------------------------------
# safetensors, npz, HDF5: shapes whose element count overflows int64

def safetensors_file(path: Path, entries: dict) -> Path:
    """The safetensors layout (8-byte header length, JSON header, data) with a hostile header."""
    header = json.dumps(entries).encode()
    data_end = max((e["data_offsets"][1] for e in entries.values() if isinstance(e, dict)), default=0)
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\x00" * data_end)
    return path


@pytest.mark.parametrize("case,entry", [
    ("shape-1e30-f32", {"dtype": "F32", "shape": [10 ** 30], "data_offsets": [0, 4]}),
    ("shape-1e30-unknown-dtype", {"dtype": "F8_E4M3", "shape": [10 ** 30], "data_offsets": [0, 4]}),
    ("wraps-to-zero", {"dtype": "F32", "shape": [1 << 32, 1 << 32], "data_offsets": [0, 0]}),
    ("empty-but-huge-dim", {"dtype": "F32", "shape": [0, 1 << 62], "data_offsets": [0, 0]}),
])
def test_safetensors_overflowing_shape_is_one_line(tmp_path, case, entry):
    path = safetensors_file(tmp_path / f"{case}.safetensors", {"lstm.weight_ih_l0": entry})
    one_line_error(run("inspect", "--no-stats", path), "lstm.weight_ih_l0")


def npz_with_header(path: Path, shape: tuple) -> Path:
    """An .npz whose one member's .npy header (numpy's own writer) declares `shape` over no data."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("lstm/kernel.npy", header.getvalue())
    return path


@pytest.mark.parametrize("shape", [(1 << 32, 1 << 32), (0, 1 << 62), (10 ** 30,)], ids=str)
def test_npz_overflowing_shape_is_one_line(tmp_path, shape):
    path = npz_with_header(tmp_path / "m.npz", shape)
    one_line_error(run("inspect", "--no-stats", path), "lstm/kernel.npy")


def huge_h5_kernel(path: Path) -> Path:
    """tf-keras's k2_classic.h5 with dense's kernel replaced by an empty chunked (2**32, 2**31) float32 dataset:
    2**63 elements, which numpy's int64 product wrapped negative (params -9,223,372,036,854,710,127)."""
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense/dense"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", shape=(1 << 32, 1 << 31), dtype="f4", chunks=(1, 1))
    return path


@pytest.mark.parametrize("stats", [True, False], ids=["stats", "no-stats"])
def test_h5_kernel_of_2_to_the_63_elements_is_refused(tmp_path, stats):
    path = huge_h5_kernel(tmp_path / "big.h5")
    result = run("inspect", *([] if stats else ["--no-stats"]), path)
    one_line_error(result, "kernel:0", "declares 36,893,488,147,419,103,232 bytes")


def test_tensor_size_is_exact():
    tensor = Tensor(name="kernel", shape=(1 << 32, 1 << 32), dtype="float32", source="k", _load=lambda: None)
    assert tensor.size == 1 << 64 == element_count((1 << 32, 1 << 32))


# ---------------------------------------------------------------------------------------------------------------
# check: one bad file never stops the others

@pytest.fixture
def mixed_dir(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(FIXTURES / "k3_lstm_init.keras", root / "good.keras")
    safetensors_file(root / "overflow.safetensors",
                     {"lstm.weight_ih_l0": {"dtype": "F32", "shape": [10 ** 30], "data_offsets": [0, 4]}})
    huge_h5_kernel(root / "huge.h5")
    model = lstm_onnx()
    model.graph.initializer[0].raw_data = model.graph.initializer[0].raw_data[:-4]
    (root / "short.onnx").write_bytes(model.SerializeToString())
    return root


@pytest.mark.parametrize("fmt", ["human", "json", "junit", "github", "sarif"])
def test_check_reports_every_file_whatever_the_others_hold(mixed_dir, fmt):
    result = run("check", mixed_dir, "--format", fmt)
    assert result.exit_code == 2, result.output
    out = result.stdout
    shown = ("overflow.safetensors", "huge.h5", "short.onnx") + (("good.keras",) if fmt in ("human", "json", "junit")
                                                                  else ())  # github / sarif list problems only
    for name in shown:
        assert name in out, (name, out)
    if fmt == "json":
        files = {Path(f["file"]).name: f for f in json.loads(out)["files"]}
        assert files["good.keras"]["status"] != "error"
        assert all(files[n]["status"] == "error" for n in ("overflow.safetensors", "huge.h5", "short.onnx"))
        assert not any("internal error" in (f["error"] or "") for f in files.values())
    elif fmt == "junit":
        ET.fromstring(out.encode())
    elif fmt == "human":
        assert out.count("ERROR") == 3 and "internal error" not in out


def test_h5_empty_kernel_with_a_huge_dimension_is_refused(tmp_path):
    """(0, 2**50): zero elements, so no byte bound fires, but no real array has such a dimension."""
    path = tmp_path / "empty.h5"
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense/dense"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", shape=(0, 1 << 50), dtype="f4", chunks=(1, 1 << 10), maxshape=(None, 1 << 50))
    one_line_error(run("inspect", "--no-stats", path), "kernel:0", "beyond any real array")

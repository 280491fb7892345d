"""ONNX files are read without holding them (readers.onnx_wire): onnx parses a skeleton of the file, every large
tensor payload left in it and read on demand — mapped a row chunk at a time like the other formats.

Proofs: the skeleton with its payloads put back is byte for byte the file onnx parses (real torch.onnx.export files,
and hand-built ones — labelled — for the storage forms torch does not write: float_data, double_data, tensors in
Constant attributes and If branches); the walker's own refusals of broken wire formats are one line, exit 2; and a
torch ``nn.LSTM(2048, 2048)`` / ``nn.GRU(2048, 2048)`` exported by torch.onnx.export (128 / 96 MiB) passes
``inspect --json``, ``check``, ``export`` and ``diff`` under ``--max-memory 100M``, its gates equal to the state
dict's and its forward equal to onnxruntime's.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from hostile import one_line_error, run
from onnx import TensorProto, helper, numpy_helper

from lstm_inspect.readers import onnx_file, onnx_fold, onnx_wire
from conftest import assert_json_block_stats
from test_bounded_memory import run_cli


def test_the_walked_fields_are_onnx_protos():
    """The field numbers the walker follows are the installed onnx.proto's."""
    messages = {"model": onnx.ModelProto, "training": onnx.TrainingInfoProto, "function": onnx.FunctionProto,
                "graph": onnx.GraphProto, "node": onnx.NodeProto, "attribute": onnx.AttributeProto,
                "sparse": onnx.SparseTensorProto, "tensor": onnx.TensorProto}
    kinds = {"GraphProto": "graph", "NodeProto": "node", "AttributeProto": "attribute", "TensorProto": "tensor",
             "SparseTensorProto": "sparse", "TrainingInfoProto": "training", "FunctionProto": "function"}
    for kind, message in messages.items():
        expected = {f.number: kinds[f.message_type.name] for f in message.DESCRIPTOR.fields
                    if f.message_type is not None and f.message_type.name in kinds}
        assert onnx_wire.SCHEMA[kind] == expected, kind
    fields = onnx.TensorProto.DESCRIPTOR.fields_by_name
    assert (fields["data_type"].number, fields["float_data"].number, fields["raw_data"].number,
            fields["double_data"].number) == (onnx_wire.DATA_TYPE, onnx_wire.FLOAT_DATA, onnx_wire.RAW_DATA,
                                              onnx_wire.DOUBLE_DATA)


def _restored(path: Path) -> tuple[onnx.ModelProto, onnx_wire.Skeleton]:
    """The skeleton parsed by onnx, each marked payload put back (as ``raw_data``) from the file."""
    fd = os.open(path, os.O_RDONLY)
    try:
        proto, walked = onnx_file.load_skeleton(fd, str(path))

        def put_back(tensor):
            payload = walked.payload(tensor.raw_data) if tensor.HasField("raw_data") else None
            if payload:
                tensor.raw_data = os.pread(fd, payload[1], payload[0])

        for graph in onnx_fold.all_graphs(proto.graph):
            for tensor in graph.initializer:
                put_back(tensor)
            for node in graph.node:
                for attribute in node.attribute:
                    if attribute.HasField("t"):
                        put_back(attribute.t)
                    for tensor in attribute.tensors:
                        put_back(tensor)
    finally:
        os.close(fd)
    return proto, walked


def _export(module, path: Path, x) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's batch-size advice
        torch.onnx.export(module, (x,), str(path), dynamo=False, input_names=["x"])


def test_skeleton_and_payloads_are_the_torch_export(tmp_path):
    torch.manual_seed(3)
    _export(torch.nn.LSTM(40, 64, num_layers=2, bidirectional=True, batch_first=True).eval(), tmp_path / "m.onnx",
            torch.randn(1, 5, 40))
    proto, walked = _restored(tmp_path / "m.onnx")
    assert len(walked.payloads) >= 4 and len(walked.data) < 20_000  # W and R of each layer left in the file
    assert proto.SerializeToString() == onnx.load(str(tmp_path / "m.onnx")).SerializeToString()


def _handbuilt_storage_forms(path: Path) -> dict[str, np.ndarray]:
    """Hand-built (helper.make_tensor): an LSTM whose W is float_data, R double_data cast to float, B raw_data in a
    Constant node, and an If branch holding an initializer of its own."""
    rng = np.random.default_rng(1)
    hidden, inputs = 128, 24
    values = {"W": rng.normal(size=(1, 4 * hidden, inputs)).astype(np.float32),
              "R64": rng.normal(size=(1, 4 * hidden, hidden)),
              "B": rng.normal(size=(1, 8 * hidden)).astype(np.float32),
              "deep": rng.normal(size=(64, 64)).astype(np.float32)}
    w = helper.make_tensor("W", TensorProto.FLOAT, values["W"].shape, values["W"].ravel().tolist())
    r64 = helper.make_tensor("R64", TensorProto.DOUBLE, values["R64"].shape, values["R64"].ravel().tolist())
    b = numpy_helper.from_array(values["B"], "Bvalue")
    branch = helper.make_graph([helper.make_node("Identity", ["deep"], ["deep_out"])], "then", [],
                               [helper.make_tensor_value_info("deep_out", TensorProto.FLOAT, None)],
                               initializer=[numpy_helper.from_array(values["deep"], "deep")])
    nodes = [helper.make_node("Cast", ["R64"], ["R"], to=TensorProto.FLOAT),
             helper.make_node("Constant", [], ["B"], value=b),
             helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y"], hidden_size=hidden, name="lstm"),
             helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [5, 1, inputs]),
                                           helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[w, r64])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)]), str(path))
    return values


def test_skeleton_of_every_storage_form(tmp_path):
    values = _handbuilt_storage_forms(tmp_path / "h.onnx")
    proto, walked = _restored(tmp_path / "h.onnx")
    assert sorted(field for _, _, field in walked.payloads) == ["double_data", "float_data", "raw_data",
                                                                "raw_data", "raw_data"]
    original = onnx.load(str(tmp_path / "h.onnx"))
    # float_data / double_data come back as raw_data: the same values
    for ours, theirs in zip(proto.graph.initializer, original.graph.initializer):
        np.testing.assert_array_equal(numpy_helper.to_array(ours), numpy_helper.to_array(theirs))
    del proto.graph.initializer[:], original.graph.initializer[:]
    assert proto.SerializeToString() == original.SerializeToString()
    from lstm_inspect import open_model

    with open_model(tmp_path / "h.onnx") as model:
        (leaf,) = [layer for layer in model.layers if layer.class_name == "OnnxLSTM"]
        weights = {t.name: t for t in leaf.weights}
        np.testing.assert_array_equal(weights["W"].read(), values["W"][0])
        np.testing.assert_array_equal(weights["R"].read(), values["R64"][0].astype(np.float32))  # folded Cast
        np.testing.assert_array_equal(weights["B"].read(), values["B"][0])
        # W can be mapped (above 1 MiB it would be); a folded value is computed, never mapped
        assert weights["W"]._mapped is not None and weights["R"]._mapped is None


# ---------------------------------------------------------------- hostile wire formats (hand-built)

def _small_export(tmp_path: Path) -> bytes:
    torch.manual_seed(4)
    _export(torch.nn.GRU(40, 48, batch_first=True).eval(), tmp_path / "base.onnx", torch.randn(1, 3, 40))
    return (tmp_path / "base.onnx").read_bytes()


def _graph_field(data: bytes) -> tuple[int, int]:
    """(start of ModelProto.graph's value, its length) in a serialized model."""
    pos = 0
    while True:
        key, pos = _varint(data, pos)
        if key & 7 == 0:
            _, pos = _varint(data, pos)
            continue
        length, pos = _varint(data, pos)
        if key >> 3 == 7:
            return pos, length
        pos += length


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


@pytest.mark.parametrize("damage, needle", [
    ("truncated", "past the end"),
    ("length_past_end", "past the end"),
    ("long_varint", "varint longer than 10 bytes"),
    ("group", "wire type 3"),
    ("attribute_t_twice", "twice"),
    ("odd_float_data", "not whole 4-byte values"),
])
def test_broken_wire_format_is_one_line(tmp_path, damage, needle):
    data = _small_export(tmp_path)
    start, length = _graph_field(data)
    graph = data[start:start + length]
    if damage == "truncated":  # the file ends inside W's payload
        bad = data[:len(data) - 3000]
    elif damage == "length_past_end":  # the graph claims 1 MiB more than the file holds
        bad = data[:start - len(onnx_wire._varint_bytes(length))] + onnx_wire._varint_bytes(length + (1 << 20)) \
            + data[start:]
    elif damage == "long_varint":  # a graph field whose tag never ends
        bad = data[:start] + b"\xff" * 12 + data[start:]
        bad = _with_graph(data, b"\xff" * 12 + graph)
    elif damage == "group":  # a start-group field (wire type 3) inside the graph
        bad = _with_graph(data, b"\x1b" + graph)
    elif damage == "attribute_t_twice":  # a node whose tensor attribute holds t twice (protobuf would merge them)
        tensor = numpy_helper.from_array(np.ones(2048, np.float32)).SerializeToString()
        t_field = b"\x2a" + onnx_wire._varint_bytes(len(tensor)) + tensor
        attribute = b"\x0a\x05value" + t_field + t_field + b"\xa0\x01\x04"  # name, t, t, type=TENSOR
        node = b"\x12\x01c\x22\x08Constant\x2a" + onnx_wire._varint_bytes(len(attribute)) + attribute
        bad = _with_graph(data, b"\x0a" + onnx_wire._varint_bytes(len(node)) + node + graph)
    else:  # a FLOAT initializer whose one packed float_data run is not whole floats
        tensor = b"\x08\x03\x10\x01\x22" + onnx_wire._varint_bytes(8191) + b"\0" * 8191 + b"\x42\x03odd"
        bad = _with_graph(data, b"\x2a" + onnx_wire._varint_bytes(len(tensor)) + tensor + graph)
    (tmp_path / "bad.onnx").write_bytes(bad)
    line = one_line_error(run("inspect", tmp_path / "bad.onnx"), "bad.onnx", needle)
    assert "Traceback" not in line


def _with_graph(data: bytes, graph: bytes) -> bytes:
    start, length = _graph_field(data)
    head = data[:start - len(onnx_wire._varint_bytes(length))]
    return head + onnx_wire._varint_bytes(len(graph)) + graph + data[start + length:]


def test_subgraphs_nested_too_deep_are_refused_by_the_walker(tmp_path):
    """Hand-built: If inside If, 20 deep, each level padded past the walker's copy-whole size (so it is walked)."""
    pad = numpy_helper.from_array(np.zeros(2048, np.float32), "pad")
    body = helper.make_graph([helper.make_node("Identity", ["pad"], ["out"])], "leaf", [],
                             [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], initializer=[pad])
    empty = helper.make_graph([], "empty", [], [])
    for level in range(20):  # one copy of the body per level (both branches would double the file each level)
        body = helper.make_graph([helper.make_node("If", ["c"], ["out"], then_branch=body, else_branch=empty)],
                                 f"level{level}", [], [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)])
    model = helper.make_model(body)
    (tmp_path / "deep.onnx").write_bytes(model.SerializeToString())
    one_line_error(run("inspect", tmp_path / "deep.onnx"), "deep.onnx", "nested deeper than")


def test_a_marker_in_the_file_is_only_bytes(tmp_path):
    """Hand-built: a small tensor whose 24 bytes are shaped like a marker (index 0 after a nonce of zeros) next to a
    large tensor left in the file: its value is its own bytes (a read's nonce is random: a file cannot name one)."""
    forged = np.frombuffer(b"\0" * onnx_wire.NONCE_BYTES + (0).to_bytes(8, "little"), np.float32).copy()
    large = np.arange(4096, dtype=np.float32)
    graph = helper.make_graph([helper.make_node("Add", ["x", "small"], ["a"], name="add"),
                               helper.make_node("Mul", ["a", "large"], ["y"], name="mul")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4096])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(forged, "small"),
                                           numpy_helper.from_array(large, "large")])
    onnx.save(helper.make_model(graph), str(tmp_path / "m.onnx"))
    from lstm_inspect import open_model

    with open_model(tmp_path / "m.onnx") as model:
        weights = {t.name: t for layer in model.layers for t in layer.weights}
        np.testing.assert_array_equal(weights["small"].read(), forged)
        np.testing.assert_array_equal(weights["large"].read(), large)


# ---------------------------------------------------------------- a 128 MiB export under --max-memory 100M

@pytest.fixture(scope="module")
def big(tmp_path_factory) -> dict[str, Path]:
    """torch ``nn.LSTM(2048, 2048)`` and ``nn.GRU(2048, 2048)`` (values from N(0, 0.05)) exported by
    torch.onnx.export (the TorchScript exporter, constant folding: W, R, B are initializers), with their state
    dicts as .safetensors."""
    from safetensors.torch import save_file

    out = tmp_path_factory.mktemp("onnxbig")
    torch.manual_seed(14)
    for cls in (torch.nn.LSTM, torch.nn.GRU):
        module = cls(2048, 2048, batch_first=True).eval()
        with torch.no_grad():
            for parameter in module.parameters():
                parameter.normal_(0, 0.05)
        name = cls.__name__.lower()
        _export(module, out / f"{name}.onnx", torch.randn(1, 3, 2048))
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(out / f"{name}.safetensors"))
    return {"lstm": out / "lstm.onnx", "gru": out / "gru.onnx", "lstm_state": out / "lstm.safetensors",
            "gru_state": out / "gru.safetensors"}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("command", ["json", "check", "export", "diff"])
def test_a_large_export_under_a_small_limit(big, kind, command, tmp_path):
    """The 64 MiB (LSTM) / 48 MiB (GRU) W and R are never whole in memory: onnx.load alone held the 128 MiB file
    and failed under this limit."""
    path = str(big[kind])
    args = {"json": ["inspect", "--json", path], "check": ["check", "--format", "json", path],
            "export": ["export", path, "-o", str(tmp_path / "e.npz")],
            "diff": ["diff", "--json", str(big[f"{kind}_state"]), path]}[command]
    result, peak = run_cli("--max-memory", "100M", *args)
    assert result.returncode == 0, result.stderr
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    from safetensors.numpy import load_file

    state = load_file(str(big[f"{kind}_state"]))
    hidden = 2048
    if command == "json":  # torch's f gate (rows H..2H of weight_hh for both) against the one-pass statistics
        assert_json_block_stats(result.stdout, "U_f" if kind == "lstm" else "U_z",
                                state["weight_hh_l0"][hidden:2 * hidden])
    if command == "check":
        assert json.loads(result.stdout)["summary"]["passed"] == 1
    if command == "export":
        with np.load(tmp_path / "e.npz") as exported:
            key = next(k for k in exported.files if k.endswith("W_c" if kind == "lstm" else "W_h"))
            np.testing.assert_array_equal(exported[key], state["weight_ih_l0"][2 * hidden:3 * hidden].T)
    if command == "diff":  # every gate block of the state dict against the file's W, R, B
        report = json.loads(result.stdout)
        assert report["identical"] and report["summary"]["blocks_compared"] == 12  # the GRU: its two biases too


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_large_export_runs_like_onnxruntime(big, kind, tmp_path):
    import onnxruntime as ort

    x = np.random.default_rng(5).normal(size=(1, 3, 2048)).astype(np.float32)  # the export's fixed shape
    session = ort.InferenceSession(str(big[kind]), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"x": x})[0]
    np.save(tmp_path / "x.npy", x)
    result = run("--no-isolation", "forward", big[kind], "--input", tmp_path / "x.npy", "-o", tmp_path / "o.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "o.npz") as data:
        ours = data[f"{kind}/Y"]
    # Y is (seq, directions, batch, hidden); torch's export squeezes and transposes it to (batch, seq, hidden)
    np.testing.assert_allclose(ours[:, 0].transpose(1, 0, 2), theirs, rtol=0, atol=1e-4)

"""ONNX recurrent nodes whose W / R / B are computed from initializers by data movement (Slice / Concat / Unsqueeze...,
as torch.onnx.export writes them without constant folding, and as older torch versions did at opset 9) read as if
they were initializers (`readers/onnx_fold.py`).

Proofs against the real frameworks: the fixtures in tests/fixtures/onnx_fold/ are torch.onnx.export's own files
(`make_onnx_fold.py`); their gates equal the torch module's state dict block for block, forward equals onnxruntime
running the file's whole graph (which computes W / R / B itself), and every folding op equals onnxruntime on a
hand-built graph of that op alone.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import load_file
from safetensors.torch import save_file

import lstm_inspect
from conftest import run_cli
from lstm_inspect import open_model
from lstm_inspect.readers import onnx_fold

FIXTURES = Path(__file__).parent / "fixtures" / "onnx_fold"
#: fixture -> (module class, leaves, gate blocks in the state dict + the Linear's weight and bias)
EXPECTED = {
    "lstm_bidi2_op9": ("onnx.LSTM", ["l0", "l0_reverse", "l1", "l1_reverse"], 48 + 2),
    "gru_op14": ("onnx.GRU", ["l0"], 12 + 2),
    "rnn_bidi_op17": ("onnx.RNN", ["l0", "l0_reverse"], 6 + 2),
    "lstm2_op11": ("onnx.LSTM", ["l0", "l1"], 24 + 2),
}


def computed_inputs(path: Path) -> list[str]:
    """The recurrent nodes' W / R / B names that are not initializers (what the fold has to compute)."""
    graph = onnx.load(str(path)).graph
    stored = {init.name for init in graph.initializer}
    return [name for node in graph.node if node.op_type in ("LSTM", "GRU", "RNN")
            for name in node.input[1:4] if name and name not in stored]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_the_unfolded_form(name):
    """The writer really computed W / R / B (else these tests would prove nothing new)."""
    assert len(computed_inputs(FIXTURES / f"{name}.onnx")) >= 3


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_folded_gates_equal_the_state_dict(name, capsys):
    class_name, leaves, blocks = EXPECTED[name]
    onnx_path, state = FIXTURES / f"{name}.onnx", FIXTURES / f"{name}.safetensors"
    with open_model(onnx_path) as model:
        (module,) = [layer for layer in model.root.children if layer.class_name == class_name]
        assert module.key == "rnn" and [leaf.name for leaf in module.children] == leaves
        assert model.total_params == sum(a.size for a in load_file(str(state)).values())
        assert not model.warnings
    assert run_cli(["diff", str(state), str(onnx_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["identical"] and report["summary"]["blocks_compared"] == blocks, report["summary"]
    assert not report["added"] and not report["removed"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_finds_nothing(name, capsys):
    """No `config-mismatch` (the old reader warned that W / R were not initializers), no other finding."""
    code = run_cli(["check", str(FIXTURES / f"{name}.onnx"), "--format", "json", "--no-progress"])
    (item,) = json.loads(capsys.readouterr().out)["files"]
    assert code == 0 and item["findings"] == [], item


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_forward_equals_onnxruntime_on_the_whole_graph(name, tmp_path):
    """onnxruntime runs the file itself (computing W / R / B from the initializers); forward runs what we folded."""
    proto = onnx.load(str(FIXTURES / f"{name}.onnx"))
    nodes = [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU", "RNN")]
    for node in nodes:
        for output in node.output:
            if output:
                proto.graph.output.append(helper.make_tensor_value_info(output, TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).normal(size=(3, 6, 3))  # another batch and length than the export's
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x.astype(np.float32)})))
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["--no-isolation", "forward", str(FIXTURES / f"{name}.onnx"), "--input", str(tmp_path / "x.npy"),
                    "-o", str(tmp_path / "o.npz")]) == 0
    with np.load(tmp_path / "o.npz") as data:
        ours = {k: data[k] for k in data.files}
    compared = 0
    for node in nodes:
        short = node.name.rsplit("/", 1)[-1]
        for output, role in zip(node.output, ("Y", "Y_h", "Y_c")):
            if output:
                key = f"rnn/{short}/{role}" if len(nodes) > 1 else f"rnn/{role}"
                np.testing.assert_allclose(ours[key], theirs[output], rtol=0, atol=1e-5, err_msg=key)
                compared += 1
    assert compared >= 2


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_verify_passes(name):
    result = lstm_inspect.verify(FIXTURES / f"{name}.onnx")
    assert result.ok, [(d.key, d.max_abs) for d in result.diffs if not d.ok]


class Tagger(torch.nn.Module):
    def __init__(self, cell: type) -> None:
        super().__init__()
        self.rnn = cell(3, 4, num_layers=2, bidirectional=True, batch_first=True)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize("opset", [7, 8, 9, 10, 12, 13, 15, 16, 17])
@pytest.mark.parametrize("cell", [torch.nn.LSTM, torch.nn.GRU, torch.nn.RNN])
def test_every_opset_torch_writes_unfolded(cell, opset, tmp_path, capsys):
    """torch 2.13 at each opset, constant folding off (written now, not committed): the gates equal the state dict,
    and forward equals the torch module itself (opsets 7 / 8 use ConstantFill, which onnxruntime no longer runs)."""
    torch.manual_seed(opset)
    model = Tagger(cell).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(2, 5, 3),), str(tmp_path / "m.onnx"), dynamo=False,
                          opset_version=opset, do_constant_folding=False, input_names=["x"])
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "m.safetensors"))
    assert computed_inputs(tmp_path / "m.onnx")
    assert run_cli(["diff", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    per_leaf = {torch.nn.LSTM: 12, torch.nn.GRU: 12, torch.nn.RNN: 3}[cell]  # as diff pairs them (LSTM: b_ih + b_hh)
    assert report["identical"] and report["summary"]["blocks_compared"] == 4 * per_leaf
    x = np.random.default_rng(opset).normal(size=(3, 7, 3))
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["--no-isolation", "forward", str(tmp_path / "m.onnx"), "--input", str(tmp_path / "x.npy"),
                    "-o", str(tmp_path / "o.npz"), "--float64"]) == 0
    with np.load(tmp_path / "o.npz") as data, torch.no_grad():
        y = data[f"rnn/{cell.__name__}_1/Y"]  # the last layer's node: (seq, directions, batch, hidden)
        theirs = model.double()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y.transpose(2, 0, 1, 3).reshape(theirs.shape), theirs, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- each folding op against onnxruntime
# Hand-built graphs (labelled so): one op on constants, its result a graph output, evaluated by onnxruntime and by
# onnx_fold; they must be equal bit for bit.

RNG = np.random.default_rng(0)
DATA = RNG.normal(size=(4, 6, 5)).astype(np.float32)


def i64(*values):
    return np.array(values, np.int64)


#: id -> (opset, op, input arrays (None: an absent optional input), attributes, number of outputs)
OPS = {
    "slice-attrs-op9": (9, "Slice", [DATA], {"starts": [1, -4], "ends": [3, 1000], "axes": [0, 1]}, 1),
    "slice-inputs-steps": (13, "Slice", [DATA, i64(5, -1), i64(-1000, 0), i64(1, 0), i64(-2, -1)], {}, 1),
    "slice-no-axes": (13, "Slice", [DATA, i64(1, 2), i64(3, 5)], {}, 1),
    "concat-negative-axis": (13, "Concat", [DATA, DATA[:, :, :2]], {"axis": -1}, 1),
    "unsqueeze-attrs-op11": (11, "Unsqueeze", [DATA], {"axes": [0, -1]}, 1),
    "unsqueeze-input-op13": (13, "Unsqueeze", [DATA, i64(1, 4)], {}, 1),
    "squeeze-attrs-op11": (11, "Squeeze", [DATA[:1, :, :1]], {"axes": [0, 2]}, 1),
    "squeeze-all-op13": (13, "Squeeze", [DATA[:1, :, :1]], {}, 1),
    "transpose-default": (13, "Transpose", [DATA], {}, 1),
    "transpose-perm": (13, "Transpose", [DATA], {"perm": [1, 0, 2]}, 1),
    "reshape-zero-minus-one": (13, "Reshape", [DATA, i64(0, -1)], {}, 1),
    "reshape-three": (13, "Reshape", [DATA, i64(2, -1, 5)], {}, 1),
    "gather-negative-axis1": (13, "Gather", [DATA, i64(-1, 0, 2)], {"axis": 1}, 1),
    "gather-scalar-index": (13, "Gather", [DATA, np.array(-2, np.int64)], {}, 1),
    "split-attr-op11": (11, "Split", [DATA], {"axis": 1, "split": [2, 4]}, 2),
    "split-input-op13": (13, "Split", [DATA, i64(1, 3, 1)], {"axis": 2}, 3),
    "split-equal": (13, "Split", [DATA], {"axis": 1}, 3),
    "split-num-outputs-op18": (18, "Split", [DATA], {"axis": 2, "num_outputs": 2}, 2),
    "cast-double": (13, "Cast", [DATA], {"to": TensorProto.DOUBLE}, 1),
    "cast-int-to-float": (13, "Cast", [i64(3, -7, 1 << 40)], {"to": TensorProto.FLOAT}, 1),
    "constant-of-shape": (13, "ConstantOfShape", [i64(2, 3)],
                          {"value": numpy_helper.from_array(np.array([1.5], np.float32))}, 1),
    "constant-of-shape-default": (13, "ConstantOfShape", [i64(3)], {}, 1),
    "shape-start-end-op15": (15, "Shape", [DATA], {"start": 1, "end": -1}, 1),
    "identity": (13, "Identity", [DATA], {}, 1),
}


def one_op_graph(opset, op, arrays, attributes, outputs):
    names = [f"in{i}" if a is not None else "" for i, a in enumerate(arrays)]
    while names and not names[-1]:
        names.pop()
    initializers = [numpy_helper.from_array(a, f"in{i}") for i, a in enumerate(arrays) if a is not None]
    out_names = [f"out{i}" for i in range(outputs)]
    node = helper.make_node(op, names, out_names, name="op", **attributes)
    graph = helper.make_graph([node], "one_op", [], [helper.make_empty_tensor_value_info(o) for o in out_names], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), out_names


@pytest.mark.parametrize("case", sorted(OPS))
def test_each_folding_op_equals_onnxruntime(case):
    opset, op, arrays, attributes, outputs = OPS[case]
    model, out_names = one_op_graph(opset, op, arrays, attributes, outputs)
    theirs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(out_names, {})
    sources = {init.name: init for init in model.graph.initializer}
    scope = onnx_fold.Scope(sources, {o: n for n in model.graph.node for o in n.output})
    for name, reference in zip(out_names, theirs):
        ours, used, _ = onnx_fold.fold(scope, name, lambda p, n: numpy_helper.to_array(p), "case.onnx", 1 << 20)
        assert ours.dtype == reference.dtype and ours.shape == reference.shape, (ours.shape, reference.shape)
        np.testing.assert_array_equal(ours, reference)
        assert used <= set(sources)


def test_a_graph_input_is_not_foldable():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    node = helper.make_node("Identity", ["x"], ["y"])
    scope = onnx_fold.Scope({}, {"y": node})
    with pytest.raises(onnx_fold.NotFoldable, match="graph input"):
        onnx_fold.fold(scope, "y", lambda p, n: None, "f.onnx", 1 << 20)
    assert x  # (the input is declared by the graph, never by a producer)


def test_arithmetic_is_not_folded():
    """Only data movement: an Add of two initializers is not a weight the file stores."""
    a = numpy_helper.from_array(np.ones(2, np.float32), "a")
    node = helper.make_node("Add", ["a", "a"], ["y"])
    scope = onnx_fold.Scope({"a": a}, {"y": node})
    with pytest.raises(onnx_fold.NotFoldable, match="Add"):
        onnx_fold.fold(scope, "y", lambda p, n: numpy_helper.to_array(p), "f.onnx", 1 << 20)

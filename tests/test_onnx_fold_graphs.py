"""Hand-built ONNX graphs (labelled so: built here with onnx.helper, not by an exporter) for what the torch fixtures
do not cover: hostile folds (a cycle, a huge shape, a deep chain, too many nodes) must give one line and exit 2
quickly; recurrent nodes and weights inside If branches are read (proven against onnxruntime running the If); a
Loop whose body is a recurrent cell is reported as not split, with no check finding."""
from __future__ import annotations

import json
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import run_cli
from lstm_inspect import open_model
from lstm_inspect.readers.onnx_file import LOOP_NOTE

HIDDEN, FEATURES = 3, 2
RNG = np.random.default_rng(7)
W = RNG.normal(size=(1, 4 * HIDDEN, FEATURES)).astype(np.float32)
R = RNG.normal(size=(1, 4 * HIDDEN, HIDDEN)).astype(np.float32)
B = RNG.normal(size=(1, 8 * HIDDEN)).astype(np.float32)


def lstm_model(nodes, initializers, w_name="W", opset=13, outer=None):
    """An LSTM node reading X (a graph input) and `w_name`, which `nodes` compute; R and B are initializers."""
    lstm = helper.make_node("LSTM", ["X", w_name, "R", "B"], ["Y", "Y_h"], name="lstm", hidden_size=HIDDEN)
    graph = helper.make_graph(list(nodes) + [lstm], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT,
                                                                                         [4, 1, FEATURES])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(R, "R"), numpy_helper.from_array(B, "B")] + list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def inspect_one_line(tmp_path, model, capsys, *words):
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    started = time.monotonic()
    code = run_cli(["inspect", str(path), "--json"])
    elapsed = time.monotonic() - started
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "m.onnx" in err, (code, err)
    assert all(word in err for word in words), err
    assert elapsed < 30
    return err


def test_cycle_is_one_line(tmp_path, capsys):
    nodes = [helper.make_node("Identity", ["b"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
             helper.make_node("Identity", ["a"], ["Wc"])]
    inspect_one_line(tmp_path, lstm_model(nodes, [], "Wc"), capsys, "cycle")


def test_self_loop_is_one_line(tmp_path, capsys):
    inspect_one_line(tmp_path, lstm_model([helper.make_node("Identity", ["Wc"], ["Wc"])], [], "Wc"), capsys, "cycle")


def test_huge_constant_of_shape_is_refused_before_allocating(tmp_path, capsys):
    shape = numpy_helper.from_array(np.array([1 << 20, 1 << 20, 1 << 10], np.int64), "shape")
    nodes = [helper.make_node("ConstantOfShape", ["shape"], ["Wc"])]
    inspect_one_line(tmp_path, lstm_model(nodes, [shape], "Wc"), capsys, "bytes", "not folded")


def test_impossible_dims_are_refused(tmp_path, capsys):
    shape = numpy_helper.from_array(np.array([-5, 3], np.int64), "shape")
    inspect_one_line(tmp_path, lstm_model([helper.make_node("ConstantOfShape", ["shape"], ["Wc"])], [shape], "Wc"),
                     capsys, "not a real shape")


def test_deep_chain_is_refused(tmp_path, capsys):
    nodes = [helper.make_node("Identity", ["W" if i == 0 else f"w{i - 1}"], [f"w{i}"]) for i in range(3000)]
    model = lstm_model(nodes, [numpy_helper.from_array(W, "W")], "w2999")
    inspect_one_line(tmp_path, model, capsys, "deeper than")


def test_too_many_nodes_are_refused(tmp_path, capsys):
    """25,000 distinct Identity nodes feeding one Concat: past the fold's node budget."""
    nodes = [helper.make_node("Identity", ["piece"], [f"p{i}"]) for i in range(25_000)]
    nodes.append(helper.make_node("Concat", [f"p{i}" for i in range(25_000)], ["Wc"], axis=0))
    piece = numpy_helper.from_array(np.zeros((1, 1, FEATURES), np.float32), "piece")
    inspect_one_line(tmp_path, lstm_model(nodes, [piece], "Wc"), capsys, "ONNX nodes")


def test_many_nodes_folding_one_wide_value_stay_bounded(tmp_path, capsys):
    """300 LSTM nodes whose W each needs the same 4,000 nodes: past the per-file total (100,000), one line."""
    nodes = [helper.make_node("Identity", ["piece"], [f"p{i}"]) for i in range(4000)]
    nodes.append(helper.make_node("Concat", [f"p{i}" for i in range(4000)], ["Wc"], axis=0))
    nodes += [helper.make_node("LSTM", ["X", "Wc", "R", "B"], [f"Y{i}"], name=f"lstm{i}", hidden_size=HIDDEN)
              for i in range(300)]
    piece = numpy_helper.from_array(np.zeros((1, 1, FEATURES), np.float32), "piece")
    inspect_one_line(tmp_path, lstm_model(nodes, [piece], "Wc"), capsys, "per file")


def test_repeated_concat_stays_within_the_byte_budget(tmp_path, capsys):
    """Each Concat doubles the last (a tiny file asking for 2^40 bytes): refused by the running total."""
    nodes = [helper.make_node("Concat", ["W" if i == 0 else f"c{i - 1}"] * 2, [f"c{i}"], axis=1) for i in range(40)]
    inspect_one_line(tmp_path, lstm_model(nodes, [numpy_helper.from_array(W, "W")], "c39"), capsys, "bytes")


@pytest.mark.parametrize("node,words", [
    (helper.make_node("Slice", ["W", "s", "s", "z", "z"], ["Wc"]), ("Slice", "step of 0")),
    (helper.make_node("Gather", ["W", "far"], ["Wc"]), ("Gather", "outside")),
    (helper.make_node("Reshape", ["W", "bad"], ["Wc"]), ("Reshape", "do not fill")),
    (helper.make_node("Transpose", ["W"], ["Wc"], perm=[0, 0, 1]), ("Transpose", "permutation")),
])
def test_malformed_operands_are_one_line(node, words, tmp_path, capsys):
    extra = [numpy_helper.from_array(W, "W"), numpy_helper.from_array(np.array([0], np.int64), "s"),
             numpy_helper.from_array(np.array([0], np.int64), "z"),
             numpy_helper.from_array(np.array([99], np.int64), "far"),
             numpy_helper.from_array(np.array([7, 7], np.int64), "bad")]
    inspect_one_line(tmp_path, lstm_model([node], extra, "Wc"), capsys, *words)


def test_a_weight_computed_from_a_graph_input_is_not_read_but_named(tmp_path, capsys):
    """Not foldable (it depends on X): the node is not read, and the warning says why."""
    nodes = [helper.make_node("Identity", ["X"], ["Wc"])]
    path = tmp_path / "m.onnx"
    path.write_bytes(lstm_model(nodes, [], "Wc").SerializeToString())
    with open_model(path) as model:
        assert not [layer for layer in model.layers if layer.class_name == "onnx.LSTM"]
        assert any("graph input" in w and "not read" in w for w in model.warnings), model.warnings


# ---------------------------------------------------------------- If branches and Loop bodies

def if_model():
    """An If whose then-branch holds an LSTM whose W is Unsqueeze(Slice-and-Concat(outer initializer)) with the
    branch's own Constants (as torch.onnx.export writes an LSTMCell inside a scripted branch), and whose else-branch
    holds a MatMul on another outer initializer."""
    stored = RNG.normal(size=(4 * HIDDEN, FEATURES)).astype(np.float32)  # rows in torch's i, f, g, o order
    consts = lambda name, *v: helper.make_node("Constant", [], [name], value=numpy_helper.from_array(  # noqa: E731
        np.array(v, np.int64), name))
    then_nodes = [consts("a0", 0), consts("e3", 3), consts("s9", 9), consts("e12", 12), consts("s3", 3),
                  consts("e9", 9), consts("ax", 0),
                  helper.make_node("Slice", ["w_torch", "a0", "e3", "ax"], ["i"]),
                  helper.make_node("Slice", ["w_torch", "s9", "e12", "ax"], ["o"]),
                  helper.make_node("Slice", ["w_torch", "s3", "e9", "ax"], ["fg"]),
                  helper.make_node("Concat", ["i", "o", "fg"], ["w_onnx"], axis=0),
                  helper.make_node("Unsqueeze", ["w_onnx", "ax"], ["Wc"]),
                  helper.make_node("LSTM", ["X", "Wc", "R", "B"], ["Y_then", "Yh_then"], name="branch_lstm",
                                   hidden_size=HIDDEN)]
    then_branch = helper.make_graph(then_nodes, "then", [], [helper.make_tensor_value_info("Y_then",
                                                                                           TensorProto.FLOAT, None)])
    else_branch = helper.make_graph([helper.make_node("MatMul", ["X", "dense"], ["mm"], name="else_dense"),
                                     helper.make_node("Unsqueeze", ["mm", "one"], ["Y_else"])],
                                    "else", [], [helper.make_tensor_value_info("Y_else", TensorProto.FLOAT, None)],
                                    [numpy_helper.from_array(np.array([1], np.int64), "one")])
    node = helper.make_node("If", ["cond"], ["Y"], then_branch=then_branch, else_branch=else_branch, name="if")
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 1, FEATURES]),
                      helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(stored, "w_torch"), numpy_helper.from_array(R, "R"),
         numpy_helper.from_array(B, "B"), numpy_helper.from_array(RNG.normal(size=(FEATURES, 5)).astype(np.float32),
                                                                  "dense")])
    # what the branch computes: ONNX's i, o, f, c order
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), \
        np.concatenate([stored[0:3], stored[9:12], stored[3:9]])


def test_lstm_inside_an_if_branch_reads_and_runs_as_onnxruntime(tmp_path, capsys):
    model, w_onnx = if_model()
    path = tmp_path / "if.onnx"
    path.write_bytes(model.SerializeToString())
    x = RNG.normal(size=(4, 1, FEATURES)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (theirs,) = session.run(None, {"X": x, "cond": np.array(True)})
    with open_model(path) as opened:
        assert {layer.key for layer in opened.root.children} == {"branch_lstm", "else_dense"}
        (leaf,) = [layer for layer in opened.layers if layer.class_name == "OnnxLSTM"]
        np.testing.assert_array_equal(leaf.weights[0].read(), w_onnx)
    np.save(tmp_path / "x.npy", x.transpose(1, 0, 2))
    assert run_cli(["--no-isolation", "forward", str(path), "--input", str(tmp_path / "x.npy"), "-o",
                    str(tmp_path / "o.npz"), "--layer", "branch_lstm"]) == 0
    with np.load(tmp_path / "o.npz") as got:
        np.testing.assert_allclose(got["branch_lstm/Y"], theirs, rtol=0, atol=1e-5)
    capsys.readouterr()
    assert run_cli(["check", str(path), "--format", "json", "--no-progress"]) == 0


def loop_model(cell_ops=True):
    """tf2onnx's lowering of a Keras RNN, in small: a Loop over the steps whose body multiplies the state by a
    kernel (an outer initializer) and applies Sigmoid; the trip count 120 is an int64 initializer."""
    body_nodes = [helper.make_node("MatMul", ["h_in", "kernel"], ["mm"], name="body_matmul"),
                  helper.make_node("Add", ["mm", "bias"], ["pre"], name="body_add"),
                  helper.make_node("Sigmoid" if cell_ops else "Relu", ["pre"], ["h_out"], name="body_act"),
                  helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    body = helper.make_graph(body_nodes, "body",
                             [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                              helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("h_in", TensorProto.FLOAT, [1, HIDDEN])],
                             [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                              helper.make_tensor_value_info("h_out", TensorProto.FLOAT, [1, HIDDEN])],
                             [numpy_helper.from_array(RNG.normal(size=HIDDEN).astype(np.float32), "bias")])
    loop = helper.make_node("Loop", ["steps", "true", "h0"], ["h_last"], body=body, name="while_loop")
    graph = helper.make_graph([loop], "g", [helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, HIDDEN])],
                              [helper.make_tensor_value_info("h_last", TensorProto.FLOAT, [1, HIDDEN])],
                              [numpy_helper.from_array(np.array(120, np.int64), "steps"),
                               numpy_helper.from_array(np.array(True), "true"),
                               numpy_helper.from_array(RNG.normal(size=(HIDDEN, HIDDEN)).astype(np.float32),
                                                       "kernel")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # a valid model
    return model


def test_a_recurrent_loop_is_reported_not_split_without_findings(tmp_path, capsys):
    path = tmp_path / "loop.onnx"
    path.write_bytes(loop_model().SerializeToString())
    assert run_cli(["inspect", str(path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w for w in report["warnings"] if LOOP_NOTE in w and "while_loop" in w], report["warnings"]
    names = {t["name"] for layer in report["layers"] for t in layer.get("weights", [])}
    assert {"kernel", "bias"} <= names and "steps" not in names  # the body's weights listed, the count is not
    assert run_cli(["check", str(path), "--format", "json", "--no-progress"]) == 0
    (item,) = json.loads(capsys.readouterr().out)["files"]
    assert item["findings"] == [], item["findings"]


def test_a_loop_without_a_cell_is_not_called_recurrent(tmp_path, capsys):
    path = tmp_path / "loop.onnx"
    path.write_bytes(loop_model(cell_ops=False).SerializeToString())
    with open_model(path) as model:
        assert not [w for w in model.warnings if LOOP_NOTE in w]


def test_subgraphs_nested_too_deep_are_refused(tmp_path, capsys):
    leaf = helper.make_graph([helper.make_node("Identity", ["X"], ["Z"])], "leaf", [],
                             [helper.make_tensor_value_info("Z", TensorProto.FLOAT, None)])
    inner = leaf
    for depth in range(20):  # (protobuf itself refuses to parse much deeper nesting)
        node = helper.make_node("If", ["cond"], [f"Z{depth}"], then_branch=inner, else_branch=leaf)
        inner = helper.make_graph([node], f"g{depth}", [], [helper.make_tensor_value_info(f"Z{depth}",
                                                                                          TensorProto.FLOAT, None)])
    graph = helper.make_graph(list(inner.node), "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("Z19", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    inspect_one_line(tmp_path, model, capsys, "nested deeper")

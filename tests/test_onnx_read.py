"""Reading ONNX models: graphs with one LSTM / GRU / RNN node are built here with onnx.helper (random, non-zero
W, R, B, P; every direction; both GRU forms; non-default activations), run by onnxruntime, saved, read back by
lstm-inspect and split into gate blocks; a plain numpy cell (tests/reference.py) fed with the blocks reproduces
onnxruntime's Y and Y_h. Also a round trip: a Keras file exported with --layout onnx, then read as ONNX."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import reference
from conftest import FIXTURES
from lstm_inspect import export_arrays, inspect, open_model
from lstm_inspect.cli import cli

import onnx  # noqa: E402  (the test extra installs onnx and onnxruntime: these tests must run)
import onnxruntime as ort  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
FAMILY = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}
# (case, operator, direction, extra attributes, with B, with P, (activation, recurrent activation) for the reference)
CASES = [
    ("lstm_fwd", "LSTM", "forward", {}, True, False, ("tanh", "sigmoid")),
    ("lstm_rev_peephole", "LSTM", "reverse", {}, True, True, ("tanh", "sigmoid")),
    ("lstm_bidi_peephole", "LSTM", "bidirectional", {}, True, True, ("tanh", "sigmoid")),
    ("lstm_nobias", "LSTM", "forward", {}, False, False, ("tanh", "sigmoid")),
    ("lstm_relu", "LSTM", "forward", {"activations": ["Sigmoid", "Relu", "Relu"]}, True, False, ("relu", "sigmoid")),
    ("gru_lbr1_bidi", "GRU", "bidirectional", {"linear_before_reset": 1}, True, False, ("tanh", "sigmoid")),
    ("gru_lbr0", "GRU", "forward", {"linear_before_reset": 0}, True, False, ("tanh", "sigmoid")),
    ("rnn_bidi", "RNN", "bidirectional", {}, True, False, ("tanh", None)),
    ("rnn_relu", "RNN", "forward", {"activations": ["Relu"]}, True, False, ("relu", None)),
]


def build(case, op, direction, attrs, with_b, with_p, path, inputs=3, hidden=4):
    rng = np.random.default_rng(sum(map(ord, case)))
    d = 2 if direction == "bidirectional" else 1
    g = GATES[op]
    arrays = {"W": rng.normal(0, 0.5, (d, g * hidden, inputs)), "R": rng.normal(0, 0.5, (d, g * hidden, hidden))}
    names = ["X", "W", "R"]
    if with_b or with_p:
        arrays["B"] = rng.normal(0, 0.5, (d, 2 * g * hidden))
        names.append("B" if with_b else "")
    if with_p:
        arrays["P"] = rng.normal(0, 0.5, (d, 3 * hidden))
        names += ["", "", "", "P"]
    if not with_b:
        arrays.pop("B", None)
        names[3:4] = [""]
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in arrays.items()]
    node = helper.make_node(op, names, ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else []), name=f"{case}_node", hidden_size=hidden, direction=direction,
                            **attrs)
    graph = helper.make_graph(
        [node], case, [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "N", inputs])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", d, "N", hidden]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, [d, "N", hidden])]
        + ([helper.make_tensor_value_info("Y_c", TensorProto.FLOAT, [d, "N", hidden])] if op == "LSTM" else []), inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    onnx.save(proto, path)
    return proto


@pytest.mark.parametrize("case,op,direction,attrs,with_b,with_p,acts", CASES, ids=[c[0] for c in CASES])
def test_onnx_nodes_are_split_and_reproduced(case, op, direction, attrs, with_b, with_p, acts, tmp_path):
    path = tmp_path / f"{case}.onnx"
    proto = build(case, op, direction, attrs, with_b, with_p, path)
    x = np.random.default_rng(7).normal(size=(6, 2, 3)).astype(np.float32)  # [T, N, in]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h = session.run(["Y", "Y_h"], {"X": x})
    with open_model(path) as model:
        assert model.kind == "onnx"
        (layer,) = model.root.children
        assert layer.class_name == f"onnx.{op}"
        assert [c.name for c in layer.children] == (["forward", "reverse"] if direction == "bidirectional" else [direction])
    arrays = export_arrays(path)
    act, rec = acts
    for d, leaf in enumerate(["forward", "reverse"] if direction == "bidirectional" else [direction]):
        prefix = f"{case}_node/{leaf}/"
        blocks = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
        assert ("p_i" in blocks) == with_p and ("b_" + ("i" if op == "LSTM" else "z" if op == "GRU" else "") in blocks
                                                or "b" in blocks) == with_b
        seq = reference.run(FAMILY[op], x.transpose(1, 0, 2), blocks, act=act, rec_act=rec or "sigmoid",
                            go_backwards=leaf == "reverse", reset_after=bool(attrs.get("linear_before_reset", 0)))
        if leaf == "reverse":
            seq = seq[:, ::-1]  # ONNX returns the reverse direction in input time order
        np.testing.assert_allclose(seq, y[:, d].transpose(1, 0, 2), rtol=RTOL, atol=ATOL, err_msg=f"{case} {leaf} Y")
        final = seq[:, 0] if leaf == "reverse" else seq[:, -1]
        np.testing.assert_allclose(final, y_h[d], rtol=RTOL, atol=ATOL, err_msg=f"{case} {leaf} Y_h")


def test_gru_forms_and_labels_in_the_report(tmp_path):
    path = tmp_path / "g.onnx"
    build("gru_lbr0", "GRU", "forward", {"linear_before_reset": 0}, True, False, path)
    report = inspect(path, stats=False)
    leaf = next(e for e in report["layers"] if e["path"] == "gru_lbr0_node/forward")
    assert leaf["recurrent"]["reset_after"] is False
    sources = {b["key"]: b["source"] for b in leaf["recurrent"]["blocks"]}
    assert sources["W_z"] == "W[0][0:4, :].T" and sources["rb_h"] == "B[0][20:24]"
    assert any("linear_before_reset=0" in n for n in leaf["recurrent"]["notes"])


def test_keras_export_read_back_as_onnx_matches_the_keras_blocks(tmp_path):
    """Keras -> `export --layout onnx` -> an ONNX file -> lstm-inspect: the blocks are Keras's own blocks again
    (b = Keras bias, rb = zeros), for an LSTM, a reset_after GRU and a Bidirectional."""
    for file, layer, node_path in [("k3_stacked.keras", "lstm_a", "lstm_a"), ("k2_gru_ra.h5", "gru", "gru"),
                                   ("k3_bidi_concat.keras", "bidi", "bidi")]:
        npz = tmp_path / "w.npz"
        assert CliRunner().invoke(cli, ["export", str(FIXTURES / file), "--layout", "onnx", "--layer", layer,
                                        "-o", str(npz)]).exit_code == 0
        with np.load(npz) as data:
            w, r, b = data[f"{node_path}/W"], data[f"{node_path}/R"], data[f"{node_path}/B"]
        op = "GRU" if "gru" in file else "LSTM"
        d = w.shape[0]
        inits = [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))]
        attrs = {"linear_before_reset": 1} if op == "GRU" else {}
        node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"], name="n", hidden_size=r.shape[2],
                                direction="bidirectional" if d == 2 else "forward", **attrs)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
        onnx_path = tmp_path / "m.onnx"
        onnx.save(helper.make_model(graph), onnx_path)
        theirs = export_arrays(onnx_path)
        ours = export_arrays(FIXTURES / file, layers=[layer])
        keras_leaves = list(dict.fromkeys(k.rsplit("/", 1)[0] for k in ours if "/W_" in k))  # forward first
        for leaf, keras_leaf in zip(["n/forward", "n/reverse"][:d], keras_leaves):
            for key, value in ours.items():
                if key.startswith(keras_leaf + "/") and key.rsplit("/", 1)[1].split("_")[0] in ("W", "U", "b", "rb"):
                    block = key.rsplit("/", 1)[1]
                    np.testing.assert_array_equal(theirs[f"{leaf}/{block}"], value, err_msg=f"{file} {key}")


def test_onnx_without_the_package_is_a_clear_message(tmp_path, monkeypatch):
    import sys
    path = tmp_path / "m.onnx"
    build("lstm_fwd", "LSTM", "forward", {}, True, False, path)
    monkeypatch.setitem(sys.modules, "onnx", None)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and "needs the onnx package" in result.output


def test_garbage_named_onnx_is_refused_in_one_line(tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\xff\xfe not protobuf at all" * 10)
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

"""tf.keras's `PeepholeLSTMCell` (tf.keras 2.x, `RNN(tf.keras.experimental.PeepholeLSTMCell(u))`), which no Keras
installable here can write: HAND-BUILT legacy .h5 files in its documented layout (an LSTMCell's kernel,
recurrent_kernel and bias, then `input_gate_peephole_weights`, `forget_gate_peephole_weights`,
`output_gate_peephole_weights`, each (u,)). tf-keras writes an RNN(LSTMCell) model and h5py turns it into a
PeepholeLSTMCell one.

Its math (i and f add p·c_(t-1), o adds p·c_t) is the same as TensorFlow's own TF1 `LSTMCell(use_peepholes=True)`,
so the weights come from a real TF1 peephole cell with `forget_bias=0` and the oracle is TensorFlow's dynamic_rnn
output: `lstm-inspect forward` on the hand-built file must reproduce it, and without the peepholes it must not."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from lstm_inspect import forward, open_model, split_gates
from lstm_inspect.cli import cli

IN, UNITS, STEPS = 3, 4, 6

TF1_ORACLE = textwrap.dedent("""
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1's rnn cells need tf-keras
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    tf1 = tf.compat.v1
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, %(steps)d, %(inputs)d)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        cell = tf1.nn.rnn_cell.LSTMCell(%(units)d, use_peepholes=True, forget_bias=0.0)
        inputs = tf1.placeholder(tf.float32, x.shape)
        seq, _ = tf1.nn.dynamic_rnn(cell, inputs, dtype=tf.float32)
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            weights = {}
            for var in tf1.global_variables():
                value = (rng.normal(size=var.shape.as_list()) * 0.5).astype(np.float32)
                var.load(value, session)
                weights[var.name.split("/")[-1].split(":")[0]] = value
            out = session.run(seq, {inputs: x})
    np.savez(sys.argv[1], x=x, out=out, **weights)
""") % {"steps": STEPS, "inputs": IN, "units": UNITS}

KERAS_WRITER = textwrap.dedent("""
    import os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import tf_keras as keras
    cell = keras.layers.LSTMCell(%(units)d, name="peephole_lstm_cell", recurrent_activation="sigmoid")
    model = keras.Sequential([keras.Input((%(steps)d, %(inputs)d)),
                              keras.layers.RNN(cell, return_sequences=True, name="rnn_peep")])
    model.save(sys.argv[1])
    model.save_weights(sys.argv[2])
""") % {"steps": STEPS, "inputs": IN, "units": UNITS}


def _keras_order(tf1_columns: np.ndarray) -> np.ndarray:
    """TF1 LSTMCell gates i, j, f, o -> Keras i, f, c (= j), o along the last axis."""
    i, j, f, o = np.split(tf1_columns, 4, axis=-1)
    return np.concatenate([i, f, j, o], axis=-1)


def _to_peephole_file(path, weights) -> None:
    """Rewrite tf-keras's RNN(LSTMCell) file as the RNN(PeepholeLSTMCell) tf.keras 2.x wrote (hand-built)."""
    kernel = _keras_order(weights["kernel"])
    arrays = {"kernel": kernel[:IN], "recurrent_kernel": kernel[IN:], "bias": _keras_order(weights["bias"]),
              "input_gate_peephole_weights": weights["w_i_diag"], "forget_gate_peephole_weights": weights["w_f_diag"],
              "output_gate_peephole_weights": weights["w_o_diag"]}
    with h5py.File(path, "r+") as f:
        if "model_config" in f.attrs:
            config = json.loads(f.attrs["model_config"])
            for layer in config["config"]["layers"]:
                if layer["class_name"] == "RNN":
                    layer["config"]["cell"]["class_name"] = "PeepholeLSTMCell"
            f.attrs["model_config"] = json.dumps(config)
        root = f["model_weights"] if "model_weights" in f else f
        group = root["rnn_peep"]
        names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
        scope = names[0].rsplit("/", 1)[0]
        for role, value in arrays.items():
            name = f"{scope}/{role}:0"
            if name in group:
                del group[name]
            group.create_dataset(name, data=value)
            if name not in names:
                names.append(name)
        group.attrs["weight_names"] = np.array([n.encode() for n in names])


@pytest.fixture(scope="module")
def peephole(tmp_path_factory):
    d = tmp_path_factory.mktemp("peephole")
    subprocess.run([sys.executable, "-c", TF1_ORACLE, str(d / "oracle.npz")], check=True)
    subprocess.run([sys.executable, "-c", KERAS_WRITER, str(d / "full.h5"), str(d / "weights.h5")], check=True)
    oracle = dict(np.load(d / "oracle.npz"))
    for name in ("full.h5", "weights.h5"):
        _to_peephole_file(d / name, oracle)
    return d, oracle


def test_peephole_cell_splits_into_gate_and_peephole_blocks(peephole):
    d, oracle = peephole
    for name in ("full.h5", "weights.h5"):
        with open_model(d / name) as model:
            cell = next(layer for layer in model.layers if layer.weight("input_gate_peephole_weights") is not None)
            blocks = split_gates(cell).arrays()
            np.testing.assert_array_equal(blocks["p_f"], oracle["w_f_diag"])
            np.testing.assert_array_equal(blocks["W_c"], oracle["kernel"][:IN, UNITS:2 * UNITS])  # TF1's j
            assert {k for k in blocks if k.startswith("p_")} == {"p_i", "p_f", "p_o"}
    with open_model(d / "full.h5") as model:
        assert [layer.class_name for layer in model.layers][-2:] == ["RNN", "PeepholeLSTMCell"]


def test_forward_reproduces_tensorflow_peephole_lstm(peephole):
    d, oracle = peephole
    out = forward(d / "full.h5", oracle["x"])
    np.testing.assert_allclose(out["__output__"], oracle["out"], rtol=1e-5, atol=1e-6)


def test_without_peepholes_the_outputs_differ(peephole, tmp_path):
    d, oracle = peephole
    silenced = {**oracle, "w_i_diag": np.zeros(UNITS), "w_f_diag": np.zeros(UNITS), "w_o_diag": np.zeros(UNITS)}
    path = tmp_path / "no_peep.h5"
    path.write_bytes((d / "full.h5").read_bytes())
    _to_peephole_file(path, silenced)
    assert np.abs(forward(path, oracle["x"])["__output__"] - oracle["out"]).max() > 1e-3


def test_inspect_and_export_show_the_peepholes(peephole, tmp_path):
    d, _ = peephole
    result = CliRunner().invoke(cli, ["inspect", str(d / "full.h5")])
    assert result.exit_code == 0 and "p_o" in result.output and "output_gate_peephole_weights" in result.output
    refused = CliRunner().invoke(cli, ["export", str(d / "full.h5"), "--layout", "torch", "-o", str(tmp_path / "t.npz")])
    assert refused.exit_code == 2 and "peephole" in refused.output


def test_onnx_export_with_p_runs_in_onnxruntime_like_tensorflow(peephole, tmp_path):
    """--layout onnx writes the peepholes as the LSTM operator's P [1, 3u] (order i, o, f)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    d, oracle = peephole
    out = tmp_path / "o.npz"
    result = CliRunner().invoke(cli, ["export", str(d / "full.h5"), "--layout", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        w, r, b, p = (data[f"rnn_peep/peephole_lstm_cell/{k}"] for k in "WRBP")  # cells export under their path
    assert p.shape == (1, 3 * UNITS)
    names = ["W", "R", "B", "", "", "", "P"]
    node = helper.make_node("LSTM", ["X"] + names, ["Y"], hidden_size=UNITS)
    graph = helper.make_graph(
        [node], "peephole", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [STEPS, 2, IN])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a.astype(np.float32), n) for a, n in ((w, "W"), (r, "R"), (b, "B"), (p, "P"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8  # what the installed onnxruntime reads
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"X": oracle["x"].transpose(1, 0, 2)})
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2), oracle["out"], rtol=1e-5, atol=1e-6)


def test_explain_writes_the_peephole_terms(peephole):
    d, _ = peephole
    result = CliRunner().invoke(cli, ["explain", str(d / "full.h5")])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "forget_gate_peephole_weights ⊙ c_(t-1)" in text and "output_gate_peephole_weights ⊙ c_t" in text

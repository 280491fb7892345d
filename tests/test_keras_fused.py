"""Proof of `export --layout keras --fused` for files from other frameworks: a real torch nn.LSTM / GRU / RNN (2
layers, uni- and bidirectional, saved as .safetensors / .pt) and ONNX LSTM / GRU nodes (built with onnx.helper, run
by onnxruntime) are exported to Keras's fused arrays; Keras 3 layers built as the export says, given them with
`set_weights`, reproduce torch's / onnxruntime's outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
import onnxruntime as ort

from lstm_inspect import export_arrays
from lstm_inspect.cli import cli

import keras  # noqa: E402  (the test extra installs Keras 3: these proofs must run)

L = keras.layers
ATOL = 1e-5
WORST = [0.0]


def close(ours, theirs, what):
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=1e-5, err_msg=what)


def keras_layer(family, arrays, key, bidirectional):
    """The Keras layer for one exported torch layer / ONNX node, weights set from the export."""
    cls = {"LSTM": L.LSTM, "GRU": L.GRU, "SimpleRNN": L.SimpleRNN}[family]
    sides = ("forward", "backward") if bidirectional else (None,)
    weights = []
    for side in sides:
        base = f"{key}/{side}" if side else key
        weights += [arrays[f"{base}/kernel"], arrays[f"{base}/recurrent_kernel"], arrays[f"{base}/bias"]]
    units = weights[1].shape[0]
    extra = {"reset_after": weights[2].ndim == 2} if family == "GRU" else {}
    layer = cls(units, return_sequences=True, **extra)
    layer = L.Bidirectional(layer) if bidirectional else layer
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    return layer


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bidi"])
@pytest.mark.parametrize("family,module,suffix", [("LSTM", torch.nn.LSTM, "safetensors"),
                                                  ("GRU", torch.nn.GRU, "pt"),
                                                  ("SimpleRNN", torch.nn.RNN, "safetensors")])
def test_torch_module_to_keras_layers(family, module, suffix, bidirectional, tmp_path):
    torch.manual_seed(0)
    net = module(3, 4, num_layers=2, bidirectional=bidirectional, batch_first=True)
    state = {f"enc.{k}": v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    path = tmp_path / f"m.{suffix}"
    if suffix == "pt":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file(state, str(path))
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(x))[0].numpy()
    result = CliRunner().invoke(cli, ["export", str(path), "--fused", "-o", str(tmp_path / "k.npz")])
    assert result.exit_code == 0, result.output
    assert f"keras.layers.{family}(units=4" in result.output
    if family == "GRU":
        assert "reset_after=True" in result.output
    arrays = export_arrays(path, fused=True)
    y = x
    for n in range(2):
        y = np.asarray(keras_layer(family, arrays, f"enc/l{n}", bidirectional)(y))
    close(y, expected, f"torch {family} bidirectional={bidirectional} as Keras layers")


def onnx_node(op, x, hidden, direction, rng, **attrs):
    gates = {"LSTM": 4, "GRU": 3}[op]
    d = 2 if direction == "bidirectional" else 1
    w = rng.normal(scale=0.5, size=(d, gates * hidden, x.shape[2])).astype(np.float32)
    r = rng.normal(scale=0.5, size=(d, gates * hidden, hidden)).astype(np.float32)
    b = rng.normal(scale=0.5, size=(d, 2 * gates * hidden)).astype(np.float32)
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"], hidden_size=hidden, direction=direction, **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(a, n) for a, n in ((w, "W"), (r, "R"), (b, "B"))])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


@pytest.mark.parametrize("op,attrs,direction", [
    ("LSTM", {}, "forward"), ("LSTM", {}, "bidirectional"),
    ("GRU", {"linear_before_reset": 1}, "forward"), ("GRU", {"linear_before_reset": 0}, "forward"),
    ("GRU", {"linear_before_reset": 0}, "bidirectional")])
def test_onnx_node_to_keras_layer(op, attrs, direction, tmp_path):
    rng = np.random.default_rng(2)
    x_bt = rng.normal(size=(2, 6, 3)).astype(np.float32)
    x = np.ascontiguousarray(x_bt.transpose(1, 0, 2))
    proto = onnx_node(op, x, 4, direction, rng, **attrs)
    path = tmp_path / "m.onnx"
    path.write_bytes(proto.SerializeToString())
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    expected = np.concatenate([y[:, d].transpose(1, 0, 2) for d in range(y.shape[1])], axis=-1)
    arrays = export_arrays(path, fused=True)
    node = next(k.split("/")[0] for k in arrays)
    ours = np.asarray(keras_layer(op, arrays, node, direction == "bidirectional")(x_bt))
    if op == "GRU":
        assert (arrays[f"{node}/{'forward/' if direction == 'bidirectional' else ''}bias"].ndim == 2) == \
            bool(attrs["linear_before_reset"])
    close(ours, expected, f"ONNX {op} {attrs} {direction} as a Keras layer")


@pytest.mark.parametrize("what,build,reason", [
    ("proj_size", lambda: torch.nn.LSTM(3, 4, proj_size=2), "projection"),
])
def test_what_keras_cannot_hold_is_refused(what, build, reason, tmp_path):
    from safetensors.torch import save_file
    save_file({f"enc.{k}": v.contiguous() for k, v in build().state_dict().items()}, str(tmp_path / "m.safetensors"))
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "m.safetensors"), "--fused", "-o",
                                      str(tmp_path / "k.npz")])
    assert result.exit_code == 2 and reason in result.output and "enc/l0" in result.output, result.output
    assert not (tmp_path / "k.npz").exists()


def test_onnx_clip_is_refused(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 2, 3)).astype(np.float32)
    proto = onnx_node("LSTM", x, 4, "forward", rng, clip=2.0)
    (tmp_path / "c.onnx").write_bytes(proto.SerializeToString())
    result = CliRunner().invoke(cli, ["export", str(tmp_path / "c.onnx"), "--fused", "-o", str(tmp_path / "k.npz")])
    assert result.exit_code == 2 and "clip" in result.output, result.output


@pytest.mark.parametrize("op,attrs", [("LSTM", {}), ("GRU", {"linear_before_reset": 1})])
def test_onnx_reverse_node_is_keras_go_backwards(op, attrs, tmp_path):
    """direction=reverse becomes go_backwards=True; Keras returns those outputs in reversed time order (output[:, 0]
    after reading x_T), ONNX in input order, so Keras's output is ONNX's Y flipped in time."""
    rng = np.random.default_rng(4)
    x_bt = rng.normal(size=(2, 6, 3)).astype(np.float32)
    x = np.ascontiguousarray(x_bt.transpose(1, 0, 2))
    path = tmp_path / "r.onnx"
    path.write_bytes(onnx_node(op, x, 4, "reverse", rng, **attrs).SerializeToString())
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    result = CliRunner().invoke(cli, ["export", str(path), "--fused", "-o", str(tmp_path / "k.npz")])
    assert result.exit_code == 0 and "go_backwards=True" in result.output, result.output
    arrays = export_arrays(path, fused=True)
    node = next(k.split("/")[0] for k in arrays)
    cls = {"LSTM": L.LSTM, "GRU": L.GRU}[op]
    layer = cls(4, return_sequences=True, go_backwards=True, **({"reset_after": True} if op == "GRU" else {}))
    layer.build((None, None, 3))
    layer.set_weights([arrays[f"{node}/kernel"], arrays[f"{node}/recurrent_kernel"], arrays[f"{node}/bias"]])
    close(np.asarray(layer(x_bt)), y[:, 0].transpose(1, 0, 2)[:, ::-1], f"ONNX reverse {op} as go_backwards")


def test_zz_report_worst():
    print(f"\nkeras --fused from torch / ONNX: largest difference {WORST[0]:.2e}")

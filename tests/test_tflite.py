"""TFLite flatbuffers written by tf.lite.TFLiteConverter (tests/fixtures/tf_formats/make_tf_formats.py) read without
TensorFlow: the fused UNIDIRECTIONAL_SEQUENCE_LSTM's per-gate operands become the Keras blocks (W_i ... b_o) and
equal the Keras model's own kernel slices (float) or lie within half a quantization step of them (dynamic-range
int8); those blocks run by a plain numpy LSTM (tests/reference.py) + the Dense reproduce the TFLite interpreter's
own output; a Bidirectional LSTM is two ops, the backward one between REVERSE_V2s; GRU and SimpleRNN become WHILE
loops, reported as such."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import reference
from lstm_inspect import export_arrays, open_model
from lstm_inspect.cli import cli

HERE = Path(__file__).parent / "fixtures" / "tf_formats"
WORST = {}


def oracle(name):
    with np.load(HERE / f"{name}.oracle.npz") as data:
        return {k: data[k] for k in data.files}


def keras_blocks(kernel, recurrent, bias):
    u = recurrent.shape[0]
    out = {}
    for g, gate in enumerate("ifco"):
        cols = slice(g * u, (g + 1) * u)
        out[f"W_{gate}"], out[f"U_{gate}"], out[f"b_{gate}"] = kernel[:, cols], recurrent[:, cols], bias[cols]
    return out


def run_stack(blocks, dense, x, go_backwards=False):
    h = reference.run("LSTM", x, blocks, go_backwards=go_backwards)
    return h @ dense["kernel"] + dense["bias"]


def test_float_lstm_blocks_are_keras_slices_and_reproduce_the_interpreter():
    data = oracle("tfl_lstm")
    arrays = export_arrays(HERE / "tfl_lstm.tflite")
    expected = keras_blocks(data["lstm/0"], data["lstm/1"], data["lstm/2"])
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[f"lstm/{key}"], value, err_msg=key)
    np.testing.assert_array_equal(arrays["dense/kernel"], data["dense/0"])
    blocks = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("lstm/")}
    y = run_stack(blocks, {"kernel": arrays["dense/kernel"], "bias": arrays["dense/bias"]}, data["x"])
    WORST["float"] = float(np.max(np.abs(y - data["y"])))
    np.testing.assert_allclose(y, data["y"], rtol=1e-5, atol=1e-5)


def test_int8_weights_within_half_a_step_and_their_scales_shown():
    data = oracle("tfl_lstm_int8")
    expected = keras_blocks(data["lstm/0"], data["lstm/1"], data["lstm/2"])
    with open_model(HERE / "tfl_lstm_int8.tflite") as model:
        (lstm,) = [layer for layer in model.layers if layer.name == "lstm"]
        stored = lstm.config["stored"]
        assert stored["W_i"].startswith("int8, scale ") and "zero point 0" in stored["W_i"]
        assert stored["b_i"] == "float32"  # biases (32 values) stay float
        assert {t.name: t.dtype for t in lstm.weights}["U_o"] == "int8"
        assert any(w.startswith("dequantized") for w in model.warnings)
        for tensor in lstm.weights:
            ours, theirs = tensor.read(), expected[tensor.name]
            if tensor.dtype == "int8":
                step = float(stored[tensor.name].split("scale ")[1].split(",")[0])
                assert np.max(np.abs(ours - theirs)) <= step / 2 * 1.001 + 1e-7, tensor.name
                assert not np.array_equal(ours, theirs)
            else:
                np.testing.assert_array_equal(ours, theirs)
    arrays = export_arrays(HERE / "tfl_lstm_int8.tflite")
    blocks = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("lstm/")}
    y = run_stack(blocks, {"kernel": arrays["dense/kernel"], "bias": arrays["dense/bias"]}, data["x"])
    # the hybrid kernel also quantizes the activations at run time: the dequantized weights reproduce the
    # interpreter's output to about the size of that rounding, far closer than the float model's is to it
    WORST["int8 vs interpreter"] = float(np.max(np.abs(y - data["y"])))
    WORST["int8 vs keras"] = float(np.max(np.abs(y - data["keras_y"])))
    assert WORST["int8 vs interpreter"] < 0.05 and WORST["int8 vs keras"] < 0.05


def test_bidirectional_two_ops_read_as_one_layer_again():
    """The converter writes a Bidirectional as two ops — the backward one between REVERSE_V2s, emitted first — and
    a CONCATENATION: read back as Bidirectional(forward_lstm, backward_lstm) with Keras's weights, and run."""
    data = oracle("tfl_bidi")
    arrays = export_arrays(HERE / "tfl_bidi.tflite")
    with open_model(HERE / "tfl_bidi.tflite") as model:
        assert [(layer.key, layer.class_name, layer.config.get("go_backwards")) for layer in model.layers] == [
            ("input", "InputLayer", None), ("bidirectional", "Bidirectional", None),
            ("bidirectional/forward_lstm", "LSTM", False), ("bidirectional/backward_lstm", "LSTM", True),
            ("dense", "Dense", None)]
    forward = keras_blocks(data["bidi/0"], data["bidi/1"], data["bidi/2"])
    backward = keras_blocks(data["bidi/3"], data["bidi/4"], data["bidi/5"])
    for key in forward:
        np.testing.assert_array_equal(arrays[f"bidirectional/forward_lstm/{key}"], forward[key])
        np.testing.assert_array_equal(arrays[f"bidirectional/backward_lstm/{key}"], backward[key])
    fw = reference.run("LSTM", data["x"], forward)
    bw = reference.run("LSTM", data["x"], backward, go_backwards=True)[:, ::-1]
    y = np.concatenate([fw, bw], axis=-1) @ arrays["dense/kernel"] + arrays["dense/bias"]
    np.testing.assert_allclose(y, data["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["tfl_gru", "tfl_rnn"])
def test_unfused_recurrent_layers_are_reported_as_while_loops(name):
    with open_model(HERE / f"{name}.tflite") as model:
        assert any("WHILE loop" in w and "did not fuse" in w for w in model.warnings)
        assert [layer.class_name for layer in model.layers] == ["Dense"]


@pytest.mark.parametrize("args", [("inspect", "--json"), ("export", "--layout", "torch"),
                                  ("export", "--layout", "onnx"), ("export", "--fused"), ("check",),
                                  ("snapshot",), ("explain",)])
def test_every_command_runs(args, tmp_path):
    extra = ["-o", tmp_path / "out.npz"] if args[0] == "export" else \
        ["-o", tmp_path / "s.json"] if args[0] == "snapshot" else []
    result = CliRunner().invoke(cli, [args[0], str(HERE / "tfl_lstm_int8.tflite"), *args[1:], *map(str, extra)])
    assert result.exit_code == 0, result.output


def test_export_to_torch_runs_like_the_interpreter(tmp_path):
    import torch
    from safetensors.torch import load_file

    data = oracle("tfl_lstm")
    out = tmp_path / "t.safetensors"
    assert CliRunner().invoke(cli, ["export", str(HERE / "tfl_lstm.tflite"), "--layout", "torch",
                                    "-o", str(out)]).exit_code == 0
    state = load_file(str(out))
    net = torch.nn.LSTM(3, 4, batch_first=True)
    net.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("lstm.")}, strict=True)
    with torch.no_grad():
        h = net(torch.from_numpy(data["x"]))[0].numpy()
    y = h @ state["dense.weight"].numpy().T + state["dense.bias"].numpy()
    np.testing.assert_allclose(y, data["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,tol", [("tfl_lstm", 1e-6), ("tfl_lstm_int8", 0.05), ("tfl_bidi", 1e-6)])
def test_forward_of_a_plain_stack_equals_the_interpreter(tmp_path, name, tol):
    """LSTM -> Dense and Bidirectional(LSTM) -> Dense read as a Sequential: `forward` runs them (int8
    dequantized)."""
    data = oracle(name)
    with open_model(HERE / f"{name}.tflite") as model:
        assert model.has_config and model.root.class_name == "Sequential"
        assert [layer.class_name for layer in model.root.children][::2] == ["InputLayer", "Dense"]
    np.save(tmp_path / "x.npy", data["x"])
    result = CliRunner().invoke(cli, ["forward", str(HERE / f"{name}.tflite"), "--input", str(tmp_path / "x.npy"),
                                      "-o", str(tmp_path / "y.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "y.npz") as out:
        np.testing.assert_allclose(out["__output__"], data["y"], atol=tol, rtol=1e-5)


def test_verify_against_the_tflite_interpreter():
    """verify runs the interpreter (states reset per sample: the LSTM op keeps them in variables between invokes)."""
    ok = CliRunner().invoke(cli, ["verify", str(HERE / "tfl_lstm.tflite")])
    assert ok.exit_code == 0 and "outputs match tflite" in ok.output, ok.output
    strict = CliRunner().invoke(cli, ["verify", str(HERE / "tfl_lstm_int8.tflite")])
    assert strict.exit_code == 1 and "MISMATCH" in strict.output, strict.output  # run-time input quantization
    loose = CliRunner().invoke(cli, ["verify", str(HERE / "tfl_lstm_int8.tflite"), "--atol", "0.05"])
    assert loose.exit_code == 0, loose.output
    bidi = CliRunner().invoke(cli, ["verify", str(HERE / "tfl_bidi.tflite")])
    assert bidi.exit_code == 0, bidi.output


def test_graphs_with_other_ops_have_no_config():
    for name in ("tfl_gru", "tfl_rnn"):
        with open_model(HERE / f"{name}.tflite") as model:
            assert not model.has_config


@pytest.mark.parametrize("cut", [9, 100, 1000])
def test_truncated_file_is_one_line(tmp_path, cut):
    path = tmp_path / "cut.tflite"
    path.write_bytes((HERE / "tfl_lstm.tflite").read_bytes()[:cut])
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "Traceback" not in result.output


def test_damage_found_when_a_tensor_is_read_is_one_line(tmp_path):
    """Found by tests/test_fuzz.py: a flipped bit in a buffer's offset is only met when the tensor is read (lazily,
    for the statistics) — it was a FlatBufferError escaping as a bug (exit 3)."""
    data = bytearray((HERE / "tfl_lstm.tflite").read_bytes())
    data[int(0.203125 * len(data))] ^= 1
    path = tmp_path / "m.tflite"
    path.write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["inspect", str(path)])
    assert result.exit_code == 2 and "not a valid TFLite flatbuffer" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_zz_report():
    print("\nTFLite: " + ", ".join(f"{k} {v:.2e}" for k, v in WORST.items()))

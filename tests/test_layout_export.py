"""Proof of `export --layout torch|onnx`: the arrays lstm-inspect writes are loaded into the real libraries and
reproduce the outputs Keras computed for every fixture file that has a config.

- torch: `torch.nn.LSTM` / `GRU` / `RNN` built from the conversion's constructor arguments, `load_state_dict(
  strict=True)` with the arrays read back from the written .npz / .safetensors, run on the oracle's input.
- ONNX: a graph with one LSTM / GRU / RNN node built here with onnx.helper (attributes from the conversion),
  the written W, R, B as initializers, run by onnxruntime.

Layers torch cannot express (relu / hard_sigmoid LSTMs, GRU reset_after=False) must be refused, and those
refusals are checked against the layer's own config, not a list.
"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, manifest
from test_gate_proof import BIDI_CASES, CASES
from lstm_inspect import InspectError, open_model
from lstm_inspect.gates import conversion as layouts
from lstm_inspect.cli import cli

# The test extra installs torch, onnx and onnxruntime: these tests must run, so a missing package is an error.
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
CONFIG_KINDS = {"h5-full", "keras-zip", "keras-dir"}
#: Largest |ours - Keras| seen per target, for the parity figures in docs/gate-layouts.md.
WORST: dict[str, float] = {"torch": 0.0, "onnx": 0.0}


def config_files():
    for file, entry in sorted(manifest()["files"].items()):
        if entry["kind"] in CONFIG_KINDS and entry["model"] != "masked":
            yield pytest.param(file, entry, id=file)


def find_layer(model, name):
    found = [layer for layer in model.layers if layer.name == name]
    assert len(found) == 1, f"expected one layer named {name}"
    return found[0]


def close(ours, keras, what, target):
    WORST[target] = max(WORST[target], float(np.max(np.abs(ours - keras))))
    np.testing.assert_allclose(ours, keras, rtol=RTOL, atol=ATOL, err_msg=what)


def torch_expressible(family, act, rec, reset_after):
    if family == "SimpleRNN":
        return act in ("tanh", "relu")
    return act == "tanh" and rec == "sigmoid" and not (family == "GRU" and reset_after is False)


def recurrent_cases(entry):
    """(layer name, family, input key, output key, mode, act, rec, go_backwards, merge) for one fixture model."""
    model = entry["model"]
    if model in BIDI_CASES:
        family = "GRU" if model == "bidi_gru" else "LSTM"
        mode = "seq" if model == "bidi_gru" else "last"
        merge = "concat" if model == "bidi_gru" else model.split("_")[1]
        return [("bidi", family, "input", "bidi", mode, "tanh", "sigmoid", False, merge)]
    return [(layer, fam, inp, out, mode, act, rec or "sigmoid", back, None)
            for m, layer, fam, inp, out, mode, act, rec, back in CASES if m == model]


def merged(fwd, bwd, merge):
    return {"concat": lambda: np.concatenate([fwd, bwd], -1), "sum": lambda: fwd + bwd, "mul": lambda: fwd * bwd,
            "ave": lambda: (fwd + bwd) / 2, "none": lambda: (fwd, bwd)}[merge]()


def compare_keras(oracle, out_key, merge, fwd, bwd, what, target):
    if merge is None:
        return close(fwd, oracle[out_key], what, target)
    result = merged(fwd, bwd, merge)
    if merge == "none":
        close(result[0], oracle[f"{out_key}/0"], what + " (forward)", target)
        close(result[1], oracle[f"{out_key}/1"], what + " (backward)", target)
    else:
        close(result, oracle[out_key], what, target)


def read_back(path):
    if str(path).endswith(".safetensors"):
        from safetensors.numpy import load_file
        return load_file(str(path))
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


# ---------------------------------------------------------------------------------------------------- torch


@pytest.mark.parametrize("file,entry", list(config_files()))
def test_torch_export_reproduces_keras(file, entry, tmp_path):
    oracle = np.load(FIXTURES / entry["oracle"])
    with open_model(FIXTURES / file) as model:
        for name, family, in_key, out_key, mode, act, rec, backwards, merge in recurrent_cases(entry):
            layer = find_layer(model, name)
            reset_after = layer.children[0].config.get("reset_after") if merge else layer.config.get("reset_after")
            if not torch_expressible(family, act, rec, reset_after if family == "GRU" else None):
                with pytest.raises(InspectError, match=f"layer '{layer.key}'.*no torch equivalent"):
                    layouts.convert(model, "torch", [layer, *layer.children])
                continue
            converted = layouts.convert(model, "torch", [layer, *layer.children])
            (module,) = converted.modules
            out = tmp_path / f"{name}.{'safetensors' if entry['flavour'] == 'k3' else 'npz'}"
            from lstm_inspect.exporter import write_arrays
            write_arrays(converted.arrays, out, converted.metadata())
            stored = read_back(out)
            prefix = module.key + "."
            state = {k[len(prefix):]: torch.from_numpy(v) for k, v in stored.items() if k.startswith(prefix)}
            cls = {"torch.nn.LSTM": torch.nn.LSTM, "torch.nn.GRU": torch.nn.GRU, "torch.nn.RNN": torch.nn.RNN}[module.target]
            net = cls(**module.args)
            net.load_state_dict(state, strict=True)
            x = torch.from_numpy(oracle[in_key].astype(np.float32))
            if backwards:
                x = x.flip(1)
            with torch.no_grad():
                seq, state_out = net(x)
            h_n = state_out[0] if isinstance(state_out, tuple) else state_out
            seq = seq.numpy()
            H = module.args["hidden_size"]
            what = f"{file}: {name} as {module.target} vs Keras's {out_key}"
            if merge:
                fwd, bwd = (seq[..., :H], seq[..., H:]) if mode == "seq" else (h_n[0].numpy(), h_n[1].numpy())
                compare_keras(oracle, out_key, merge, fwd, bwd, what, "torch")
            else:
                compare_keras(oracle, out_key, None, seq if mode == "seq" else h_n[0].numpy(), None, what, "torch")


def test_torch_export_of_dense_layers_runs_the_whole_classic_stack():
    """A Keras model whose every layer has a torch equivalent converts as a whole: LSTM(tanh) -> Dense."""
    file = "k3_stacked.keras"
    oracle = np.load(FIXTURES / "k3_stacked.oracle.npz")
    with open_model(FIXTURES / file) as model:
        converted = layouts.convert(model, "torch", model.layers)
    targets = {m.key: m for m in converted.modules}
    assert set(targets) == {"lstm_a", "lstm_b", "td.dense"}
    nets = {}
    for key, module in targets.items():
        cls = {"torch.nn.LSTM": torch.nn.LSTM, "torch.nn.Linear": torch.nn.Linear}[module.target]
        nets[key] = cls(**module.args)
        nets[key].load_state_dict({k[len(key) + 1:]: torch.from_numpy(v) for k, v in converted.arrays.items()
                                   if k.startswith(key + ".")}, strict=True)
    with torch.no_grad():
        a, _ = nets["lstm_a"](torch.from_numpy(oracle["input"]))
        b, _ = nets["lstm_b"](a)
        y = nets["td.dense"](b).numpy()
    close(y, oracle["td"], "k3_stacked: lstm_a -> lstm_b -> td(dense) in torch", "torch")


# ----------------------------------------------------------------------------------------------------- ONNX


def onnx_run(module, arrays, x_btc):
    """Run one ONNX recurrent node (built here) on batch-major input; returns Y [T, D, B, H] and Y_h [D, B, H]."""
    op = module.target.split(":")[1]
    key = module.key
    x = np.ascontiguousarray(x_btc.astype(np.float32).transpose(1, 0, 2))
    inits = [numpy_helper.from_array(arrays[f"{key}/W"], "W"), numpy_helper.from_array(arrays[f"{key}/R"], "R")]
    inputs = ["X", "W", "R"]
    if f"{key}/B" in arrays:
        inits.append(numpy_helper.from_array(arrays[f"{key}/B"], "B"))
        inputs.append("B")
    if f"{key}/P" in arrays:  # peepholes are the 8th input, after sequence_lens, initial_h, initial_c
        inits.append(numpy_helper.from_array(arrays[f"{key}/P"], "P"))
        inputs += ["", "", "", "P"]
    node = helper.make_node(op, inputs, ["Y", "Y_h"], **module.args)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["T", "D", "B", "H"]),
         helper.make_tensor_value_info("Y_h", TensorProto.FLOAT, ["D", "B", "H"])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h = session.run(None, {"X": x})
    return y, y_h


@pytest.mark.parametrize("file,entry", list(config_files()))
def test_onnx_export_reproduces_keras(file, entry, tmp_path):
    oracle = np.load(FIXTURES / entry["oracle"])
    with open_model(FIXTURES / file) as model:
        for name, family, in_key, out_key, mode, act, rec, backwards, merge in recurrent_cases(entry):
            layer = find_layer(model, name)
            converted = layouts.convert(model, "onnx", [layer, *layer.children])
            (module,) = converted.modules
            out = tmp_path / f"{name}.{'npz' if entry['flavour'] == 'k3' else 'safetensors'}"
            from lstm_inspect.exporter import write_arrays
            write_arrays(converted.arrays, out, converted.metadata())
            y, y_h = onnx_run(module, read_back(out), oracle[in_key])
            what = f"{file}: {name} as ONNX {module.target} vs Keras's {out_key}"
            if merge:
                if mode == "seq":
                    fwd, bwd = y[:, 0].transpose(1, 0, 2), y[:, 1].transpose(1, 0, 2)
                else:
                    fwd, bwd = y_h[0], y_h[1]
                compare_keras(oracle, out_key, merge, fwd, bwd, what, "onnx")
            elif mode == "seq":
                seq = y[:, 0].transpose(1, 0, 2)
                compare_keras(oracle, out_key, None, seq[:, ::-1] if backwards else seq, None, what, "onnx")
            else:
                compare_keras(oracle, out_key, None, y_h[0], None, what, "onnx")


# ------------------------------------------------------------------------------------------------- refusals


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("file,reason", [
    ("k3_classic.keras", "activation=relu"),
    ("k2_lstm_hardsig.h5", "recurrent_activation=hard_sigmoid"),
    ("k3_gru_nora.keras", "reset_after=False"),
])
def test_torch_refusals_exit_2_naming_the_layer(file, reason, tmp_path):
    result = run_cli("export", str(FIXTURES / file), "--layout", "torch", "-o", str(tmp_path / "out.npz"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert reason in result.output and "has no torch equivalent" in result.output
    assert not (tmp_path / "out.npz").exists()


def test_onnx_refuses_an_activation_it_has_not(tmp_path):
    with open_model(FIXTURES / "k3_simplernn.keras") as model:
        layer = model.find("simple_rnn")[0]
        layer.config = {**layer.config, "activation": "gelu"}
        with pytest.raises(InspectError, match="'simple_rnn'.*activation gelu has no ONNX"):
            layouts.convert(model, "onnx", [layer])


def test_fused_with_another_layout_is_a_usage_error(tmp_path):
    result = run_cli("export", str(FIXTURES / "k3_stacked.keras"), "--layout", "torch", "--fused",
                     "-o", str(tmp_path / "o.npz"))
    assert result.exit_code == 2 and "--fused only applies" in result.output


def test_safetensors_written_without_the_package(tmp_path, monkeypatch):
    """export streams .safetensors itself (no safetensors package needed to write); the package reads it back,
    every array equal to export_arrays'."""
    import sys

    import numpy as np
    from safetensors.numpy import load_file

    from lstm_inspect import export_arrays

    out = tmp_path / "o.safetensors"
    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "safetensors.numpy", None)
        result = run_cli("export", str(FIXTURES / "k3_stacked.keras"), "-o", str(out))
    assert result.exit_code == 0, result.output
    written, expected = load_file(str(out)), export_arrays(FIXTURES / "k3_stacked.keras")
    assert written.keys() == expected.keys()
    for key, value in expected.items():
        assert written[key].dtype == value.dtype and np.array_equal(written[key], value), key


def test_cli_torch_export_writes_state_dict_keys_and_build_lines(tmp_path):
    out = tmp_path / "bidi.safetensors"
    result = run_cli("export", str(FIXTURES / "k2_bidi_gru.h5"), "--layout", "torch", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "bidi: torch.nn.GRU(" in result.output and "bidirectional=True" in result.output
    keys = set(read_back(out))
    assert {"bidi.weight_ih_l0", "bidi.weight_ih_l0_reverse", "bidi.bias_hh_l0_reverse", "dense.weight"} <= keys


def test_weights_only_export_warns_that_activations_are_assumed(tmp_path):
    result = run_cli("export", str(FIXTURES / "k2_stacked_weights.h5"), "--layout", "onnx", "-o", str(tmp_path / "o.npz"))
    assert result.exit_code == 0, result.output
    assert "records no activations" in result.output


def test_default_export_is_unchanged_by_the_layout_option(tmp_path):
    plain, explicit = tmp_path / "a.npz", tmp_path / "b.npz"
    assert run_cli("export", str(FIXTURES / "k3_bidi_gru.keras"), "-o", str(plain)).exit_code == 0
    assert run_cli("export", str(FIXTURES / "k3_bidi_gru.keras"), "--layout", "keras", "-o", str(explicit)).exit_code == 0
    a, b = read_back(plain), read_back(explicit)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert "bidi/forward_gru/W_z" in a


@pytest.mark.parametrize("target", ["torch", "onnx"])
@pytest.mark.parametrize("file", ["k2_convlstm1d.h5", "k3_convlstm2d.keras"])
def test_conv_lstm_export_is_refused_naming_the_layer(file, target, tmp_path):
    result = run_cli("export", str(FIXTURES / file), "--layout", target, "-o", str(tmp_path / "out.npz"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert "'conv_lstm' (ConvLSTM" in result.output and "convolutional LSTM" in result.output
    assert not (tmp_path / "out.npz").exists()

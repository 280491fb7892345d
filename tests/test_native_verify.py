"""`verify` on PyTorch, ONNX and TF1 files: lstm-inspect's numpy run of each recurrent module against the module
run by its own framework. Two things are proven here: the reference verify builds is the framework's true answer
(it equals the test's own torch module / onnxruntime session on the original file / dynamic_rnn output), and
verify catches a wrong split (a swapped gate makes it exit 1)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import onnxruntime as ort
import torch
import test_onnx_read
import test_torch_read
from lstm_inspect.run import native_forward, verify_native as native_parity
from lstm_inspect import open_model
from lstm_inspect.cli import cli
from test_tf1_checkpoint import ckpts, oracle  # noqa: F401  (the module fixture: TensorFlow writes the checkpoints)

FIXTURES = __import__("pathlib").Path(__file__).parent / "fixtures" / "models"
WORST: dict[str, float] = {}


def verify_json(path, *options):
    result = CliRunner().invoke(cli, ["verify", str(path), "--json", *map(str, options)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["layers"], data
    for layer in data["layers"]:
        WORST[data["reference"]] = max(WORST.get(data["reference"], 0.0), layer["max_abs"])
    return data


def reference_outputs(path, x, forget_bias=1.0, nonlinearity="tanh"):
    """What verify compares against: native_parity's run of every module on x."""
    with open_model(path) as model:
        found = native_forward.modules(model)
        out = {}
        for module in found:
            out.update(native_parity.outputs(model, module, x, forget_bias, nonlinearity))
        return out


@pytest.mark.parametrize("saver", ["safetensors", "pt"])
@pytest.mark.parametrize("name", ["lstm_2l_bidi", "lstm_proj", "lstm_nobias", "gru_2l_bidi", "rnn_tanh"])
def test_torch_files_verify_against_torch(name, saver, tmp_path):
    module = test_torch_read.build(name)
    path = tmp_path / f"{name}.{saver}"
    test_torch_read.save(module, saver, path)
    data = verify_json(path)
    assert data["reference"] == "torch" and data["reference_version"] == torch.__version__
    keys = {layer["key"] for layer in data["layers"]}
    assert {"rnn/output", "rnn/h_n"} <= keys and ("rnn/c_n" in keys) == name.startswith("lstm")
    # the reference is torch's own module: the one the test built, on the same input
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    with torch.no_grad():
        output, _ = module.double()(torch.from_numpy(x))
    np.testing.assert_array_equal(reference_outputs(path, x)["rnn/output"], output.numpy())


def test_torch_rnn_nonlinearity_goes_to_both_runs(tmp_path):
    module = test_torch_read.build("rnn_relu")
    path = tmp_path / "relu.safetensors"
    test_torch_read.save(module, "safetensors", path)
    data = verify_json(path, "--nonlinearity", "relu")
    assert data["notes"] == ["rnn: torch.nn.RNN run with nonlinearity='relu'"]
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    with torch.no_grad():
        output, _ = module.double()(torch.from_numpy(x))
    np.testing.assert_array_equal(reference_outputs(path, x, nonlinearity="relu")["rnn/output"], output.numpy())


@pytest.mark.parametrize("case", test_onnx_read.CASES, ids=[c[0] for c in test_onnx_read.CASES])
def test_onnx_files_verify_against_onnxruntime(case, tmp_path):
    path = tmp_path / f"{case[0]}.onnx"
    proto = test_onnx_read.build(*case[:6], path)
    data = verify_json(path)
    assert data["reference"] == "onnxruntime"
    assert {layer["key"] for layer in data["layers"]} >= {f"{case[0]}_node/Y", f"{case[0]}_node/Y_h"}
    # the reference equals onnxruntime running the original file
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"X": x.transpose(1, 0, 2).astype(np.float32)})
    ours = reference_outputs(path, x)
    for output, value in zip(session.get_outputs(), expected):
        np.testing.assert_array_equal(ours[f"{case[0]}_node/{output.name}"], value)


class Stacked(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = torch.nn.GRU(3, 5, num_layers=2, batch_first=True)

    def forward(self, x):
        return self.gru(x)[0]


def test_torch_onnx_export_file_verifies_node_by_node(tmp_path):
    import warnings

    torch.manual_seed(5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Stacked().eval(), (torch.randn(2, 5, 3),), str(tmp_path / "g.onnx"), dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "time"}})
    data = verify_json(tmp_path / "g.onnx")
    assert {layer["key"] for layer in data["layers"]} == {"gru/GRU/Y", "gru/GRU/Y_h", "gru/GRU_1/Y", "gru/GRU_1/Y_h"}
    # the chained reference ends where the file does: the second node's Y is the module's output
    x = np.random.default_rng(2).normal(size=(2, 5, 3))
    y = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"]).run(
        ["y"], {"x": x.astype(np.float32)})[0]
    last = reference_outputs(tmp_path / "g.onnx", x)["gru/GRU_1/Y"]
    np.testing.assert_allclose(last[:, 0].transpose(1, 0, 2), y, rtol=0, atol=1e-6)


@pytest.mark.parametrize("fixture,layout", [("k2_bidi_gru.h5", "torch"), ("k3_stacked.keras", "torch"),
                                            ("k2_classic.h5", "onnx"), ("k3_gru_nora.keras", "onnx"),
                                            ("k2_cell_wrappers.keras", "torch"), ("k2_cell_wrappers.keras", "onnx")])
@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_exports_verify_in_their_target_framework(fixture, layout, suffix, tmp_path):
    out = tmp_path / f"out{suffix}"
    done = CliRunner().invoke(cli, ["export", str(FIXTURES / fixture), "--layout", layout, "-o", str(out)])
    assert done.exit_code == 0, done.output
    data = verify_json(out)
    assert data["reference"] == {"torch": "torch", "onnx": "onnxruntime"}[layout]


TF1_OUTPUTS = {"lstm_peep_proj": {"out": "rnn/lstm_cell/output"}, "lstm_plain": {"out": "rnn/lstm_cell/output"},
               "basic_lstm": {"out": "rnn/basic_lstm_cell/output"}, "gru": {"out": "rnn/gru_cell/output"},
               "multi": {"out": "rnn/multi_rnn_cell/output"},
               "bidi_lstm": {"fw": "bidirectional_rnn/fw/lstm_cell/output",
                             "bw": "bidirectional_rnn/bw/lstm_cell/output"}}


@pytest.mark.parametrize("name", list(TF1_OUTPUTS))
def test_tf1_checkpoints_verify_against_dynamic_rnn(ckpts, name):  # noqa: F811
    data = verify_json(ckpts / f"{name}.ckpt")
    assert data["reference"] == "tensorflow"
    # the reference (cells rebuilt, variables restored by Saver) equals what the graph that wrote the file computed
    expected = oracle(ckpts, name)
    ours = reference_outputs(ckpts / f"{name}.ckpt", expected["x"])
    for stored, key in TF1_OUTPUTS[name].items():
        np.testing.assert_allclose(ours[key], expected[stored], rtol=1e-6, atol=1e-7)


def test_a_wrong_split_fails_verify(tmp_path, input_and_forget_gates_swapped):
    module = test_torch_read.build("lstm_2l_bidi")
    path = tmp_path / "m.safetensors"
    test_torch_read.save(module, "safetensors", path)
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1 and "MISMATCH" in result.stdout


def test_missing_reference_package_is_one_line(tmp_path, monkeypatch):
    path = tmp_path / "lstm_fwd.onnx"
    test_onnx_read.build(*test_onnx_read.CASES[0][:6], path)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 2
    assert "onnxruntime" in result.stderr and "pip install" in result.stderr and str(path) in result.stderr


def test_given_input_must_fit_and_layer_selects(tmp_path):
    module = test_torch_read.build("gru_2l_bidi")
    path = tmp_path / "g.safetensors"
    test_torch_read.save(module, "safetensors", path)
    np.save(tmp_path / "x.npy", np.zeros((1, 4, 5)))
    result = CliRunner().invoke(cli, ["verify", str(path), "--input", str(tmp_path / "x.npy")])
    assert result.exit_code == 2 and "5 features" in result.stderr
    result = CliRunner().invoke(cli, ["verify", str(path), "--layer", "nope"])
    assert result.exit_code == 2 and "nope" in result.stderr
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(1, 4, 3)))
    data = verify_json(path, "--input", tmp_path / "x.npy", "--layer", "rnn")
    assert data["inputs"] == {"rnn": [1, 4, 3]}


def test_zz_report_worst():
    print("\nworst |numpy - reference| in verify:", {k: f"{v:.1e}" for k, v in sorted(WORST.items())})

"""`lstm-inspect diff` between a Keras file and its PyTorch or ONNX conversion: the real exports of the fixtures
(`export --layout torch` as .safetensors and torch.save .pt; `--layout onnx` put into .onnx graphs) diff as
identical block by block after reordering, and a changed gate, a swapped gate pair or a missing layer is found."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from conftest import FIXTURES, manifest
from lstm_inspect import open_model
from lstm_inspect.cli import cli
from lstm_inspect.analysis.diff import diff_models

#: Models whose every weighted layer has a torch equivalent (recurrent with tanh / sigmoid, Dense, Embedding).
TORCH_MODELS = {"stacked", "nested", "bidi_concat", "bidi_sum", "bidi_mul", "bidi_ave", "bidi_none", "bidi_gru",
                "gru_ra", "simplernn", "backwards_state", "multi_io", "embed", "lstm_nobias", "lstm_init"}
CONFIG_KINDS = {"h5-full", "keras-zip", "keras-dir"}


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def torch_files():
    for file, entry in sorted(manifest()["files"].items()):
        if entry["model"] in TORCH_MODELS and entry["kind"] in CONFIG_KINDS:
            yield pytest.param(file, id=file)


@pytest.mark.parametrize("file", list(torch_files()))
def test_keras_and_its_torch_export_diff_identical(file, tmp_path):
    out = tmp_path / "m.safetensors"
    assert run("export", FIXTURES / file, "--layout", "torch", "-o", out).exit_code == 0
    result = run("diff", FIXTURES / file, out, "--json")
    record = json.loads(result.output)
    assert result.exit_code == 0 and record["identical"], result.output
    assert record["across_frameworks"] == ["keras", "torch"]
    with open_model(FIXTURES / file) as model:
        recurrent = [layer for layer in model.layers if layer.class_name in ("LSTM", "GRU", "SimpleRNN")]
    assert record["summary"]["layers_compared"] >= len(recurrent) and not record["removed"] and not record["added"]
    assert all(b["status"] == "unchanged" and b["max_abs_diff"] == 0.0 for e in record["layers"] for b in e["blocks"])


def _torch_export(file, tmp_path):
    out = tmp_path / "m.safetensors"
    assert run("export", FIXTURES / file, "--layout", "torch", "-o", out).exit_code == 0
    from safetensors.numpy import load_file

    return load_file(str(out))


def test_torch_pt_file_diffs_identical_and_the_biases_are_summed(tmp_path):
    """A .pt state dict of a real nn.LSTM whose Keras bias is spread over bias_ih and bias_hh is still the same
    LSTM (torch adds them); diff says identical."""
    state = _torch_export("k3_stacked.keras", tmp_path)
    net = torch.nn.LSTM(3, 6, batch_first=True)
    keys = [k for k in state if k.startswith("lstm_a.")]
    net.load_state_dict({k[len("lstm_a."):]: torch.from_numpy(state[k]) for k in keys}, strict=True)
    with torch.no_grad():
        shift = torch.linspace(-0.5, 0.5, net.bias_ih_l0.shape[0])
        net.bias_ih_l0 -= shift
        net.bias_hh_l0 += shift
    full = {f"lstm_a.{k}": v for k, v in net.state_dict().items()}
    full.update({k: torch.from_numpy(v) for k, v in state.items() if not k.startswith("lstm_a.")})
    torch.save(full, tmp_path / "m.pt")
    # (b - s) + s rounds in float32: exact equality is too strict for a redistributed bias, 1e-6 is not
    strict = run("diff", FIXTURES / "k3_stacked.keras", tmp_path / "m.pt", "--json")
    moved = {b["key"]: b["max_abs_diff"] for e in json.loads(strict.output)["layers"] for b in e["blocks"]
             if b["status"] == "changed"}
    assert set(moved) <= {"b_i", "b_f", "b_c", "b_o"} and max(moved.values(), default=0.0) < 1e-6
    result = run("diff", FIXTURES / "k3_stacked.keras", tmp_path / "m.pt", "--atol", "1e-6")
    assert result.exit_code == 0, result.output
    assert "identical" in result.output


def test_a_swapped_gate_pair_and_a_changed_gate_are_found(tmp_path):
    from safetensors.numpy import save_file

    state = _torch_export("k2_gru_ra.h5", tmp_path)
    w = state["gru.weight_ih_l0"].copy()
    H = w.shape[0] // 3
    state["gru.weight_ih_l0"] = np.concatenate([w[H:2 * H], w[:H], w[2 * H:]])  # torch r, z swapped
    state["gru.bias_hh_l0"] = state["gru.bias_hh_l0"].copy()
    state["gru.bias_hh_l0"][2 * H] += 0.25  # n gate's recurrent bias = Keras rb_h
    save_file(state, str(tmp_path / "bad.safetensors"))
    result = run("diff", FIXTURES / "k2_gru_ra.h5", tmp_path / "bad.safetensors", "--json")
    assert result.exit_code == 1
    record = json.loads(result.output)
    changed = {b["key"] for e in record["layers"] for b in e["blocks"] if b["status"] == "changed"}
    assert changed == {"W_z", "W_r", "rb_h"}
    rb_h = next(b for e in record["layers"] for b in e["blocks"] if b["key"] == "rb_h")
    assert rb_h["max_abs_diff"] == pytest.approx(0.25)


def test_a_layer_missing_from_the_conversion_is_reported(tmp_path):
    state = _torch_export("k3_stacked.keras", tmp_path)
    from safetensors.numpy import save_file

    save_file({k: v for k, v in state.items() if not k.startswith("lstm_b.")}, str(tmp_path / "part.safetensors"))
    with open_model(FIXTURES / "k3_stacked.keras") as a, open_model(tmp_path / "part.safetensors") as b:
        record = diff_models(a, b)
    assert not record["identical"]
    assert [r["layer"] for r in record["removed"]] == ["lstm_b"]


def _onnx_file(file, layers, tmp_path):
    """The `--layout onnx` export of `layers` as one ONNX graph, a node per layer named by its export key."""
    npz = tmp_path / "w.npz"
    args = ["export", FIXTURES / file, "--layout", "onnx", "-o", npz]
    for layer in layers:
        args += ["--layer", layer]
    result = run(*args)
    assert result.exit_code == 0, result.output
    nodes, inits = [], []
    with np.load(npz) as data:
        keys = sorted({k.rsplit("/", 1)[0] for k in data.files if k != "__metadata__"})
        for key in keys:
            w, r = data[f"{key}/W"], data[f"{key}/R"]
            names = [f"{key}/X", f"{key}/W", f"{key}/R"]
            inits += [numpy_helper.from_array(w, f"{key}/W"), numpy_helper.from_array(r, f"{key}/R")]
            if f"{key}/B" in data.files:
                names.append(f"{key}/B")
                inits.append(numpy_helper.from_array(data[f"{key}/B"], f"{key}/B"))
            gates = r.shape[1] // r.shape[2]
            op = {4: "LSTM", 3: "GRU", 1: "RNN"}[gates]
            attrs = {"linear_before_reset": 1} if op == "GRU" else {}
            nodes.append(helper.make_node(op, names, [f"{key}/Y"], name=key, hidden_size=r.shape[2],
                                          direction="bidirectional" if w.shape[0] == 2 else "forward", **attrs))
    inputs = [helper.make_tensor_value_info(f"{k}/X", TensorProto.FLOAT, None) for k in keys]
    outputs = [helper.make_tensor_value_info(f"{k}/Y", TensorProto.FLOAT, None) for k in keys]
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits)), path)
    return path


@pytest.mark.parametrize("file,layers", [("k3_stacked.keras", ["lstm_a", "lstm_b"]), ("k2_gru_ra.h5", ["gru"]),
                                         ("k3_bidi_concat.keras", ["bidi"]), ("k2_bidi_gru.h5", ["bidi"]),
                                         ("k2_simplernn.h5", ["simple_rnn"])])
def test_keras_and_its_onnx_conversion_diff_identical(file, layers, tmp_path):
    path = _onnx_file(file, layers, tmp_path)
    args = ["diff", FIXTURES / file, path, "--json"]
    for layer in layers:
        args += ["--layer", layer]
    result = run(*args)
    record = json.loads(result.output)
    assert result.exit_code == 0 and record["identical"], result.output
    assert record["across_frameworks"] == ["keras", "onnx"] and record["summary"]["blocks_compared"] > 0

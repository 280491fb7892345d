"""Reading PyTorch state dicts: modules built by real torch (seeded, random non-zero weights and biases) are saved
as .safetensors (by the safetensors library) and with torch.save (zip and legacy formats); lstm-inspect reads them
by content, splits every layer and direction into gate blocks, and a plain numpy cell (tests/reference.py) fed
with those blocks reproduces torch's own outputs. Also: the safetensors header validation and the refusals."""
from __future__ import annotations

import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import reference
from lstm_inspect import export_arrays, inspect, open_model
from lstm_inspect.gates import conversion as layouts
from lstm_inspect.cli import cli

import torch  # noqa: E402  (the test extra installs torch: these tests must run)
from safetensors.torch import save_file  # noqa: E402

RTOL, ATOL = 1e-5, 1e-6
WORST = [0.0]

MODULES = {
    "lstm": lambda: torch.nn.LSTM(3, 4, batch_first=True),
    "lstm_2l_bidi": lambda: torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True),
    "lstm_proj": lambda: torch.nn.LSTM(3, 6, num_layers=2, proj_size=2, bidirectional=True, batch_first=True),
    "lstm_nobias": lambda: torch.nn.LSTM(3, 4, bias=False, batch_first=True),
    "gru_2l_bidi": lambda: torch.nn.GRU(3, 4, num_layers=2, bidirectional=True, batch_first=True),
    "rnn_tanh": lambda: torch.nn.RNN(3, 4, num_layers=2, batch_first=True),
    "rnn_relu": lambda: torch.nn.RNN(3, 4, nonlinearity="relu", bidirectional=True, batch_first=True),
}
SAVERS = ["safetensors", "pt", "pt_legacy"]


def build(name):
    torch.manual_seed(sum(map(ord, name)))
    module = MODULES[name]()
    with torch.no_grad():  # torch's init leaves no zero biases; make every parameter clearly non-zero anyway
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return module


def save(module, kind, path, prefix="rnn."):
    state = {prefix + k: v.contiguous() for k, v in module.state_dict().items()}
    if kind == "safetensors":
        save_file(state, str(path))
    elif kind == "pt":
        torch.save(state, path)
    else:
        torch.save(state, path, _use_new_zipfile_serialization=False)


def numpy_forward(arrays, prefix, family, x, layers, bidirectional, act):
    """Torch's stacking, in numpy, from lstm-inspect's blocks: each layer's forward and reverse directions run on
    the previous layer's output; returns the last layer's output sequence and every final hidden state."""
    finals = []
    for k in range(layers):
        outs = []
        for rev in ([False, True] if bidirectional else [False]):
            leaf = f"{prefix}/l{k}" + ("_reverse" if rev else "")
            blocks = {key[len(leaf) + 1:]: v for key, v in arrays.items() if key.startswith(leaf + "/")}
            assert blocks, f"no blocks for {leaf}"
            seq = reference.run(family, x, blocks, act=act, go_backwards=rev)
            finals.append(seq[:, -1])
            outs.append(seq[:, ::-1] if rev else seq)
        x = np.concatenate(outs, axis=-1)
    return x, np.stack(finals)


def close(ours, theirs, what):
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize("saver", SAVERS)
@pytest.mark.parametrize("name", list(MODULES))
def test_torch_modules_are_split_and_reproduced(name, saver, tmp_path):
    module = build(name)
    path = tmp_path / f"{name}.{'safetensors' if saver == 'safetensors' else 'pt'}"
    save(module, saver, path)
    x = np.random.default_rng(len(name)).normal(size=(3, 7, 3)).astype(np.float32)
    with torch.no_grad():
        out, state = module(torch.from_numpy(x))
    h_n = (state[0] if isinstance(state, tuple) else state).numpy()
    family = {"LSTM": "LSTM", "GRU": "GRU", "RNN": "SimpleRNN"}[type(module).__name__]
    with open_model(path) as model:
        assert model.kind == ("torch-safetensors" if saver == "safetensors" else "torch-state-dict")
        (container,) = model.root.children
        assert container.class_name == f"torch.nn.{type(module).__name__}"
        assert container.config["num_layers"] == module.num_layers
        assert container.config["bidirectional"] == module.bidirectional
    arrays = export_arrays(path)
    act = "relu" if getattr(module, "nonlinearity", "tanh") == "relu" else "tanh"
    ours, finals = numpy_forward(arrays, "rnn", family, x, module.num_layers, module.bidirectional, act)
    close(ours, out.numpy(), f"{name} ({saver}): output sequence")
    close(finals, h_n, f"{name} ({saver}): final hidden states h_n")


def test_gate_labels_name_torch_letters_where_they_differ(tmp_path):
    path = tmp_path / "m.safetensors"
    save(build("gru_2l_bidi"), "safetensors", path)
    report = inspect(path, stats=False)
    leaf = next(e for e in report["layers"] if e["path"] == "rnn/l0")
    assert leaf["recurrent"]["family"] == "GRU" and leaf["recurrent"]["reset_after"] is True
    names = {g["gate"]: g["name"] for g in leaf["recurrent"]["gates"]}
    assert names["h"] == "candidate (PyTorch n)" and "PyTorch" not in names["z"] + names["r"]
    sources = {b["key"]: b["source"] for b in leaf["recurrent"]["blocks"]}
    assert sources["W_r"] == "weight_ih_l0[0:4, :].T" and sources["W_z"] == "weight_ih_l0[4:8, :].T"
    assert sources["rb_h"] == "bias_hh_l0[8:12]"
    assert any("n (= Keras h)" in note for note in leaf["recurrent"]["notes"])


def test_bare_state_dict_and_other_parameters(tmp_path):
    """A state dict saved straight from nn.LSTM has no module prefix; a Linear beside it is listed raw."""
    lstm, fc = build("lstm"), torch.nn.Linear(4, 2)
    state = {**lstm.state_dict(), **{f"fc.{k}": v for k, v in fc.state_dict().items()}}
    path = tmp_path / "bare.pt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    with open_model(path) as model:
        names = [(layer.key, layer.class_name) for layer in model.layers]
    assert ("lstm", "torch.nn.LSTM") in names and ("lstm/l0", "TorchLSTM") in names and ("fc", "parameters") in names


def test_torch_file_exports_to_the_torch_layout_unchanged(tmp_path):
    """A torch GRU read from its file exports to the torch layout unchanged (both biases kept)."""
    module = build("gru_2l_bidi")
    path = tmp_path / "g.safetensors"
    save(module, "safetensors", path)
    with open_model(path) as model:
        leaf = model.find("l0_reverse")[0]
        converted = layouts.convert(model, "torch", [leaf])
    state = module.state_dict()
    assert np.array_equal(converted.arrays["rnn.l0_reverse.weight_ih_l0"], state["weight_ih_l0_reverse"].numpy())
    assert np.array_equal(converted.arrays["rnn.l0_reverse.bias_hh_l0"], state["bias_hh_l0_reverse"].numpy())


# --------------------------------------------------------------------------------------------- refusals


def run_cli(*args):
    return CliRunner().invoke(cli, list(args))


def safetensors_bytes(header: dict, data: bytes) -> bytes:
    import json
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.mark.parametrize("header,data,message", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "header claims|buffer"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "without gaps or overlaps"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "tensors cover 8"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "bad data_offsets"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": {"x": 1}}, b"\0" * 8,
     "__metadata__"),
])
def test_bad_safetensors_headers_are_refused(tmp_path, header, data, message):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(safetensors_bytes(header, data))
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    import re
    assert re.search(message, result.output), result.output


def test_huge_safetensors_header_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 200_000_000) + b"{" + b" " * 100)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "more than 100,000,000" in result.output, result.output


def test_pt_without_torch_is_read_natively(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    save(build("lstm"), "pt", path)
    monkeypatch.setitem(sys.modules, "torch", None)
    result = run_cli("inspect", str(path))
    assert result.exit_code == 0 and "TorchLSTM" in result.output, result.output


def test_pickle_not_named_like_torch_is_refused(tmp_path):
    import pickle
    path = tmp_path / "weights.dat"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "never unpickles" in result.output


def test_whole_pickled_module_is_refused(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(build("lstm"), path)  # a whole nn.Module: rebuilding it imports and calls its classes
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2 and "torch.nn.modules.rnn.LSTM" in result.output and "Traceback" not in result.output

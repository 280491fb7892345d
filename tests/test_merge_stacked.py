"""Proof of `export --layout torch --merge-stacked`: Keras stacks (built here with Keras 3, saved, read back from
the file) become one multi-layer torch module, loaded with `load_state_dict(strict=True)`, whose top-layer output
equals the Keras model's own output. Stacks a torch module cannot compute stay separate modules, with the reason in
the notes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from conftest import FIXTURES
from lstm_inspect import convert
from lstm_inspect.cli import cli

import keras  # noqa: E402  (in the test extra: these proofs must run, not skip)
L = keras.layers
ATOL = 1e-5
WORST = [0.0]


def stacks():
    """name -> (model builder, torch class, num_layers); each model's output is its top recurrent layer's."""
    def sequential(*layers, steps=5, features=3):
        return lambda: keras.Sequential([keras.Input((steps, features)), *layers])

    def functional_bidi_gru():
        x = keras.Input((5, 3))
        a = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi_a")(x)
        b = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi_b")(a)
        return keras.Model(x, b)

    def stacked_cells():
        x = keras.Input((5, 3))
        y = L.RNN(L.StackedRNNCells([L.LSTMCell(4, name="cell_low"), L.LSTMCell(4, name="cell_high")],
                                    name="stacked_cells"), return_sequences=True, name="rnn_stacked")(x)
        return keras.Model(x, y)

    return {
        "lstm_x3": (sequential(L.LSTM(4, return_sequences=True, name="lstm_a"), L.LSTM(4, return_sequences=True),
                               L.LSTM(4, return_sequences=True)), torch.nn.LSTM, 3),
        "bidi_gru_x2": (functional_bidi_gru, torch.nn.GRU, 2),
        "relu_rnn_x2": (sequential(L.SimpleRNN(4, activation="relu", return_sequences=True, name="rnn_a"),
                                   L.SimpleRNN(4, activation="relu", return_sequences=True)), torch.nn.RNN, 2),
        "stacked_cells": (stacked_cells, torch.nn.LSTM, 2),
    }


def perturbed(model):
    """Every weight random and non-zero (biases included), so a mis-wired bias or gate shows."""
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def export(path, out, *extra):
    return CliRunner().invoke(cli, ["export", str(path), "--layout", "torch", "-o", str(out), *extra])


@pytest.mark.parametrize("name", list(stacks()))
def test_merged_stack_loads_strict_and_matches_keras(name, tmp_path):
    build, cls, num_layers = stacks()[name]
    model = perturbed(build())
    path = tmp_path / f"{name}.keras"
    model.save(path)
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    expected = np.asarray(model(x))
    result = export(path, tmp_path / "out.safetensors", "--merge-stacked")
    assert result.exit_code == 0, result.output
    from safetensors import safe_open
    with safe_open(str(tmp_path / "out.safetensors"), "np") as f:
        (module,) = json.loads(f.metadata()["modules"])
        state = {k[len(module["key"]) + 1:]: torch.from_numpy(f.get_tensor(k)) for k in f.keys()}
    assert module["args"]["num_layers"] == num_layers and len(module["stacked"]) == num_layers
    assert f"num_layers={num_layers}" in result.output
    net = cls(**module["args"])
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        ours = net(torch.from_numpy(x))[0].numpy()
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - expected))))
    np.testing.assert_allclose(ours, expected, atol=ATOL, rtol=1e-5)


def test_stack_with_different_units_stays_separate_and_says_why():
    converted = convert(FIXTURES / "k3_stacked.keras", "torch", merge_stacked=True)
    modules = {m.key: m for m in converted.modules}
    assert "num_layers" not in modules["lstm_a"].args and "lstm_b.weight_ih_l0" in converted.arrays
    assert any("not merged with lstm_a" in n and "hidden_size differs (6 vs 5)" in n for n in modules["lstm_b"].notes)


@pytest.mark.parametrize("breaker,reason", [
    (lambda: [L.LSTM(4, return_sequences=True, go_backwards=True), L.LSTM(4)], "go_backwards"),
    (lambda: [L.LSTM(4, return_sequences=True), L.Dropout(0.1), L.LSTM(4)], "does not directly follow"),
    (lambda: [L.LSTM(4, return_sequences=True), L.LSTM(4, use_bias=False)], "bias differs"),
    (lambda: [L.Bidirectional(L.LSTM(4, return_sequences=True), merge_mode="sum"),
              L.Bidirectional(L.LSTM(4))], "merges its directions with sum"),
])
def test_incompatible_neighbours_stay_separate(breaker, reason, tmp_path):
    model = keras.Sequential([keras.Input((5, 4)), *breaker()])
    model.save(tmp_path / "m.keras")
    result = export(tmp_path / "m.keras", tmp_path / "o.npz", "--merge-stacked")
    assert result.exit_code == 0, result.output
    assert "num_layers" not in result.output and reason in result.output, result.output


def test_merge_stacked_is_torch_only(tmp_path):
    result = CliRunner().invoke(cli, ["export", str(FIXTURES / "k3_stacked.keras"), "--layout", "onnx",
                                      "--merge-stacked", "-o", str(tmp_path / "o.npz")])
    assert result.exit_code == 2 and "--merge-stacked only applies to --layout torch" in result.output


def test_tf_keras_functional_stack_merges(tmp_path):
    """Keras 2's inbound-node format ([[name, node, tensor, kwargs]]) is followed too: a tf-keras .h5."""
    import tf_keras
    x_in = tf_keras.Input((5, 3))
    a = tf_keras.layers.GRU(4, return_sequences=True, name="gru_a")(x_in)
    b = tf_keras.layers.GRU(4, return_sequences=True, name="gru_b")(a)
    model = perturbed(tf_keras.Model(x_in, b))
    model.save(tmp_path / "m.h5")
    x = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    expected = model.predict(x, verbose=0)
    converted = convert(tmp_path / "m.h5", "torch", merge_stacked=True)
    (module,) = converted.modules
    assert module.stacked == ["gru_a", "gru_b"] and module.args["num_layers"] == 2
    net = torch.nn.GRU(**module.args)
    net.load_state_dict({k[len(module.key) + 1:]: torch.from_numpy(v) for k, v in converted.arrays.items()},
                        strict=True)
    with torch.no_grad():
        ours = net(torch.from_numpy(x))[0].numpy()
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - expected))))
    np.testing.assert_allclose(ours, expected, atol=ATOL, rtol=1e-5)


def test_zz_report_worst():
    print(f"\nmerge-stacked: largest |torch - Keras| {WORST[0]:.2e}")

"""`explain`: the equations use this file's slices and activations, and they are the ones that reproduce the
numbers — the slices quoted in the text are parsed back and evaluated against the forward trace."""
from __future__ import annotations

import re

import numpy as np
import pytest

import lstm_inspect
from conftest import FIXTURES, manifest
from lstm_inspect import open_model
from lstm_inspect.gates.activations import get as get_activation
from conftest import run_cli as main
from lstm_inspect.run.explain import explain, to_markdown
from lstm_inspect.run.forward import CELL_CLASSES


def full_model_files():
    for file, entry in sorted(manifest()["files"].items()):
        if entry["kind"] in ("h5-full", "keras-zip"):
            yield pytest.param(file, id=file)


@pytest.mark.parametrize("file", list(full_model_files()))
def test_every_recurrent_layer_is_written_out_with_its_slices(file):
    with open_model(FIXTURES / file) as model:
        result = explain(model)
        for layer in model.layers:
            if layer.class_name not in CELL_CLASSES:  # LSTM, GRU, SimpleRNN, their cells, ConvLSTM, CuDNN
                continue
            entry = next(e for e in result.layers if e.key == layer.key)
            assert entry.supported, layer.key
            text = "\n".join(entry.equations)
            for block in lstm_inspect.split_gates(layer).blocks:
                assert block.source in text, (layer.key, block.source)
            act = layer.config.get("activation", "tanh")
            assert f"{act}(" in text
            if layer.class_name.startswith("ConvLSTM"):  # convolutions, not matmuls
                assert "x_t * kernel[" in text and "h_(t-1) * recurrent_kernel[" in text and "·" not in text


def test_markdown_and_rich_output(capsys):
    assert main(["explain", str(FIXTURES / "k3_classic.keras"), "--markdown"]) == 0
    md = capsys.readouterr().out
    assert "## `lstm` — LSTM, 120 units, input 5" in md
    assert "i_t = sigmoid(x_t · kernel[:, 0:120] + h_(t-1) · recurrent_kernel[:, 0:120] + bias[0:120])" in md
    assert "h_t = o_t ⊙ relu(c_t)" in md
    assert "y = relu(x · kernel + bias)" in md and "| `kernel` | (120, 100) |" in md
    assert "activation=relu, not tanh" in md
    assert main(["explain", str(FIXTURES / "k3_classic.keras"), "--layer", "lstm"]) == 0
    out = capsys.readouterr().out
    assert "c_t = f_t ⊙ c_(t-1) + i_t ⊙ c̃_t" in out and "dense" not in out.split("\n")[0]


@pytest.mark.parametrize("file,formula", [("k2_lstm_hardsig.h5", "clip(0.2·x + 0.5, 0, 1)"),
                                          ("k3_lstm_hardsig.keras", "clip(x/6 + 0.5, 0, 1)")])
def test_hard_sigmoid_definition_by_version(file, formula):
    result = lstm_inspect.explain(FIXTURES / file, layers=["lstm"])
    pitfalls = " ".join(result.layers[0].pitfalls)
    assert f"is {formula}" in pitfalls


def test_gru_forms_bias_merge_mode_and_go_backwards_pitfalls():
    ra = lstm_inspect.explain(FIXTURES / "k3_gru_ra.keras", layers=["gru"]).layers[0]
    nora = lstm_inspect.explain(FIXTURES / "k2_gru_nora.h5", layers=["gru"]).layers[0]
    assert "r_t ⊙ (h_(t-1) · recurrent_kernel[:, 10:15] + bias[1, 10:15])" in "\n".join(ra.equations)
    assert "(r_t ⊙ h_(t-1)) · recurrent_kernel[:, 10:15] + bias[10:15]" in "\n".join(nora.equations)
    assert any("reset_after=True" in p for p in ra.pitfalls) and any("reset_after=False" in p for p in nora.pitfalls)
    assert any("b_ih + b_hh" in p for p in nora.pitfalls)
    rev = lstm_inspect.explain(FIXTURES / "k3_backwards_state.keras", layers=["rev"]).layers[0]
    assert any("go_backwards=True" in p for p in rev.pitfalls)
    assert any("final states [h_T, c_T]" in e for e in rev.equations)
    for mode, expected in (("sum", "y = y_fw + y_bw"), ("mul", "y = y_fw ⊙ y_bw"), ("ave", "y = (y_fw + y_bw) / 2"),
                           ("concat", "y = concat([y_fw, y_bw], axis=-1)"), ("none", "two outputs")):
        bidi = lstm_inspect.explain(FIXTURES / f"k3_bidi_{mode}.keras", layers=["bidi"]).layers[0]
        assert bidi.class_name == "Bidirectional" and any(expected in e for e in bidi.equations), mode
    nobias = lstm_inspect.explain(FIXTURES / "k3_lstm_nobias.keras", layers=["lstm"]).layers[0]
    assert any("use_bias=False" in p for p in nobias.pitfalls) and "bias" not in "\n".join(nobias.equations[:4])


def _slice(arrays, text):
    """Evaluate `kernel[:, a:b]`, `bias[a:b]`, `bias[r, a:b]` as quoted in an equation."""
    name, index = re.fullmatch(r"(\w+)\[(.*)\]", text).groups()
    parts = []
    for p in index.split(","):
        p = p.strip()
        if p == ":":
            parts.append(slice(None))
        elif ":" in p:
            a, b = p.split(":")
            parts.append(slice(int(a), int(b)))
        else:
            parts.append(int(p))
    return arrays[name][tuple(parts)]


@pytest.mark.parametrize("file,layer_name,gates", [
    ("k3_classic.keras", "lstm", ("i", "f", "o")),
    ("k2_lstm_hardsig.h5", "lstm", ("i", "f", "o")),
    ("k3_gru_ra.keras", "gru", ("z", "r")),
    ("k2_gru_nora.h5", "gru", ("z", "r")),
])
def test_quoted_slices_reproduce_the_first_step(file, layer_name, gates):
    """Parse each gate's equation, evaluate it at t=1 (h_0 = 0) with the quoted slices, compare to the trace."""
    with np.load(FIXTURES / manifest()["files"][file]["oracle"]) as npz:
        x = npz["input"].astype(np.float64)
    with open_model(FIXTURES / file) as model:
        layer = next(l for l in model.layers if l.name == layer_name)
        arrays = {t.name: t.read().astype(np.float64) for t in layer.weights}
        entry = next(e for e in explain(model).layers if e.key == layer.key)
        trace = lstm_inspect.forward(FIXTURES / file, x, trace=True, dtype=np.float64)  # the equations are checked exactly
        for gate in gates:
            eq = next(e for e in entry.equations if e.startswith(f"{gate}_t = "))
            act_name, body = re.fullmatch(rf"{gate}_t = (\w+)\((.*)\)", eq).groups()
            total = 0.0
            for term in body.split(" + "):
                if term.startswith("x_t · "):
                    total = total + x[:, 0] @ _slice(arrays, term[len("x_t · "):])
                elif term.startswith("h_(t-1) · "):
                    continue  # h_0 = 0
                else:
                    total = total + _slice(arrays, term)
            value = get_activation(act_name, model.keras_major)(total)
            np.testing.assert_allclose(value, trace[f"{layer.key}/{gate}"][:, 0], rtol=1e-9, atol=1e-12)


def test_to_markdown_lists_every_selected_layer():
    with open_model(FIXTURES / "k2_mixed_layers.h5") as model:
        result = explain(model)
        md = to_markdown(result)
    for layer in result.layers:
        assert f"## `{layer.key}`" in md
    assert "BatchNormalization" in md and "moving_variance" in md and "Conv1D" in md


def test_conv_lstm_quoted_slices_reproduce_the_first_step():
    """ConvLSTM gates: `x_t * kernel[:, :, :, :, a:b]` is the input convolution with the layer's strides and padding
    (tests/reference.py's convolution); evaluated at t=1 (h_0 = 0) it is the traced gate."""
    import reference

    file = "k2_convlstm3d.h5"
    with np.load(FIXTURES / manifest()["files"][file]["oracle"]) as npz:
        x = npz["input"].astype(np.float64)
    with open_model(FIXTURES / file) as model:
        layer = next(l for l in model.layers if l.name == "conv_lstm")
        arrays = {t.name: t.read().astype(np.float64) for t in layer.weights}
        entry = next(e for e in explain(model).layers if e.key == layer.key)
        strides, padding = tuple(layer.config["strides"]), layer.config["padding"]
        trace = lstm_inspect.forward(FIXTURES / file, x, trace=True, dtype=np.float64)  # the equations are checked exactly
        assert f"strides {strides}, padding {padding}" in "\n".join(entry.equations)
        for gate in ("i", "f", "o"):
            eq = next(e for e in entry.equations if e.startswith(f"{gate}_t = "))
            act_name, body = re.fullmatch(rf"{gate}_t = (\w+)\((.*)\)", eq).groups()
            x_term, h_term, b_term = body.split(" + ")
            assert x_term.startswith("x_t * ") and h_term.startswith("h_(t-1) * ")
            total = reference.conv(x[:, 0], _slice(arrays, x_term[len("x_t * "):]), strides, padding)
            total = total + _slice(arrays, b_term)
            value = get_activation(act_name, model.keras_major)(total)
            np.testing.assert_allclose(value, trace[f"{layer.key}/{gate}"][:, 0], rtol=1e-9, atol=1e-12)


def test_cell_wrappers_explain_the_loop_and_the_cells():
    result = lstm_inspect.explain(FIXTURES / "k3_cell_wrappers.keras", layers=["rnn_stacked"])
    by_key = {e.key: e for e in result.layers}
    rnn, cells = by_key["rnn_stacked"], by_key["rnn_stacked/stacked_cells"]
    assert rnn.summary == "RNN(StackedRNNCells)" and rnn.supported
    assert any("h_T of rnn_stacked/stacked_cells/cell_high" in e for e in rnn.equations)
    assert any("x_t → rnn_stacked/stacked_cells/cell_low → rnn_stacked/stacked_cells/cell_high" in e
               for e in cells.equations)
    low = by_key["rnn_stacked/stacked_cells/cell_low"]
    assert low.summary.startswith("LSTMCell, 4 units, input 3") and any("'rnn_stacked'" in e for e in low.equations)

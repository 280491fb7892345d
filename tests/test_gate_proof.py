"""Proof of the gate split: for every fixture file written by real Keras (tf-keras 2 and Keras 3, every file
kind), a plain numpy re-implementation of the recurrent cell fed with the blocks `lstm-inspect export` wrote
(W_i, U_f, b_o, rb_h, ...) reproduces the outputs Keras itself computed for that layer (the oracle files).
Weights and biases are random and non-zero, so a wrong gate order or slice cannot pass."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import reference
from conftest import FIXTURES, manifest
from lstm_inspect import export_arrays, open_model

# One line per recurrent layer: (model, layer name, family, input key in the oracle, oracle key to compare,
# what to compare, activation, recurrent activation, go_backwards). "last" compares the final state,
# "seq" the whole sequence. Keys come from the fixture generator (tests/fixtures/generate.py).
LSTM, GRU, RNN = "LSTM", "GRU", "SimpleRNN"
CASES = [
    ("classic", "lstm", LSTM, "input", "lstm", "last", "relu", "sigmoid", False),
    ("lstm_hardsig", "lstm", LSTM, "input", "lstm", "seq", "tanh", "hard_sigmoid", False),
    ("gru_ra", "gru", GRU, "input", "gru", "last", "tanh", "sigmoid", False),
    ("gru_nora", "gru", GRU, "input", "gru", "last", "tanh", "sigmoid", False),
    ("simplernn", "simple_rnn", RNN, "input", "simple_rnn", "seq", "tanh", None, False),
    ("simplernn", "simple_rnn_1", RNN, "simple_rnn", "simple_rnn_1", "last", "tanh", None, False),
    ("nested", "enc_lstm_a", LSTM, "input", "encoder/enc_lstm_a", "seq", "tanh", "sigmoid", False),
    ("nested", "enc_lstm_b", LSTM, "encoder/enc_lstm_a", "encoder/inner/enc_lstm_b", "last", "tanh", "sigmoid", False),
    ("stacked", "lstm_a", LSTM, "input", "lstm_a", "seq", "tanh", "sigmoid", False),
    ("stacked", "lstm_b", LSTM, "lstm_a", "lstm_b", "seq", "tanh", "sigmoid", False),
    ("backwards_state", "rev", LSTM, "input", "rev/0", "seq", "tanh", "sigmoid", True),
    ("backwards_state", "rev", LSTM, "input", "rev/1", "last", "tanh", "sigmoid", True),
    ("backwards_state", "grev", GRU, "input", "grev/0", "last", "tanh", "sigmoid", True),
    ("multi_io", "lstm_a", LSTM, "input/seq_a", "lstm_a", "last", "tanh", "sigmoid", False),
    ("multi_io", "lstm_b", LSTM, "input/seq_b", "lstm_b", "last", "tanh", "sigmoid", False),
    ("embed", "gru", GRU, "embedding", "gru", "last", "tanh", "sigmoid", False),
    ("mixed_layers", "lstm", LSTM, "batch_normalization", "lstm", "seq", "tanh", "sigmoid", False),
    ("lambda_custom", "lstm", LSTM, "input", "lstm", "last", "tanh", "sigmoid", False),
    ("lstm_nobias", "lstm", LSTM, "input", "lstm", "last", "tanh", "sigmoid", False),
    ("lstm_init", "lstm", LSTM, "input", "lstm", "last", "tanh", "sigmoid", False),
    ("shape_ops", "rnn_relu", RNN, "repeat", "rnn_relu", "seq", "relu", None, False),
    ("act_layers", "gru_relu", GRU, "elu_layer", "gru_relu", "seq", "relu", "sigmoid", False),
    # the halves of a Bidirectional with return_state: [merged, forward h (, c), backward h (, c)]
    ("bidirectional_state", "forward_lstm", LSTM, "input", "bidi/1", "last", "tanh", "sigmoid", False),
    ("bidirectional_state", "backward_lstm", LSTM, "input", "bidi/3", "last", "tanh", "sigmoid", True),
    ("bidirectional_state", "forward_gru", GRU, "input", "bidi_gru/1", "last", "tanh", "sigmoid", False),
    ("bidirectional_state", "backward_gru", GRU, "input", "bidi_gru/2", "last", "tanh", "sigmoid", True),
    ("initial_state", "enc", LSTM, "input/src", "enc/1", "last", "tanh", "sigmoid", False),
    # the cells of RNN(LSTMCell) / RNN(GRUCell) / RNN(SimpleRNNCell) wrappers, split as the layers they build
    ("cell_wrappers", "cell_lstm", LSTM, "input", "rnn_lstm", "seq", "tanh", "sigmoid", False),
    ("cell_wrappers", "cell_gru", GRU, "input", "rnn_gru", "last", "tanh", "sigmoid", False),
    ("cell_wrappers", "cell_simple", RNN, "input", "rnn_simple", "last", "tanh", None, False),
    # recurrent layers around convolutions and attention (tests/fixtures/generate_layers.py)
    ("lrcn", "lstm", LSTM, "td_flatten", "lstm", "seq", "tanh", "sigmoid", False),
    ("lrcn", "gru", GRU, "td_dense", "gru", "last", "tanh", "sigmoid", False),
    ("attention", "q_lstm", LSTM, "input/query", "q_lstm", "seq", "tanh", "sigmoid", False),
    ("attention", "v_gru", GRU, "input/value", "v_gru", "seq", "tanh", "sigmoid", False),
    ("attention", "top_lstm", LSTM, "cat", "top_lstm", "last", "tanh", "sigmoid", False),
    ("layer_options", "q_lstm", LSTM, "input/query", "q_lstm", "seq", "tanh", "sigmoid", False),
    ("layer_options", "top_lstm", LSTM, "cat", "top_lstm", "last", "tanh", "sigmoid", False),
]
# RNN(StackedRNNCells([...])): (model, cell names bottom to top, family, input key, output key of the RNN layer). Each
# cell reads the sequence of the cell below; the RNN layer outputs the top cell's last state.
STACKED_CELL_CASES = [("cell_wrappers", ("cell_low", "cell_high"), LSTM, "input", "rnn_stacked")]
# Recurrent layers that start from states other than zeros or read a mask: the CASES fields, then the oracle keys of
# the initial states and whether the mask is Embedding(mask_zero=True)'s (input ids != 0).
STATE_MASK_CASES = [
    ("initial_state", "dec", LSTM, "input/tgt", "dec", "seq", "tanh", "sigmoid", False, ("enc/1", "enc/2"), False),
    ("initial_state", "gru", GRU, "input/tgt", "gru", "last", "tanh", "sigmoid", False, ("gru_init",), False),
    ("masked_embed", "lstm", LSTM, "embedding", "lstm", "seq", "tanh", "sigmoid", False, (), True),
    ("masked_embed", "gru", GRU, "embedding", "gru", "last", "tanh", "sigmoid", False, (), True),
    ("attention_masked", "lstm", LSTM, "embedding", "lstm", "seq", "tanh", "sigmoid", False, (), True),
    ("attention_masked", "lstm_b", LSTM, "embedding", "lstm_b", "seq", "tanh", "sigmoid", False, (), True),
    ("attention_masked", "gru", GRU, "cat", "gru", "last", "tanh", "sigmoid", False, (), True),
]
#: Fixture models with no recurrent layer at all (they prove forward-pass layers; checked to hold none).
NO_RECURRENT = {"merge_ops", "pool_conv", "activations", "conv2d_pool"}
RECURRENT_CLASS_NAMES = {"LSTM", "GRU", "SimpleRNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D",
                         "CuDNNLSTM", "CuDNNGRU"}
# ConvLSTM: (model, layer name, input key, output key, "seq"/"last", strides, padding). The recurrent activation is
# left at its default in the fixtures, which Keras changed: hard_sigmoid (Keras 2's clip(0.2x + 0.5)) in tf-keras,
# sigmoid in Keras 3. The proof takes it per flavour and checks the config records the same.
CONV_CASES = [
    ("convlstm1d", "conv_lstm", "input", "conv_lstm", "seq", (2,), "valid"),
    ("convlstm2d", "conv_lstm", "input", "conv_lstm", "last", (1, 1), "same"),
    ("convlstm3d", "conv_lstm", "input", "conv_lstm", "seq", (2, 1, 1), "same"),
    ("convlstm_conv3d", "conv_lstm", "input", "conv_lstm", "seq", (1, 1), "same"),
]
#: ConvLSTM options this reference does not implement (dilation, go_backwards, channels_first): the split of
#: convlstm_options is proven through the forward pass, which runs on the same blocks (tests/test_forward.py).
FORWARD_PROVEN = {"convlstm_options"}
CONV_DEFAULT_RECURRENT_ACTIVATION = {"k2": "hard_sigmoid", "k3": "sigmoid"}
BIDI_CASES = ["bidi_concat", "bidi_sum", "bidi_mul", "bidi_ave", "bidi_none", "bidi_gru"]
RTOL, ATOL = 1e-5, 1e-6


def model_files():
    """(file, model name, flavour) for every model file the generator wrote."""
    for file, entry in sorted(manifest()["files"].items()):
        yield pytest.param(file, entry["model"], entry["flavour"], id=file)


def blocks_for(arrays: dict[str, np.ndarray], layer_name: str) -> dict[str, np.ndarray]:
    """The blocks of the one layer whose path ends with `layer_name` (weights-only files may name parents
    differently, so match on the layer's own name)."""
    prefixes = {k.rsplit("/", 1)[0] for k in arrays if k.rsplit("/", 1)[0].split("/")[-1] == layer_name}
    assert len(prefixes) == 1, f"expected one layer named {layer_name}, found {sorted(prefixes)}"
    prefix = prefixes.pop()
    return {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(prefix + "/") and "/" not in k[len(prefix) + 1:]}


def compare(ours: np.ndarray, keras: np.ndarray, what: str) -> None:
    np.testing.assert_allclose(ours, keras, rtol=RTOL, atol=ATOL, err_msg=what)


@pytest.mark.parametrize("file,model,flavour", list(model_files()))
def test_exported_gates_reproduce_keras(file, model, flavour):
    prove(FIXTURES, file, model, flavour)


def prove(root: Path, file: str, model: str, flavour: str) -> None:
    """Assert that the blocks exported from `root/file` reproduce Keras's outputs for every recurrent layer."""
    if model == "masked" or model in FORWARD_PROVEN:
        return  # proven by the forward-pass tests, not by this gate test
    if model in NO_RECURRENT:
        with open_model(root / file) as opened:
            found = [layer.key for layer in opened.layers if layer.class_name in RECURRENT_CLASS_NAMES]
        assert not found, f"{file}: {model} is listed as having no recurrent layer but holds {found}"
        return
    oracle = np.load(root / f"{flavour}_{model}.oracle.npz")
    arrays = export_arrays(root / file)
    if model in BIDI_CASES:
        return prove_bidirectional(oracle, arrays, file, model)
    if any(c[0] == model for c in CONV_CASES):
        return prove_conv_lstm(root / file, oracle, arrays, file, model, flavour)
    cases = [c + ((), False) for c in CASES if c[0] == model] + [c for c in STATE_MASK_CASES if c[0] == model]
    assert cases, f"no proof case for model {model}: add one"
    major = 2 if flavour == "k2" else 3
    for _, layer, family, input_key, output_key, mode, act, rec_act, backwards, init_keys, masked in cases:
        blocks = blocks_for(arrays, layer)
        initial = [oracle[k] for k in init_keys] or None
        mask = oracle["input"] != 0 if masked else None
        states = reference.run(family, oracle[input_key], blocks, act, rec_act or "sigmoid", major, backwards,
                               initial_state=initial, mask=mask)
        ours = states if mode == "seq" else states[:, -1]
        compare(ours, oracle[output_key], f"{file}: {layer} vs Keras's {output_key}")
    for _, cells, family, input_key, output_key in (c for c in STACKED_CELL_CASES if c[0] == model):
        seq = oracle[input_key]
        for cell in cells:
            seq = reference.run(family, seq, blocks_for(arrays, cell), keras_major=major)
        compare(seq[:, -1], oracle[output_key], f"{file}: stacked cells {'+'.join(cells)} vs Keras's {output_key}")


def prove_conv_lstm(path: Path, oracle, arrays: dict[str, np.ndarray], file: str, model: str, flavour: str) -> None:
    rec_act = CONV_DEFAULT_RECURRENT_ACTIVATION[flavour]
    major = 2 if flavour == "k2" else 3
    for _, layer, input_key, output_key, mode, strides, padding in (c for c in CONV_CASES if c[0] == model):
        with open_model(path) as opened:
            (found,) = [candidate for candidate in opened.layers if candidate.name == layer]
            if opened.has_config:
                assert found.config.get("recurrent_activation") == rec_act, found.config.get("recurrent_activation")
                assert tuple(found.config["strides"]) == strides and found.config["padding"] == padding
        states = reference.run_conv_lstm(oracle[input_key], blocks_for(arrays, layer), strides, padding,
                                         "tanh", rec_act, major)
        ours = states if mode == "seq" else states[:, -1]
        compare(ours, oracle[output_key], f"{file}: {layer} vs Keras's {output_key}")


def prove_bidirectional(oracle, arrays: dict[str, np.ndarray], file: str, model: str) -> None:
    family, inner, mode = (GRU, "gru", "concat") if model == "bidi_gru" else (LSTM, "lstm", model.split("_")[1])
    x = oracle["input"]
    forward = reference.run(family, x, blocks_for(arrays, f"forward_{inner}"))
    backward = reference.run(family, x, blocks_for(arrays, f"backward_{inner}"), go_backwards=True)
    if model == "bidi_gru":  # return_sequences: Keras flips the backward sequence back into time order
        fwd, bwd = forward, backward[:, ::-1]
    else:
        fwd, bwd = forward[:, -1], backward[:, -1]
    if mode == "none":
        compare(fwd, oracle["bidi/0"], f"{file}: forward output")
        compare(bwd, oracle["bidi/1"], f"{file}: backward output")
        return
    merged = {"concat": lambda: np.concatenate([fwd, bwd], axis=-1), "sum": lambda: fwd + bwd,
              "mul": lambda: fwd * bwd, "ave": lambda: (fwd + bwd) / 2}[mode]()
    compare(merged, oracle["bidi"], f"{file}: merged {mode} output")


def test_every_fixture_model_has_a_proof():
    models = {entry["model"] for entry in manifest()["files"].values()}
    covered = ({c[0] for c in CASES} | {c[0] for c in STATE_MASK_CASES} | {c[0] for c in CONV_CASES}
               | set(BIDI_CASES) | NO_RECURRENT | {"masked"} | FORWARD_PROVEN)
    assert models <= covered, f"models without a gate proof: {sorted(models - covered)}"


@pytest.mark.parametrize("file", ["k2_convlstm2d.h5", "k3_convlstm1d.keras"])
def test_conv_lstm_proof_discriminates(file):
    """The ConvLSTM fixtures catch a swapped gate pair and the wrong Keras version's recurrent activation."""
    flavour = file[:2]
    model = file[3:].split(".")[0]
    _, layer, input_key, output_key, mode, strides, padding = next(c for c in CONV_CASES if c[0] == model)
    oracle = np.load(FIXTURES / f"{flavour}_{model}.oracle.npz")
    blocks = blocks_for(export_arrays(FIXTURES / file), layer)
    major = 2 if flavour == "k2" else 3
    rec_act = CONV_DEFAULT_RECURRENT_ACTIVATION[flavour]
    want = oracle[output_key]

    def run(b, rec):
        states = reference.run_conv_lstm(oracle[input_key], b, strides, padding, "tanh", rec, major)
        return states if mode == "seq" else states[:, -1]

    np.testing.assert_allclose(run(blocks, rec_act), want, rtol=RTOL, atol=ATOL)
    swapped = dict(blocks, W_i=blocks["W_f"], W_f=blocks["W_i"])
    assert not np.allclose(run(swapped, rec_act), want, rtol=1e-3, atol=1e-4)
    other = "sigmoid" if rec_act == "hard_sigmoid" else "hard_sigmoid"
    assert not np.allclose(run(blocks, other), want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("source,layer", [("k2_classic.h5", "lstm"), ("k2_gru_nora.h5", "gru")],
                         ids=lambda v: f"hand-built:keras1:{v}" if v.endswith(".h5") else v)
def test_keras1_arrays_reproduce_keras(tmp_path, source, layer):
    """A Keras 1 file (12 LSTM / 9 GRU arrays `<layer>_W_i`, ..., no keras_version) holding a real fixture's weights:
    its arrays are read as the standard blocks, and those reproduce the original fixture's Keras oracle."""
    import handbuilt

    path = handbuilt.keras1_layout(tmp_path, source)
    model = source[3:].split(".")[0]
    _, _, family, input_key, output_key, mode, act, rec_act, backwards = next(
        c for c in CASES if c[0] == model and c[1] == layer)
    with open_model(path) as opened:
        assert opened.keras_version is None and not opened.warnings
        (found,) = [candidate for candidate in opened.layers if candidate.name == layer]
        assert len(found.weights) == (12 if family == LSTM else 9)
    oracle = np.load(FIXTURES / f"k2_{model}.oracle.npz")
    blocks = blocks_for(export_arrays(path), layer)
    assert blocks.keys() == blocks_for(export_arrays(FIXTURES / source), layer).keys()
    states = reference.run(family, oracle[input_key], blocks, act, rec_act, 2, backwards)
    compare(states if mode == "seq" else states[:, -1], oracle[output_key], f"keras 1 {source}: {layer}")
    swapped = dict(blocks, **{k: blocks[k.replace("_i", "_f").replace("_z", "_r")] for k in blocks
                              if k.endswith(("_i", "_z"))})
    wrong = reference.run(family, oracle[input_key], swapped, act, rec_act, 2, backwards)
    assert not np.allclose(wrong if mode == "seq" else wrong[:, -1], oracle[output_key], rtol=1e-3, atol=1e-4)

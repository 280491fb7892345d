"""The forward pass on the recurrent layouts beyond LSTM / GRU / SimpleRNN: ConvLSTM1D/2D/3D, legacy CuDNNLSTM /
CuDNNGRU and RNN(cell) / RNN(StackedRNNCells). Parity of every layer with Keras's oracles is in tests/test_forward.py
(every file kind of the convlstm* and cell_wrappers fixtures); here: the traces against independent step loops
(tests/reference.py), the cuDNN files against the oracles of the models they were converted from, and RNN options
no fixture holds (stacked cells with return_state and go_backwards) against Keras itself, through `verify`."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_inspect
import reference
from conftest import FIXTURES, manifest
from lstm_inspect import open_model, split_gates
from conftest import run_cli as main
from lstm_inspect.run.forward import run
from test_cudnn import SOURCES, cudnn_dir  # noqa: F401  (the module fixture writing the tf-keras CuDNN files)

RTOL, ATOL = 1e-5, 1e-6


def oracle(file: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / manifest()["files"][file]["oracle"]) as npz:
        return {k: npz[k] for k in npz.files}


def conv_reference(x, blocks, strides, padding, act, rec_act):
    """Per-gate ConvLSTM loop on tests/reference.py's convolution: every gate value and state, time first."""
    B = {k: v.astype(np.float64) for k, v in blocks.items()}
    ones = (1,) * (x.ndim - 3)

    def pre(xt, h, gate):
        return (reference.conv(xt, B["W_" + gate], strides, padding) + reference.conv(h, B["U_" + gate], ones, "same")
                + B.get("b_" + gate, 0.0))

    h = np.zeros_like(reference.conv(x[:, 0].astype(np.float64), B["W_i"], strides, padding))
    c = np.zeros_like(h)
    out = {name: [] for name in ("i", "f", "c", "o", "cell", "hidden")}
    for t in range(x.shape[1]):
        xt = x[:, t].astype(np.float64)
        i, f, o = rec_act(pre(xt, h, "i")), rec_act(pre(xt, h, "f")), rec_act(pre(xt, h, "o"))
        g = act(pre(xt, h, "c"))
        c = f * c + i * g
        h = o * act(c)
        for name, value in zip(out, (i, f, g, o, c, h)):
            out[name].append(value)
    return {name: np.stack(values, axis=1) for name, values in out.items()}


@pytest.mark.parametrize("file", ["k2_convlstm1d.h5", "k3_convlstm2d.keras", "k2_convlstm3d.h5", "k3_convlstm3d.keras"])
def test_conv_lstm_trace_matches_a_per_gate_loop(file):
    expected = oracle(file)
    x = expected["input"]
    with open_model(FIXTURES / file) as model:
        layer = next(l for l in model.layers if l.name == "conv_lstm")
        cfg = layer.config
        ours = run(model, x, trace=True, dtype=np.float64)  # exact against the float64 loop
        act = reference.activation(cfg["activation"], model.keras_major)
        rec_act = reference.activation(cfg["recurrent_activation"], model.keras_major)
        ref = conv_reference(x, split_gates(layer).arrays(), tuple(cfg["strides"]), cfg["padding"], act, rec_act)
    for name, want in ref.items():
        got = ours[f"conv_lstm/{name}"]
        assert got.shape == want.shape and got.shape[:2] == x.shape[:2] and got.shape[-1] == cfg["filters"], name
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=name)
    keras = expected["conv_lstm"]
    np.testing.assert_allclose(ref["hidden"] if keras.ndim == x.ndim else ref["hidden"][:, -1], keras,
                               rtol=RTOL, atol=ATOL)


def test_conv_lstm_wrong_keras_activation_misses_the_oracle():
    """The tf-keras fixture's recurrent_activation is hard_sigmoid in Keras 2's definition: Keras 3's misses."""
    expected = oracle("k2_convlstm3d.h5")
    with open_model(FIXTURES / "k2_convlstm3d.h5") as model:
        right = run(model, expected["input"])
        model.keras_version = "3.15.1"
        wrong = run(model, expected["input"])
    np.testing.assert_allclose(right["conv_lstm"], expected["conv_lstm"], rtol=RTOL, atol=ATOL)
    assert not np.allclose(wrong["conv_lstm"], expected["conv_lstm"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("file", ["k2_cell_wrappers.h5", "k3_cell_wrappers.keras"])
def test_stacked_cells_trace_per_cell(file):
    """Each cell's trace sits under the cell's path; the low cell reads x, the high cell the low cell's h_t."""
    expected = oracle(file)
    x = expected["input"]
    out = lstm_inspect.forward(FIXTURES / file, x, trace=True, dtype=np.float64)
    with open_model(FIXTURES / file) as model:
        blocks = {l.name: split_gates(l).arrays() for l in model.layers if l.class_name.endswith("Cell")}
    low = reference.run("LSTM", x, blocks["cell_low"])
    high = reference.run("LSTM", low, blocks["cell_high"])
    np.testing.assert_allclose(out["rnn_stacked/stacked_cells/cell_low/hidden"], low, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(out["rnn_stacked/stacked_cells/cell_high/hidden"], high, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(high[:, -1], expected["rnn_stacked"], rtol=RTOL, atol=ATOL)
    assert {"rnn_lstm/cell_lstm/i", "rnn_gru/cell_gru/z", "rnn_simple/cell_simple/hidden"} <= set(out)


# ------------------------------------------------------------------------------------------------------------------
# RNN options no fixture holds, against Keras itself


def _cell_model(K, np_rng):
    L = K.layers
    inp = K.Input((5, 3), name="seq")
    stacked = L.RNN(L.StackedRNNCells([L.LSTMCell(4, name="low"), L.GRUCell(3, name="high")], name="cells"),
                    return_sequences=True, return_state=True, go_backwards=True, name="rnn_stacked")
    import tensorflow as tf

    # Keras 3 nests the states per cell ([seq, [h_low, c_low], h_high]); layer outputs count them flattened
    seq, h_low, c_low, h_high = tf.nest.flatten(stacked(inp))
    simple, h_simple = L.RNN(L.SimpleRNNCell(2, activation="relu", name="simple"), return_state=True,
                             go_backwards=True, name="rnn_simple")(inp)
    flat = L.Concatenate(name="cat")([L.Flatten(name="flat")(seq), h_low, c_low, h_high, simple, h_simple])
    model = K.Model(inp, L.Dense(2, name="head")(flat))
    # random, non-zero weights and biases: a wrong gate, bias or state order cannot pass
    model.set_weights([np_rng.uniform(-0.8, 0.8, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _bidirectional_model(K, np_rng):
    L = K.layers
    inp = K.Input((4, 5, 3), name="frames")
    cells = L.Bidirectional(L.RNN(L.LSTMCell(3, name="cell"), return_sequences=True, name="rnn"),
                            name="bidi_cell")(L.Reshape((4, 15), name="rows")(inp))
    conv = L.Bidirectional(L.ConvLSTM1D(2, 2, padding="same", return_sequences=True, name="conv"), merge_mode="sum",
                           name="bidi_conv")(inp)
    flat = L.Concatenate(name="cat")([L.Flatten(name="flat_cells")(cells), L.Flatten(name="flat_conv")(conv)])
    model = K.Model(inp, L.Dense(1, name="head")(flat))
    model.set_weights([np_rng.uniform(-0.8, 0.8, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _initial_state_model(K, np_rng):
    """initial_state for stacked cells (nested per cell, as Keras wants them) and for a ConvLSTM1D."""
    L = K.layers
    seq, ctx, frames = K.Input((5, 3), name="seq"), K.Input((2,), name="ctx"), K.Input((3, 4, 2), name="frames")
    low = [L.Dense(4, name="h_low")(ctx), L.Dense(4, name="c_low")(ctx)]
    high = [L.Dense(3, name="h_high")(ctx)]
    stacked = L.RNN(L.StackedRNNCells([L.LSTMCell(4, name="low"), L.GRUCell(3, name="high")], name="cells"),
                    name="rnn_stacked")(seq, initial_state=[low, high])
    conv_states = [L.Reshape((4, 2), name=f"grid_{n}")(L.Dense(8, name=f"state_{n}")(ctx)) for n in ("h", "c")]
    conv = L.ConvLSTM1D(2, 2, padding="same", name="conv")(frames, initial_state=conv_states)
    model = K.Model([seq, ctx, frames], [stacked, conv])
    model.set_weights([np_rng.uniform(-0.8, 0.8, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_stacked_cells_state_order_and_go_backwards_against_keras(package, tmp_path):
    """Also Bidirectional around RNN(LSTMCell) and around a ConvLSTM1D, and initial states for stacked cells
    (tf-keras nests them per cell in the inbound node) and a ConvLSTM1D."""
    import importlib

    K = importlib.import_module(package)
    suffix = ".keras" if package == "keras" else ".h5"
    for name, build, wanted in (
            ("cells", _cell_model, {"rnn_stacked/0", "rnn_stacked/1", "rnn_stacked/2", "rnn_stacked/3", "rnn_simple/1"}),
            ("bidi", _bidirectional_model, {"bidi_cell", "bidi_conv"}),
            ("init", _initial_state_model, {"rnn_stacked", "conv", "h_high"})):
        path = tmp_path / (name + suffix)
        build(K, np.random.default_rng(7)).save(str(path))
        result = lstm_inspect.verify(path, batch=3, steps=5)
        assert result.reference == package
        assert result.ok, [(d.key, d.max_abs) for d in result.diffs if not d.ok]
        assert wanted <= {d.key for d in result.diffs}


def _conv_options_model(K, np_rng):
    """ConvLSTM2D / ConvLSTM3D with use_bias=False, and a ConvLSTM2D started from given states."""
    L = K.layers
    frames, ctx, vol = K.Input((3, 4, 5, 2), name="frames"), K.Input((2,), name="ctx"), K.Input((2, 3, 4, 3, 1),
                                                                                                  name="vol")
    nobias = L.ConvLSTM2D(3, (2, 2), padding="same", use_bias=False, return_sequences=True, name="nobias2d")(frames)
    states = [L.Reshape((4, 5, 2), name=f"grid_{n}")(L.Dense(40, name=f"state_{n}")(ctx)) for n in ("h", "c")]
    init = L.ConvLSTM2D(2, (3, 2), padding="same", name="init2d")(frames, initial_state=states)
    nobias3 = L.ConvLSTM3D(2, (2, 2, 2), use_bias=False, name="nobias3d")(vol)
    model = K.Model([frames, ctx, vol], [nobias, init, nobias3])
    model.set_weights([np_rng.uniform(-0.8, 0.8, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def _masked_cells_model(K, np_rng):
    """A Masking layer feeding RNN(LSTMCell) and RNN(StackedRNNCells): Keras 3 records its mask as the ops
    any(not_equal(x, 0), axis=-1) and passes it as mask=."""
    L = K.layers
    seq = K.Input((6, 3), name="seq")
    masked = L.Masking(0.0, name="mask")(seq)
    cell = L.RNN(L.LSTMCell(4, name="c1"), return_sequences=True, name="rnn_cell")(masked)
    stack = L.RNN(L.StackedRNNCells([L.GRUCell(3, name="g"), L.SimpleRNNCell(2, name="s")], name="st"),
                  name="rnn_stack")(masked)
    model = K.Model(seq, [cell, stack])
    model.set_weights([np_rng.uniform(-0.8, 0.8, size=w.shape).astype("float32") for w in model.get_weights()])
    return model


@pytest.mark.parametrize("package", ["keras", "tf_keras"])
def test_conv_lstm_options_and_masked_cells_against_keras(package, tmp_path):
    import importlib

    K = importlib.import_module(package)
    suffix = ".keras" if package == "keras" else ".h5"
    path = tmp_path / ("conv" + suffix)
    _conv_options_model(K, np.random.default_rng(7)).save(str(path))
    result = lstm_inspect.verify(path, batch=2, steps=3)
    assert result.reference == package
    assert result.ok, [(d.key, d.max_abs) for d in result.diffs if not d.ok]
    assert {"nobias2d", "init2d", "nobias3d", "grid_h"} <= {d.key for d in result.diffs}

    path = tmp_path / ("mask" + suffix)
    _masked_cells_model(K, np.random.default_rng(7)).save(str(path))
    x = np.random.default_rng(1).normal(size=(3, 6, 3)).astype("float32")
    x[0, 4:], x[1, :2], x[2, 2:4] = 0, 0, 0  # padded at the end, at the start, and in the middle
    result = lstm_inspect.verify(path, inputs=x)
    assert result.ok, [(d.key, d.max_abs) for d in result.diffs if not d.ok]
    assert {"rnn_cell", "rnn_stack"} <= {d.key for d in result.diffs}
    out = lstm_inspect.forward(path, x)["rnn_cell"]
    # the mask is honoured: a masked step repeats the previous output (an unmasked zero step would not)
    np.testing.assert_array_equal(out[2, 2], out[2, 1])
    assert not np.allclose(out[2, 4], out[2, 3])


# ------------------------------------------------------------------------------------------------------------------
# Legacy CuDNN layers (files written by tf-keras itself, tests/cudnn_files.py)


@pytest.mark.parametrize("source", SOURCES)
def test_cudnn_files_reproduce_the_source_models_keras_outputs(cudnn_dir, source):  # noqa: F811
    expected = oracle(source)
    file = cudnn_dir / source.replace("k2_", "k2_cudnn_", 1)
    ours = lstm_inspect.forward(file, expected["input"], trace=True)
    compared = 0
    for key, want in expected.items():
        if key != "input":
            np.testing.assert_allclose(ours[key], want, rtol=RTOL, atol=ATOL, err_msg=key)
            compared += 1
    assert compared >= 3
    with open_model(file) as model:
        cudnn = [l.key for l in model.layers if l.class_name in ("CuDNNLSTM", "CuDNNGRU")]
    assert cudnn and all(f"{key}/hidden" in ours for key in cudnn)


def test_verify_refuses_cudnn_on_a_cpu_exit_2(cudnn_dir, capsys):  # noqa: F811
    code = main(["verify", str(cudnn_dir / "k2_cudnn_stacked.h5")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "lstm_a (CuDNNLSTM)" in err and "GPU" in err and "forward" in err


def test_explain_cudnn_writes_the_standard_equations_with_cudnn_slices(cudnn_dir):  # noqa: F811
    result = lstm_inspect.explain(cudnn_dir / "k2_cudnn_gru_ra.h5", layers=["gru"])
    (entry,) = result.layers
    text = "\n".join(entry.equations)
    assert entry.supported and entry.summary.startswith("CuDNNGRU, 5 units, input 3")
    assert "z_t = sigmoid(x_t · kernel[:, 0:5].reshape(5, 3).T + bias[0:5] + h_(t-1) · recurrent_kernel[:, 0:5].T " \
           "+ bias[15:20])" in text
    assert any("cuDNN matrix in row-major memory order" in p for p in entry.pitfalls)
    lstm = lstm_inspect.explain(cudnn_dir / "k2_cudnn_stacked.h5", layers=["lstm_a"]).layers[0]
    assert "+ bias[0:6] + bias[24:30])" in lstm.equations[0]  # the two cuDNN biases, summed


@pytest.mark.parametrize("file,layer_name,change,reason", [
    ("k3_cell_wrappers.keras", "cell_low", {"class_name": "MinimalRNNCell"}, "does not support this recurrent cell"),
    ("k3_cell_wrappers.keras", "stacked_cells", {"config": {"reverse_state_order": True}}, "reverse_state_order"),
    ("k2_convlstm3d.h5", "conv_lstm", {"config": {"padding": "causal"}}, "padding 'causal'"),
])
def test_unsupported_recurrent_options_are_refused_by_name(file, layer_name, change, reason):
    from lstm_inspect.errors import InspectError

    with open_model(FIXTURES / file) as model:
        layer = next(l for l in model.layers if l.name == layer_name)
        layer.class_name = change.get("class_name", layer.class_name)
        layer.config = dict(layer.config, **change.get("config", {}))
        with pytest.raises(InspectError) as info:
            run(model, oracle(file)["input"])
    message = str(info.value)
    assert layer.key in message and layer.class_name in message and reason in message, message

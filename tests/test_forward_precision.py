"""`forward` computes in the file's precision by default, like Keras (float32 weights in float32, float64 weights in
float64); `dtype=np.float64` / `--float64` is a float64 reference run. Float32 runs agree with Keras within float32
noise; float64 files written by Keras itself (layers built with dtype="float64") and by torch (a .double() module)
run in float64 and agree with their framework to float64 rounding."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_inspect
from conftest import FIXTURES, manifest, run_cli
from lstm_inspect.errors import InspectError
from lstm_inspect.run.forward import OUTPUT_KEY

STACKED = FIXTURES / "k3_stacked.keras"


def stacked_inputs():
    with np.load(FIXTURES / manifest()["files"]["k3_stacked.keras"]["oracle"]) as npz:
        return {k: npz[k] for k in npz.files}


def test_float32_file_runs_in_float32_by_default():
    expected = stacked_inputs()
    ours = lstm_inspect.forward(STACKED, expected["input"], trace=True)
    assert ours and all(value.dtype == np.float32 for value in ours.values()), \
        {k: v.dtype for k, v in ours.items() if v.dtype != np.float32}
    # within float32 noise of Keras (which computes in float32 too), and of our own float64 run
    ref64 = lstm_inspect.forward(STACKED, expected["input"], dtype=np.float64)
    for key, want in expected.items():
        if key != "input":
            np.testing.assert_allclose(ours[key], want, rtol=1e-5, atol=1e-6, err_msg=key)
            np.testing.assert_allclose(ours[key], ref64[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_float64_on_request():
    x = stacked_inputs()["input"]
    ours = lstm_inspect.forward(STACKED, x, dtype=np.float64, trace=True)
    assert all(value.dtype == np.float64 for value in ours.values())
    # a float64 input to a float32 run is computed in float32, as Keras casts it
    assert lstm_inspect.forward(STACKED, x.astype(np.float64))[OUTPUT_KEY].dtype == np.float32


def test_unsupported_dtype_is_refused():
    with pytest.raises(InspectError, match="float32 or float64"):
        lstm_inspect.forward(STACKED, stacked_inputs()["input"], dtype=np.float16)


def test_cli_default_float64_and_float32(tmp_path):
    x = stacked_inputs()["input"]
    np.save(tmp_path / "x.npy", x)
    written = {}
    for name, flags in (("default", []), ("f64", ["--float64"]), ("f32", ["--float32"])):
        out = tmp_path / f"{name}.npz"
        assert run_cli(["forward", str(STACKED), "--input", str(tmp_path / "x.npy"), "-o", str(out), *flags]) == 0
        with np.load(out) as npz:
            written[name] = npz[OUTPUT_KEY]
    assert written["default"].dtype == written["f32"].dtype == np.float32
    assert written["f64"].dtype == np.float64
    np.testing.assert_array_equal(written["default"], written["f32"])
    assert run_cli(["forward", str(STACKED), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "b.npz"),
                    "--float32", "--float64"]) == 2


def test_keras_float64_model_runs_in_float64(tmp_path):
    import keras

    L = keras.layers
    model = keras.Sequential([keras.Input((7, 3), dtype="float64"),
                              L.LSTM(5, return_sequences=True, dtype="float64", name="lstm"),
                              L.GRU(4, dtype="float64", name="gru"), L.Dense(2, dtype="float64", name="head")])
    rng = np.random.default_rng(3)
    model.set_weights([rng.uniform(-0.8, 0.8, size=w.shape) for w in model.get_weights()])
    path = tmp_path / "f64.keras"
    model.save(path)
    x = rng.standard_normal((3, 7, 3))
    want = np.asarray(model(x))
    assert want.dtype == np.float64
    ours = lstm_inspect.forward(path, x)
    assert ours[OUTPUT_KEY].dtype == np.float64
    np.testing.assert_allclose(ours[OUTPUT_KEY], want, rtol=1e-12, atol=1e-13)
    # and --float32 on it is a float32 run: float32 rounding, not float64's
    ours32 = lstm_inspect.forward(path, x, dtype=np.float32)[OUTPUT_KEY]
    assert ours32.dtype == np.float32 and 1e-9 < np.abs(ours32 - want).max() < 1e-5


def test_torch_float64_state_dict_runs_in_float64(tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True).double()
    torch.save(net.state_dict(), tmp_path / "lstm64.pt")
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    with torch.no_grad():
        want = net(torch.from_numpy(x))[0].numpy()
    ours = lstm_inspect.forward(tmp_path / "lstm64.pt", x)
    output = next(v for k, v in ours.items() if k.endswith("/output"))
    assert output.dtype == np.float64
    np.testing.assert_allclose(output, want, rtol=1e-12, atol=1e-13)
    net32 = torch.nn.LSTM(3, 4, batch_first=True)
    torch.save(net32.state_dict(), tmp_path / "lstm32.pt")
    assert all(v.dtype == np.float32 for v in lstm_inspect.forward(tmp_path / "lstm32.pt", x).values())


# ------------------------------------------------------------------------------------------------------------------
# The fast loop (recurrent_fast: one dense cell, weights laid out once, buffers reused, activations in place, here
# with the input terms computed one step at a time to exercise the blocks) against
# the general loop (RecurrentCell.step) on every fixture with a recurrent layer: masks, go_backwards, initial and
# returned states, Bidirectional, GRU in both reset forms, SimpleRNN, hard_sigmoid of both Keras versions, traces.

RECURRENT_FIXTURES = ["k3_stacked.keras", "k3_masked.keras", "k3_backwards_state.keras", "k2_backwards_state.h5",
                      "k2_initial_state.h5", "k2_gru_nora.h5", "k3_gru_ra.keras", "k3_simplernn.keras",
                      "k2_lstm_hardsig.h5", "k3_lstm_hardsig.keras", "k3_bidi_gru.keras", "k2_bidi_concat.h5",
                      "k3_lstm_nobias.keras", "k2_embed.h5"]


@pytest.mark.parametrize("file", RECURRENT_FIXTURES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fast_loop_matches_general_loop(file, dtype, monkeypatch):
    from lstm_inspect.run import recurrent

    with np.load(FIXTURES / manifest()["files"][file]["oracle"]) as npz:
        inputs = {k: npz[k] for k in npz.files if k == "input" or k.startswith("input/")}
    calls = []
    monkeypatch.setattr(recurrent.recurrent_fast, "INPUT_BLOCK_BYTES", 1)  # input terms one step at a time
    original = recurrent.recurrent_fast.run_loop
    monkeypatch.setattr(recurrent.recurrent_fast, "run_loop", lambda *a, **k: calls.append(1) or original(*a, **k))
    fast = lstm_inspect.forward(FIXTURES / file, inputs, trace=True, dtype=dtype)
    assert calls, "the fast loop did not run"
    monkeypatch.setattr(recurrent.RecurrentLayers, "fast_loop", lambda self, cells: None)
    general = lstm_inspect.forward(FIXTURES / file, inputs, trace=True, dtype=dtype)
    assert sorted(fast) == sorted(general)
    tolerance = dict(rtol=1e-12, atol=1e-13) if dtype == np.float64 else dict(rtol=2e-6, atol=2e-7)
    for key, value in general.items():
        assert fast[key].dtype == value.dtype == dtype, key
        np.testing.assert_allclose(fast[key], value, err_msg=key, **tolerance)

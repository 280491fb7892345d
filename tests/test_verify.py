"""`verify` loads the file with the Keras that can read it and compares every layer. These tests need TensorFlow,
tf-keras and Keras 3 (the test extra installs them) and run them for real."""
from __future__ import annotations

import json
from pathlib import Path
import shutil
import sys

import h5py
import numpy as np
import pytest

import lstm_inspect
from conftest import FIXTURES
from lstm_inspect import verify as verify_function
from lstm_inspect.cli import main
from lstm_inspect.errors import InspectError


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("file,package", [
    ("k3_classic.keras", "keras"),       # Keras 3 native, relu LSTM
    ("k3_nested.h5", "keras"),           # Keras 3 legacy HDF5, nested Sequentials
    ("k2_nested.h5", "tf_keras"),        # tf-keras HDF5
    ("k2_bidi_none.keras", "tf_keras"),  # tf-keras .keras, two outputs
    ("k3_embed.keras", "keras"),         # integer inputs generated below the vocabulary size
    ("k2_convlstm3d.h5", "tf_keras"),    # ConvLSTM3D, strides + same, Keras 2's hard_sigmoid
    ("k3_convlstm_options.keras", "keras"),  # dilation, go_backwards + return_state, channels_first, ConvLSTM1D
    ("k3_cell_wrappers.h5", "keras"),    # RNN(LSTMCell / GRUCell / SimpleRNNCell), RNN(StackedRNNCells)
])
def test_verify_passes_on_real_models(file, package):
    result = verify_function(FIXTURES / file)
    assert result.reference == package
    assert result.ok, [(d.key, d.max_abs, d.note) for d in result.diffs if not d.ok]
    keys = {d.key for d in result.diffs}
    assert any(k.startswith("__output__") for k in keys) and len(keys) >= 3
    assert max(d.max_abs for d in result.diffs) < 1e-5


def test_verify_cli_with_given_input_masked_model(tmp_path, capsys):
    with np.load(FIXTURES / "k2_masked.oracle.npz") as npz:
        np.save(tmp_path / "x.npy", npz["input"])  # padded with zeros: the mask matters
    code, out, err = run_cli(["verify", str(FIXTURES / "k2_masked.h5"), "--input", str(tmp_path / "x.npy")], capsys)
    assert code == 0, out + err
    assert "OK:" in out and "lstm_1" in out


def corrupt_copy(src, dst, layer="lstm"):
    """Copy a legacy .h5 and add 0.5 to one bias value of `layer`."""
    shutil.copy(src, dst)
    with h5py.File(dst, "r+") as f:
        names = []
        f["model_weights"][layer].visit(names.append)
        bias = next(n for n in names if n.split("/")[-1].startswith("bias"))
        ds = f["model_weights"][layer][bias]
        values = ds[()]
        values.flat[0] += 0.5
        ds[...] = values


@pytest.mark.parametrize("file", ["k2_classic.h5", "k3_classic.h5"])
def test_verify_on_a_hand_corrupted_copy(file, tmp_path, capsys, monkeypatch):
    """verify compares two implementations reading the same bytes: a corrupted bias is read by both, so they
    agree (exit 0). When Keras reads the corrupted copy but the numpy side computes from the original bytes
    (what a misread bias in lstm-inspect would look like), verify must report the layer and exit 1."""
    bad = tmp_path / file
    corrupt_copy(FIXTURES / file, bad)
    assert verify_function(bad).ok

    module = sys.modules["lstm_inspect.run.verify_keras"]
    original_run = module.run

    def run_on_original(model, values, **kwargs):
        with lstm_inspect.open_model(FIXTURES / file) as clean:
            return original_run(clean, values, **kwargs)

    monkeypatch.setattr(module, "run", run_on_original)
    code, out, err = run_cli(["verify", str(bad)], capsys)
    assert code == 1, out + err
    assert "MISMATCH" in out
    mismatched = [line.split()[0] for line in out.splitlines() if "MISMATCH" in line and "│" in line]
    assert "lstm" in mismatched and "__output__" in mismatched


def test_verify_fails_when_the_numpy_semantics_are_wrong(tmp_path, capsys, monkeypatch):
    """A real semantic slip (Keras 2's hard_sigmoid on a Keras 3 file) is caught, exit 1, per layer."""
    from lstm_inspect.gates import activations

    real_get = activations.get
    monkeypatch.setattr(activations, "get", lambda name, major: real_get(name, 2))
    code, out, err = run_cli(["verify", str(FIXTURES / "k3_lstm_hardsig.keras")], capsys)
    assert code == 1, out + err
    assert "MISMATCH" in out


def test_verify_json(capsys):
    code, out, err = run_cli(["verify", str(FIXTURES / "k3_gru_nora.keras"), "--json", "--batch", "3"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["ok"] is True and data["reference"] == "keras"
    assert data["inputs"] and all(shape[0] == 3 for shape in data["inputs"].values())
    assert {"gru", "__output__"} <= {layer["key"] for layer in data["layers"]}


def test_verify_weights_only_file_is_exit_2(capsys):
    code, out, err = run_cli(["verify", str(FIXTURES / "k2_classic_weights.h5")], capsys)
    assert code == 2 and "weights-only" in err and len(err.strip().splitlines()) == 1


def test_verify_without_keras_is_exit_2_with_install_command(monkeypatch, capsys):
    import importlib.util

    module = sys.modules["lstm_inspect.run.verify_keras"]
    real = importlib.util.find_spec
    monkeypatch.setattr(module.importlib.util, "find_spec",
                        lambda name, *a: None if name in ("keras", "tf_keras", "tensorflow") else real(name, *a))
    code, out, err = run_cli(["verify", str(FIXTURES / "k3_classic.keras")], capsys)
    assert code == 2
    assert "pip install 'lstm-inspect[keras]'" in err


def test_verify_refuses_lambda_before_keras_loads_it():
    with pytest.raises(InspectError) as info:
        verify_function(FIXTURES / "k2_lambda_custom.h5")
    assert "Lambda" in str(info.value)


def test_verify_feeds_token_ids_to_an_embedding_declared_float(tmp_path):
    """Written by tf-keras: Input(dtype float32) -> Embedding -> LSTM, as trained real models declare it (the
    Embedding casts). verify must draw token ids for it, not normal floats (was: index out of range)."""
    import tf_keras
    model = tf_keras.Sequential([tf_keras.Input((6,), dtype="float32"), tf_keras.layers.Embedding(5, 3),
                                 tf_keras.layers.LSTM(4), tf_keras.layers.Dense(2)])
    path = tmp_path / "embed_float_input.h5"
    model.save(path)
    result = verify_function(str(path))
    assert result.ok, [(d.layer, d.max_abs) for d in result.diffs]


TRAINED = FIXTURES.parent / "trained"


@pytest.mark.parametrize("file", ["k2_trained_char_lstm.h5", "k3_trained_char_lstm.keras",
                                  "k2_trained_forecaster.h5", "k3_trained_forecaster.keras",
                                  "k2_trained_gru_reset_after.h5", "k3_trained_gru_reset_after.keras"])
def test_noise_aware_verify_passes_on_trained_models(file):
    """Trained by us (tests/fixtures/trained): weights up to 134 and recurrent spectral norms up to 25, where the
    fixed 1e-5 tolerance cried wolf on healthy real models. Each layer is held to its own float32 noise."""
    result = verify_function(TRAINED / file)
    assert result.noise_aware and result.ok, [(d.key, d.max_abs, d.bound) for d in result.diffs if not d.ok]
    assert all(d.noise is not None and d.bound > 0 for d in result.diffs)
    assert result.largest_margin < 1


def _numpy_side_reads(monkeypatch, edited: Path) -> None:
    """Keras loads the file as it is; lstm-inspect's numpy pass (float64 and float32) computes from `edited`:
    what a misread gate or bias inside lstm-inspect would look like."""
    module = sys.modules["lstm_inspect.run.verify_keras"]
    original_run = module.run

    def run_on_edited(model, values, **kwargs):
        with lstm_inspect.open_model(edited) as other:
            return original_run(other, values, **kwargs)

    monkeypatch.setattr(module, "run", run_on_edited)


def _edited_copy(tmp_path, file: str, dataset: str, edit) -> Path:
    path = tmp_path / file
    shutil.copy(TRAINED / file, path)
    with h5py.File(path, "r+") as f:
        data = f[dataset][...]
        edit(data)
        f[dataset][...] = data
    return path


def test_noise_aware_verify_fails_on_a_swapped_gate(tmp_path, monkeypatch):
    """W_i and W_f exchanged (the classic gate-order slip) in what the numpy side reads: MISMATCH at the LSTM."""
    def swap(kernel):
        u = kernel.shape[1] // 4
        kernel[:, :u], kernel[:, u:2 * u] = kernel[:, u:2 * u].copy(), kernel[:, :u].copy()
    edited = _edited_copy(tmp_path, "k2_trained_char_lstm.h5", "model_weights/lstm/lstm/lstm_cell/kernel:0", swap)
    _numpy_side_reads(monkeypatch, edited)
    result = verify_function(TRAINED / "k2_trained_char_lstm.h5")
    assert not result.ok and {"lstm", "__output__"} <= {d.key for d in result.diffs if not d.ok}


def test_noise_aware_verify_fails_on_one_changed_bias_value(tmp_path, monkeypatch):
    """One GRU bias value off by 1e-3: far below the old fixed tolerance's reach on large outputs, far above this
    model's float32 noise."""
    def nudge(bias):
        bias[0, 3] += 1e-3
    edited = _edited_copy(tmp_path, "k2_trained_gru_reset_after.h5", "model_weights/gru/gru/gru_cell/bias:0", nudge)
    _numpy_side_reads(monkeypatch, edited)
    result = verify_function(TRAINED / "k2_trained_gru_reset_after.h5")
    bad = {d.key: d.margin for d in result.diffs if not d.ok}
    assert "gru" in bad and bad["gru"] > 1


def test_noise_aware_verify_fails_on_a_hard_sigmoid_version_slip(monkeypatch):
    """Keras 2's hard_sigmoid (0.2x + 0.5) where the Keras 3 file means x/6 + 0.5."""
    from lstm_inspect.gates import activations

    real_get = activations.get
    monkeypatch.setattr(activations, "get", lambda name, major: real_get(name, 2))
    result = verify_function(FIXTURES / "k3_lstm_hardsig.keras")
    assert result.noise_aware and not result.ok


def test_fixed_tolerance_on_request(capsys):
    code, out, err = run_cli(["verify", str(TRAINED / "k3_trained_forecaster.keras"), "--json",
                              "--rtol", "1e-5"], capsys)
    data = json.loads(out)
    assert data["tolerance"] == "fixed" and data["rtol"] == 1e-5 and data["atol"] == 1e-6
    assert all(layer["margin"] is None for layer in data["layers"])


def test_channels_first_convlstm_verifies_whatever_the_cpu(tmp_path):
    """TensorFlow runs a channels_first Conv2D on the CPU only with its oneDNN kernels, on by default only on CPUs
    with AVX512-VNNI / AMX ("The Conv2D op currently only supports the NHWC tensor format on the CPU" elsewhere).
    verify turns them on unless told otherwise: with TF_ENABLE_ONEDNN_OPTS unset it passes on any x86 CPU; with
    TF_ENABLE_ONEDNN_OPTS=0 (what such a CPU gets by default) the reference cannot run it: one line, exit 2."""
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    env["PYTHONPATH"] = str(Path(lstm_inspect.__file__).parent.parent)
    command = [sys.executable, "-m", "lstm_inspect", "verify", str(FIXTURES / "k3_convlstm_options.keras")]
    default = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert default.returncode == 0, default.stdout[-1500:] + default.stderr
    off = subprocess.run(command, capture_output=True, text=True, env=dict(env, TF_ENABLE_ONEDNN_OPTS="0"),
                         timeout=600)
    assert off.returncode == 2 and "NHWC" in off.stderr and off.stderr.strip().count("\n") == 0, off.stderr

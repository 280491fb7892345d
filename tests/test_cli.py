"""The commands as a user runs them: output, --json, --layer, --no-stats, export keys, exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from lstm_inspect import __version__, example_path, open_model
from lstm_inspect.cli import cli


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


def test_model_argument_alone_means_inspect():
    a, b = run(str(FIXTURES / "k2_classic.h5")), run("inspect", str(FIXTURES / "k2_classic.h5"))
    assert a.exit_code == b.exit_code == 0
    assert a.stdout == b.stdout


def test_inspect_shows_header_tree_and_gate_table():
    result = run("inspect", str(FIXTURES / "k2_classic.h5"))
    out = result.stdout
    assert "Keras 2 / tf.keras full model (HDF5)" in out and "Keras 2.21.0" in out
    assert "Total params: 77,681" in out
    assert "60,480" in out  # the LSTM's count_params()
    for block, source in [("W_f", "kernel[:, 120:240]"), ("U_o", "recurrent_kernel[:, 360:480]"), ("b_c", "bias[240:360]")]:
        line = next(line for line in out.splitlines() if f" {block} " in line)
        assert source in line
    assert "activation=relu instead of tanh" in out
    assert "One bias per gate" in out


def test_inspect_notes_hard_sigmoid_by_version():
    k2 = run("inspect", str(FIXTURES / "k2_lstm_hardsig.h5")).stdout
    k3 = run("inspect", str(FIXTURES / "k3_lstm_hardsig.keras")).stdout
    assert "hard_sigmoid here is clip(0.2·x + 0.5, 0, 1)" in k2
    assert "hard_sigmoid here is clip(x/6 + 0.5, 0, 1)" in k3


def test_inspect_notes_untrained_forget_bias():
    assert "b_f is exactly 1.0 everywhere" in run("inspect", str(FIXTURES / "k3_lstm_init.keras")).stdout
    assert "b_f is exactly 1.0" not in run("inspect", str(FIXTURES / "k3_classic.keras")).stdout


def test_json_report_follows_schema():
    result = run("inspect", "--json", str(FIXTURES / "k3_gru_ra.keras"))
    report = json.loads(result.stdout)
    assert report["schema_version"] == 1
    assert report["total_params"] == sum(layer["params"] for layer in report["layers"] if layer["depth"] == 0)
    gru = next(layer for layer in report["layers"] if layer["class_name"] == "GRU")
    rec = gru["recurrent"]
    assert rec["family"] == "GRU" and rec["reset_after"] is True and rec["units"] == 5
    keys = [b["key"] for b in rec["blocks"]]
    assert keys == ["W_z", "W_r", "W_h", "U_z", "U_r", "U_h", "b_z", "b_r", "b_h", "rb_z", "rb_r", "rb_h"]
    stats = rec["blocks"][0]["stats"]
    assert set(stats) == {"shape", "params", "mean", "std", "min", "max", "l2", "zero_fraction", "nan", "inf"}
    with open_model(FIXTURES / "k3_gru_ra.keras") as model:
        kernel = model.find("gru")[0].weight("kernel").read()
    assert stats["mean"] == pytest.approx(float(kernel[:, 0:5].astype(np.float64).mean()))
    assert stats["l2"] == pytest.approx(float(np.linalg.norm(kernel[:, 0:5].astype(np.float64))))


def test_layer_filter_matches_any_part_of_the_path():
    report = json.loads(run("inspect", "--json", "--layer", "inner", str(FIXTURES / "k3_nested.keras")).stdout)
    assert [layer["path"] for layer in report["layers"]] == ["encoder/inner", "encoder/inner/input_layer_1",
                                                             "encoder/inner/enc_lstm_b"] or \
        {layer["path"] for layer in report["layers"]} >= {"encoder/inner", "encoder/inner/enc_lstm_b"}
    both = json.loads(run("inspect", "--json", "--layer", "dense_1", "--layer", "dense_2",
                          str(FIXTURES / "k2_classic.h5")).stdout)
    assert [layer["path"] for layer in both["layers"]] == ["dense_1", "dense_2"]


def test_no_stats_gives_shapes_only():
    report = json.loads(run("inspect", "--json", "--no-stats", str(FIXTURES / "k2_classic.h5")).stdout)
    lstm = next(layer for layer in report["layers"] if layer["name"] == "lstm")
    assert all(block["stats"] is None for block in lstm["recurrent"]["blocks"])
    assert lstm["recurrent"]["blocks"][0]["shape"] == [5, 120]


def test_export_writes_plain_arrays_with_documented_keys(tmp_path):
    out = tmp_path / "gates.npz"
    result = run("export", str(FIXTURES / "k3_nested.keras"), "-o", str(out))
    assert result.exit_code == 0, result.output
    with np.load(out, allow_pickle=False) as data:
        keys = set(data.files)
        assert {"encoder/enc_lstm_a/W_i", "encoder/inner/enc_lstm_b/U_f", "encoder/enc_lstm_a/b_o",
                "head/kernel", "head/bias"} <= keys
        assert data["encoder/enc_lstm_a/W_i"].shape == (3, 5)
        assert data["encoder/enc_lstm_a/U_f"].shape == (5, 5)
        with open_model(FIXTURES / "k3_nested.keras") as model:
            kernel = next(l for l in model.layers if l.name == "enc_lstm_a").weight("kernel").read()
        np.testing.assert_array_equal(data["encoder/enc_lstm_a/W_f"], kernel[:, 5:10])


def test_export_bidirectional_and_fused(tmp_path):
    out = tmp_path / "b.npz"
    assert run("export", str(FIXTURES / "k2_bidi_concat.h5"), "-o", str(out), "--layer", "bidi").exit_code == 0
    keys = set(np.load(out).files)
    assert "bidi/forward_lstm/U_f" in keys and "bidi/backward_lstm/U_f" in keys
    assert not any(k.startswith("dense") for k in keys)
    fused = tmp_path / "f.npz"
    assert run("export", str(FIXTURES / "k2_bidi_concat.h5"), "-o", str(fused), "--fused").exit_code == 0
    assert {"bidi/forward_lstm/kernel", "bidi/forward_lstm/recurrent_kernel", "bidi/forward_lstm/bias"} <= set(np.load(fused).files)


def test_export_gru_reset_after_keys(tmp_path):
    out = tmp_path / "g.npz"
    run("export", str(FIXTURES / "k2_gru_ra.h5"), "-o", str(out))
    keys = set(np.load(out).files)
    assert {"gru/W_z", "gru/U_r", "gru/b_h", "gru/rb_h"} <= keys
    run("export", str(FIXTURES / "k2_gru_nora.h5"), "-o", str(out))
    keys = set(np.load(out).files)
    assert "gru/b_h" in keys and not any("rb_" in k for k in keys)


def test_export_nothing_matched_is_an_error(tmp_path):
    result = run("export", str(FIXTURES / "k2_classic.h5"), "-o", str(tmp_path / "x.npz"), "--layer", "nope")
    assert result.exit_code == 2 and "--layer nope matches nothing" in result.stderr


def test_demo_inspects_the_bundled_example():
    result = run("demo")
    assert result.exit_code == 0
    assert "example_lstm.keras" in result.stdout and "Total params: 77,681" in result.stdout
    with open_model(example_path()) as model:
        assert model.total_params == 77_681


def test_usage_errors_exit_2():
    assert run("inspect").exit_code == 2
    assert run("inspect", "--bogus", "x").exit_code == 2


def test_version():
    assert __version__ in run("--version").stdout


def test_console_script_and_python_m(tmp_path):
    for command in (["lstm-inspect"], [sys.executable, "-m", "lstm_inspect"]):
        done = subprocess.run(command + [str(FIXTURES / "k2_classic.h5"), "--no-stats"], capture_output=True, text=True)
        assert done.returncode == 0 and "Total params: 77,681" in done.stdout
        bad = subprocess.run(command + [str(tmp_path / "missing.keras")], capture_output=True, text=True)
        assert bad.returncode == 2
        assert bad.stderr.strip() == f"lstm-inspect: error: {tmp_path / 'missing.keras'}: no such file or directory"


def test_reading_never_imports_tensorflow():
    code = ("import sys, lstm_inspect; r = lstm_inspect.inspect(sys.argv[1]); lstm_inspect.export_arrays(sys.argv[1]);"
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras', 'torch')]")
    for file in ("k2_classic.h5", "k3_classic.keras", "k3_classic.weights.h5"):
        subprocess.run([sys.executable, "-c", code, str(FIXTURES / file)], check=True)

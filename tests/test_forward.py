"""The numpy forward pass against Keras's own outputs (the oracles written by tests/fixtures/generate.py), per layer
and for the whole model, for every fixture file that holds a model config; `--trace` against a step-by-step
reference written here; `--layer`, errors and the CLI."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_inspect
from conftest import FIXTURES, manifest
from lstm_inspect import open_model, split_gates
from lstm_inspect.gates.activations import get as get_activation
from conftest import run_cli as main
from lstm_inspect.errors import InspectError
from lstm_inspect.run.forward import OUTPUT_KEY, run

RTOL, ATOL = 1e-5, 1e-6
CONFIG_KINDS = {"h5-full", "keras-zip", "keras-dir"}


def oracle(entry: dict) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / entry["oracle"]) as npz:
        return {k: npz[k] for k in npz.files}


def oracle_inputs(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in values.items() if k == "input" or k.startswith("input/")}


def model_files():
    for file, entry in sorted(manifest()["files"].items()):
        if entry["kind"] in CONFIG_KINDS:
            yield pytest.param(file, entry, id=file)


def needs_code(path) -> list[str]:
    with open_model(path) as model:
        return [f"{layer.key} ({layer.class_name})" for layer in model.layers if layer.needs_code]


@pytest.mark.parametrize("file,entry", list(model_files()))
def test_parity_with_keras_every_layer(file, entry):
    expected = oracle(entry)
    refused = needs_code(FIXTURES / file)
    if refused:  # Lambda / custom classes: the pass must refuse them by name, never guess
        with pytest.raises(InspectError) as info:
            lstm_inspect.forward(FIXTURES / file, oracle_inputs(expected))
        assert any(r.split(" ")[0] in str(info.value) for r in refused), str(info.value)
        return
    ours = lstm_inspect.forward(FIXTURES / file, oracle_inputs(expected))
    compared = 0
    for key, want in expected.items():
        if key == "input" or key.startswith("input/"):
            continue
        assert key in ours, f"{key} missing from the forward pass ({sorted(ours)})"
        assert ours[key].shape == want.shape, key
        np.testing.assert_allclose(ours[key], want, rtol=RTOL, atol=ATOL, err_msg=key)
        compared += 1
    assert any(k.startswith(OUTPUT_KEY) for k in expected) and compared >= 2


@pytest.mark.parametrize("file", ["k3_lambda_custom.keras", "k2_lambda_custom.h5"])
def test_refused_layer_is_named_with_its_class_and_exit_2(file, tmp_path, capsys):
    x = tmp_path / "x.npz"
    np.savez(x, **oracle_inputs(oracle(manifest()["files"][file])))
    code = main(["forward", str(FIXTURES / file), "--input", str(x), "-o", str(tmp_path / "o.npz")])
    err = capsys.readouterr().err
    assert code == 2
    assert "times_two" in err and "Lambda" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_hard_sigmoid_definition_depends_on_the_writing_keras():
    """The hardsig fixtures discriminate: running a Keras 3 file with Keras 2's hard_sigmoid misses the oracle."""
    entry = manifest()["files"]["k3_lstm_hardsig.keras"]
    expected = oracle(entry)
    with open_model(FIXTURES / "k3_lstm_hardsig.keras") as model:
        assert model.keras_major == 3
        right = run(model, oracle_inputs(expected))
        model.keras_version = "2.15.0"  # pretend: Keras 2's clip(0.2x + 0.5)
        wrong = run(model, oracle_inputs(expected))
    np.testing.assert_allclose(right[OUTPUT_KEY], expected["__output__"], rtol=RTOL, atol=ATOL)
    assert not np.allclose(wrong[OUTPUT_KEY], expected["__output__"], rtol=1e-3, atol=1e-4)


def test_float32_mode_also_matches():
    expected = oracle(manifest()["files"]["k3_stacked.keras"])
    ours = lstm_inspect.forward(FIXTURES / "k3_stacked.keras", oracle_inputs(expected), dtype=np.float32)
    assert ours[OUTPUT_KEY].dtype == np.float32
    np.testing.assert_allclose(ours[OUTPUT_KEY], expected["__output__"], rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------------------------------------------------------
# --trace against a step-by-step reference: one sample, one step, one gate at a time, from the split gate blocks.

def _sig(keras_major):
    return lambda name: get_activation(name, keras_major)


def reference_steps(layer, keras_major, x, mask=None, zero_output_for_mask=False):
    """Per-sample, per-step, per-gate loop; returns {name: (batch, time, units)} in processing order."""
    cfg = layer.config
    split = split_gates(layer)
    blocks = split.arrays()
    act = _sig(keras_major)(cfg.get("activation", "tanh"))
    ract = _sig(keras_major)(cfg.get("recurrent_activation", "sigmoid"))
    u = split.units
    x = np.asarray(x, dtype=np.float64)
    if cfg.get("go_backwards"):
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    batch, steps = x.shape[:2]
    family = split.layout.family
    names = {"LSTM": ["i", "f", "c", "o", "cell", "hidden"], "GRU": ["z", "r", "h", "hidden"],
             "SimpleRNN": ["hidden"]}[family]
    out = {n: np.zeros((batch, steps, u)) for n in names + ["output"]}

    def b(key):
        return blocks[key].astype(np.float64) if key in blocks else np.zeros(u)

    for n in range(batch):
        h = np.zeros(u)
        c = np.zeros(u)
        prev = np.zeros(u)
        for t in range(steps):
            xt = x[n, t]
            W = {k: v.astype(np.float64) for k, v in blocks.items()}
            if family == "LSTM":
                i = ract(xt @ W["W_i"] + h @ W["U_i"] + b("b_i"))
                f = ract(xt @ W["W_f"] + h @ W["U_f"] + b("b_f"))
                g = act(xt @ W["W_c"] + h @ W["U_c"] + b("b_c"))
                o = ract(xt @ W["W_o"] + h @ W["U_o"] + b("b_o"))
                c_new = f * c + i * g
                h_new = o * act(c_new)
                vals = {"i": i, "f": f, "c": g, "o": o}
            elif family == "GRU":
                z = ract(xt @ W["W_z"] + b("b_z") + h @ W["U_z"] + b("rb_z"))
                r = ract(xt @ W["W_r"] + b("b_r") + h @ W["U_r"] + b("rb_r"))
                if split.reset_after:
                    hh = act(xt @ W["W_h"] + b("b_h") + r * (h @ W["U_h"] + b("rb_h")))
                else:
                    hh = act(xt @ W["W_h"] + (r * h) @ W["U_h"] + b("b_h"))
                h_new = z * h + (1 - z) * hh
                c_new = c
                vals = {"z": z, "r": r, "h": hh}
            else:
                h_new = act(xt @ W["W"] + h @ W["U"] + b("b"))
                c_new = c
                vals = {}
            keep = True if mask is None else bool(mask[n, t])
            if keep:
                h, c, output = h_new, c_new, h_new
            else:
                output = np.zeros(u) if zero_output_for_mask else prev
            prev = output
            for k, v in vals.items():
                out[k][n, t] = v
            out["hidden"][n, t] = h
            if family == "LSTM":
                out["cell"][n, t] = c
            out["output"][n, t] = output
    return out


TRACE_CASES = [
    ("k3_classic.keras", "lstm"),            # relu LSTM
    ("k2_lstm_hardsig.h5", "lstm"),          # Keras 2 hard_sigmoid
    ("k3_lstm_hardsig.keras", "lstm"),       # Keras 3 hard_sigmoid
    ("k2_gru_nora.h5", "gru"),               # GRU reset_after=False
    ("k3_gru_ra.keras", "gru"),              # GRU reset_after=True
    ("k3_simplernn.keras", "simple_rnn"),
    ("k3_backwards_state.keras", "rev"),     # go_backwards + return_state
    ("k2_backwards_state.h5", "grev"),
    ("k3_lstm_nobias.keras", "lstm"),
]


@pytest.mark.parametrize("file,layer_name", TRACE_CASES)
def test_trace_matches_step_by_step_reference(file, layer_name):
    expected = oracle(manifest()["files"][file])
    inputs = oracle_inputs(expected)
    with open_model(FIXTURES / file) as model:
        layer = next(l for l in model.layers if l.name == layer_name)
        ours = run(model, inputs, trace=True, dtype=np.float64)  # exact against the float64 reference
        x = next(iter(inputs.values()))
        ref = reference_steps(layer, model.keras_major, x)
    assert ref, layer_name
    for name in ref:
        if name == "output":
            continue
        got = ours[f"{layer.key}/{name}"]
        assert got.shape == ref[name].shape == (x.shape[0], x.shape[1], split_units(layer))
        np.testing.assert_allclose(got, ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
    # and the reference itself agrees with Keras's own output of the layer
    keras_out = expected.get(layer.key, expected.get(f"{layer.key}/0"))
    mine = ref["output"] if keras_out.ndim == 3 else ref["output"][:, -1]
    np.testing.assert_allclose(mine, keras_out, rtol=RTOL, atol=ATOL)


def split_units(layer):
    return split_gates(layer).units


def test_trace_with_mask_keeps_states_on_masked_steps():
    entry = manifest()["files"]["k3_masked.keras"]
    expected = oracle(entry)
    x = expected["input"]
    mask = np.any(x != 0.0, axis=-1)
    assert not mask.all()  # the fixture really is padded
    with open_model(FIXTURES / "k3_masked.keras") as model:
        ours = run(model, {"input": x}, trace=True, dtype=np.float64)
        first = next(l for l in model.layers if l.class_name == "LSTM")
        ref = reference_steps(first, model.keras_major, x, mask)
    for name in ("cell", "hidden"):
        np.testing.assert_allclose(ours[f"{first.key}/{name}"], ref[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ref["output"], expected[first.key], rtol=RTOL, atol=ATOL)
    # masked steps hold the previous state
    n, t = np.argwhere(~mask[:, 1:])[0] + [0, 1]
    np.testing.assert_array_equal(ours[f"{first.key}/hidden"][n, t], ours[f"{first.key}/hidden"][n, t - 1])


def test_bidirectional_trace_keys_cover_both_directions():
    expected = oracle(manifest()["files"]["k3_bidi_gru.keras"])
    out = lstm_inspect.forward(FIXTURES / "k3_bidi_gru.keras", oracle_inputs(expected), trace=True)
    for direction in ("forward_gru", "backward_gru"):
        for name in ("z", "r", "h", "hidden"):
            assert out[f"bidi/{direction}/{name}"].shape == (3, 5, 3)
    # the backward layer's trace is in processing order: its first step read the last input step
    assert not np.allclose(out["bidi/backward_gru/hidden"][:, 0], out["bidi/forward_gru/hidden"][:, -1])


# ------------------------------------------------------------------------------------------------------------------
# --layer, the CLI and errors


def test_layer_option_stops_after_the_layer(tmp_path):
    expected = oracle(manifest()["files"]["k3_multi_io.keras"])
    out = lstm_inspect.forward(FIXTURES / "k3_multi_io.keras", oracle_inputs(expected), layers=["lstm_b"])
    assert set(out) == {"lstm_b"}
    np.testing.assert_allclose(out["lstm_b"], expected["lstm_b"], rtol=RTOL, atol=ATOL)


def test_cli_forward_writes_layers_output_and_trace(tmp_path, capsys):
    entry = manifest()["files"]["k2_nested.h5"]
    expected = oracle(entry)
    x = tmp_path / "x.npy"
    np.save(x, expected["input"])
    out = tmp_path / "out.npz"
    assert main(["forward", str(FIXTURES / "k2_nested.h5"), "--input", str(x), "-o", str(out), "--trace"]) == 0
    with np.load(out) as got:
        keys = set(got.files)
        np.testing.assert_allclose(got["__output__"], expected["__output__"], rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(got["encoder/inner/enc_lstm_b"], expected["encoder/inner/enc_lstm_b"],
                                   rtol=RTOL, atol=ATOL)
    assert {"encoder/enc_lstm_a/i", "encoder/enc_lstm_a/cell", "encoder/inner/enc_lstm_b/hidden"} <= keys


def test_cli_forward_multi_input_npz_by_name(tmp_path):
    expected = oracle(manifest()["files"]["k2_multi_io.h5"])
    x = tmp_path / "x.npz"
    np.savez(x, seq_a=expected["input/seq_a"], seq_b=expected["input/seq_b"])
    out = tmp_path / "out.npz"
    assert main(["forward", str(FIXTURES / "k2_multi_io.h5"), "--input", str(x), "-o", str(out)]) == 0
    with np.load(out) as got:
        for i in (0, 1):
            np.testing.assert_allclose(got[f"__output__/{i}"], expected[f"__output__/{i}"], rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["wrong_shape", "missing_input", "weights_only", "not_an_array", "no_layer"])
def test_bad_input_is_one_line_exit_2(case, tmp_path, capsys):
    model = FIXTURES / "k3_classic.keras"
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 10, 5), dtype=np.float32))
    args = ["forward", str(model), "--input", str(x), "-o", str(tmp_path / "o.npz")]
    if case == "wrong_shape":
        np.save(x, np.zeros((2, 10, 4), dtype=np.float32))
    elif case == "missing_input":
        args = ["forward", str(FIXTURES / "k3_multi_io.keras"), "--input", str(x), "-o", str(tmp_path / "o.npz")]
    elif case == "weights_only":
        args[1] = str(FIXTURES / "k3_classic.weights.h5")
    elif case == "not_an_array":
        (tmp_path / "bad.npy").write_text("hello")
        args[3] = str(tmp_path / "bad.npy")
    elif case == "no_layer":
        args += ["--layer", "no_such_layer"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and err.startswith("lstm-inspect: error:")


def test_unsupported_class_is_named(tmp_path):
    with open_model(FIXTURES / "k3_classic.keras") as model:
        dense = next(l for l in model.layers if l.class_name == "Dense")
        dense.class_name = "Conv3DTranspose"
        with pytest.raises(InspectError) as info:
            run(model, np.zeros((1, 10, 5), dtype=np.float32))
    assert dense.key in str(info.value) and "Conv3DTranspose" in str(info.value)


def test_api_names_are_the_functions():
    assert callable(lstm_inspect.forward) and callable(lstm_inspect.verify) and callable(lstm_inspect.explain)
    import sys

    from lstm_inspect.run.forward import run as module_run  # the module stays importable under its own name

    assert sys.modules["lstm_inspect.run.forward"].run is module_run
    assert lstm_inspect.forward is lstm_inspect.api.forward

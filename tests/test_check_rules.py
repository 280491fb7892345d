"""Each `check` rule against a copy of a real Keras fixture made hostile with h5py, and against one that passes.

The copies start from ``k3_classic.h5`` (Keras 3 legacy HDF5: LSTM(120) on 5 inputs, Dense 100/50/1) and change
one thing; the passing twin changes the same thing by a harmless amount, so each pair pins the rule's threshold.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest

from conftest import FIXTURES, manifest
from lstm_inspect.analysis import check as checks
from lstm_inspect.analysis import discovery, rules_gates
from lstm_inspect.readers import open_model

BASE = "k3_classic.h5"
U = 120  # units of the base model's LSTM, checked below against the file itself


def sources(path: Path) -> dict[str, str]:
    with open_model(path) as model:
        return {f"{layer.key}/{t.name}": t.source for layer in model.layers for t in layer.weights}


def hostile(tmp_path: Path, edit: Callable[[h5py.File, dict[str, str]], None], base: str = BASE,
            name: str = "model.h5") -> Path:
    target = tmp_path / name
    shutil.copy(FIXTURES / base, target)
    where = sources(target)
    with h5py.File(target, "r+") as f:
        edit(f, where)
    return target


def gate(g: int) -> slice:
    return slice(g * U, (g + 1) * U)


def set_block(weight: str, cols: slice, value: Callable[[np.ndarray], np.ndarray]):
    def edit(f: h5py.File, where: dict[str, str]) -> None:
        data = f[where[f"lstm/{weight}"]][...]
        data[..., cols] = value(data[..., cols])
        f[where[f"lstm/{weight}"]][...] = data
    return edit


def findings(path: Path, rule: str, **options) -> list[checks.Finding]:
    opts = checks.CheckOptions(select=(rule,), **options)
    result = checks.check_path(str(path), opts)
    assert result.error is None, result.error
    return result.findings


def test_base_fixture_is_what_the_cases_assume():
    with open_model(FIXTURES / BASE) as model:
        assert model.find("lstm")[0].weight("recurrent_kernel").shape == (U, 4 * U)
    assert checks.check_path(str(FIXTURES / BASE)).findings == []


def _sigma(path: Path, key: str) -> float:
    with open_model(path) as model:
        from lstm_inspect import gates
        return float(np.linalg.norm(gates.split(model.find("lstm")[0]).arrays()[key], ord=2))


def _nan(a):
    a = a.copy()
    a[0, 3] = np.nan
    return a


def _inf(a):
    a = a.copy()
    a[0, 3] = np.inf
    return a


def _copy_of(src: slice):
    def edit(f, where):
        data = f[where["lstm/recurrent_kernel"]][...]
        data[:, gate(0)] = data[:, src]
        f[where["lstm/recurrent_kernel"]][...] = data
    return edit


def _near_copy_of(src: slice):
    def edit(f, where):
        data = f[where["lstm/recurrent_kernel"]][...]
        data[:, gate(0)] = data[:, src]
        data[7, 0] += 1e-3
        f[where["lstm/recurrent_kernel"]][...] = data
    return edit


# rule, block the failing case must name, failing edit, passing edit
CASES = [
    ("non-finite", "W_f", set_block("kernel", gate(1), _nan), set_block("kernel", gate(1), lambda a: a * 0.5)),
    ("non-finite", "U_o", set_block("recurrent_kernel", gate(3), _inf), None),
    ("dead-block", "U_c", set_block("recurrent_kernel", gate(2), np.zeros_like),
     set_block("recurrent_kernel", gate(2), lambda a: a * 1e-3)),
    ("dead-block", "W_i", set_block("kernel", gate(0), lambda a: np.full_like(a, 0.3)), None),
    ("duplicate-block", "U_o", _copy_of(gate(3)), _near_copy_of(gate(3))),
    # passing copies at the scale of the largest healthy trained weights of the real-world corpus (docs/check.md)
    ("max-abs", "W_o", set_block("kernel", gate(3), lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, 5000.0, a)),
     set_block("kernel", gate(3), lambda a: np.where(np.arange(a.size).reshape(a.shape) == 0, 170.0, a))),
    ("block-norm", "b_i", set_block("bias", gate(0), lambda a: np.full_like(a, 400.0) + np.linspace(0, 1, a.size)),
     set_block("bias", gate(0), lambda a: np.full_like(a, 130.0) + np.linspace(0, 1, a.size))),
    ("outlier-block", "U_f", set_block("recurrent_kernel", gate(1), lambda a: a * 1000),
     set_block("recurrent_kernel", gate(1), lambda a: a * 10)),
    ("outlier-block", "W_c", set_block("kernel", gate(2), lambda a: a * 1e-4),
     set_block("kernel", gate(2), lambda a: a * 0.1)),
    ("forget-bias-negative", "b_f", set_block("bias", gate(1), lambda a: a - 10),
     set_block("bias", gate(1), lambda a: np.clip(a, -1, 1) - 3)),
    ("bias-saturation", "b_o", set_block("bias", gate(3), lambda a: np.abs(a) + 15),
     set_block("bias", gate(3), lambda a: np.abs(a) + 8)),
    ("bias-saturation", "b_i", set_block("bias", gate(0), lambda a: -np.abs(a) - 15), None),
]


@pytest.mark.parametrize("rule,block,bad,good", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_rule_fails_and_passes(tmp_path, rule, block, bad, good):
    failing = findings(hostile(tmp_path, bad, name="bad.h5"), rule)
    assert failing, f"{rule} did not fire"
    assert any(f.block == block and f.layer == "lstm" for f in failing), failing
    assert all(f.severity == checks.RULES[rule].severity for f in failing)
    if good is not None:
        assert findings(hostile(tmp_path, good, name="good.h5"), rule) == []


def test_spectral_norm_threshold_is_the_exact_singular_value(tmp_path):
    sigma = _sigma(FIXTURES / BASE, "U_c")
    limit = checks.DEFAULT_THRESHOLDS["spectral_norm_max"]
    bad = hostile(tmp_path, set_block("recurrent_kernel", gate(2), lambda a: a * (1.2 * limit / sigma)), name="b.h5")
    good = hostile(tmp_path, set_block("recurrent_kernel", gate(2), lambda a: a * (0.8 * limit / sigma)), name="g.h5")
    assert _sigma(bad, "U_c") > limit > _sigma(good, "U_c")
    found = findings(bad, "spectral-norm")
    assert [(f.layer, f.block) for f in found] == [("lstm", "U_c")]
    assert findings(good, "spectral-norm") == []


@pytest.mark.parametrize("shape", [(3, 3), (120, 120), (7, 40), (40, 7), (2, 5, 9)])
def test_power_iteration_matches_svd(shape):
    a = np.random.default_rng(sum(shape)).standard_normal(shape)
    exact = np.linalg.norm(a.reshape(-1, shape[-1]), ord=2)
    assert rules_gates.spectral_norm(a) == pytest.approx(exact, rel=1e-9)
    # the power iteration used for large blocks: from below, and close even without a spectral gap
    estimate = rules_gates.spectral_norm(a, exact_below=0)
    assert estimate <= exact * (1 + 1e-12) and estimate == pytest.approx(exact, rel=1e-3)
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((64, 64)))
    assert rules_gates.spectral_norm(q, exact_below=0) == pytest.approx(1.0, rel=1e-6)
    left, _ = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))
    right, _ = np.linalg.qr(np.random.default_rng(3).standard_normal((3, 3)))
    gap = left @ np.diag([5.0, 2.0, 1.0]) @ right
    assert rules_gates.spectral_norm(gap, exact_below=0) == pytest.approx(5.0, rel=1e-8)


def _config_units(f, where, units):
    config = json.loads(f.attrs["model_config"])
    layers = config["config"]["layers"]
    lstm = next(layer for layer in layers if layer["class_name"] == "LSTM")
    lstm["config"]["units"] = units
    f.attrs["model_config"] = json.dumps(config)


def test_config_mismatch(tmp_path):
    bad = hostile(tmp_path, lambda f, w: _config_units(f, w, U + 1), name="bad.h5")
    found = findings(bad, "config-mismatch")
    assert len(found) == 1 and found[0].layer == "lstm" and "units=121" in found[0].message
    assert found[0].severity == "error"
    good = hostile(tmp_path, lambda f, w: _config_units(f, w, U), name="good.h5")
    assert findings(good, "config-mismatch") == []


def _as_float16(peak: float):
    def edit(f, where):
        path = where["dense/kernel"]
        data = f[path][...].astype(np.float16)
        data[0, 0] = peak
        attrs = dict(f[path].attrs)
        del f[path]
        f.create_dataset(path, data=data)
        for key, value in attrs.items():
            f[path].attrs[key] = value
    return edit


def test_float16_overflow(tmp_path):
    bad = hostile(tmp_path, _as_float16(20000.0), name="bad.h5")
    with open_model(bad) as model:
        assert model.find("dense")[0].weight("kernel").dtype == "float16"
    found = findings(bad, "float16-overflow")
    assert [(f.layer, f.block) for f in found] == [("dense", "kernel")]
    assert findings(hostile(tmp_path, _as_float16(60.0), name="good.h5"), "float16-overflow") == []


def test_unsafe_code_is_an_error_unless_lowered():
    path = str(FIXTURES / "k3_lambda_custom.keras")
    found = findings(Path(path), "unsafe-code")
    assert [f.message.split(": ", 2)[:2] for f in found] == [["config.json", "config.layers[2].config.function"],
                                                           ["config.json", "config.layers[3]"]]
    assert {f.severity for f in found} == {"error"} and [f.layer for f in found] == ["times_two", "scale"]
    assert checks.check_path(path, checks.CheckOptions(select=("unsafe-code",))).failed
    lowered = checks.CheckOptions(select=("unsafe-code",), severity={"unsafe-code": "warning"})
    assert not checks.check_path(path, lowered).failed
    assert checks.check_path(path, checks.CheckOptions(select=("unsafe-code",), severity={"unsafe-code": "warning"},
                                                       strict=True)).failed
    assert findings(FIXTURES / BASE, "unsafe-code") == []


def test_needs_code_is_an_alias_of_unsafe_code():
    options = checks.CheckOptions(select=("needs-code",), severity={"needs-code": "warning"}).validate()
    assert options.select == ("unsafe-code",) and options.severity == {"unsafe-code": "warning"}
    found = checks.check_path(str(FIXTURES / "k2_lambda_custom.h5"), options).findings
    assert [f.message.split(": ", 2)[1] for f in found] == ["config.layers[2].config.function[0]", "config.layers[3]"]


def test_expectations():
    path = FIXTURES / BASE
    total = manifest()["files"][BASE]["count_params"]
    assert findings(path, "expect-layers", expect_layers=("lstm", "dense_2", "Dense")) == []
    missing = findings(path, "expect-layers", expect_layers=("lstm", "gru"))
    assert len(missing) == 1 and "'gru'" in missing[0].message
    assert findings(path, "expect-units", expect_units={"lstm": U, "dense": 100}) == []
    wrong = findings(path, "expect-units", expect_units={"lstm": 64})
    assert len(wrong) == 1 and wrong[0].layer == "lstm" and "120 units, expected 64" in wrong[0].message
    assert findings(path, "expect-units", expect_units={"gru": 4})  # no such layer is a failure too
    assert findings(path, "params-range", min_params=total, max_params=total) == []
    assert findings(path, "params-range", max_params=total - 1)
    assert findings(path, "params-range", min_params=total + 1)


def test_select_and_ignore(tmp_path):
    bad = hostile(tmp_path, set_block("recurrent_kernel", gate(2), np.zeros_like))
    all_rules = {f.rule for f in checks.check_path(str(bad)).findings}
    assert "dead-block" in all_rules
    ignored = checks.check_path(str(bad), checks.CheckOptions(ignore=("dead-block",)))
    assert "dead-block" not in {f.rule for f in ignored.findings}
    only = checks.check_path(str(bad), checks.CheckOptions(select=("non-finite",)))
    assert only.findings == [] and only.status == "pass"


def test_unknown_rule_or_threshold_is_bad_input():
    from lstm_inspect.errors import InspectError

    with pytest.raises(InspectError, match="unknown rule"):
        checks.CheckOptions(select=("no-such-rule",)).validate()
    with pytest.raises(InspectError, match="unknown threshold"):
        checks.CheckOptions(thresholds={"nope": 1.0}).validate()
    with pytest.raises(InspectError, match="severity"):
        checks.CheckOptions(severity={"unsafe-code": "fatal"}).validate()


def test_every_fixture_passes_with_no_findings_but_unsafe_code():
    """The fixtures hold random non-degenerate weights and Keras's initial values: no rule may fire on them."""
    files, _ = discovery.discover([str(FIXTURES)])
    assert len(files) >= 100
    options = checks.CheckOptions(code_only=discovery.walked_npz([str(FIXTURES)], files))  # as `check DIR` does
    for path in files:
        result = checks.check_path(path, options)
        assert result.error is None, (path, result.error)
        assert {f.rule for f in result.findings} <= {"unsafe-code"}, (path, result.findings)
        if result.findings:
            assert "lambda_custom" in path


def test_freshly_initialised_keras_models_pass_every_rule(tmp_path):
    """Keras's own initialisers (glorot, orthogonal, zero biases, b_f = 1) across small and large layers."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    L = keras.layers
    model = keras.Sequential([
        keras.Input((5, 1)), L.LSTM(256, return_sequences=True), L.LSTM(2, return_sequences=True),
        L.GRU(200, return_sequences=True), L.GRU(1, return_sequences=True, reset_after=False),
        L.SimpleRNN(64, return_sequences=True), L.Bidirectional(L.LSTM(7, return_sequences=True)),
        L.SimpleRNN(1), L.Dense(300), L.Dense(3)])
    path = tmp_path / "fresh.keras"
    model.save(path)
    result = checks.check_path(str(path), checks.CheckOptions(strict=True))
    assert result.error is None and result.findings == []


def test_every_rule_and_threshold_is_documented():
    doc = (Path(__file__).parent.parent / "docs" / "check.md").read_text()
    for rule in checks.RULES.values():
        assert f"| `{rule.id}` | {rule.severity} |" in doc, rule.id
        for name in rule.thresholds:
            assert f"`{name}` = {checks.DEFAULT_THRESHOLDS[name]}" in doc, name


@pytest.mark.parametrize("streamed", [False, True])
def test_spectral_norm_of_every_fixture_block_within_1_percent_of_svd(monkeypatch, streamed):
    """Every recurrent-kernel block of the fixtures (Keras 2/3, LSTM/GRU/SimpleRNN): Lanczos in the file's float32,
    from below and within 1% (measured: 1e-4) of the exact SVD in float64 — also when the block is streamed from
    the file in row chunks instead of held in memory."""
    from lstm_inspect import gates, model

    if streamed:  # every block larger than 4 chunks of 4 KiB: Aᵀ(Av) row chunk by row chunk
        monkeypatch.setattr(model, "CHUNK_BYTES", 4096)
        monkeypatch.setattr(model, "CACHE_BYTES", 0)
    checked = 0
    for path in sorted(FIXTURES.glob("k*.h5"))[:12]:
        with open_model(path) as m:
            for layer in m.layers:
                split = gates.split(layer)
                for block in (split.blocks if split else []):
                    if block.kind != "U" or min(block.shape) < 2:
                        continue
                    exact = np.linalg.norm(block.read().astype(np.float64), ord=2)
                    estimate = rules_gates.spectral_norm(block, exact_below=0)
                    assert estimate <= exact * (1 + 1e-5) and estimate == pytest.approx(exact, rel=1e-2), block.key
                    checked += 1
    assert checked >= 20

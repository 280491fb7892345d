"""Rules for `lstm-inspect check`: plain data, and pure functions over the neutral model that return findings.

A rule is a `Rule` record (id, default severity, one-line summary, the thresholds it reads and why their defaults
are what they are). `check_model(model, options)` runs the enabled rules over an opened `ModelFile` and returns
`Finding` records; `check_path(path, options)` opens a file, checks it and never raises for a bad file (the
failure becomes `FileResult.error`). Nothing here prints, imports click or rich, or imports TensorFlow.

The defaults are chosen so that a healthy model does not trip them: a freshly initialised Keras model (glorot
input kernels, orthogonal recurrent kernels, zero biases with ``unit_forget_bias`` b_f = 1) and normally trained
ones. docs/check.md explains each number.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Iterable

import numpy as np

from .. import gates
from ..errors import InspectError
from ..model import Layer, ModelFile, Tensor

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)

FLOAT16_MAX = 65504.0


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    """The default severity: ``error`` fails the check, ``warning`` only with ``--strict``."""
    summary: str
    thresholds: tuple[str, ...] = ()
    """Names of the entries of `DEFAULT_THRESHOLDS` this rule reads."""
    why: str = ""
    """Why the defaults are what they are (shown by ``check --list-rules`` and in docs/check.md)."""


RULES: dict[str, Rule] = {rule.id: rule for rule in [
    Rule("non-finite", ERROR, "a weight holds NaN or Inf values", (),
         "NaN/Inf never belongs in a trained model: it is the signature of a diverged run."),
    Rule("dead-block", ERROR, "a gate's input or recurrent kernel block is all zero or constant", (),
         "Initialisers never produce constant kernels (glorot / orthogonal are random), and training does not make "
         "them constant: such a gate ignores its input. Bias blocks are exempt: zero biases are Keras's default."),
    Rule("duplicate-block", ERROR, "two weight blocks hold exactly the same values (copy bug)",
         ("duplicate_min_size",),
         "Random initialisation makes two equal non-constant blocks of a few values astronomically unlikely; "
         "constant blocks (zero biases, unit gammas) are exempt."),
    Rule("max-abs", WARNING, "a weight's largest |value| is above a limit", ("max_abs",),
         "Keras initialisers stay well below 1 and trained LSTM/Dense weights rarely pass 10; 100 leaves a wide "
         "margin. BatchNormalization moving statistics are exempt (they track raw input scales)."),
    Rule("block-norm", WARNING, "a block's RMS (Frobenius norm / sqrt(size)) or norm is above a limit",
         ("max_block_rms", "max_block_norm"),
         "RMS is size-independent: glorot/orthogonal blocks have RMS < 0.5; 10 flags blown-up blocks only. "
         "An absolute Frobenius limit is available but off by default because it depends on the layer size."),
    Rule("outlier-block", WARNING, "a gate block's RMS differs from the median of the model's blocks of its kind "
         "by more than a factor", ("outlier_factor", "outlier_min_blocks", "outlier_min_size"),
         "Blocks of one kind (all input kernels W, or all recurrent kernels U) of a model share a scale: at Keras "
         "initialisation they stay within ~20x of each other even between 1-unit and 1024-unit layers; 50x "
         "(either way) is beyond that. Blocks of fewer than 16 values are left out: a 1-unit layer's blocks are "
         "a handful of random numbers, and any one of them may be near zero."),
    Rule("forget-bias-negative", WARNING, "an LSTM's forget-gate bias is far negative: the cell cannot keep memory",
         ("forget_bias_min",),
         "Keras initialises b_f to 1 (unit_forget_bias) and trained values sit around -2..3; a median below -5 "
         "means sigmoid(b_f) < 0.007, a forget gate that is closed for almost every input."),
    Rule("bias-saturation", WARNING, "a sigmoid gate is pinned open or shut by its bias alone",
         ("saturation_bias", "saturation_share"),
         "sigmoid(10) = 0.99995: with |b| > 10 on most units the gate no longer depends on its inputs. Chrono "
         "initialisation puts b_f up to log(T) ~ 7 for T = 1000 steps, below the limit."),
    Rule("spectral-norm", WARNING, "a recurrent kernel block's spectral norm is above a limit (exploding dynamics)",
         ("spectral_norm_max",),
         "Keras's orthogonal initialiser gives each recurrent block a spectral norm <= 1, and trained LSTMs "
         "typically stay between 1 and 5; above 10 a unit change of the state moves the pre-activations by 10."),
    Rule("config-mismatch", ERROR, "the model config and the stored weights disagree", (),
         "Keras refuses to load such a file (units, reset_after or layer lists that do not fit the weights)."),
    Rule("float16-overflow", WARNING, "a float16 weight is close to float16's largest value (65504)",
         ("float16_headroom",),
         "A float16 weight above 65504/16 overflows to Inf as soon as it meets an input above 16."),
    Rule("needs-code", WARNING, "a layer needs Python code to load (Lambda layer, custom class)", (),
         "Loading runs or needs code that is not in the file; make it an error with --severity needs-code=error."),
    Rule("expect-layers", ERROR, "a layer named by --expect-layers is missing", ()),
    Rule("expect-units", ERROR, "a layer named by --expect-units has another number of units", ()),
    Rule("params-range", ERROR, "the total parameter count is outside --min-params/--max-params", ()),
    Rule("baseline-structure", ERROR, "the layers or weight shapes differ from the baseline snapshot", ()),
    Rule("baseline-drift", ERROR, "a block statistic drifted beyond the relative tolerance from the baseline",
         ("baseline_rtol",),
         "5% relative drift of a block's mean/std/min/max/norm, relative to the block's own scale: catches a "
         "retrain that went wrong without flagging every fine-tuning step. Use 1e-6 to demand identical weights."),
]}

#: Threshold names and their defaults (config keys accept ``-`` for ``_``).
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "duplicate_min_size": 4,
    "max_abs": 100.0,
    "max_block_rms": 10.0,
    "max_block_norm": None,
    "outlier_factor": 50.0,
    "outlier_min_blocks": 4,
    "outlier_min_size": 16,
    "forget_bias_min": -5.0,
    "saturation_bias": 10.0,
    "saturation_share": 0.5,
    "spectral_norm_max": 10.0,
    "float16_headroom": 16.0,
    "baseline_rtol": 0.05,
}

#: Weights that track data statistics rather than being learned: exempt from the magnitude rules.
_STATISTICS = frozenset({"moving_mean", "moving_variance"})


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    layer: str
    """The layer path (``encoder/enc_lstm_a``); empty for a finding about the whole model."""
    block: str | None
    """The gate block (``U_f``) or weight (``kernel``) concerned, if any."""
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckOptions:
    """What to check and how; every field has the default a bare ``lstm-inspect check`` uses."""

    thresholds: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    select: tuple[str, ...] = ()
    """Rule ids to run (all when empty)."""
    ignore: tuple[str, ...] = ()
    severity: dict[str, str] = field(default_factory=dict)
    """Per-rule severity overrides: ``{"needs-code": "error"}``."""
    strict: bool = False
    layers: tuple[str, ...] = ()
    """Only layers whose path contains one of these (all when empty)."""
    expect_layers: tuple[str, ...] = ()
    expect_units: dict[str, int] = field(default_factory=dict)
    min_params: int | None = None
    max_params: int | None = None
    baseline: dict[str, Any] | None = None
    """A loaded snapshot (see `lstm_inspect.analysis.snapshot`) to compare against."""

    def validate(self) -> "CheckOptions":
        for rule_id in (*self.select, *self.ignore, *self.severity):
            if rule_id not in RULES:
                raise InspectError(f"unknown rule id {rule_id!r} (known: {', '.join(RULES)})")
        for rule_id, level in self.severity.items():
            if level not in SEVERITIES:
                raise InspectError(f"severity of {rule_id} must be 'error' or 'warning', not {level!r}")
        unknown = set(self.thresholds) - set(DEFAULT_THRESHOLDS)
        if unknown:
            raise InspectError(f"unknown threshold {sorted(unknown)[0]!r} (known: {', '.join(DEFAULT_THRESHOLDS)})")
        for key, value in self.thresholds.items():
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not math.isfinite(value)):
                raise InspectError(f"threshold {key} must be a number, not {value!r}")
        return self

    def enabled(self, rule_id: str) -> bool:
        if self.select and rule_id not in self.select:
            return False
        return rule_id not in self.ignore

    def severity_of(self, rule_id: str) -> str:
        return self.severity.get(rule_id, RULES[rule_id].severity)

    def fails(self, finding: Finding) -> bool:
        return finding.severity == ERROR or self.strict

    def t(self, name: str) -> Any:
        return self.thresholds.get(name, DEFAULT_THRESHOLDS[name])


@dataclass
class FileResult:
    """The verdict on one path: findings, or the one-line reason it could not be read."""

    path: str
    kind: str | None = None
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    strict: bool = False

    @property
    def failed(self) -> bool:
        return any(f.severity == ERROR or self.strict for f in self.findings)

    @property
    def status(self) -> str:
        return "error" if self.error else "fail" if self.failed else "pass"

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.path, "kind": self.kind, "status": self.status, "error": self.error,
                "findings": [f.as_dict() for f in self.findings]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = False) -> "FileResult":
        """The inverse of `as_dict` (results come back from isolated child processes as JSON)."""
        return cls(path=data["file"], kind=data["kind"], error=data["error"], strict=strict,
                   findings=[Finding(**f) for f in data["findings"]])


# ----------------------------------------------------------------------------------------------------------------
# What the rules look at: a model's arrays, as gate blocks where a layer has them and whole tensors elsewhere.

@dataclass(eq=False)
class Piece:
    """One array a rule can look at: a gate block of a recurrent layer, or a whole weight of any other layer."""

    layer: Layer
    name: str
    """``W_f`` / ``U`` / ``b_o`` for gate blocks, the weight's role (``kernel``, ``gamma``) otherwise."""
    kind: str | None
    """The gate block kind (``W``, ``U``, ``b``, ``rb``) or None for a whole tensor."""
    tensor: Tensor
    _read: Callable[[], np.ndarray]
    _value: np.ndarray | None = None

    def read(self) -> np.ndarray:
        if self._value is None:
            self._value = np.asarray(self._read())
        return self._value


class ModelView:
    """The selected layers of a model, their gate splits and their pieces, each computed once."""

    def __init__(self, model: ModelFile, layer_patterns: Iterable[str] = ()):
        from ..model import select_layers

        self.model = model
        self.layers = select_layers(model, tuple(layer_patterns))
        self.splits: dict[int, gates.GateSplit] = {}
        self.pieces: list[Piece] = []
        for layer in self.layers:
            split = gates.split(layer)
            covered: set[int] = set()
            if split is not None:
                self.splits[id(layer)] = split
                for block in split.blocks:
                    self.pieces.append(Piece(layer, block.key, block.kind, block.tensor, block.read))
                    covered.add(id(block.tensor))
            for tensor in layer.weights:
                if id(tensor) not in covered:
                    self.pieces.append(Piece(layer, tensor.name, None, tensor, tensor.read))


def _finding(options: CheckOptions, rule: str, layer: Layer | str, block: str | None, message: str) -> Finding:
    path = layer if isinstance(layer, str) else layer.key
    return Finding(rule, options.severity_of(rule), path, block, message)


def _g(x: float) -> str:
    return f"{x:.4g}"


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))) if values.size else 0.0


def _finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())


# ----------------------------------------------------------------------------------------------------------------
# The rules. Each takes the view and the options and yields findings.

def rule_non_finite(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.pieces:
        values = piece.read()
        if not np.issubdtype(values.dtype, np.floating) or _finite(values):
            continue
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
        yield _finding(o, "non-finite", piece.layer, piece.name,
                       f"{' and '.join(p for p in parts if p)} of {values.size} values")


def rule_dead_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.pieces:
        if piece.kind not in ("W", "U"):
            continue
        values = piece.read()
        if values.size < 2 or not _finite(values):
            continue
        if not values.any():
            yield _finding(o, "dead-block", piece.layer, piece.name, f"all {values.size} values are zero: dead gate")
        elif values.min() == values.max():
            yield _finding(o, "dead-block", piece.layer, piece.name,
                           f"all {values.size} values equal {_g(float(values.flat[0]))}: the gate ignores "
                           "which input it sees")


def rule_duplicate_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    seen: dict[tuple[Any, ...], Piece] = {}
    min_size = o.t("duplicate_min_size") or 2
    for piece in view.pieces:
        values = piece.read()
        if values.size < min_size or not np.issubdtype(values.dtype, np.floating) or not _finite(values):
            continue
        if values.min() == values.max():
            continue
        key = (values.shape, values.dtype.str, hashlib.sha1(np.ascontiguousarray(values).tobytes()).digest())
        first = seen.get(key)
        if first is None:
            seen[key] = piece
        elif np.array_equal(first.read(), values):
            where = first.name if first.layer is piece.layer else f"{first.layer.key} {first.name}"
            yield _finding(o, "duplicate-block", piece.layer, piece.name,
                           f"identical to {where} ({values.size} values): copied weights?")


def rule_max_abs(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("max_abs")
    if limit is None:
        return
    for piece in view.pieces:
        if piece.tensor.name in _STATISTICS:
            continue
        values = piece.read()
        finite = values[np.isfinite(values)] if not _finite(values) else values
        if finite.size and float(np.abs(finite).max()) > limit:
            yield _finding(o, "max-abs", piece.layer, piece.name,
                           f"max |w| = {_g(float(np.abs(finite).max()))} > {_g(limit)}")


def rule_block_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    max_rms, max_norm = o.t("max_block_rms"), o.t("max_block_norm")
    for piece in view.pieces:
        if piece.tensor.name in _STATISTICS:
            continue
        values = piece.read()
        if not values.size or not _finite(values):
            continue
        norm = float(np.linalg.norm(values.ravel().astype(np.float64)))
        rms = norm / math.sqrt(values.size)
        if max_rms is not None and rms > max_rms:
            yield _finding(o, "block-norm", piece.layer, piece.name, f"RMS {_g(rms)} > {_g(max_rms)}")
        elif max_norm is not None and norm > max_norm:
            yield _finding(o, "block-norm", piece.layer, piece.name, f"Frobenius norm {_g(norm)} > {_g(max_norm)}")


def rule_outlier_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    factor, min_blocks = o.t("outlier_factor"), int(o.t("outlier_min_blocks") or 2)
    min_size = int(o.t("outlier_min_size") or 1)
    if factor is None:
        return
    for kind in ("W", "U"):
        peers = []
        for piece in view.pieces:
            if piece.kind == kind:
                values = piece.read()
                if values.size >= min_size and _finite(values):
                    rms = _rms(values)
                    if rms > 0:
                        peers.append((piece, rms))
        if len(peers) < min_blocks:
            continue
        median = float(np.median([rms for _, rms in peers]))
        for piece, rms in peers:
            ratio = rms / median
            if ratio > factor or ratio < 1 / factor:
                yield _finding(o, "outlier-block", piece.layer, piece.name,
                               f"RMS {_g(rms)} is {_g(ratio)}x the median {_g(median)} of the model's "
                               f"{len(peers)} {gates.BLOCK_KINDS[kind]} blocks (limit {_g(factor)}x either way)")


def _effective_bias(split: gates.GateSplit, gate: str) -> np.ndarray | None:
    block = split.block("b_" + gate)
    if block is None:
        return None
    bias = block.read().astype(np.float64)
    recurrent = split.block("rb_" + gate)
    if recurrent is not None and gate in ("z", "r"):  # GRU reset_after: both biases add up before the sigmoid
        bias = bias + recurrent.read()
    return bias


def rule_forget_bias(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("forget_bias_min")
    if limit is None:
        return
    for split in view.splits.values():
        if split.layout.family != "LSTM":
            continue
        bias = _effective_bias(split, "f")
        if bias is None or not bias.size or not np.isfinite(bias).all():
            continue
        median = float(np.median(bias))
        if median < limit:
            share = float((bias < limit).mean())
            yield _finding(o, "forget-bias-negative", split.layer, "b_f",
                           f"median forget bias {_g(median)} < {_g(limit)} ({share:.0%} of units): "
                           f"sigmoid(b_f) ~ {_g(1 / (1 + math.exp(-median)))}, the cell forgets at every step")


def rule_bias_saturation(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit, share_limit = o.t("saturation_bias"), o.t("saturation_share")
    if limit is None:
        return
    sigmoid_gates = {"LSTM": ("i", "f", "o"), "GRU": ("z", "r")}
    for split in view.splits.values():
        for gate in sigmoid_gates.get(split.layout.family, ()):
            bias = _effective_bias(split, gate)
            if bias is None or not bias.size or not np.isfinite(bias).all():
                continue
            high, low = float((bias > limit).mean()), float((bias < -limit).mean())
            for share, state in ((high, "open"), (low, "shut")):
                if share >= share_limit and share > 0:
                    name = split.layout.gate_names[split.layout.gates.index(gate)]
                    yield _finding(o, "bias-saturation", split.layer, "b_" + gate,
                                   f"{share:.0%} of units have |bias| > {_g(limit)}: the {name} is pinned {state}")


def spectral_norm(matrix: np.ndarray, iterations: int = 500, tol: float = 1e-9, seed: int = 0,
                  exact_below: int = 256) -> float:
    """The largest singular value of an array reshaped to (-1, last axis).

    Exact (SVD) when the smaller side is at most `exact_below`; otherwise power iteration on AᵀA, which costs two
    matrix-vector products per step and converges from below (slowly only when the top two singular values are
    close, and then the shortfall is tiny: ~1e-4 relative on a 120x120 Gaussian matrix)."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    if not a.size or not a.any():
        return 0.0
    if min(a.shape) <= exact_below:
        return float(np.linalg.norm(a, ord=2))
    v = np.random.default_rng(seed).standard_normal(a.shape[1])
    v /= np.linalg.norm(v)
    sigma = 0.0
    for _ in range(iterations):
        w = a.T @ (a @ v)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v = w / norm
        new = math.sqrt(norm)
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def rule_spectral_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("spectral_norm_max")
    if limit is None:
        return
    for piece in view.pieces:
        if piece.kind != "U":
            continue
        values = piece.read()
        if not values.size or not _finite(values):
            continue
        sigma = spectral_norm(values)
        if sigma > limit:
            yield _finding(o, "spectral-norm", piece.layer, piece.name,
                           f"spectral norm {_g(sigma)} > {_g(limit)}: the recurrence can amplify its state")


def rule_config_mismatch(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for split in view.splits.values():
        for warning in split.warnings:
            yield _finding(o, "config-mismatch", split.layer, None, warning.split(": ", 1)[-1])
    for warning in view.model.warnings:
        if warning.startswith("weights-only file"):
            continue  # a note about the file kind, not a disagreement
        yield _finding(o, "config-mismatch", "", None, warning)


def rule_float16(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    headroom = o.t("float16_headroom")
    if headroom is None:
        return
    limit = FLOAT16_MAX / headroom
    for piece in view.pieces:
        if piece.tensor.dtype not in ("float16", "<f2", "f2"):
            continue
        values = piece.read()
        finite = values[np.isfinite(values)]
        if finite.size and float(np.abs(finite).max()) > limit:
            yield _finding(o, "float16-overflow", piece.layer, piece.name,
                           f"float16 value {_g(float(np.abs(finite).max()))} is within {_g(headroom)}x of "
                           f"the float16 maximum {FLOAT16_MAX:g}")


def rule_needs_code(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for layer in view.layers:
        reason = layer.needs_code
        if reason:
            yield _finding(o, "needs-code", layer, None, reason)


def _matches(layer: Layer, name: str) -> bool:
    return layer.name == name or layer.key == name


def layers_named(model: ModelFile, name: str) -> list[Layer]:
    """Layers whose name or path is `name`; failing that, layers whose class is `name` (case-insensitive)."""
    found = [layer for layer in model.layers if _matches(layer, name)]
    return found or [layer for layer in model.layers if layer.class_name.lower() == name.lower()]


def units_of(layer: Layer) -> int | None:
    split = gates.split(layer)
    if split is not None and split.blocks:
        return split.units
    for key in ("units", "filters"):
        if isinstance(layer.config.get(key), int):
            return layer.config[key]
    kernel = layer.weight("kernel")
    return kernel.shape[-1] if kernel is not None and kernel.shape else None


def rule_expect_layers(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for name in o.expect_layers:
        if not layers_named(view.model, name):
            yield _finding(o, "expect-layers", "", None, f"expected a layer {name!r}; the model has none")


def rule_expect_units(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for name, expected in o.expect_units.items():
        found = layers_named(view.model, name)
        if not found:
            yield _finding(o, "expect-units", "", None, f"expected a layer {name!r} with {expected} units; none found")
        for layer in found:
            units = units_of(layer)
            if units != expected:
                yield _finding(o, "expect-units", layer, None,
                               f"{units if units is not None else 'unknown'} units, expected {expected}")


def rule_params_range(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    total = view.model.total_params
    if o.min_params is not None and total < o.min_params:
        yield _finding(o, "params-range", "", None, f"{total:,} parameters < --min-params {o.min_params:,}")
    if o.max_params is not None and total > o.max_params:
        yield _finding(o, "params-range", "", None, f"{total:,} parameters > --max-params {o.max_params:,}")


def rule_baseline(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    if o.baseline is None:
        return
    from .snapshot import compare

    for rule, layer, block, message in compare(view.model, o.baseline, rtol=o.t("baseline_rtol") or 0.0,
                                                layers=o.layers):
        yield _finding(o, rule, layer, block, message)


#: Rule id -> the function producing its findings (the two baseline rules share one function).
CHECKS: list[tuple[tuple[str, ...], Callable[[ModelView, CheckOptions], Iterable[Finding]]]] = [
    (("non-finite",), rule_non_finite),
    (("dead-block",), rule_dead_block),
    (("duplicate-block",), rule_duplicate_block),
    (("max-abs",), rule_max_abs),
    (("block-norm",), rule_block_norm),
    (("outlier-block",), rule_outlier_block),
    (("forget-bias-negative",), rule_forget_bias),
    (("bias-saturation",), rule_bias_saturation),
    (("spectral-norm",), rule_spectral_norm),
    (("config-mismatch",), rule_config_mismatch),
    (("float16-overflow",), rule_float16),
    (("needs-code",), rule_needs_code),
    (("expect-layers",), rule_expect_layers),
    (("expect-units",), rule_expect_units),
    (("params-range",), rule_params_range),
    (("baseline-structure", "baseline-drift"), rule_baseline),
]


def check_model(model: ModelFile, options: CheckOptions | None = None) -> list[Finding]:
    """Every finding of the enabled rules on an opened model, in rule order."""
    options = options or CheckOptions()
    view = ModelView(model, options.layers)
    findings: list[Finding] = []
    for rule_ids, func in CHECKS:
        if any(options.enabled(r) for r in rule_ids):
            findings.extend(f for f in func(view, options) if options.enabled(f.rule))
    return findings


def check_path(path: str, options: CheckOptions | None = None) -> FileResult:
    """Open and check one file; a file that cannot be read gives a result with `error` set, never an exception."""
    from ..readers import open_model

    options = options or CheckOptions()
    result = FileResult(path=path, strict=options.strict)
    try:
        with open_model(path) as model:
            result.kind = model.kind
            result.findings = check_model(model, options)
    except InspectError as exc:
        result.error = exc.message
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:  # a file the readers did not foresee
        result.error = f"cannot read: {type(exc).__name__}: {exc}"
    return result


# ----------------------------------------------------------------------------------------------------------------
# Which files a list of command-line paths means.

#: What a directory walk picks up: Keras files and the other model formats lstm-inspect reads. Array files
#: (.npz) and checkpoints (.index) are checked only when named (or globbed): directories hold many that are not
#: models (input data, TF2 SavedModel variables).
MODEL_EXTENSIONS = (".h5", ".hdf5", ".keras", ".safetensors", ".onnx", ".pt", ".pth")


def _walk_picks(name: str, siblings: set[str]) -> bool:
    """A model file for the directory walk; a Keras 3 sharded-weights index (``x.weights.json``) stands for its
    shards (``x_00000.weights.h5``...), which are not checked on their own."""
    if name.endswith(".weights.json"):
        return True
    if not name.endswith(MODEL_EXTENSIONS):
        return False
    from ..readers.keras3 import SHARD_NAME

    shard = SHARD_NAME.match(name)
    return not (shard and f"{shard['base']}.weights.json" in siblings)


def is_model_directory(path: str) -> bool:
    """An unzipped ``.keras`` (``save_model(..., zipped=False)``): config.json plus model.weights.h5/npz; or a
    TensorFlow SavedModel (saved_model.pb plus variables/variables.index)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")) and \
            os.path.isfile(os.path.join(path, "variables", "variables.index")):
        return True
    return (os.path.isfile(os.path.join(path, "config.json"))
            and any(os.path.isfile(os.path.join(path, w)) for w in ("model.weights.h5", "model.weights.npz")))


def discover(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The model files that `paths` (files, directories, globs) name, in a stable order, and notes about paths
    that named nothing. A path that does not exist is returned as is, so checking it reports it as unreadable."""
    import glob

    found: list[str] = []
    notes: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            if is_model_directory(path):
                found.append(path)
                continue
            before = len(found)
            for root, dirs, files in os.walk(path):
                dirs.sort()
                keep = []
                for d in dirs:
                    full = os.path.join(root, d)
                    if is_model_directory(full):
                        found.append(full)
                    elif not d.startswith("."):
                        keep.append(d)
                dirs[:] = keep
                names = set(files)
                found.extend(os.path.join(root, f) for f in sorted(files) if _walk_picks(f, names))
            if len(found) == before:
                notes.append(f"{path}: no model files ({', '.join(MODEL_EXTENSIONS)}, .weights.json, Keras model "
                             "directories) below it")
        elif not os.path.exists(path) and any(c in path for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                notes.append(f"{path}: the pattern matches nothing")
            for match in matches:
                if os.path.isdir(match):
                    sub, sub_notes = discover([match])
                    found.extend(sub)
                else:
                    found.append(match)
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    return unique, notes


def summary(results: list[FileResult]) -> dict[str, int]:
    counts = {"files": len(results), "passed": 0, "failed": 0, "unreadable": 0, "errors": 0, "warnings": 0}
    for result in results:
        counts[{"pass": "passed", "fail": "failed", "error": "unreadable"}[result.status]] += 1
        counts["errors"] += sum(f.severity == ERROR for f in result.findings)
        counts["warnings"] += sum(f.severity == WARNING for f in result.findings)
    return counts


def exit_code(results: list[FileResult]) -> int:
    """2 when a file could not be read, else 1 when a file failed, else 0."""
    from ..errors import ExitCode

    if any(r.error for r in results):
        return int(ExitCode.BAD_INPUT)
    if any(r.failed for r in results):
        return int(ExitCode.FINDINGS)
    return int(ExitCode.OK)


def with_overrides(options: CheckOptions, **changes: Any) -> CheckOptions:
    return replace(options, **changes)

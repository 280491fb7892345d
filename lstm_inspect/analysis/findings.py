"""What `lstm-inspect check` works with, as plain data: the `Rule` records (id, default severity, summary, the
thresholds each reads and why their defaults are what they are), the thresholds' defaults, `CheckOptions`,
`Finding` and the per-file `FileResult`. No rule logic here: the rules are in `rules_*.py`, the engine in `check.py`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..errors import InspectError

ERROR = "error"
WARNING = "warning"
SEVERITIES = (ERROR, WARNING)


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
         "constant blocks (zero biases, unit gammas) are exempt, and so are a recurrent layer's b_g / rb_g pairs "
         "that training keeps equal by construction (both biases of a gate only ever added: every trained Keras "
         "GRU reset_after=True has b_z == rb_z and b_r == rb_r); graph constants are not weights."),
    Rule("max-abs", WARNING, "a weight's largest |value| is above a limit", ("max_abs",),
         "Set from the real-world corpus (1,571 trained weights in 56 files): the largest healthy weight is 134 (a "
         "regression head whose target is in the thousands), 55 outside such heads; trained output layers scale "
         "with their targets (172 seen). 1000 flags none of them and still catches a blown-up weight. "
         "BatchNormalization moving statistics and graph constants (ONNX scalars such as 2**20) are exempt."),
    Rule("block-norm", WARNING, "a block's RMS (Frobenius norm / sqrt(size)) or norm is above a limit",
         ("max_block_rms", "max_block_norm"),
         "RMS is size-independent: glorot/orthogonal blocks have RMS < 0.5; in the real-world corpus 99.5% of "
         "trained blocks stay below 5 and the largest healthy one is 132 (a one-value regression bias, where RMS "
         "is |b|). 250 flags none of them. An absolute Frobenius limit is available but off by default because "
         "it depends on the layer size."),
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
         "Orthogonal initialisation gives each recurrent block a spectral norm <= 1, but training grows it: over "
         "398 trained recurrent blocks of the real-world corpus the median is 1.6, the 90th percentile 17, the "
         "99th 34 and the largest 52 (a published char-level LSTM). 60 flags none of them: only a recurrence far "
         "beyond any healthy model (exploding dynamics) is reported."),
    Rule("config-mismatch", ERROR, "the model config and the stored weights disagree", (),
         "Keras refuses to load such a file (units, reset_after or layer lists that do not fit the weights)."),
    Rule("float16-overflow", WARNING, "a float16 weight is close to float16's largest value (65504)",
         ("float16_headroom",),
         "A float16 weight above 65504/16 overflows to Inf as soon as it meets an input above 16."),
    Rule("unsafe-code", ERROR, "the file holds or names code that loading it would run (a Lambda, a serialized "
         "function, a class or function from outside Keras, anywhere in the config; a pickle importing anything "
         "but tensor rebuilds)", (),
         "Keras and torch run such code when they load the file (safe_mode has been bypassed through config.json "
         "more than once), and a model that needs code from a module not in the file runs whatever that module "
         "does: a CI gate on model files fails on it. Formerly needs-code (a warning, top-level layers only)."),
    Rule("expect-layers", ERROR, "a layer named by --expect-layers is missing", ()),
    Rule("expect-units", ERROR, "a layer named by --expect-units has another number of units", ()),
    Rule("params-range", ERROR, "the total parameter count is outside --min-params/--max-params", ()),
    Rule("baseline-structure", ERROR, "the layers or weight shapes differ from the baseline snapshot", ()),
    Rule("baseline-drift", ERROR, "a block statistic drifted beyond the relative tolerance from the baseline",
         ("baseline_rtol",),
         "5% relative drift of a block's mean/std/min/max/norm, relative to the block's own scale: catches a "
         "retrain that went wrong without flagging every fine-tuning step. Use 1e-6 to demand identical weights."),
]}

#: Former rule ids, still accepted in --select / --ignore / --severity and settings files.
RULE_ALIASES = {"needs-code": "unsafe-code"}

#: Threshold names and their defaults (config keys accept ``-`` for ``_``).
DEFAULT_THRESHOLDS: dict[str, float | None] = {
    "duplicate_min_size": 4,
    "max_abs": 1000.0,
    "max_block_rms": 250.0,
    "max_block_norm": None,
    "outlier_factor": 50.0,
    "outlier_min_blocks": 4,
    "outlier_min_size": 16,
    "forget_bias_min": -5.0,
    "saturation_bias": 10.0,
    "saturation_share": 0.5,
    "spectral_norm_max": 60.0,
    "float16_headroom": 16.0,
    "baseline_rtol": 0.05,
}

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
    """Per-rule severity overrides: ``{"unsafe-code": "warning"}``."""
    strict: bool = False
    layers: tuple[str, ...] = ()
    """Only layers whose path contains one of these (all when empty)."""
    expect_layers: tuple[str, ...] = ()
    expect_units: dict[str, int] = field(default_factory=dict)
    min_params: int | None = None
    max_params: int | None = None
    baseline: dict[str, Any] | None = None
    """A loaded snapshot (see `lstm_inspect.analysis.snapshot`) to compare against."""
    code_only: frozenset[str] = frozenset()
    """Paths checked for code only (`unsafe-code`): the `.npz` files a directory walk found, as often input data
    as weights (`discovery.walked_npz`); the value rules would judge data."""

    def validate(self) -> "CheckOptions":
        self.select = tuple(RULE_ALIASES.get(r, r) for r in self.select)
        self.ignore = tuple(RULE_ALIASES.get(r, r) for r in self.ignore)
        self.severity = {RULE_ALIASES.get(r, r): level for r, level in self.severity.items()}
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


def with_overrides(options: CheckOptions, **changes: Any) -> CheckOptions:
    return replace(options, **changes)

"""The engine of `lstm-inspect check`: which rules run, over what, and the verdict per file.

A rule is a `Rule` record (`findings.py`: id, default severity, summary, thresholds and why their defaults are
what they are; re-exported here with `CheckOptions`, `Finding`, `FileResult`) and a function over a `ModelView`
in one `rules_*.py` module per family, listed in `CHECKS`. `check_model(model, options)` runs the enabled rules
over an opened `ModelFile` and returns `Finding` records; `check_path(path, options)` opens a file, checks it and
never raises for a bad file (the failure becomes `FileResult.error`). Which files a command line means is
`discovery.py`. Nothing here prints, imports click or rich, or imports TensorFlow.

The defaults are chosen so that a healthy model does not trip them: a freshly initialised Keras model (glorot
input kernels, orthogonal recurrent kernels, zero biases with ``unit_forget_bias`` b_f = 1) and normally trained
ones. docs/check.md explains each number.
"""
from __future__ import annotations

from typing import Callable, Iterable

from .. import limits
from ..errors import InspectError
from ..model import ModelFile
from .findings import (  # noqa: F401  (re-exported: the records are used as check.RULES, check.CheckOptions...)
    DEFAULT_THRESHOLDS,
    ERROR,
    RULES,
    SEVERITIES,
    WARNING,
    CheckOptions,
    FileResult,
    Finding,
    Rule,
    with_overrides,
)
from .rules_expect import rule_baseline, rule_expect_layers, rule_expect_units, rule_params_range
from .rules_gates import rule_bias_saturation, rule_forget_bias, rule_spectral_norm
from .rules_structure import code_findings, rule_config_mismatch, rule_unsafe_code
from .rules_values import (
    rule_block_norm,
    rule_dead_block,
    rule_duplicate_block,
    rule_float16,
    rule_max_abs,
    rule_non_finite,
    rule_outlier_block,
)
from .view import ModelView

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
    (("unsafe-code",), rule_unsafe_code),
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
    code_only = path in options.code_only
    if code_only and options.enabled("unsafe-code"):
        options = with_overrides(options, select=("unsafe-code",))
    try:
        with open_model(path) as model:
            result.kind = model.kind + (" (found by the walk: checked for code only)" if code_only else "")
            result.findings = check_model(model, options)
    except (InspectError, OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        if limits.out_of_memory(exc) and limits.in_child():
            raise  # not the file's fault: the isolated reader names --max-memory
        # an InspectError says what is wrong; anything else is a file the readers did not foresee
        result.error = exc.message if isinstance(exc, InspectError) else f"cannot read: {type(exc).__name__}: {exc}"
    if result.error and options.enabled("unsafe-code"):
        # the readers refuse a pickle that imports code; the verdict is then the code found, not "unreadable"
        code = [Finding("unsafe-code", options.severity_of("unsafe-code"), found.layer, None, str(found))
                for found in code_findings(path)]
        if code:
            result.findings, result.error = code, None
    if result.error and not result.findings:
        from .discovery import NOT_A_MODEL, not_a_model_file

        if not_a_model_file(path):  # a .bin of raw data (walked into with the pickle carriers): no verdict against it
            result.kind, result.error = NOT_A_MODEL, None
    return result


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

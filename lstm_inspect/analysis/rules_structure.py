"""Check rules on how a file is put together: a config that disagrees with the stored weights, and layers that need
Python code to load.
"""
from __future__ import annotations

from typing import Iterable

from .findings import CheckOptions, Finding
from .view import ModelView, finding


def rule_config_mismatch(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for split in view.splits.values():
        for warning in split.warnings:
            yield finding(o, "config-mismatch", split.layer, None, warning.split(": ", 1)[-1])
    for warning in view.model.warnings:
        if warning.startswith(("weights-only file", "training state listed apart", "dequantized")):
            continue  # a note about the file kind, not a disagreement
        yield finding(o, "config-mismatch", "", None, warning)


def rule_needs_code(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for layer in view.layers:
        reason = layer.needs_code
        if reason:
            yield finding(o, "needs-code", layer, None, reason)

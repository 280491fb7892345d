"""Check rules on how a file is put together: a config that disagrees with the stored weights, and code that
loading the file would run (`code_scan` walks the whole config and every pickle).
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
        if warning.startswith(("weights-only file", "training state listed apart", "dequantized",
                               "saved by Keras 1 under Theano")) \
                or "a recurrent layer lowered to Loop" in warning:
            continue  # a note about the file kind or how it was written, not a disagreement
        yield finding(o, "config-mismatch", "", None, warning)


def rule_unsafe_code(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    """Code anywhere in the file (`code_scan`): the whole config, not only the layers --layer selects."""
    for found in code_findings(view.model.path):
        yield finding(o, "unsafe-code", found.layer, None, str(found))


def code_findings(path: str) -> list:
    from .code_scan import scan_file

    return scan_file(path)

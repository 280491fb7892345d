"""Check rules on what the user expects of a model: named layers, their units, the parameter count
(``--expect-layers``, ``--expect-units``, ``--min-params`` / ``--max-params``) and a baseline snapshot.
"""
from __future__ import annotations

from typing import Iterable

from .. import gates
from ..model import Layer, ModelFile
from .findings import CheckOptions, Finding
from .snapshot import compare
from .view import ModelView, finding


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
            yield finding(o, "expect-layers", "", None, f"expected a layer {name!r}; the model has none")


def rule_expect_units(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for name, expected in o.expect_units.items():
        found = layers_named(view.model, name)
        if not found:
            yield finding(o, "expect-units", "", None, f"expected a layer {name!r} with {expected} units; none found")
        for layer in found:
            units = units_of(layer)
            if units != expected:
                yield finding(o, "expect-units", layer, None,
                               f"{units if units is not None else 'unknown'} units, expected {expected}")


def rule_params_range(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    total = view.model.total_params
    if o.min_params is not None and total < o.min_params:
        yield finding(o, "params-range", "", None, f"{total:,} parameters < --min-params {o.min_params:,}")
    if o.max_params is not None and total > o.max_params:
        yield finding(o, "params-range", "", None, f"{total:,} parameters > --max-params {o.max_params:,}")


def rule_baseline(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    if o.baseline is None:
        return
    for rule, layer, block, message in compare(view.model, o.baseline, rtol=o.t("baseline_rtol") or 0.0,
                                                layers=o.layers):
        yield finding(o, rule, layer, block, message)

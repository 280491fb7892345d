"""Notebook views: `lstm_inspect.open_model`, `.split_gates` and `.diff` return objects that Jupyter shows as the
report's figures when they are the last value of a cell (`_repr_html_`).

The objects are the library's own (`ModelFile`, `GateSplit`, the diff record); only their class is a subclass
defined here, since drawing belongs to `render/` and the model and gate layers below may not import it.
"""
from __future__ import annotations

import os
from .. import gates
from ..model import Layer, ModelFile
from ..readers import open_model as _open_model


class ModelFileView(ModelFile):
    """A `ModelFile` that a notebook shows as the `lstm-inspect report` page (with a seeded random input)."""

    def _repr_html_(self) -> str:
        from .figure_data import collect
        from .html_report import fragment, model_body

        return fragment(model_body(collect(self.path)))


class GateSplitView(gates.GateSplit):
    """A `GateSplit` that a notebook shows as the report's section for its layer (no activations: those need a
    forward pass of the whole model)."""

    def _repr_html_(self) -> str:
        from .figure_data import layer_figures
        from .html_report import fragment, layer_section

        figures = layer_figures(self)
        figures.trace_note = "Activations need the whole model: show the model (lstm_inspect.open_model) instead."
        return fragment(layer_section(figures))


class DiffView(dict):
    """The record of `lstm-inspect diff --json`, shown as the `diff --html` page's content."""

    def _repr_html_(self) -> str:
        from .html_diff import delta_figures, diff_fragment

        return diff_fragment(self, delta_figures(self["a"]["file"], self["b"]["file"], self))


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    """`lstm_inspect.readers.open_model`, with a notebook view."""
    model = _open_model(path)
    model.__class__ = ModelFileView
    return model


def split_gates(layer: Layer) -> gates.GateSplit | None:
    """`lstm_inspect.gates.split`, with a notebook view."""
    split = gates.split(layer)
    if split is not None:
        split.__class__ = GateSplitView
    return split


def diff(a: str | os.PathLike[str], b: str | os.PathLike[str], atol: float = 0.0,
         layers: tuple[str, ...] | list[str] = ()) -> DiffView:
    """`lstm-inspect diff A B` as data (docs/check.md), with a notebook view."""
    from ..analysis.diff import diff_models

    with _open_model(a) as model_a, _open_model(b) as model_b:
        return DiffView(diff_models(model_a, model_b, atol=atol, layers=layers))

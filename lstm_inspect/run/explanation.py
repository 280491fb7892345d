"""The records `explain` returns (`Explanation`, one `LayerExplanation` per layer), and the small helpers the Keras
and the native explanations share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..model import Layer, ModelFile


@dataclass
class LayerExplanation:
    key: str
    """The layer path, ``encoder/enc_lstm_a``."""
    class_name: str
    summary: str
    """One line: what the layer is (``LSTM, 120 units, input 5``)."""
    equations: list[str] = field(default_factory=list)
    """The computation, one equation a line, with the file's slices (``kernel[:, 0:120]``)."""
    shapes: list[tuple[str, str]] = field(default_factory=list)
    """(term, shape) for every term of the equations; ``batch`` stands for the batch size."""
    pitfalls: list[str] = field(default_factory=list)
    """What makes a re-implementation give similar but different numbers, for this layer in this file."""
    supported: bool = True
    """Whether `forward` can run this layer."""


@dataclass
class Explanation:
    path: str
    keras_version: str | None
    keras_major: int | None
    layers: list[LayerExplanation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def shape_text(*dims: Any) -> str:
    return "(" + ", ".join(str(d) for d in dims) + ("," if len(dims) == 1 else "") + ")"


def parent_of(model: ModelFile, layer: Layer) -> Layer | None:
    for candidate in model.root.walk():
        if any(child is layer for child in candidate.children):
            return candidate
    return None

"""What the check rules look at: a model's arrays, as gate blocks where a layer has them and whole tensors elsewhere
(`ModelView`, each computed once), and the small helpers every rule module uses to read values and word findings.
`snapshot` builds its per-block entries from the same view.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .. import gates
from ..model import Layer, ModelFile, Tensor, select_layers
from .findings import CheckOptions, Finding

#: Weights that track data statistics rather than being learned: exempt from the magnitude rules.
STATISTICS = frozenset({"moving_mean", "moving_variance"})


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


def finding(options: CheckOptions, rule: str, layer: Layer | str, block: str | None, message: str) -> Finding:
    path = layer if isinstance(layer, str) else layer.key
    return Finding(rule, options.severity_of(rule), path, block, message)


def fmt(x: float) -> str:
    return f"{x:.4g}"


def rms_of(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))) if values.size else 0.0


def all_finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())

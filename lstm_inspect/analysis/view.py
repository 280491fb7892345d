"""What the check rules look at: a model's arrays, as gate blocks where a layer has them and whole tensors elsewhere
(`ModelView`, each computed once), and the small helpers every rule module uses to read values and word findings.
`snapshot` builds its per-block entries from the same view.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .. import gates
from ..model import Layer, ModelFile, Tensor, select_layers
from . import stats
from .findings import CheckOptions, Finding
from .stats import Stats

#: `Piece.read` keeps arrays up to this size (biases, small blocks) for the other rules.
KEEP_BYTES = 1 << 20

#: Weights that track data statistics rather than being learned: exempt from the magnitude rules.
STATISTICS = frozenset({"moving_mean", "moving_variance"})

#: ONNX ops whose constant inputs are learned parameters (kernels, biases, normalisation scales): every other op's
#: single-value constant is part of the graph's arithmetic (an exponent, an epsilon, a scale such as 2**20, a loop
#: count), not a weight.
ONNX_WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Linear", "LSTM", "GRU", "RNN",
                               "BatchNormalization", "InstanceNormalization", "LayerNormalization",
                               "GroupNormalization", "Gather", "Embedding", "PRelu"})


def is_graph_constant(layer: Layer, tensor: Tensor) -> bool:
    """A value of the graph rather than a weight: a non-float tensor (shapes, axes, indices), or a single value fed
    to an ONNX op that holds no learned parameters (Pow's exponent, Add's epsilon, Mul's scale, a Loop's count)."""
    try:
        floating = np.issubdtype(np.dtype(tensor.dtype), np.floating)
    except TypeError:  # a dtype numpy does not name (bfloat16): floats by name
        floating = "float" in str(tensor.dtype)
    if not floating:
        return True
    op = layer.class_name[5:] if layer.class_name.startswith("onnx.") else None
    return op is not None and op not in ONNX_WEIGHTED_OPS and math.prod(tensor.shape) <= 1


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
    source: Any = None
    """The gate `Block` or the `Tensor` the values come from (read again in row chunks when large)."""
    stats: Stats | None = None
    """The piece's statistics, filled for every piece by `ModelView.summarise` in one chunked pass over the file."""
    constant: bool = False
    """A value of the graph (`is_graph_constant`), not a weight: the value rules never look at it."""

    def read(self) -> np.ndarray:
        """The whole array; kept for the next call only when small (a large block is read again: no rule keeps a
        large array alive)."""
        if self._value is not None:
            return self._value
        value = np.asarray(self._read())
        if value.nbytes <= KEEP_BYTES:
            self._value = value
        return value

    @property
    def size(self) -> int:
        return math.prod(self.source.shape) if self.source is not None else self.read().size

    @property
    def floating(self) -> bool:
        return np.dtype(self.tensor.dtype).kind == "f"


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
                    self.pieces.append(Piece(layer, block.key, block.kind, block.tensor, block.read, source=block))
                    covered.add(id(block.tensor))
            for tensor in layer.weights:
                if id(tensor) not in covered:
                    self.pieces.append(Piece(layer, tensor.name, None, tensor, tensor.read, source=tensor,
                                             constant=is_graph_constant(layer, tensor)))
        self._summarised = False

    def summarise(self) -> list[Piece]:
        """Every piece with its `Piece.stats`: each stored array read once, in bounded row chunks, each value
        summarised once (`stats.layer_stats`). The rules work from these instead of keeping arrays."""
        if not self._summarised:
            by_layer: dict[int, list[Piece]] = {}
            for piece in self.pieces:
                by_layer.setdefault(id(piece.layer), []).append(piece)
            for pieces in by_layer.values():
                layer = pieces[0].layer
                blocks = [p.source for p in pieces if p.kind is not None]
                weight_stats, block_stats = stats.layer_stats(layer.weights, blocks)
                for piece in pieces:
                    piece.stats = block_stats.get(id(piece.source)) or weight_stats.get(id(piece.source))
            self._summarised = True
        return self.pieces

    def weights(self) -> list[Piece]:
        """`summarise`'s pieces that are weights: every piece but the graph's own constants."""
        return [piece for piece in self.summarise() if not piece.constant]


def finding(options: CheckOptions, rule: str, layer: Layer | str, block: str | None, message: str) -> Finding:
    path = layer if isinstance(layer, str) else layer.key
    return Finding(rule, options.severity_of(rule), path, block, message)


def fmt(x: float) -> str:
    return f"{x:.4g}"


def rms_of(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values, dtype=np.float64)))) if values.size else 0.0


def all_finite(values: np.ndarray) -> bool:
    return bool(np.isfinite(values).all())

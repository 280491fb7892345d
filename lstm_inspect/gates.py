"""Gate layouts as data, and the split of a recurrent layer's fused arrays into per-gate blocks.

Keras fuses a recurrent layer's gates along the last axis: LSTM kernel (in, 4u) in gate order i, f, c, o;
GRU (in, 3u) in order z, r, h with a (2, 3u) bias when ``reset_after`` (row 0 input bias, row 1 recurrent bias).
Units are taken from the weight shapes, never from the config.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .model import Layer, Tensor


@dataclass(frozen=True)
class GateLayout:
    family: str
    gates: tuple[str, ...]
    gate_names: tuple[str, ...]


LAYOUTS = {
    "LSTM": GateLayout("LSTM", ("i", "f", "c", "o"), ("input gate", "forget gate", "cell candidate", "output gate")),
    "GRU": GateLayout("GRU", ("z", "r", "h"), ("update gate", "reset gate", "candidate")),
    "SimpleRNN": GateLayout("SimpleRNN", ("",), ("state",)),
}
#: Keras classes and the layout that splits them (ConvLSTM splits the same way on the last axis).
FAMILY_OF = {
    "LSTM": "LSTM", "CuDNNLSTM": "LSTM", "ConvLSTM1D": "LSTM", "ConvLSTM2D": "LSTM", "ConvLSTM3D": "LSTM",
    "GRU": "GRU", "SimpleRNN": "SimpleRNN",
}

#: Block kinds: W multiplies the input, U the previous hidden state; b is the bias; rb is GRU's recurrent bias.
BLOCK_KINDS = {"W": "input kernel", "U": "recurrent kernel", "b": "bias", "rb": "recurrent bias"}


@dataclass(eq=False)
class Block:
    """One gate's slice of one fused array."""

    key: str
    """``W_i``, ``U_f``, ``b_o``, ``rb_h``; SimpleRNN has plain ``W``, ``U``, ``b``."""
    kind: str
    gate: str
    tensor: Tensor
    index: tuple[slice | int, ...]
    source: str
    """The slice in Keras's terms: ``kernel[:, 120:240]``."""

    @property
    def shape(self) -> tuple[int, ...]:
        # A zero-stride view gives the slice's shape without touching the data.
        return np.broadcast_to(np.empty((), dtype=np.bool_), self.tensor.shape)[self.index].shape

    def read(self) -> np.ndarray:
        return np.ascontiguousarray(self.tensor.read()[self.index])


@dataclass(eq=False)
class GateSplit:
    layer: Layer
    layout: GateLayout
    units: int
    input_dim: int
    reset_after: bool | None
    blocks: list[Block]
    warnings: list[str] = field(default_factory=list)

    def arrays(self) -> dict[str, np.ndarray]:
        return {block.key: block.read() for block in self.blocks}

    def block(self, key: str) -> Block | None:
        return next((b for b in self.blocks if b.key == key), None)


def family(layer: Layer) -> str | None:
    return FAMILY_OF.get(layer.class_name)


def split(layer: Layer) -> GateSplit | None:
    """The per-gate blocks of a recurrent layer, or None for any other layer (or one missing its kernels)."""
    fam = family(layer)
    kernel, recurrent, bias = (layer.weight(n) for n in ("kernel", "recurrent_kernel", "bias"))
    if fam is None or kernel is None or recurrent is None or len(recurrent.shape) < 2:
        return None
    layout = LAYOUTS[fam]
    n_gates = len(layout.gates)
    units = recurrent.shape[-2]
    result = GateSplit(layer, layout, units, int(np.prod(kernel.shape[:-1])) if kernel.shape else 0, None, [])
    if recurrent.shape[-1] != n_gates * units or kernel.shape[-1] != n_gates * units:
        result.warnings.append(
            f"{layer.key}: recurrent_kernel {recurrent.shape} and kernel {kernel.shape} do not hold "
            f"{n_gates} gates of {units} units; not split"
        )
        result.blocks = []
        return result
    configured = layer.config.get("units", layer.config.get("filters"))
    if isinstance(configured, int) and configured != units:
        result.warnings.append(f"{layer.key}: config says units={configured} but the weights hold {units} units")
    lead = ":, " * (len(kernel.shape) - 1)
    for g, gate in enumerate(layout.gates):
        cols = slice(g * units, (g + 1) * units)
        span = f"{cols.start}:{cols.stop}"
        suffix = f"_{gate}" if gate else ""
        result.blocks.append(Block("W" + suffix, "W", gate, kernel, (Ellipsis, cols), f"kernel[{lead}{span}]"))
        result.blocks.append(Block("U" + suffix, "U", gate, recurrent, (Ellipsis, cols),
                                   f"recurrent_kernel[{':, ' * (len(recurrent.shape) - 1)}{span}]"))
    if bias is not None:
        _split_bias(result, bias)
    result.blocks.sort(key=lambda b: (list(BLOCK_KINDS).index(b.kind), layout.gates.index(b.gate)))
    return result


def _split_bias(result: GateSplit, bias: Tensor) -> None:
    layout, units, layer = result.layout, result.units, result.layer
    n = len(layout.gates) * units
    if bias.shape == (n,):
        rows: list[tuple[str, tuple[int, ...], str]] = [("b", (), "bias[{}]")]
        result.reset_after = False if layout.family == "GRU" else None
    elif layout.family == "GRU" and bias.shape == (2, n):
        rows = [("b", (0,), "bias[0, {}]"), ("rb", (1,), "bias[1, {}]")]
        result.reset_after = True
    else:
        result.warnings.append(f"{layer.key}: bias of shape {bias.shape} does not fit {units} units; bias not split")
        return
    configured = layer.config.get("reset_after")
    if layout.family == "GRU" and isinstance(configured, bool) and configured != result.reset_after:
        result.warnings.append(
            f"{layer.key}: config says reset_after={configured} but the bias shape {bias.shape} means "
            f"reset_after={result.reset_after}"
        )
    for kind, row, template in rows:
        for g, gate in enumerate(layout.gates):
            cols = slice(g * units, (g + 1) * units)
            key = kind + (f"_{gate}" if gate else "")
            result.blocks.append(Block(key, kind, gate, bias, row + (cols,), template.format(f"{cols.start}:{cols.stop}")))

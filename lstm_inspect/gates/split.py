"""Gate layouts as data, and the split of a recurrent layer's fused arrays into per-gate blocks.

Keras fuses a recurrent layer's gates along the last axis: LSTM kernel (in, 4u) in gate order i, f, c, o;
GRU (in, 3u) in order z, r, h with a (2, 3u) bias when ``reset_after`` (row 0 input bias, row 1 recurrent bias).
Units are taken from the weight shapes, never from the config.

PyTorch and ONNX layers (read from their own files, see `NATIVE_LAYOUTS`) fuse gates along the first axis in
their own order, (gates·u, in); their blocks are transposed into the same orientation and keys as Keras's
(``W_i`` is (in, u) so that ``x @ W_i``), and their second bias is the ``rb_*`` blocks.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .. import model as model_module
from ..model import Layer, Tensor


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
    "GRU": "GRU", "CuDNNGRU": "GRU", "SimpleRNN": "SimpleRNN",
    "LSTMCell": "LSTM", "GRUCell": "GRU", "SimpleRNNCell": "SimpleRNN",  # the cells of RNN(cell) wrappers
    "PeepholeLSTMCell": "LSTM",
    "TorchLSTM": "LSTM", "TorchGRU": "GRU", "TorchRNN": "SimpleRNN",
    "OnnxLSTM": "LSTM", "OnnxGRU": "GRU", "OnnxRNN": "SimpleRNN",
    "TF1LSTMCell": "LSTM", "TF1BasicLSTMCell": "LSTM", "TF1GRUCell": "GRU",
}

#: Legacy cuDNN layers (Keras 2 / tf.keras `CuDNNLSTM`, `CuDNNGRU`): the Keras gate order, but each gate's slice of the
#: kernels is the cuDNN parameter flattened row-major, so the matrix `x @ W_g` needs is `slice.reshape(u, in).T`
#: (recurrent: `slice.T`), and the bias holds input biases then recurrent biases, (8u,) / (6u,). This is what Keras's
#: own `preprocess_weights_for_loading` undoes when a CuDNN file is loaded into an LSTM / GRU.
CUDNN_CLASSES = frozenset({"CuDNNLSTM", "CuDNNGRU"})

#: Block kinds: W multiplies the input, U the previous hidden state; b is the bias; rb is GRU's recurrent bias.
BLOCK_KINDS = {"W": "input kernel", "U": "recurrent kernel", "b": "bias", "rb": "recurrent bias",
               "proj": "projection", "p": "peephole"}


@dataclass(frozen=True)
class NativeLayout:
    """How another framework fuses a recurrent layer: gates along the first axis of (gates·u, in) arrays."""

    framework: str
    family: str
    order: tuple[str, ...]
    """Keras's letters for the gates, in the order the framework stores them."""
    native: tuple[str, ...]
    """The framework's own letters for those gates."""
    input: str
    recurrent: str
    biases: tuple[tuple[str, str, int], ...]
    """(block kind, array role, which half of the array): torch has two bias arrays, ONNX one B = [Wb, Rb]."""
    projection: str | None = None
    peephole: str | None = None

    @property
    def gate_names(self) -> tuple[str, ...]:
        """Keras's gate names in Keras's order, labelled with the framework's letter where it differs."""
        keras = LAYOUTS[self.family]
        letters = dict(zip(self.order, self.native))
        return tuple(name + (f" ({self.framework} {letters[g]})" if letters.get(g, g) != g else "")
                     for g, name in zip(keras.gates, keras.gate_names))


_TORCH_BIASES = (("b", "bias_ih", 0), ("rb", "bias_hh", 0))
_ONNX_BIASES = (("b", "B", 0), ("rb", "B", 1))
#: Leaf classes the torch and ONNX readers create, and their layouts.
NATIVE_LAYOUTS = {
    "TorchLSTM": NativeLayout("PyTorch", "LSTM", ("i", "f", "c", "o"), ("i", "f", "g", "o"), "weight_ih", "weight_hh",
                              _TORCH_BIASES, projection="weight_hr"),
    "TorchGRU": NativeLayout("PyTorch", "GRU", ("r", "z", "h"), ("r", "z", "n"), "weight_ih", "weight_hh", _TORCH_BIASES),
    "TorchRNN": NativeLayout("PyTorch", "SimpleRNN", ("",), ("",), "weight_ih", "weight_hh", _TORCH_BIASES),
    "OnnxLSTM": NativeLayout("ONNX", "LSTM", ("i", "o", "f", "c"), ("i", "o", "f", "c"), "W", "R", _ONNX_BIASES,
                             peephole="P"),
    "OnnxGRU": NativeLayout("ONNX", "GRU", ("z", "r", "h"), ("z", "r", "h"), "W", "R", _ONNX_BIASES),
    "OnnxRNN": NativeLayout("ONNX", "SimpleRNN", ("",), ("",), "W", "R", _ONNX_BIASES),
}
#: TensorFlow 1 cells (read from checkpoints): Keras's orientation (x·W), but one kernel for [x, h] (input rows
#: first, then the recurrent rows) split by `tf1_cells.split_tf1`; LSTM gates i, j (= c), f, o; GRU gates/kernel r, u (= z)
#: and a separate candidate/kernel.
TF1_LAYOUTS = {
    "TF1LSTMCell": NativeLayout("TF1", "LSTM", ("i", "c", "f", "o"), ("i", "j", "f", "o"), "kernel", "kernel",
                                (("b", "bias", 0),), projection="projection/kernel"),
    "TF1GRUCell": NativeLayout("TF1", "GRU", ("r", "z", "h"), ("r", "u", "h"), "gates/kernel", "candidate/kernel",
                               (("b", "gates/bias", 0), ("b", "candidate/bias", 0))),
}
TF1_LAYOUTS["TF1BasicLSTMCell"] = TF1_LAYOUTS["TF1LSTMCell"]
#: ONNX LSTM peepholes P [3u] are stored in gate order i, o, f.
ONNX_PEEPHOLE_ORDER = ("i", "o", "f")
#: tf.keras's PeepholeLSTMCell stores its diagonal peephole vectors (u,) as weights of their own: i and f look at
#: c_(t-1), o at the new c_t.
KERAS_PEEPHOLES = {"i": "input_gate_peephole_weights", "f": "forget_gate_peephole_weights",
                   "o": "output_gate_peephole_weights"}


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
    """The slice in Keras's terms: ``kernel[:, 120:240]``; ``weight_ih_l0[0:4, :].T`` for a torch file."""
    transpose: bool = False
    """True for layouts that store (gates·u, in): the block is the slice's transpose, in Keras's orientation."""
    memory_order: bool = False
    """True for legacy cuDNN kernels: the slice holds the cuDNN matrix flattened row-major; the block is
    ``slice.reshape(slice.shape[::-1]).T`` (same shape as the slice)."""
    plus: tuple[slice | int, ...] | None = None
    """A second slice of the same array added to the first (a CuDNNLSTM's input bias + recurrent bias)."""

    @property
    def shape(self) -> tuple[int, ...]:
        # A zero-stride view gives the slice's shape without touching the data.
        shape = np.broadcast_to(np.empty((), dtype=np.bool_), self.tensor.shape)[self.index].shape
        return shape[::-1] if self.transpose else shape

    @property
    def dtype(self) -> str:
        return self.tensor.dtype

    def row_chunks(self, max_bytes: int | None = None, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)``: the block's values in pieces of its first axis, like `Tensor.row_chunks`. A plain
        block (a box of its array, not transposed) is read from the file a piece at a time into one reused buffer;
        any other is read whole first."""
        shape = self.shape
        if not shape or not shape[0]:
            yield 0, self.read()
            return
        if rows is None:
            row_bytes = max(1, self.tensor.nbytes // max(1, self.tensor.size) * (math.prod(shape) // shape[0]))
            rows = max(1, (max_bytes or model_module.CHUNK_BYTES) // row_bytes)
        box = self._box()
        if box is None or rows >= shape[0] or self.tensor.nbytes <= model_module.CACHE_BYTES:
            value = self.read()
            for start in range(0, shape[0], rows):
                yield start, value[start:start + rows]
            return
        first, rest = box[0], box[1:]
        buffer = np.empty((rows, *shape[1:]), dtype=self.tensor.dtype)
        for start in range(0, shape[0], rows):
            stop = min(shape[0], start + rows)
            index = (slice(first.start + start, first.start + stop),) + rest
            yield start, self.tensor.read_part(index, buffer[: stop - start])

    def _box(self) -> tuple[slice, ...] | None:
        """The index as one step-1 slice per axis of the tensor, when the block is such a box, not transposed."""
        if self.transpose or self.memory_order or self.plus is not None or not self.tensor.shape:
            return None
        ndim = len(self.tensor.shape)
        index = tuple(self.index)
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (ndim - len(index) + 1) + index[at + 1:]
        index = index + (slice(None),) * (ndim - len(index))
        if len(index) != ndim or not all(isinstance(part, slice) for part in index):
            return None
        box = tuple(slice(*part.indices(size)) for part, size in zip(index, self.tensor.shape))
        return box if all(part.step == 1 for part in box) else None

    def read(self) -> np.ndarray:
        value = self.tensor.read_part(self.index)  # only the block's part of a large array
        if self.plus is not None:
            value = value + self.tensor.read_part(self.plus)
        if self.memory_order:
            value = value.reshape(value.shape[::-1]).T
        return np.ascontiguousarray(value.T if self.transpose else value)


@dataclass(eq=False)
class GateSplit:
    layer: Layer
    layout: GateLayout
    units: int
    input_dim: int
    reset_after: bool | None
    blocks: list[Block]
    warnings: list[str] = field(default_factory=list)
    native: NativeLayout | None = None
    """The framework layout the blocks were read from (PyTorch, ONNX); None for Keras."""

    def arrays(self) -> dict[str, np.ndarray]:
        return {block.key: block.read() for block in self.blocks}

    def block(self, key: str) -> Block | None:
        return next((b for b in self.blocks if b.key == key), None)


def family(layer: Layer) -> str | None:
    return FAMILY_OF.get(layer.class_name)


def split(layer: Layer) -> GateSplit | None:
    """The per-gate blocks of a recurrent layer, or None for any other layer (or one missing its kernels)."""
    native = NATIVE_LAYOUTS.get(layer.class_name)
    if native is not None:
        return _split_native(layer, native)
    if layer.class_name in TF1_LAYOUTS:
        from .tf1_cells import split_tf1  # imports this module's Block and GateSplit

        return split_tf1(layer, TF1_LAYOUTS[layer.class_name])
    fam = family(layer)
    if fam is not None and layer.weight("kernel") is None and layer.weight("W" + _suffix(LAYOUTS[fam].gates[0])):
        return _split_stored_blocks(layer, LAYOUTS[fam])
    kernel, recurrent, bias = (layer.weight(n) for n in ("kernel", "recurrent_kernel", "bias"))
    if fam is None or kernel is None or recurrent is None or len(recurrent.shape) < 2:
        return None
    layout = LAYOUTS[fam]
    n_gates = len(layout.gates)
    units = recurrent.shape[-2]
    result = GateSplit(layer, layout, units, int(np.prod(kernel.shape[:-1])) if kernel.shape else 0, None, [])
    if len(kernel.shape) < 2 or recurrent.shape[-1] != n_gates * units or kernel.shape[-1] != n_gates * units:
        result.warnings.append(
            f"{layer.key}: recurrent_kernel {recurrent.shape} and kernel {kernel.shape} do not hold "
            f"{n_gates} gates of {units} units; not split"
        )
        result.blocks = []
        return result
    configured = layer.config.get("units", layer.config.get("filters"))
    if isinstance(configured, int) and configured != units:
        result.warnings.append(f"{layer.key}: config says units={configured} but the weights hold {units} units")
    if layer.class_name in CUDNN_CLASSES:
        _split_cudnn(result, kernel, recurrent, bias)
        return result
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
    _split_keras_peepholes(result)
    result.blocks.sort(key=lambda b: (list(BLOCK_KINDS).index(b.kind), layout.gates.index(b.gate)))
    return result


def _split_keras_peepholes(result: GateSplit) -> None:
    layer, units = result.layer, result.units
    for gate, name in KERAS_PEEPHOLES.items():
        tensor = layer.weight(name)
        if tensor is None:
            continue
        if tensor.shape != (units,):
            result.warnings.append(f"{layer.key}: {name} {tensor.shape} does not fit {units} units; not split")
            continue
        result.blocks.append(Block(f"p_{gate}", "p", gate, tensor, (slice(None),), name))


def _suffix(gate: str) -> str:
    return f"_{gate}" if gate else ""


def _split_stored_blocks(layer: Layer, layout: GateLayout) -> GateSplit | None:
    """A layer whose every block is stored whole as its own array: Keras 1 (``lstm_1_W_i``; its GRU is the
    reset_after=False form) and the gate blocks ``lstm-inspect export`` writes (``W_i`` ... ``b_o``, GRU ``rb_*`` for
    reset_after=True, SimpleRNN ``W``, ``U``, ``b``, peepholes ``p_i``, ``p_f``, ``p_o``, projection ``proj``)."""
    def named(kind: str) -> dict[str, Tensor | None]:
        return {kind + _suffix(g): layer.weight(kind + _suffix(g)) for g in layout.gates}

    kernels = {**named("W"), **named("U")}
    if any(t is None for t in kernels.values()):
        return None
    first = layout.gates[0]
    units = kernels["U" + _suffix(first)].shape[-1]
    in_dim = kernels["W" + _suffix(first)].shape[0]
    optional = {kind: named(kind) for kind in ("b", "rb")}
    present = {k: v for kind in optional.values() for k, v in kind.items() if v is not None}
    recurrent_bias = bool(optional["rb"]) and all(v is not None for v in optional["rb"].values())
    reset_after = recurrent_bias if layout.family == "GRU" else None
    result = GateSplit(layer, layout, units, in_dim, reset_after, [])
    peepholes = {f"p_{g}": layer.weight(f"p_{g}") for g in ONNX_PEEPHOLE_ORDER} if layout.family == "LSTM" else {}
    arrays = {**kernels, **present, **{k: t for k, t in peepholes.items() if t is not None}}
    proj = layer.weight("proj")
    if proj is not None and layout.family == "LSTM":
        arrays["proj"] = proj
    incomplete = [kind for kind, blocks in optional.items()
                  if any(v is not None for v in blocks.values()) and not all(v is not None for v in blocks.values())]
    out = proj.shape[-1] if "proj" in arrays else units
    expected = {"W": (in_dim, units), "U": (out, units), "b": (units,), "rb": (units,), "p": (units,),
                "proj": (units, out)}
    bad = [k for k, t in arrays.items() if t.shape != expected[k.split("_")[0]]]
    if bad or incomplete:
        what = ", ".join(bad) + (f"; {' and '.join(incomplete)} not stored for every gate" if incomplete else "")
        result.warnings.append(f"{layer.key}: stored blocks {what} do not fit {units} units; not split")
        return result
    kinds = list(BLOCK_KINDS)
    order = {g: i for i, g in enumerate(layout.gates)}
    for key, tensor in sorted(arrays.items(), key=lambda kv: (kinds.index(kv[0].split("_")[0]),
                                                              order.get(kv[0].partition("_")[2], 0))):
        kind, _, gate = key.partition("_")
        result.blocks.append(Block(key, kind, gate, tensor, (Ellipsis,), tensor.source.rsplit("/", 1)[-1]))
    return result


def _split_cudnn(result: GateSplit, kernel: Tensor, recurrent: Tensor, bias: Tensor | None) -> None:
    """A legacy CuDNNLSTM / CuDNNGRU in the standard form: LSTM b = input bias + recurrent bias; GRU as
    reset_after=True (input bias -> b, recurrent bias -> rb)."""
    layout, units, layer = result.layout, result.units, result.layer
    n = len(layout.gates) * units
    if len(kernel.shape) != 2 or len(recurrent.shape) != 2:
        result.warnings.append(f"{layer.key}: {layer.class_name} kernels {kernel.shape}, {recurrent.shape} are not "
                               "matrices; not split")
        return
    in_dim = kernel.shape[0]
    for g, gate in enumerate(layout.gates):
        cols = slice(g * units, (g + 1) * units)
        span = f"{cols.start}:{cols.stop}"
        result.blocks.append(Block(f"W_{gate}", "W", gate, kernel, (slice(None), cols),
                                   f"kernel[:, {span}].reshape({units}, {in_dim}).T (cuDNN memory order)",
                                   memory_order=True))
        result.blocks.append(Block(f"U_{gate}", "U", gate, recurrent, (slice(None), cols),
                                   f"recurrent_kernel[:, {span}].T (cuDNN memory order)", memory_order=True))
    if bias is not None:
        if bias.shape != (2 * n,):
            result.warnings.append(f"{layer.key}: {layer.class_name} bias of shape {bias.shape} is not (2 x {n},) "
                                   "(input biases, then recurrent biases); bias not split")
        else:
            for g, gate in enumerate(layout.gates):
                first, second = slice(g * units, (g + 1) * units), slice(n + g * units, n + (g + 1) * units)
                spans = [f"bias[{s.start}:{s.stop}]" for s in (first, second)]
                if layout.family == "LSTM":
                    result.blocks.append(Block(f"b_{gate}", "b", gate, bias, (first,), " + ".join(spans), plus=(second,)))
                else:
                    result.blocks.append(Block(f"b_{gate}", "b", gate, bias, (first,), spans[0]))
                    result.blocks.append(Block(f"rb_{gate}", "rb", gate, bias, (second,), spans[1]))
            result.reset_after = True if layout.family == "GRU" else None
    result.blocks.sort(key=lambda b: (list(BLOCK_KINDS).index(b.kind), layout.gates.index(b.gate)))


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


def _role(layer: Layer, role: str | None) -> Tensor | None:
    """A native layer's array by role: ONNX ``W``; torch ``weight_ih`` stored as ``weight_ih_l0_reverse``."""
    if role is None:
        return None
    pattern = re.compile(re.escape(role) + r"(_l\d+(_reverse)?)?")
    return next((t for t in layer.weights if pattern.fullmatch(t.name)), None)


def _label(native: NativeLayout, tensor: Tensor) -> str:
    """How a block's source names its array: torch's parameter name, ONNX's initializer and direction (``W[1]``)."""
    return tensor.source if native.framework == "ONNX" else tensor.name


def _split_native(layer: Layer, native: NativeLayout) -> GateSplit | None:
    kernel, recurrent = _role(layer, native.input), _role(layer, native.recurrent)
    if kernel is None or recurrent is None or len(kernel.shape) != 2 or len(recurrent.shape) != 2:
        return None
    projection = _role(layer, native.projection)
    units = projection.shape[1] if projection is not None and len(projection.shape) == 2 else recurrent.shape[1]
    n = len(native.order) * units
    keras = LAYOUTS[native.family]
    layout = GateLayout(native.family, keras.gates, native.gate_names)
    reset_after = None
    if native.family == "GRU":
        reset_after = bool(layer.config.get("linear_before_reset", 0)) if native.framework == "ONNX" else True
    result = GateSplit(layer, layout, units, kernel.shape[1], reset_after, [], native=native)
    if kernel.shape[0] != n or recurrent.shape[0] != n:
        result.warnings.append(f"{layer.key}: {kernel.name} {kernel.shape} and {recurrent.name} {recurrent.shape} do "
                               f"not hold {len(native.order)} gates of {units} units; not split")
        return result
    for p, gate in enumerate(native.order):
        rows = slice(p * units, (p + 1) * units)
        span = f"{rows.start}:{rows.stop}"
        suffix = f"_{gate}" if gate else ""
        result.blocks.append(Block("W" + suffix, "W", gate, kernel, (rows, slice(None)),
                                   f"{_label(native, kernel)}[{span}, :].T", transpose=True))
        result.blocks.append(Block("U" + suffix, "U", gate, recurrent, (rows, slice(None)),
                                   f"{_label(native, recurrent)}[{span}, :].T", transpose=True))
    for kind, role, half in native.biases:
        bias = _role(layer, role)
        if bias is None:
            continue
        halves = 2 if native.framework == "ONNX" else 1
        if bias.shape != (halves * n,):
            result.warnings.append(f"{layer.key}: {bias.name} of shape {bias.shape} does not fit {units} units; "
                                   "bias not split")
            continue
        for p, gate in enumerate(native.order):
            start = half * n + p * units
            result.blocks.append(Block(kind + (f"_{gate}" if gate else ""), kind, gate, bias,
                                       (slice(start, start + units),), f"{_label(native, bias)}[{start}:{start + units}]"))
    if projection is not None:
        result.blocks.append(Block("proj", "proj", "", projection, (slice(None), slice(None)), f"{_label(native, projection)}.T",
                                   transpose=True))
    peephole = _role(layer, native.peephole)
    if peephole is not None and peephole.shape == (3 * units,):
        for p, gate in enumerate(ONNX_PEEPHOLE_ORDER):
            result.blocks.append(Block(f"p_{gate}", "p", gate, peephole, (slice(p * units, (p + 1) * units),),
                                       f"{_label(native, peephole)}[{p * units}:{(p + 1) * units}]"))
    kinds = list(BLOCK_KINDS)
    result.blocks.sort(key=lambda b: (kinds.index(b.kind), keras.gates.index(b.gate) if b.gate in keras.gates else -1))
    return result

"""A pure-numpy forward pass over the neutral model, with the semantics of the Keras version that wrote the file.

    >>> outputs = run(model, x)                 # {"lstm": ..., "dense": ..., "__output__": ...}
    >>> outputs = run(model, x, trace=True)     # plus "lstm/i", "lstm/f", "lstm/c", "lstm/o", "lstm/cell", ...

Every layer's output is keyed by its layer path (``encoder/enc_lstm_a``); layers with several outputs (an RNN with
``return_state``, a Bidirectional with ``merge_mode=None``) use ``<path>/0``, ``<path>/1``, ... The model's own
output is ``__output__`` (``__output__/0``, ``__output__/1``, ... for several).

Computation runs in float64 by default (``dtype=np.float32`` reproduces Keras's float32 rounding more closely).
Recurrent layers are vectorised the way Keras's own kernels are: the input projection ``x · kernel + bias`` for
every time step at once, then one ``h · recurrent_kernel`` matmul per step for all gates together. Every recurrent
layer runs through one loop over `RecurrentCell`s rebuilt from its gate blocks: LSTM / GRU / SimpleRNN, the legacy
CuDNNLSTM / CuDNNGRU (the split undoes the cuDNN layout), ConvLSTM1D/2D/3D (convolutions for the matmuls) and
RNN around one cell or a StackedRNNCells (one cell per level, each reading the new state of the one below).

Masks flow as in Keras: ``Masking`` and ``Embedding(mask_zero=True)`` create a (batch, time) mask, layers that
support masking pass it on, recurrent layers use it (a masked step keeps the previous states; its output is the
previous output, or zeros when ``zero_output_for_mask`` — which Bidirectional forces on when it returns sequences).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .. import gates
from ..gates import activations
from ..errors import InspectError
from ..model import Layer, ModelFile

OUTPUT_KEY = "__output__"

#: Layers that are the identity at inference time (and pass a mask on unchanged).
IDENTITY_CLASSES = frozenset(
    """InputLayer Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout
    AlphaDropout ActivityRegularization Identity""".split()
)
#: Layers run by `_Run.recurrent`: the Keras layers, their legacy cuDNN twins (their weights are converted to the
#: standard form by the gate split), the convolutional LSTMs, and RNN wrapping a cell or a StackedRNNCells.
CONV_LSTM_CLASSES = frozenset({"ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})
RECURRENT_CLASSES = frozenset({"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "RNN"}) | CONV_LSTM_CLASSES
#: What can be a cell of the loop: a recurrent layer itself, or a cell inside RNN / StackedRNNCells.
CELL_CLASSES = (RECURRENT_CLASSES - {"RNN"}) | frozenset({"LSTMCell", "GRUCell", "SimpleRNNCell", "PeepholeLSTMCell"})
MERGE_CLASSES = frozenset({"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
#: Layers whose output keeps the input's time mask (Keras's ``supports_masking`` with the default compute_mask).
MASK_PASSING = IDENTITY_CLASSES | frozenset(
    {"Dense", "Activation", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "ELU", "Softmax",
     "TimeDistributed"}
)

Value = Any  # an ndarray or a list of ndarrays


def supported_classes() -> list[str]:
    return sorted(IDENTITY_CLASSES | RECURRENT_CLASSES | CELL_CLASSES | MERGE_CLASSES | set(_LAYER_FUNCS) | {
        "StackedRNNCells", "Bidirectional", "TimeDistributed", "Sequential", "Functional", "Model", "Masking", "Embedding", "NotEqual", "Any"})


@dataclass
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    """Including the batch axis (None when free)."""
    dtype: str = "float32"


@dataclass(frozen=True)
class ConvSpec:
    """A ConvLSTM's input convolution (its recurrent one is always stride 1, padding same, no dilation)."""

    rank: int
    strides: tuple[int, ...]
    padding: str
    dilation: tuple[int, ...]
    channels_first: bool

    @classmethod
    def from_config(cls, layer: Layer, rank: int) -> "ConvSpec":
        cfg = layer.config

        def per_axis(value: Any) -> tuple[int, ...]:
            values = tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),) * rank
            if len(values) != rank:
                raise InspectError(f"layer {layer.key!r} ({layer.class_name}): {value!r} is not {rank} values")
            return values

        padding = str(cfg.get("padding", "valid")).lower()
        if padding not in ("valid", "same"):
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): padding {padding!r} is not supported")
        data_format = cfg.get("data_format") or "channels_last"
        if data_format not in ("channels_last", "channels_first"):
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): data_format {data_format!r} is not "
                               "supported")
        return cls(rank, per_axis(cfg.get("strides", 1)), padding, per_axis(cfg.get("dilation_rate", 1)),
                   data_format == "channels_first")


def conv_nd(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str,
            dilation: Sequence[int]) -> np.ndarray:
    """TensorFlow's N-d convolution, channels last: x (n, *spatial, in), kernel (*k, in, out) -> (n, *out, out).

    Every window is gathered at once (a strided view, copied once by the contraction: im2col). ``same`` pads
    as TensorFlow does, the smaller half before."""
    rank = kernel.ndim - 2
    spans = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    if padding == "same":
        pads = [_same_padding(size, span, stride)[1:] for size, span, stride in zip(x.shape[1:-1], spans, strides)]
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(1, rank + 1)))
    # (n, *positions, in, *spans): keep every stride-th position and every dilation-th tap
    windows = windows[(slice(None),) + tuple(slice(None, None, s) for s in strides) + (slice(None),)
                      + tuple(slice(None, None, d) for d in dilation)]
    taps = np.moveaxis(kernel, rank, 0)  # (in, *k, out), the order of the windows' trailing axes
    return np.tensordot(windows, taps, axes=(list(range(rank + 1, 2 * rank + 2)), list(range(rank + 1))))


@dataclass
class RecurrentCell:
    """One recurrent cell in Keras's fused form: gates along the last axis of kernel (in, n·u) — for a ConvLSTM
    (*k, in, 4f) — recurrent (u, n·u) or (*k, f, 4f), and bias (n·u,); GRU's recurrent bias (reset_after) apart.
    `project` is the input term x·W + b, `step` one time step from it. Reusable on its own:

        >>> cell = RecurrentCell("LSTM", u, kernel, recurrent, bias, None, np.tanh, sigmoid)
        >>> states, gates = cell.step(cell.project(x_t), [h, c])
    """

    family: str
    units: int
    kernel: np.ndarray
    recurrent: np.ndarray
    bias: np.ndarray | None
    recurrent_bias: np.ndarray | None
    act: Callable[[np.ndarray], np.ndarray]
    rec_act: Callable[[np.ndarray], np.ndarray]
    reset_after: bool = False
    conv: ConvSpec | None = None
    peepholes: dict[str, np.ndarray] | None = None
    """A peephole LSTM's diagonal weights by gate: i and f add p·c_(t-1), o adds p·c_t."""

    @property
    def n_states(self) -> int:
        return 2 if self.family == "LSTM" else 1

    def project(self, x: np.ndarray) -> np.ndarray:
        """x·kernel + bias over the last axis of x (batch[, time], in); for a ConvLSTM the input convolution of
        x (batch[, time], *spatial, in)."""
        if self.conv is None:
            y = x @ self.kernel
        else:
            lead = x.shape[:x.ndim - self.conv.rank - 1]
            flat = x.reshape((-1,) + x.shape[len(lead):])
            y = conv_nd(flat, self.kernel, self.conv.strides, self.conv.padding, self.conv.dilation)
            y = y.reshape(lead + y.shape[1:])
        return y if self.bias is None else y + self.bias

    def recur(self, h: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """h·recurrent[..., cols]; a ConvLSTM convolves h with stride 1 and padding same instead."""
        weights = self.recurrent[..., cols]
        if self.conv is None:
            return h @ weights
        ones = (1,) * self.conv.rank
        return conv_nd(h, weights, ones, "same", ones)

    def step(self, p: np.ndarray, states: list[np.ndarray]) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
        """(new states, gate values) of one step from the step's input term `p` and the previous states."""
        u, h_prev = self.units, states[0]
        act, rec_act = self.act, self.rec_act
        if self.family == "LSTM":
            z = p + self.recur(h_prev)
            peep = self.peepholes or {}
            c_prev = states[1]
            i = rec_act(z[..., :u] + peep["i"] * c_prev if "i" in peep else z[..., :u])
            f = rec_act(z[..., u:2 * u] + peep["f"] * c_prev if "f" in peep else z[..., u:2 * u])
            g = act(z[..., 2 * u:3 * u])
            c = f * c_prev + i * g
            o = rec_act(z[..., 3 * u:] + peep["o"] * c if "o" in peep else z[..., 3 * u:])
            return [o * act(c), c], {"i": i, "f": f, "c": g, "o": o}
        if self.family == "GRU":
            if self.reset_after:
                inner = self.recur(h_prev)
                if self.recurrent_bias is not None:
                    inner = inner + self.recurrent_bias
                z = rec_act(p[..., :u] + inner[..., :u])
                r = rec_act(p[..., u:2 * u] + inner[..., u:2 * u])
                hh = act(p[..., 2 * u:] + r * inner[..., 2 * u:])
            else:
                inner = self.recur(h_prev, slice(0, 2 * u))
                z = rec_act(p[..., :u] + inner[..., :u])
                r = rec_act(p[..., u:2 * u] + inner[..., u:])
                hh = act(p[..., 2 * u:] + self.recur(r * h_prev, slice(2 * u, None)))
            return [z * h_prev + (1 - z) * hh], {"z": z, "r": r, "h": hh}
        return [act(p + self.recur(h_prev))], {}


class _Stop(Exception):
    """Raised to end the run once every selected layer has produced its output."""


@dataclass
class _Run:
    keras_major: int | None
    dtype: Any
    trace: bool
    wanted: set[str] | None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    # -- recording --------------------------------------------------------------------------------------------
    def record(self, layer: Layer, value: Value) -> None:
        values = _as_list(value)
        if len(values) == 1:
            self.outputs[layer.key] = values[0]
        else:
            for i, v in enumerate(values):
                self.outputs[f"{layer.key}/{i}"] = v
        if self.wanted is not None:
            self.wanted.discard(layer.key)
            if not self.wanted:
                raise _Stop

    def record_trace(self, layer: Layer, name: str, value: np.ndarray) -> None:
        if self.trace:
            self.outputs[f"{layer.key}/{name}"] = value

    # -- dispatch ---------------------------------------------------------------------------------------------
    def call(self, layer: Layer, x: Value, mask: np.ndarray | None, kwargs: dict[str, Any] | None = None,
             record: bool = True) -> tuple[Value, np.ndarray | None]:
        cls = layer.class_name
        kwargs = kwargs or {}
        if layer.needs_code:
            raise InspectError(f"layer {layer.key or layer.name!r} ({cls}) cannot be run: {layer.needs_code}")
        if cls in ("Sequential",):
            out, out_mask = self.sequential(layer, x, mask)
        elif cls in ("Functional", "Model"):
            out, out_mask = self.functional(layer, _as_list(x))
        elif cls in IDENTITY_CLASSES:
            out, out_mask = x, mask
        elif cls in RECURRENT_CLASSES or cls == "Bidirectional":
            initial_state = kwargs.get("initial_state")
            if isinstance(x, list) and initial_state is None:
                # Keras 2 (tf-keras) records `layer(x, initial_state=[h, c])` as one call on [x, h, c]
                x, initial_state = x[0], x[1:] or None
            run_layer = self.recurrent if cls in RECURRENT_CLASSES else self.bidirectional
            out, out_mask = run_layer(layer, x, mask, initial_state)
        elif cls == "TimeDistributed":
            out, out_mask = self.time_distributed(layer, x, mask)
        elif cls in MERGE_CLASSES:
            out, out_mask = _merge(layer, _as_list(x), mask)
        elif cls == "NotEqual":
            # Keras 3 functional graphs record the mask of Embedding(mask_zero=True) as an op: not_equal(ids, 0)
            other = (kwargs.get("extra_args") or [None])[0]
            if isinstance(x, list) and len(x) == 2 and other is None:
                x, other = x
            if other is None:
                raise InspectError(f"layer {layer.key or layer.name!r} (NotEqual) needs two operands")
            out, out_mask = np.not_equal(np.asarray(x), np.asarray(other)), None
        elif cls == "Any":
            # ... and the mask of a Masking layer with several consumers as any(not_equal(x, mask_value), axis=-1)
            axis = layer.config.get("axis")
            out = np.any(np.asarray(x), axis=tuple(axis) if isinstance(axis, list) else axis,
                         keepdims=bool(layer.config.get("keepdims", False)))
            out_mask = None
        elif cls == "Masking":
            value = float(layer.config.get("mask_value", 0.0))
            out_mask = np.any(x != value, axis=-1)
            out = x * out_mask[..., None].astype(x.dtype)
        elif cls == "Embedding":
            out, out_mask = self.embedding(layer, x)
        elif cls in _LAYER_FUNCS:
            out = _LAYER_FUNCS[cls](self, layer, x, mask)
            out_mask = mask if cls in MASK_PASSING else None
        else:
            raise InspectError(f"layer {layer.key or layer.name!r} ({cls}): the numpy forward pass does not "
                               f"support this class")
        if record and layer.path:
            self.record(layer, out)
        return out, out_mask

    # -- containers -------------------------------------------------------------------------------------------
    def sequential(self, layer: Layer, x: Value, mask: np.ndarray | None) -> tuple[Value, np.ndarray | None]:
        for child in layer.children:
            if child.class_name == "InputLayer":
                continue
            x, mask = self.call(child, x, mask)
        return x, mask

    def functional(self, layer: Layer, inputs: list[np.ndarray]) -> tuple[Value, np.ndarray | None]:
        graph = _Graph(layer, self.keras_major)
        if len(inputs) != len(graph.inputs):
            raise InspectError(f"{layer.key or 'model'} takes {len(graph.inputs)} inputs but got {len(inputs)}")
        produced: dict[tuple[str, int], tuple[list[np.ndarray], list[np.ndarray | None]]] = {}
        for (name, _, _), value in zip(graph.inputs, inputs):
            produced[(name, 0)] = ([value], [None])
            child = graph.by_name.get(name)
            if child is not None and child.class_name == "InputLayer" and child.path:
                pass  # inputs are not recorded as layer outputs
        pending = [(child, i, node) for child in graph.order for i, node in enumerate(graph.nodes(child))]
        while pending:
            progressed = False
            remaining = []
            for child, index, node in pending:
                resolved = graph.resolve(node, produced)
                if resolved is None:
                    remaining.append((child, index, node))
                    continue
                args, masks, kwargs = resolved
                mask = _combine_masks(masks)
                if "mask" in kwargs:  # Keras 3 records the mask a layer was called with: that is the one it uses
                    explicit = kwargs.pop("mask")
                    mask = _combine_masks(explicit if isinstance(explicit, list) else [explicit])
                out, out_mask = self.call(child, args, mask, kwargs)
                outs = _as_list(out)
                out_masks = out_mask if isinstance(out_mask, list) else [out_mask] * len(outs)
                produced[(child.name, index)] = (outs, out_masks)
                progressed = True
            if not progressed:
                names = ", ".join(sorted({c.name for c, _, _ in remaining}))
                raise InspectError(f"{layer.key or 'model'}: cannot order the graph: layers {names} wait for "
                                   "inputs no layer produces")
            pending = remaining
        results, result_masks = [], []
        for name, node_index, tensor_index in graph.outputs:
            outs, masks = graph.lookup(produced, name, node_index)
            results.append(outs[tensor_index])
            result_masks.append(masks[tensor_index] if tensor_index < len(masks) else None)
        if len(results) == 1:
            return results[0], result_masks[0]
        return results, None

    # -- recurrent --------------------------------------------------------------------------------------------
    def recurrent(self, layer: Layer, x: np.ndarray, mask: np.ndarray | None, initial_state: Any = None,
                  zero_output_for_mask: bool | None = None) -> tuple[Value, np.ndarray | None]:
        """Any recurrent layer: LSTM / GRU / SimpleRNN, their CuDNN twins, ConvLSTM1D/2D/3D, and RNN wrapping
        one cell or a StackedRNNCells. `layer.config` holds the sequence options; the cells hold the weights."""
        cfg = layer.config
        cells = self.cells(layer)
        conv = cells[0][1].conv
        if cfg.get("time_major"):
            x = np.swapaxes(x, 0, 1)
        x = self.floating(x)
        want_ndim = 3 + (conv.rank if conv else 0)
        if x.ndim != want_ndim:
            shape = "(batch, time, features)" if conv is None else \
                f"(batch, time, {conv.rank} spatial axes, channels)"
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}) expects {shape} input, got shape {x.shape}")
        channels_first = conv is not None and conv.channels_first
        if channels_first:  # computed channels-last; moved back below
            x = np.moveaxis(x, 2, -1)
        backwards = bool(cfg.get("go_backwards", False))
        zero_out = bool(cfg.get("zero_output_for_mask", False)) if zero_output_for_mask is None else zero_output_for_mask
        batch, steps = x.shape[:2]
        if steps == 0:
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): the input has no time steps")
        if backwards:
            x = x[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None

        # The first cell's input projection for every step at once (the input bias folded in); cells stacked
        # above it read the cell below's new state, so theirs is computed per step.
        proj = cells[0][1].project(x)
        # Stacked cells take their states nested per cell ([[h, c], [h]]); counted flat, bottom cell first
        given = _flatten(initial_state) if initial_state is not None else None
        if given is not None and channels_first:
            given = [np.moveaxis(self.floating(s), 1, -1) for s in given]
        states = self.initial_states(layer, given, [(cell, proj.shape[:1] + proj.shape[2:-1]) for _, cell in cells])
        prev_out = seq = None
        traces: dict[tuple[int, str], np.ndarray] = {}
        for t in range(steps):
            below = None
            new_states, gate_values = [], []
            for k, (_, cell) in enumerate(cells):
                p = proj[:, t] if k == 0 else cell.project(below)
                cell_states, values = cell.step(p, states[k])
                below = cell_states[0]
                new_states.append(cell_states)
                gate_values.append(values)
            out = below
            if seq is None:
                prev_out = np.zeros_like(out)
                seq = np.empty((batch, steps) + out.shape[1:], dtype=self.dtype)
            if mask is not None:
                m = mask[:, t].reshape((-1,) + (1,) * (out.ndim - 1))
                new_states = [[np.where(m, s, old) for s, old in zip(new, olds)]
                              for new, olds in zip(new_states, states)]
                out = np.where(m, out, 0.0 if zero_out else prev_out)
            states = new_states
            prev_out = out
            seq[:, t] = out
            if self.trace:  # the gates as computed; cell and hidden as kept (carried over at masked steps)
                for k, (_, cell) in enumerate(cells):
                    kept = {"cell": states[k][1]} if cell.family == "LSTM" else {}
                    for name, value in dict(gate_values[k], **kept, hidden=states[k][0]).items():
                        if (k, name) not in traces:
                            traces[(k, name)] = np.empty((batch, steps) + value.shape[1:], dtype=self.dtype)
                        traces[(k, name)][:, t] = value
        output = seq if cfg.get("return_sequences", False) else prev_out
        flat_states = [s for cell_states in states for s in cell_states]
        restore = (lambda a, axis: np.moveaxis(a, -1, axis)) if channels_first else (lambda a, axis: a)
        if channels_first:
            output = restore(output, 2 if output.ndim == x.ndim else 1)
            flat_states = [restore(s, 1) for s in flat_states]
        for (k, name), array in traces.items():
            self.record_trace(cells[k][0], name, restore(array, 2))
        if cfg.get("time_major") and output.ndim == 3:
            output = np.swapaxes(output, 0, 1)
        out_mask = mask[:, ::-1] if backwards and mask is not None else mask
        out_mask = out_mask if cfg.get("return_sequences", False) else None
        if cfg.get("return_state", False):
            return [output] + flat_states, [out_mask] + [None] * len(flat_states)
        return output, out_mask

    def initial_states(self, layer: Layer, given: list[np.ndarray] | None,
                       cells: list[tuple["RecurrentCell", tuple[int, ...]]]) -> list[list[np.ndarray]]:
        """Each cell's states: zeros of (batch, *spatial, units), or the given ones in order (every cell's
        states one after the other, as Keras flattens them)."""
        need = sum(cell.n_states for cell, _ in cells)
        if given is None:
            return [[np.zeros(lead + (cell.units,), dtype=self.dtype) for _ in range(cell.n_states)]
                    for cell, lead in cells]
        given = [self.floating(s) for s in given]
        if len(given) != need:
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}) needs {need} initial states, got {len(given)}")
        out, start = [], 0
        for cell, _ in cells:
            out.append(given[start:start + cell.n_states])
            start += cell.n_states
        return out

    def cells(self, layer: Layer) -> list[tuple[Layer, "RecurrentCell"]]:
        """(cell layer, cell) pairs, bottom first: the layer itself, or the cell(s) an RNN wraps."""
        if layer.class_name != "RNN":
            return [(layer, self.cell(layer))]
        inner = layer.children[0] if len(layer.children) == 1 else None
        if inner is None:
            raise InspectError(f"layer {layer.key!r} (RNN) has no cell in its config")
        if inner.class_name == "StackedRNNCells":
            if inner.config.get("reverse_state_order"):
                raise InspectError(f"layer {inner.key!r} (StackedRNNCells): reverse_state_order=True is not supported")
            if not inner.children:
                raise InspectError(f"layer {inner.key!r} (StackedRNNCells) holds no cells")
            return [(cell, self.cell(cell)) for cell in inner.children]
        return [(inner, self.cell(inner))]

    def cell(self, layer: Layer) -> "RecurrentCell":
        """A recurrent layer's (or cell's) weights in Keras's fused form, rebuilt from its gate blocks (so the
        cuDNN layouts arrive already converted) with its activations."""
        if layer.class_name not in CELL_CLASSES:
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): the numpy forward pass does not support "
                               "this recurrent cell")
        split = gates.split(layer)
        cfg = layer.config
        first_bias = "b" + (f"_{split.layout.gates[0]}" if split is not None and split.layout.gates[0] else "")
        bias_unread = split is not None and layer.weight("bias") is not None and cfg.get("use_bias", True) \
            and split.block(first_bias) is None  # a bias of the wrong shape: never run without it
        if split is None or not split.blocks or bias_unread:
            reason = "; ".join(split.warnings) if split is not None and split.warnings else "weights missing"
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): {reason}")
        blocks = split.arrays()
        fam = split.layout.family

        def fused(kind: str) -> np.ndarray | None:
            parts = [blocks.get(kind + (f"_{g}" if g else "")) for g in split.layout.gates]
            if any(p is None for p in parts) or (kind in ("b", "rb") and not cfg.get("use_bias", True)):
                return None
            return np.concatenate(parts, axis=-1).astype(self.dtype, copy=False)

        conv = None
        if layer.class_name.startswith("ConvLSTM"):
            rank = int(layer.class_name[-2])
            conv = ConvSpec.from_config(layer, rank)
        peepholes = {b.gate: b.read().astype(self.dtype, copy=False) for b in split.blocks if b.kind == "p"}
        return RecurrentCell(fam, split.units, fused("W"), fused("U"), fused("b"), fused("rb"),
                             self.activation(layer, cfg.get("activation", "tanh")),
                             self.activation(layer, cfg.get("recurrent_activation", "sigmoid")),
                             bool(split.reset_after), conv, peepholes or None)

    def bidirectional(self, layer: Layer, x: np.ndarray, mask: np.ndarray | None,
                      initial_state: Any = None) -> tuple[Value, np.ndarray | None]:
        if len(layer.children) != 2:
            raise InspectError(f"layer {layer.key!r} (Bidirectional) has no forward/backward sub-layers")
        fw_layer, bw_layer = layer.children
        for child in (fw_layer, bw_layer):
            if child.class_name not in RECURRENT_CLASSES:
                raise InspectError(f"layer {child.key!r} ({child.class_name}) inside Bidirectional is not supported")
        seqs = bool(fw_layer.config.get("return_sequences", False))
        fw_init = bw_init = None
        if initial_state is not None:
            states = _as_list(initial_state)
            fw_init, bw_init = states[: len(states) // 2], states[len(states) // 2:]
        # Keras forces zero_output_for_mask = return_sequences on both directions.
        fw, _ = self.recurrent(fw_layer, x, mask, fw_init, zero_output_for_mask=seqs)
        bw, _ = self.recurrent(bw_layer, x, mask, bw_init, zero_output_for_mask=seqs)
        states: list[np.ndarray] = []
        if fw_layer.config.get("return_state", False):
            states = list(fw[1:]) + list(bw[1:])
            fw, bw = fw[0], bw[0]
        self.record(fw_layer, fw) if fw_layer.path else None
        self.record(bw_layer, bw) if bw_layer.path else None
        if seqs:
            bw = bw[:, ::-1]
        mode = layer.config.get("merge_mode", "concat")
        if mode == "concat":
            merged: Value = np.concatenate([fw, bw], axis=-1)
        elif mode == "sum":
            merged = fw + bw
        elif mode == "ave":
            merged = (fw + bw) / 2
        elif mode == "mul":
            merged = fw * bw
        elif mode is None:
            merged = [fw, bw]
        else:
            raise InspectError(f"layer {layer.key!r} (Bidirectional): unknown merge_mode {mode!r}")
        out_mask = mask if seqs else None
        if states:
            return _as_list(merged) + states, None
        if mode is None:
            return merged, [out_mask, out_mask]
        return merged, out_mask

    def time_distributed(self, layer: Layer, x: np.ndarray, mask: np.ndarray | None) -> tuple[Value, np.ndarray | None]:
        if not layer.children:
            raise InspectError(f"layer {layer.key!r} (TimeDistributed) has no wrapped layer")
        inner = layer.children[0]
        batch, steps = x.shape[:2]
        flat = x.reshape((batch * steps,) + x.shape[2:])
        out, _ = self.call(inner, flat, None, record=False)
        if isinstance(out, list):
            raise InspectError(f"layer {layer.key!r} (TimeDistributed): the wrapped layer has several outputs")
        return out.reshape((batch, steps) + out.shape[1:]), mask

    def embedding(self, layer: Layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        table = self.weight(layer, "embeddings")
        ids = np.asarray(x).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise InspectError(f"layer {layer.key!r} (Embedding): index out of range 0..{table.shape[0] - 1}")
        mask = ids != 0 if layer.config.get("mask_zero", False) else None
        return table[ids], mask

    # -- helpers ----------------------------------------------------------------------------------------------
    def weight(self, layer: Layer, name: str, required: bool = True) -> np.ndarray | None:
        tensor = layer.weight(name)
        if tensor is None:
            if required:
                raise InspectError(f"layer {layer.key!r} ({layer.class_name}) has no {name!r} weight in the file")
            return None
        return tensor.read().astype(self.dtype, copy=False)

    def activation(self, layer: Layer, spec: Any) -> Callable[[np.ndarray], np.ndarray]:
        name = activations.activation_name(spec)
        func = activations.get(name, self.keras_major)
        if func is None:
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): activation {name!r} is not supported")
        return func

    def floating(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return x if x.dtype == self.dtype else x.astype(self.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Stateless layers


def _dense(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    x = run.floating(x)
    y = x @ run.weight(layer, "kernel")
    if layer.config.get("use_bias", True):
        y = y + run.weight(layer, "bias")
    return run.activation(layer, layer.config.get("activation", "linear"))(y)


def _activation(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    return run.activation(layer, layer.config.get("activation", "linear"))(run.floating(x))


def _relu(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    x = run.floating(x)
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    threshold = float(cfg.get("threshold", 0.0) or 0.0)
    y = np.where(x >= threshold, x, slope * (x - threshold))
    if cfg.get("max_value") is not None:
        y = np.minimum(y, float(cfg["max_value"]))
    return y.astype(x.dtype)


def _leaky_relu(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
    x = run.floating(x)
    return np.where(x >= 0, x, slope * x).astype(x.dtype)


def _elu(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    alpha = float(layer.config.get("alpha", 1.0))
    x = run.floating(x)
    return np.where(x > 0, x, alpha * np.expm1(x)).astype(x.dtype)


def _softmax(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    axis = layer.config.get("axis", -1)
    x = run.floating(x)
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _flatten(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    if layer.config.get("data_format") == "channels_first" and x.ndim > 2:
        x = np.moveaxis(x, -1, 1)
    return x.reshape(x.shape[0], -1)


def _reshape(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    target = tuple(int(n) for n in layer.config["target_shape"])
    return x.reshape((x.shape[0],) + target)


def _permute(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    dims = tuple(int(d) for d in layer.config["dims"])
    return np.transpose(x, (0,) + dims)


def _repeat_vector(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    n = int(layer.config["n"])
    return np.repeat(x[:, None, :], n, axis=1)


def _axes(layer: Layer, ndim: int) -> tuple[int, ...]:
    axis = layer.config.get("axis", -1)
    axes = axis if isinstance(axis, (list, tuple)) else [axis]
    return tuple(sorted(int(a) % ndim for a in axes))


def _broadcast(param: np.ndarray | None, axes: tuple[int, ...], ndim: int) -> np.ndarray | None:
    if param is None:
        return None
    shape = [1] * ndim
    for a, n in zip(axes, param.shape if param.ndim == len(axes) else param.reshape(-1).shape):
        shape[a] = n
    return param.reshape(shape)


def _batch_norm(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    x = run.floating(x)
    axes = _axes(layer, x.ndim)
    eps = float(layer.config.get("epsilon", 1e-3))
    b = lambda name: _broadcast(run.weight(layer, name, required=False), axes, x.ndim)  # noqa: E731
    mean, var, gamma, beta = b("moving_mean"), b("moving_variance"), b("gamma"), b("beta")
    if mean is None or var is None:
        raise InspectError(f"layer {layer.key!r} (BatchNormalization) has no moving statistics in the file")
    inv = 1.0 / np.sqrt(var + eps)
    if gamma is not None:
        inv = inv * gamma
    y = (x - mean) * inv
    return y + beta if beta is not None else y


def _layer_norm(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    x = run.floating(x)
    axes = _axes(layer, x.ndim)
    eps = float(layer.config.get("epsilon", 1e-3))
    gamma = _broadcast(run.weight(layer, "gamma", required=False), axes, x.ndim)
    beta = _broadcast(run.weight(layer, "beta", required=False), axes, x.ndim)
    if layer.config.get("rms_scaling", False):
        y = x / np.sqrt(np.mean(np.square(x), axis=axes, keepdims=True) + eps)
        return y * gamma if gamma is not None else y
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    return y + beta if beta is not None else y


def _one(value: Any) -> int:
    return int(value[0] if isinstance(value, (list, tuple)) else value)


def _check_channels_last(layer: Layer) -> None:
    if layer.config.get("data_format", "channels_last") not in ("channels_last", None):
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): data_format="
                           f"{layer.config.get('data_format')!r} is not supported (channels_last only)")


def _same_padding(length: int, window: int, stride: int) -> tuple[int, int, int]:
    out = -(-length // stride)
    total = max((out - 1) * stride + window - length, 0)
    return out, total // 2, total - total // 2


def _conv1d(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    _check_channels_last(layer)
    if int(cfg.get("groups", 1) or 1) != 1:
        raise InspectError(f"layer {layer.key!r} (Conv1D): grouped convolution is not supported")
    x = run.floating(x)
    kernel = run.weight(layer, "kernel")  # (k, in, filters)
    k = kernel.shape[0]
    stride, dilation = _one(cfg.get("strides", 1)), _one(cfg.get("dilation_rate", 1))
    padding = str(cfg.get("padding", "valid")).lower()
    span = (k - 1) * dilation + 1
    if padding == "causal":  # pad on the left only, so that step t sees no step after t
        x = np.pad(x, ((0, 0), (span - 1, 0), (0, 0)))
        padding = "valid"
    elif padding not in ("same", "valid"):
        raise InspectError(f"layer {layer.key!r} (Conv1D): padding {padding!r} is not supported")
    if padding == "valid" and x.shape[1] < span:
        raise InspectError(f"layer {layer.key!r} (Conv1D): {x.shape[1]} steps are fewer than the kernel spans ({span})")
    y = conv_nd(x, kernel, (stride,), padding, (dilation,))
    if cfg.get("use_bias", True):
        y = y + run.weight(layer, "bias")
    return run.activation(layer, cfg.get("activation", "linear"))(y)


def _pool1d(run: _Run, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    _check_channels_last(layer)
    x = run.floating(x)
    size = _one(cfg.get("pool_size", 2))
    stride = _one(cfg.get("strides") or size)
    padding = str(cfg.get("padding", "valid")).lower()
    is_max = layer.class_name.startswith("Max")
    length = x.shape[1]
    valid = np.ones((1, length, 1), dtype=x.dtype)
    if padding == "same":
        out_len, left, right = _same_padding(length, size, stride)
        fill = -np.inf if is_max else 0.0
        x = np.pad(x, ((0, 0), (left, right), (0, 0)), constant_values=fill)
        valid = np.pad(valid, ((0, 0), (left, right), (0, 0)))
    else:
        out_len = (length - size) // stride + 1
    windows = [x[:, j:j + (out_len - 1) * stride + 1:stride] for j in range(size)]
    if is_max:
        return np.max(windows, axis=0)
    counts = sum(valid[:, j:j + (out_len - 1) * stride + 1:stride] for j in range(size))
    return np.sum(windows, axis=0) / counts  # TF's SAME average pooling counts only real elements


def _global_pool1d(run: _Run, layer: Layer, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    _check_channels_last(layer)
    x = run.floating(x)
    keep = bool(layer.config.get("keepdims", False))
    if layer.class_name.startswith("GlobalMax"):
        return x.max(axis=1, keepdims=keep)
    if mask is not None:  # Keras averages over the unmasked steps only
        m = mask[..., None].astype(x.dtype)
        return (x * m).sum(axis=1, keepdims=keep) / m.sum(axis=1, keepdims=keep)
    return x.mean(axis=1, keepdims=keep)


_LAYER_FUNCS: dict[str, Callable[[_Run, Layer, np.ndarray, Any], np.ndarray]] = {
    "Dense": _dense,
    "Activation": _activation,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "ELU": _elu,
    "Softmax": _softmax,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat_vector,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Conv1D": _conv1d,
    "MaxPooling1D": _pool1d,
    "AveragePooling1D": _pool1d,
    "MaxPool1D": _pool1d,
    "AvgPool1D": _pool1d,
    "GlobalMaxPooling1D": _global_pool1d,
    "GlobalAveragePooling1D": _global_pool1d,
    "GlobalMaxPool1D": _global_pool1d,
    "GlobalAvgPool1D": _global_pool1d,
}


def _merge(layer: Layer, xs: list[np.ndarray], masks: Any) -> tuple[np.ndarray, np.ndarray | None]:
    cls = layer.class_name
    if len(xs) < 2 and cls != "Concatenate":
        raise InspectError(f"layer {layer.key!r} ({cls}) needs at least two inputs")
    if cls == "Concatenate":
        out = np.concatenate(xs, axis=int(layer.config.get("axis", -1)))
    elif cls == "Add":
        out = np.sum(xs, axis=0)
    elif cls == "Subtract":
        out = xs[0] - xs[1]
    elif cls == "Multiply":
        out = np.prod(xs, axis=0)
    elif cls == "Average":
        out = np.mean(xs, axis=0)
    elif cls == "Maximum":
        out = np.max(xs, axis=0)
    else:
        out = np.min(xs, axis=0)
    return out, masks


def _combine_masks(masks: list[np.ndarray | None]) -> np.ndarray | None:
    """Merging layers keep a time step only when every masked input keeps it (Keras ANDs the masks)."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    try:
        return np.logical_and.reduce(np.broadcast_arrays(*present))
    except ValueError:
        return None


def _as_list(value: Value) -> list[np.ndarray]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _flatten(value: Any) -> list[np.ndarray]:
    return [leaf for item in value for leaf in _flatten(item)] if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------------------------------------------------------
# Functional graphs (Keras 2 and Keras 3 config forms)


class _Graph:
    def __init__(self, layer: Layer, keras_major: int | None):
        self.layer = layer
        self.keras_major = keras_major
        self.by_name = {child.name: child for child in layer.children}
        self.order = [child for child in layer.children if child.class_name != "InputLayer"]
        self.inputs = _endpoints(layer.config.get("input_layers"))
        self.outputs = _endpoints(layer.config.get("output_layers"))
        if not self.inputs:
            self.inputs = [(c.name, 0, 0) for c in layer.children if c.class_name == "InputLayer"]
        if not self.outputs:
            raise InspectError(f"{layer.key or 'model'}: functional config has no output_layers")

    def nodes(self, child: Layer) -> list[Any]:
        nodes = child.entry.get("inbound_nodes") or []
        return nodes if isinstance(nodes, list) else []

    def lookup(self, produced: dict, name: str, node_index: int) -> tuple[list, list]:
        if (name, node_index) in produced:
            return produced[(name, node_index)]
        # Nested models built on their own Input keep that construction call as node 0 in Keras's numbering;
        # the config lists only the calls in this graph.
        calls = sorted(i for (n, i) in produced if n == name)
        if node_index - 1 in calls:
            return produced[(name, node_index - 1)]
        if len(calls) == 1:
            return produced[(name, calls[0])]
        raise KeyError((name, node_index))

    def resolve(self, node: Any, produced: dict) -> tuple[Value, list, dict] | None:
        """(call argument, input masks, keyword tensors) of one inbound node, or None while an input is missing."""
        masks: list = []

        def ref(name: str, node_index: int, tensor_index: int) -> np.ndarray:
            outs, out_masks = self.lookup(produced, name, int(node_index))
            masks.append(out_masks[int(tensor_index)] if int(tensor_index) < len(out_masks) else None)
            return outs[int(tensor_index)]

        try:
            if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
                args = [_k3_values(a, ref) for a in node.get("args", [])]
                kwargs = {k: _k3_values(v, ref) for k, v in (node.get("kwargs") or {}).items()
                          if k in ("initial_state", "mask")}
                if len(args) > 1:  # ops such as not_equal(x, 0) take several positional arguments
                    kwargs["extra_args"] = args[1:]
                if not args:
                    raise InspectError(f"{self.layer.key or 'model'}: a call with no positional argument")
                return args[0], masks, kwargs
            if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
                values, kwargs = [], {}
                for item in _k2_entries(node):
                    values.append(ref(item[0], item[1], item[2]))
                    extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
                    if "initial_state" in extra:
                        kwargs["initial_state"] = _k2_values(extra["initial_state"], ref)
                return (values[0] if len(values) == 1 else values), masks, kwargs
        except KeyError:
            return None
        raise InspectError(f"{self.layer.key or 'model'}: cannot read an inbound node of the config: {node!r}"[:200])


def _k3_values(value: Any, ref: Callable) -> Any:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return ref(*value["config"]["keras_history"])
    if isinstance(value, (list, tuple)):
        return [_k3_values(v, ref) for v in value]
    return value


def _k2_entries(node: list) -> list[list]:
    """The [name, node_index, tensor_index, kwargs] entries of a Keras 2 inbound node, in order; tf-keras nests the
    initial states of stacked cells per cell ([x, [[h_low ...], [c_low ...]], [[h_high ...]]])."""
    entries = []
    for item in node:
        if isinstance(item, list) and item and isinstance(item[0], list):
            entries.extend(_k2_entries(item))
        else:
            entries.append(item)
    return entries


def _k2_values(value: Any, ref: Callable) -> Any:
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str):
        return ref(value[0], value[1], value[2])
    if isinstance(value, list):
        return [_k2_values(v, ref) for v in value]
    return value


def _endpoints(spec: Any) -> list[tuple[str, int, int]]:
    if not spec:
        return []
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        spec = [spec]
    if isinstance(spec, dict):
        spec = list(spec.values())
    return [(str(s[0]), int(s[1]), int(s[2])) for s in spec]


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def input_specs(model: ModelFile) -> list[InputSpec]:
    """The model's inputs: name, shape (batch axis first, None where free) and dtype, from the config."""
    root = model.root
    if not model.has_config:
        raise InspectError("the file has no model config (weights only): the forward pass needs the model's "
                           "architecture; use the full model file", model.path)
    return _specs_of(root)


def _specs_of(layer: Layer) -> list[InputSpec]:
    if layer.class_name in ("Functional", "Model"):
        names = [name for name, _, _ in _endpoints(layer.config.get("input_layers"))]
        by_name = {c.name: c for c in layer.children}
        specs = []
        for name in names:
            child = by_name.get(name)
            if child is None:
                specs.append(InputSpec(name, (None,)))
            elif child.class_name == "InputLayer":
                specs.append(_spec_from_config(name, child.config))
            else:
                specs.extend(_specs_of(child))
        return specs
    if layer.class_name == "Sequential":
        first = next((c for c in layer.children), None)
        if first is None:
            raise InspectError("the model has no layers")
        if first.class_name == "InputLayer":
            return [_spec_from_config(first.name, first.config)]
        if first.class_name in ("Sequential", "Functional", "Model"):
            return _specs_of(first)
        spec = _spec_from_config(layer.name + "_input", first.config)
        if spec.shape == (None,):
            build = layer.config.get("build_input_shape") or (layer.entry.get("build_config") or {}).get("input_shape")
            if isinstance(build, list):
                spec.shape = tuple(build)
        return [spec]
    return [_spec_from_config(layer.name, layer.config)]


def _spec_from_config(name: str, config: dict[str, Any]) -> InputSpec:
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None and config.get("input_shape") is not None:
        shape = [None] + list(config["input_shape"])
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", "float32")
    if not isinstance(dtype, str) or dtype.startswith("mixed"):
        dtype = "float32"
    return InputSpec(name, tuple(shape) if shape else (None,), dtype)


def match_inputs(specs: list[InputSpec], inputs: Any) -> list[np.ndarray]:
    if isinstance(inputs, dict):
        plain = {k.removeprefix("input/") if k != "input" else k: v for k, v in inputs.items()}
        if len(specs) == 1 and len(plain) == 1:
            values = [next(iter(plain.values()))]
        else:
            missing = [s.name for s in specs if s.name not in plain]
            if missing:
                raise InspectError(f"inputs missing for {', '.join(missing)} (the model's inputs are "
                                   f"{', '.join(s.name for s in specs)}; got {', '.join(plain) or 'none'})")
            values = [plain[s.name] for s in specs]
    elif isinstance(inputs, (list, tuple)):
        values = list(inputs)
    else:
        values = [inputs]
    if len(values) != len(specs):
        raise InspectError(f"the model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}), "
                           f"got {len(values)}")
    out = []
    for spec, value in zip(specs, values):
        value = np.asarray(value)
        want = spec.shape
        if len(want) > 1 and (value.ndim != len(want)
                              or any(w is not None and w != g for w, g in zip(want[1:], value.shape[1:]))):
            shown = "(" + ", ".join("batch" if w is None and i == 0 else str(w) for i, w in enumerate(want)) + ")"
            raise InspectError(f"input {spec.name!r} has shape {value.shape} but the model expects {shown}")
        if value.dtype.kind not in "biuf":
            raise InspectError(f"input {spec.name!r} has dtype {value.dtype}: numbers expected")
        out.append(value)
    return out


def run(model: ModelFile, inputs: Any, layers: Sequence[str] = (), trace: bool = False,
        dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """Run `model` on `inputs` (an array, a list in input order, or a dict keyed by input name).

    Returns every layer's output keyed by layer path and the model's output under ``__output__``. With `layers`,
    only the outputs of layers whose path contains one of the names, and the run stops once they are computed.
    With `trace`, also ``<recurrent layer path>/<gate or state>`` arrays of shape (batch, time, units).
    """
    try:
        return _run(model, inputs, layers, trace, dtype)
    except InspectError as exc:
        if exc.path is None:
            exc.path = model.path
        raise


def _run(model: ModelFile, inputs: Any, layers: Sequence[str], trace: bool, dtype: Any) -> dict[str, np.ndarray]:
    specs = input_specs(model)
    values = match_inputs(specs, inputs)
    wanted = None
    if layers:
        matched = {layer.key for layer in model.layers if any(name in layer.key for name in layers)
                   and layer.class_name != "InputLayer"}
        if not matched:
            raise InspectError(f"no layer matches {', '.join(layers)}", model.path)
        wanted = set(matched)
    state = _Run(model.keras_major, np.dtype(dtype), trace, wanted)
    finished = False
    try:
        root = model.root
        if root.class_name in ("Functional", "Model"):
            out, _ = state.call(root, values, None, record=False)
        else:
            out, _ = state.call(root, values[0], None, record=False)
        finished = True
    except _Stop:
        pass
    result = state.outputs
    if wanted is not None:
        keep = {layer.key for layer in model.layers if any(name in layer.key for name in layers)}
        result = {k: v for k, v in result.items()
                  if k in keep or k.rsplit("/", 1)[0] in keep}
    if finished:
        outs = _as_list(out)
        if len(outs) == 1:
            result[OUTPUT_KEY] = outs[0]
        else:
            for i, v in enumerate(outs):
                result[f"{OUTPUT_KEY}/{i}"] = v
    return result

"""The numpy forward pass's recurrent layers: `RecurrentCell` (one LSTM / GRU / SimpleRNN / ConvLSTM cell in Keras's
fused form, rebuilt from its gate blocks), the time loop over a layer's cells with masks and initial states, and
the wrappers Bidirectional and TimeDistributed (`RecurrentLayers`, mixed into `forward._Run`).
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import gates
from ..errors import InspectError
from ..model import Layer
from . import recurrent_fast, row_split
from .layer_ops import Context, Value, as_list, conv_nd, flatten_values

#: Layers run by `RecurrentLayers.recurrent`: the Keras layers, their legacy cuDNN twins (their weights are
#: converted to the standard form by the gate split), the convolutional LSTMs, and RNN wrapping a cell or a
#: StackedRNNCells.
CONV_LSTM_CLASSES = frozenset({"ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"})
RECURRENT_CLASSES = frozenset({"LSTM", "GRU", "SimpleRNN", "CuDNNLSTM", "CuDNNGRU", "RNN"}) | CONV_LSTM_CLASSES
#: What can be a cell of the loop: a recurrent layer itself, or a cell inside RNN / StackedRNNCells.
CELL_CLASSES = (RECURRENT_CLASSES - {"RNN"}) | frozenset({"LSTMCell", "GRUCell", "SimpleRNNCell", "PeepholeLSTMCell"})

#: Each cell layer's weights as the loops use them, built once and kept as long as the open model's layer lives
#: (a second run of the same model reuses them): layer -> {(what, dtype, Keras major): (its tensors, value)}.
_BUILT: "weakref.WeakKeyDictionary[Layer, dict[tuple, tuple[tuple, Any]]]" = weakref.WeakKeyDictionary()


def built_once(layer: Layer, what: str, dtype: np.dtype, keras_major: int | None, build: Callable[[], Any]) -> Any:
    """`build()`'s value for this layer, dtype and Keras version, built on the first call only (again if the
    layer's tensors were replaced)."""
    key = (what, np.dtype(dtype).str, keras_major)
    tensors = tuple(layer.weights)
    entries = _BUILT.setdefault(layer, {})
    hit = entries.get(key)
    if hit is not None and len(hit[0]) == len(tensors) and all(a is b for a, b in zip(hit[0], tensors)):
        return hit[1]
    value = build()
    entries[key] = (tensors, value)
    return value


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


class RecurrentLayers(Context):
    """The recurrent layers and wrappers of the forward pass, as methods of its runner (`forward._Run`, which
    provides `call`, `record`, `record_trace` and `trace`)."""

    threads: int | None = None
    """How many threads a layer's batch rows may run on (`row_split.parts`): None decides, 1 never splits."""

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
        # Stacked cells take their states nested per cell ([[h, c], [h]]); counted flat, bottom cell first
        given = flatten_values(initial_state) if initial_state is not None else None
        if given is not None and channels_first:
            given = [np.moveaxis(self.floating(s), 1, -1) for s in given]
        fast = self.fast_loop(cells)
        if fast is not None:
            weights, act, rec_act = fast
            states = self.initial_states(layer, given, [(cells[0][1], (batch,))])
            output, final, traces = row_split.run_loop(
                row_split.parts(batch, weights.units, self.threads), weights, act, rec_act, x, states[0], mask,
                backwards, zero_out, bool(cfg.get("return_sequences", False)), self.trace)
            flat_states = final
            for name, array in traces.items():
                self.record_trace(cells[0][0], name, array)
        else:
            output, flat_states = self.general_loop(cells, x, mask, given, layer, backwards, zero_out, channels_first)
        if cfg.get("time_major") and output.ndim == 3:
            output = np.swapaxes(output, 0, 1)
        out_mask = mask[:, ::-1] if backwards and mask is not None else mask
        out_mask = out_mask if cfg.get("return_sequences", False) else None
        if cfg.get("return_state", False):
            return [output] + flat_states, [out_mask] + [None] * len(flat_states)
        return output, out_mask

    def fast_loop(self, cells: list[tuple[Layer, "RecurrentCell"]]) -> tuple | None:
        """(loop weights, activation, recurrent activation) when the layer is one dense cell without peepholes,
        which `recurrent_fast` runs; None for the general loop."""
        if len(cells) != 1 or cells[0][1].conv is not None or cells[0][1].peepholes:
            return None
        cell_layer, cell = cells[0]
        act = recurrent_fast.in_place(cell_layer.config.get("activation", "tanh"), self.keras_major)
        rec_act = recurrent_fast.in_place(cell_layer.config.get("recurrent_activation", "sigmoid"), self.keras_major)
        if act is None or rec_act is None:
            return None
        halve = rec_act is recurrent_fast.in_place("sigmoid", None) and cell.family in ("LSTM", "GRU")
        weights = built_once(cell_layer, "loop-halved" if halve else "loop", self.dtype, self.keras_major,
                             lambda: recurrent_fast.LoopWeights.from_cell(cell, halve))
        return weights, act, (recurrent_fast.sigmoid_of_halved if halve else rec_act)

    def general_loop(self, cells: list[tuple[Layer, "RecurrentCell"]], x: np.ndarray, mask: np.ndarray | None,
                     given: list[np.ndarray] | None, layer: Layer, backwards: bool, zero_out: bool,
                     channels_first: bool) -> tuple[np.ndarray, list[np.ndarray]]:
        """Any cells (stacked, convolutional, peephole): (output sequence or last output, flat final states)."""
        cfg = layer.config
        batch, steps = x.shape[:2]
        if backwards:
            x = x[:, ::-1]
            mask = mask[:, ::-1] if mask is not None else None

        # The first cell's input projection for every step at once (the input bias folded in); cells stacked
        # above it read the cell below's new state, so theirs is computed per step.
        proj = cells[0][1].project(x)
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
        return output, flat_states

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
        cuDNN layouts arrive already converted) with its activations; built once per layer and dtype."""
        return built_once(layer, "cell", self.dtype, self.keras_major, lambda: self.build_cell(layer))

    def build_cell(self, layer: Layer) -> "RecurrentCell":
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
            states = as_list(initial_state)
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
            return as_list(merged) + states, None
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

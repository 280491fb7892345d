"""The time loop of one dense LSTM / GRU / SimpleRNN cell, written for speed (`recurrent.RecurrentLayers` sends the
plain cells here; ConvLSTMs, peepholes and stacked cells take the general loop).

What makes it fast, and why it stays exact:
- the weights are laid out once per layer (`LoopWeights`): an LSTM's gate columns reordered i, f, o, c so the three
  recurrent-activation gates are one contiguous block; a GRU's recurrent kernel split where reset_after=False
  needs it;
- the input term ``x · kernel + bias`` of every step is one matmul over the whole sequence before the loop, laid
  out time-major so each step's rows are contiguous;
- each step is one ``h · recurrent_kernel`` matmul into a preallocated buffer, then activations and state updates
  in place (ufuncs with ``out=``): nothing is allocated per step but views. A step's output is written straight
  into the (time, batch, units) output sequence and read from there as the next step's h.
The arithmetic is Keras's, operation for operation (the same formulas in the same order as the general loop); tests
hold both loops to a step-by-step reference and to Keras.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from ..gates import activations

#: The input terms x·kernel + bias are computed for this many bytes of steps at once (the whole sequence unless
#: the batch is large: an LSTM(256) at batch 512 takes 16 steps per matmul of 8,192 rows), so a long sequence or a
#: large batch never holds every step's terms at once and the buffer is reused, not allocated per block.
INPUT_BLOCK_BYTES = 32 * 1024 * 1024

Activation = Callable[[np.ndarray, np.ndarray], None]
"""``f(a, out)`` writes the activation of `a` into `out` (which may be `a` itself)."""


def _sigmoid(a: np.ndarray, out: np.ndarray) -> None:  # 1 / (1 + exp(-x)), as activations._sigmoid
    np.negative(a, out=out)
    np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)


def sigmoid_of_halved(a: np.ndarray, out: np.ndarray) -> None:
    """sigmoid(x) = 0.5·tanh(x/2) + 0.5 from x/2: the loop halves the sigmoid gates' weights once (exact: a power
    of two), and numpy's tanh is about twice as fast as exp followed by a division. Within an ulp of
    1 / (1 + exp(-x)) at the scale of the gate (absolute), which is what the state update sees."""
    np.tanh(a, out=out)
    out *= 0.5
    out += 0.5


def _linear(a: np.ndarray, out: np.ndarray) -> None:
    if out is not a:
        np.copyto(out, a)


_IN_PLACE: dict[str, Activation] = {
    "sigmoid": _sigmoid,
    "tanh": lambda a, out: np.tanh(a, out=out),
    "relu": lambda a, out: np.maximum(a, 0, out=out),
    "linear": _linear,
}


def in_place(spec: object, keras_major: int | None) -> Activation | None:
    """The activation named by a config entry as ``f(a, out)``; None when unknown. The ones whose definition no
    Keras version changed run in place; the others (hard_sigmoid...) come from `gates.activations`, the one place
    that knows each version's definition."""
    name = activations.activation_name(spec)
    if name in _IN_PLACE:
        return _IN_PLACE[name]
    func = activations.get(name, keras_major)
    if func is None:
        return None

    def apply(a: np.ndarray, out: np.ndarray) -> None:  # any other activation: computed, then copied
        out[...] = func(a)

    return apply


@dataclass
class LoopWeights:
    """One cell's weights in the loop's layout (built once per layer and run)."""

    family: str
    units: int
    kernel: np.ndarray
    """(in, n·u); an LSTM's columns in the order i, f, o, c."""
    bias: np.ndarray | None
    recurrent: np.ndarray
    """(u, n·u), the same column order; a GRU without reset_after: its z and r columns only."""
    recurrent_h: np.ndarray | None = None
    """A GRU without reset_after: the candidate's columns of the recurrent kernel."""
    recurrent_bias: np.ndarray | None = None
    reset_after: bool = False

    @classmethod
    def from_cell(cls, cell: "object", halve: bool = False) -> "LoopWeights":
        """From a `recurrent.RecurrentCell` (Keras's fused order i, f, c, o / z, r, h). `halve`: the
        recurrent-activation gates' columns multiplied by 0.5 (for `sigmoid_of_halved`)."""
        u, family = cell.units, cell.family
        kernel, recurrent, bias, recurrent_bias = cell.kernel, cell.recurrent, cell.bias, cell.recurrent_bias
        if family == "LSTM":  # i f c o -> i f o c: the recurrent activation over [0, 3u), the activation after
            order = np.r_[0:2 * u, 3 * u:4 * u, 2 * u:3 * u]
            kernel, recurrent = kernel[:, order], recurrent[:, order]
            bias = bias[order] if bias is not None else None
        else:
            kernel, recurrent = kernel.copy(), recurrent.copy()
            bias = bias.copy() if bias is not None else None
        recurrent_bias = recurrent_bias.copy() if recurrent_bias is not None else None
        if halve:
            gated = slice(0, {"LSTM": 3 * u, "GRU": 2 * u}.get(family, 0))
            for array in (kernel, recurrent, bias, recurrent_bias):
                if array is not None:
                    array[..., gated] *= 0.5
        recurrent_h = None
        if family == "GRU" and not cell.reset_after:
            recurrent, recurrent_h = recurrent[:, :2 * u], np.ascontiguousarray(recurrent[:, 2 * u:])
        return cls(family, u, np.ascontiguousarray(kernel), bias, np.ascontiguousarray(recurrent), recurrent_h,
                   recurrent_bias, bool(cell.reset_after))


def input_terms(weights: LoopWeights, x: np.ndarray, backwards: bool,
                block_bytes: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(step in processing order, x_t · kernel + bias (batch, n·u)) for every step of x (batch, time, in): one
    matmul for a block of steps (the whole sequence unless that passes `block_bytes`, by default
    `INPUT_BLOCK_BYTES`), time-major so each
    step's rows are contiguous; the last step first when `backwards`."""
    batch, steps = x.shape[:2]
    # time-major; a block's rows are copied together only when not already contiguous (they are when x is a
    # time-major run's whole output, a swapped view), so a batch-major x is never copied whole
    seq = np.swapaxes(x, 0, 1)
    width = weights.kernel.shape[1]
    dtype = np.result_type(seq.dtype, weights.kernel.dtype)
    block_bytes = INPUT_BLOCK_BYTES if block_bytes is None else block_bytes
    block = max(1, min(steps, block_bytes // max(1, batch * width * dtype.itemsize)))
    buffer = np.empty((block * batch, width), dtype=dtype)
    for start in range(0, steps, block):
        stop = min(steps, start + block)
        lo, hi = (steps - stop, steps - start) if backwards else (start, stop)
        terms = buffer[:(hi - lo) * batch]
        np.matmul(seq[lo:hi].reshape((hi - lo) * batch, -1), weights.kernel, out=terms)
        if weights.bias is not None:
            terms += weights.bias
        terms = terms.reshape(hi - lo, batch, width)
        for k in range(start, stop):
            yield k, terms[(steps - 1 - k if backwards else k) - lo]


def run_loop(weights: LoopWeights, act: Activation, rec_act: Activation, x: np.ndarray, states: list[np.ndarray],
             mask: np.ndarray | None, backwards: bool, zero_out: bool, keep_sequence: bool,
             trace: bool, sequence: np.ndarray | None = None, trace_into: dict[str, np.ndarray] | None = None,
             block_bytes: int | None = None) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """The layer over x (batch, time, in) from `states` (each (batch, units)); steps taken last to first when
    `backwards`, mask (batch, time) in input order. Returns (the outputs (batch, time, units) in processing order
    — a view of time-major storage — or the last output (batch, units); the final states; with `trace` each
    gate's and state's values per step (batch, time, units)). `sequence` and `trace_into`: time-major
    (time, batch, units) arrays to write the outputs and traces into (`row_split` gives each part its rows of
    shared ones); allocated here when not given. `block_bytes`: the bound on the input terms' buffer
    (`input_terms`)."""
    u, family = weights.units, weights.family
    batch, steps = x.shape[:2]
    width = weights.kernel.shape[1]
    dtype = np.result_type(x.dtype, weights.kernel.dtype)
    h = np.array(states[0], dtype=dtype, copy=True)
    c = np.array(states[1], dtype=dtype, copy=True) if family == "LSTM" else None
    z = np.empty((batch, width), dtype=dtype)  # the step's pre-activations, then its gates
    tmp = np.empty((batch, u), dtype=dtype)
    other = np.empty((batch, u), dtype=dtype)
    zr = np.empty((batch, 2 * u), dtype=dtype) if weights.recurrent_h is not None else None  # GRU, reset_after off
    out_seq = None
    if keep_sequence:
        out_seq = sequence if sequence is not None else np.empty((steps, batch, u), dtype=dtype)
    traces = {}
    if trace:
        traces = trace_into if trace_into is not None else {
            name: np.empty((steps, batch, u), dtype=dtype) for name in trace_names(family)}
    masks = None
    if mask is not None:
        masks = np.asarray(mask, dtype=bool).T[::-1 if backwards else 1, :, None]  # (time, batch, 1), step order
        h_prev, c_prev = np.empty_like(h), (np.empty_like(c) if c is not None else None)
    prev_out = np.zeros((batch, u), dtype=dtype)
    out = prev_out
    with np.errstate(over="ignore"):  # a plain sigmoid's exp(-x) of a very negative x: inf, and sigmoid 0, rightly
        for k, p in input_terms(weights, x, backwards, block_bytes):
            if masks is not None:
                np.copyto(h_prev, h)
                if c is not None:
                    np.copyto(c_prev, c)
            new_h = out_seq[k] if keep_sequence and masks is None else h
            if family == "LSTM":
                np.matmul(h, weights.recurrent, out=z)
                _lstm_gates(z, p, c, tmp, new_h, u, act, rec_act)
            elif family == "GRU":
                new_h = _gru_step(weights, act, rec_act, p, h, z, tmp, other, zr, new_h)
            else:
                np.matmul(h, weights.recurrent, out=z)
                z += p
                act(z, new_h)
            if new_h is not h:
                h = new_h
            if masks is not None:  # a masked step keeps the states; its output is the last one, or zeros
                m = masks[k]
                np.copyto(h, h_prev, where=~m)
                if c is not None:
                    np.copyto(c, c_prev, where=~m)
                out = np.where(m, h, 0.0 if zero_out else prev_out).astype(dtype, copy=False)
                if keep_sequence:
                    out_seq[k] = out
                prev_out = out
            elif keep_sequence:
                out = out_seq[k]
            else:
                out = h
            if trace:
                _record(traces, k, family, z, u, c, h, weights)
    if masks is None and not keep_sequence:
        out = h
    output = np.swapaxes(out_seq, 0, 1) if keep_sequence else np.array(out, copy=True)
    final = [h] if c is None else [h, c]
    return output, final, {name: np.swapaxes(value, 0, 1) for name, value in traces.items()}


def trace_names(family: str) -> tuple[str, ...]:
    """The traces `run_loop` records for a family, in its order."""
    return {"LSTM": ("i", "f", "o", "c", "cell", "hidden"), "GRU": ("z", "r", "h", "hidden")}.get(family, ("hidden",))


def _lstm_gates(z: np.ndarray, p: np.ndarray, c: np.ndarray, tmp: np.ndarray, new_h: np.ndarray, u: int,
                act: Activation, rec_act: Activation) -> None:
    """An LSTM step after its matmul: z (h·U, columns i f o c) plus the input term p, the gates, then
    c = f·c + i·c̃ and h = o·act(c), in place."""
    z += p
    sig, cand = z[:, :3 * u], z[:, 3 * u:]
    rec_act(sig, sig)
    act(cand, cand)
    c *= z[:, u:2 * u]
    np.multiply(z[:, :u], cand, out=tmp)
    c += tmp
    act(c, tmp)
    np.multiply(z[:, 2 * u:3 * u], tmp, out=new_h)


def _gru_step(w: LoopWeights, act: Activation, rec_act: Activation, p: np.ndarray, h: np.ndarray, z: np.ndarray,
              tmp: np.ndarray, other: np.ndarray, zr: np.ndarray | None, new_h: np.ndarray) -> np.ndarray:
    """One GRU step (Keras: h = z·h_prev + (1 − z)·hh), leaving z, r, hh in z's columns."""
    u = w.units
    if w.reset_after:
        np.matmul(h, w.recurrent, out=z)  # the recurrent term of all three gates
        if w.recurrent_bias is not None:
            z += w.recurrent_bias
        gates = z[:, :2 * u]
        gates += p[:, :2 * u]
        rec_act(gates, gates)
        hh = z[:, 2 * u:]
        hh *= z[:, u:2 * u]  # r · (h·U_h + rb_h)
        hh += p[:, 2 * u:]
    else:
        gates = z[:, :2 * u]
        np.matmul(h, w.recurrent, out=zr)
        np.add(zr, p[:, :2 * u], out=gates)
        rec_act(gates, gates)
        np.multiply(z[:, u:2 * u], h, out=tmp)  # (r · h) · U_h
        hh = z[:, 2 * u:]
        np.matmul(tmp, w.recurrent_h, out=other)
        np.add(p[:, 2 * u:], other, out=hh)
    act(hh, hh)
    zg = z[:, :u]
    np.multiply(zg, h, out=other)
    np.subtract(1.0, zg, out=tmp)
    tmp *= hh
    np.add(other, tmp, out=new_h)
    return new_h


def _record(traces: dict[str, np.ndarray], k: int, family: str, z: np.ndarray, u: int, c: np.ndarray | None,
            h: np.ndarray, weights: LoopWeights) -> None:
    if family == "LSTM":
        for n, name in enumerate(("i", "f", "o", "c")):
            traces[name][k] = z[:, n * u:(n + 1) * u]
        traces["cell"][k] = c
    elif family == "GRU":
        for n, name in enumerate(("z", "r", "h")):
            traces[name][k] = z[:, n * u:(n + 1) * u]
    traces["hidden"][k] = h

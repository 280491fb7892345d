"""A deliberately plain, step-by-step numpy re-implementation of Keras's recurrent cells, written from the
Keras equations and fed with the per-gate blocks lstm-inspect exports. If a gate slice were wrong, the output
would not match what Keras itself computed. Shared by the tests; not part of the package."""
from __future__ import annotations

import numpy as np


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def activation(name: str, keras_major: int):
    if name == "hard_sigmoid":
        if keras_major == 3:
            return lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0)
        return lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0)
    return {"tanh": np.tanh, "sigmoid": sigmoid, "relu": lambda x: np.maximum(x, 0.0), "linear": lambda x: x}[name]


def run(family: str, x: np.ndarray, blocks: dict, act: str = "tanh", rec_act: str = "sigmoid",
        keras_major: int = 3, go_backwards: bool = False, reset_after: bool | None = None,
        initial_state: list[np.ndarray] | None = None, mask: np.ndarray | None = None) -> np.ndarray:
    """All hidden states, shape (batch, time, units), in the order Keras returns them.

    ``initial_state``: [h0] or [h0, c0] (LSTM) instead of zeros. ``mask`` (batch, time): at a masked step the
    states are carried over unchanged, so the returned h there is the previous step's, as Keras outputs it."""
    f = activation(act, keras_major)
    g = activation(rec_act, keras_major)
    x = x.astype(np.float64)
    if go_backwards:
        x = x[:, ::-1]
        mask = None if mask is None else mask[:, ::-1]
    B = {k: v.astype(np.float64) for k, v in blocks.items()}
    # Keras blocks only; PyTorch / ONNX files add a second bias rb_* (summed, except in GRU's reset-after form)
    # and a projection `proj` (torch proj_size: h = (o * act(c)) @ proj).
    units = (B["W"] if family == "SimpleRNN" else B["W_" + ("i" if family == "LSTM" else "z")]).shape[1]
    zero = np.zeros(units)
    h = np.zeros((x.shape[0], B["proj"].shape[1] if "proj" in B else units))
    c = np.zeros((x.shape[0], units))
    if initial_state is not None:
        h = np.asarray(initial_state[0], dtype=np.float64)
        if family == "LSTM":
            c = np.asarray(initial_state[1], dtype=np.float64)
    outputs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        h_prev, c_prev = h, c
        if family == "LSTM":
            # ONNX peepholes p_i, p_f look at the previous cell state, p_o at the new one
            i = g(xt @ B["W_i"] + h @ B["U_i"] + B.get("b_i", zero) + B.get("rb_i", zero) + c * B.get("p_i", zero))
            fg = g(xt @ B["W_f"] + h @ B["U_f"] + B.get("b_f", zero) + B.get("rb_f", zero) + c * B.get("p_f", zero))
            cand = f(xt @ B["W_c"] + h @ B["U_c"] + B.get("b_c", zero) + B.get("rb_c", zero))
            c = fg * c + i * cand
            o = g(xt @ B["W_o"] + h @ B["U_o"] + B.get("b_o", zero) + B.get("rb_o", zero) + c * B.get("p_o", zero))
            h = o * f(c)
            if "proj" in B:
                h = h @ B["proj"]
        elif family == "GRU":
            if reset_after is None:  # Keras stores a second bias only with reset_after=True
                reset_after = "rb_z" in B
            if reset_after:  # the reset gate scales (h·U_h + rb_h)
                z = g(xt @ B["W_z"] + B["b_z"] + h @ B["U_z"] + B["rb_z"])
                r = g(xt @ B["W_r"] + B["b_r"] + h @ B["U_r"] + B["rb_r"])
                cand = f(xt @ B["W_h"] + B["b_h"] + r * (h @ B["U_h"] + B["rb_h"]))
            else:  # reset_after=False: the reset gate scales h before U_h (ONNX's two biases simply add up)
                z = g(xt @ B["W_z"] + h @ B["U_z"] + B.get("b_z", zero) + B.get("rb_z", zero))
                r = g(xt @ B["W_r"] + h @ B["U_r"] + B.get("b_r", zero) + B.get("rb_r", zero))
                cand = f(xt @ B["W_h"] + (r * h) @ B["U_h"] + B.get("b_h", zero) + B.get("rb_h", zero))
            h = z * h + (1 - z) * cand
        else:
            h = f(xt @ B["W"] + h @ B["U"] + B.get("b", zero) + B.get("rb", zero))
        if mask is not None:
            keep = np.asarray(mask[:, t], dtype=bool)[:, None]
            h, c = np.where(keep, h, h_prev), np.where(keep, c, c_prev)
        outputs.append(h)
    return np.stack(outputs, axis=1)


def conv(x: np.ndarray, w: np.ndarray, strides: tuple[int, ...], padding: str) -> np.ndarray:
    """TensorFlow's N-d convolution (channels last, dilation 1) as a sum over kernel offsets: x (batch, *spatial,
    in), w kernel_size + (in, out). ``same`` pads total = (out - 1)·stride + k - size, the smaller half before."""
    ks = w.shape[:-2]
    if padding == "same":
        pads = []
        for size, k, s in zip(x.shape[1:-1], ks, strides):
            total = max((-(-size // s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    elif padding != "valid":
        raise ValueError(padding)
    sizes = [(size - k) // s + 1 for size, k, s in zip(x.shape[1:-1], ks, strides)]
    y = np.zeros((x.shape[0], *sizes, w.shape[-1]))
    for offset in np.ndindex(*ks):
        window = tuple(slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offset, sizes, strides))
        y += x[(slice(None),) + window] @ w[offset]
    return y


def run_conv_lstm(x: np.ndarray, blocks: dict, strides: tuple[int, ...], padding: str, act: str = "tanh",
                  rec_act: str = "sigmoid", keras_major: int = 3) -> np.ndarray:
    """Keras's ConvLSTM1D/2D/3D cell, step by step: every gate is conv(x, W_gate) (the layer's strides and padding)
    + conv(h, U_gate) (stride 1, padding same) + b_gate. All hidden states, (batch, time, *spatial, filters)."""
    f = activation(act, keras_major)
    g = activation(rec_act, keras_major)
    B = {k: v.astype(np.float64) for k, v in blocks.items()}
    x = x.astype(np.float64)
    ones = (1,) * (x.ndim - 3)

    def gate(xt, h, name):
        return conv(xt, B["W_" + name], strides, padding) + conv(h, B["U_" + name], ones, "same") + B.get("b_" + name, 0.0)

    h = np.zeros_like(conv(x[:, 0], B["W_i"], strides, padding))
    c = np.zeros_like(h)
    outputs = []
    for t in range(x.shape[1]):
        xt = x[:, t]
        i, fg, o = g(gate(xt, h, "i")), g(gate(xt, h, "f")), g(gate(xt, h, "o"))
        c = fg * c + i * f(gate(xt, h, "c"))
        h = o * f(c)
        outputs.append(h)
    return np.stack(outputs, axis=1)

"""The numpy forward pass's layer ops that keep no state over time: Dense, activations, normalisation, reshaping,
Conv1D (`LAYER_FUNCS`, by Keras class; 2-D / 3-D convolutions and pooling are in `layer_ops_conv.py`, attention in
`layer_ops_attention.py`), the merge layers, the Keras 3 ops that compute masks in a graph (`OP_FUNCS`), the N-d
convolution Conv and ConvLSTM layers share, and `Context`, what an op reads from the run (weights in the run's
dtype, activations of the file's Keras version).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InspectError
from ..gates import activations
from ..model import Layer

MERGE_CLASSES = frozenset({"Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})

Value = Any  # an ndarray or a list of ndarrays


@dataclass
class Context:
    """What a layer op needs from the run: the Keras major version (activations differ) and the dtype computed in.
    The forward pass's runner (`forward._Run`) is one, through `recurrent.RecurrentLayers`."""

    keras_major: int | None
    dtype: Any

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


#: Largest im2col buffer `conv_nd` builds at once; larger batches are convolved in chunks.
IM2COL_BYTES = 64 << 20


def conv_nd(x: np.ndarray, kernel: np.ndarray, strides: Sequence[int], padding: str,
            dilation: Sequence[int]) -> np.ndarray:
    """TensorFlow's N-d convolution, channels last: x (n, *spatial, in), kernel (*k, in, out) -> (n, *out, out).

    Every window is gathered at once (a strided view, copied once by the contraction: im2col), a chunk of the
    batch at a time so that copy stays under `IM2COL_BYTES`. ``same`` pads as TensorFlow does, the smaller half
    before. Computes in the dtype of x and kernel (numpy's promotion of the two)."""
    rank = kernel.ndim - 2
    spans = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    if padding == "same":
        pads = [same_padding(size, span, stride)[1:] for size, span, stride in zip(x.shape[1:-1], spans, strides)]
        x = np.pad(x, [(0, 0)] + pads + [(0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(x, spans, axis=tuple(range(1, rank + 1)))
    # (n, *positions, in, *spans): keep every stride-th position and every dilation-th tap
    windows = windows[(slice(None),) + tuple(slice(None, None, s) for s in strides) + (slice(None),)
                      + tuple(slice(None, None, d) for d in dilation)]
    taps = np.moveaxis(kernel, rank, 0)  # (in, *k, out), the order of the windows' trailing axes
    axes = (list(range(rank + 1, 2 * rank + 2)), list(range(rank + 1)))
    per_sample = max(windows[:1].size * windows.itemsize, 1)
    chunk = max(1, IM2COL_BYTES // per_sample)
    if windows.shape[0] <= chunk:
        return np.tensordot(windows, taps, axes=axes)
    return np.concatenate([np.tensordot(windows[i:i + chunk], taps, axes=axes)
                           for i in range(0, windows.shape[0], chunk)])


# ---------------------------------------------------------------------------------------------------------------
# Stateless layers


def _dense(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    x = run.floating(x)
    y = x @ run.weight(layer, "kernel")
    if layer.config.get("use_bias", True):
        y = y + run.weight(layer, "bias")
    return run.activation(layer, layer.config.get("activation", "linear"))(y)


def _activation(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    return run.activation(layer, layer.config.get("activation", "linear"))(run.floating(x))


def _relu(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    x = run.floating(x)
    slope = float(cfg.get("negative_slope", 0.0) or 0.0)
    threshold = float(cfg.get("threshold", 0.0) or 0.0)
    y = np.where(x >= threshold, x, slope * (x - threshold))
    if cfg.get("max_value") is not None:
        y = np.minimum(y, float(cfg["max_value"]))
    return y.astype(x.dtype)


def _leaky_relu(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    slope = float(cfg.get("negative_slope", cfg.get("alpha", 0.3)))
    x = run.floating(x)
    return np.where(x >= 0, x, slope * x).astype(x.dtype)


def _elu(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    alpha = float(layer.config.get("alpha", 1.0))
    x = run.floating(x)
    return np.where(x > 0, x, alpha * np.expm1(x)).astype(x.dtype)


def _softmax(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    axis = layer.config.get("axis", -1)
    x = run.floating(x)
    shifted = np.exp(x - x.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def _flatten_layer(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    if layer.config.get("data_format") == "channels_first" and x.ndim > 2:
        x = np.moveaxis(x, 1, -1)  # Keras flattens channels_first data in channels_last order
    return x.reshape(x.shape[0], -1)


def _reshape(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    target = tuple(int(n) for n in layer.config["target_shape"])
    return x.reshape((x.shape[0],) + target)


def _permute(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    dims = tuple(int(d) for d in layer.config["dims"])
    return np.transpose(x, (0,) + dims)


def _repeat_vector(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
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


def _batch_norm(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
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


def _layer_norm(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
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


def same_padding(length: int, window: int, stride: int) -> tuple[int, int, int]:
    out = -(-length // stride)
    total = max((out - 1) * stride + window - length, 0)
    return out, total // 2, total - total // 2


def _conv1d(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    cfg = layer.config
    if int(cfg.get("groups", 1) or 1) != 1:
        raise InspectError(f"layer {layer.key!r} (Conv1D): grouped convolution is not supported")
    data_format = cfg.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise InspectError(f"layer {layer.key!r} (Conv1D): data_format={data_format!r} is not supported")
    first = data_format == "channels_first"
    x = np.moveaxis(run.floating(x), 1, -1) if first else run.floating(x)
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
    y = run.activation(layer, cfg.get("activation", "linear"))(y)
    return np.moveaxis(y, -1, 1) if first else y


LAYER_FUNCS: dict[str, Callable[[Context, Layer, np.ndarray, Any], np.ndarray]] = {
    "Dense": _dense,
    "Activation": _activation,
    "ReLU": _relu,
    "LeakyReLU": _leaky_relu,
    "ELU": _elu,
    "Softmax": _softmax,
    "Flatten": _flatten_layer,
    "Reshape": _reshape,
    "Permute": _permute,
    "RepeatVector": _repeat_vector,
    "BatchNormalization": _batch_norm,
    "LayerNormalization": _layer_norm,
    "Conv1D": _conv1d,
}


def merge(layer: Layer, xs: list[np.ndarray], masks: Any) -> tuple[np.ndarray, np.ndarray | None]:
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


def combine_masks(masks: list[np.ndarray | None]) -> np.ndarray | None:
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


def as_list(value: Value) -> list[np.ndarray]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def flatten_values(value: Any) -> list[np.ndarray]:
    return [leaf for item in value for leaf in flatten_values(item)] if isinstance(value, (list, tuple)) else [value]


# ---------------------------------------------------------------------------------------------------------------
# Keras 3 ops in functional graphs. Keras 3 records the masks its layers compute with ops as nodes of the graph:
# Concatenate's mask of masked inputs is any(concatenate([logical_or(expand_dims(m, -1), zeros_like(x)), ...]))


def _second(layer: Layer, x: Any, extra: Sequence[Any] | None) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(x, list) and len(x) == 2 and not extra:
        return np.asarray(x[0]), np.asarray(x[1])
    if not extra:
        raise InspectError(f"layer {layer.key or layer.name!r} ({layer.class_name}) needs two operands")
    return np.asarray(x), np.asarray(extra[0])


def _op_dtype(layer: Layer, default: Any) -> Any:
    dtype = layer.config.get("dtype")
    return np.dtype(dtype) if isinstance(dtype, str) and dtype in ("bool", "int32", "int64", "float32",
                                                                   "float64") else default


OP_FUNCS: dict[str, Callable[[Layer, Any, Sequence[Any] | None], np.ndarray]] = {
    "ConvertToTensor": lambda layer, x, extra: np.asarray(x, dtype=_op_dtype(layer, None)),
    "ExpandDims": lambda layer, x, extra: np.expand_dims(np.asarray(x), tuple(as_list(layer.config.get("axis", 0)))),
    "ZerosLike": lambda layer, x, extra: np.zeros_like(np.asarray(x), dtype=_op_dtype(layer, None)),
    "OnesLike": lambda layer, x, extra: np.ones_like(np.asarray(x), dtype=_op_dtype(layer, None)),
    "LogicalNot": lambda layer, x, extra: np.logical_not(np.asarray(x)),
    "LogicalOr": lambda layer, x, extra: np.logical_or(*_second(layer, x, extra)),
    "LogicalAnd": lambda layer, x, extra: np.logical_and(*_second(layer, x, extra)),
}

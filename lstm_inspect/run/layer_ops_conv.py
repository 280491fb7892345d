"""The forward pass's 2-D / 3-D convolutions and every pooling layer (1-D to 3-D, windowed and global), numpy only,
with TensorFlow's semantics: ``same`` pads the smaller half before, a ``same`` average counts only real elements,
``channels_first`` is moved to channels_last, computed and moved back. The convolution itself is `conv_nd` (im2col
by a strided view, chunked over the batch so its buffer stays bounded) shared with Conv1D and the ConvLSTMs.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InspectError
from ..model import Layer
from .layer_ops import Context, conv_nd, same_padding


def _tuple(layer: Layer, name: str, rank: int, default: Any) -> tuple[int, ...]:
    value = layer.config.get(name)
    if value is None:
        value = default
    values = list(value) if isinstance(value, (list, tuple)) else [value] * rank
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): {name}={value!r} is not {rank} positive "
                           "integers")
    return tuple(values)


def _channels_first(layer: Layer) -> bool:
    data_format = layer.config.get("data_format") or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): data_format={data_format!r} is not supported")
    return data_format == "channels_first"


def _rank(layer: Layer) -> int:
    return int(next(c for c in layer.class_name if c.isdigit()))


def _padding(layer: Layer, allowed: Sequence[str] = ("valid", "same")) -> str:
    padding = str(layer.config.get("padding", "valid")).lower()
    if padding not in allowed:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): padding {padding!r} is not supported")
    return padding


def _spatial_input(run: Context, layer: Layer, x: np.ndarray, rank: int) -> tuple[np.ndarray, bool]:
    """x as (batch, *spatial, channels) in the run's dtype, and whether it came channels_first."""
    x = run.floating(x)
    if x.ndim != rank + 2:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}) takes {rank + 2}-d inputs, got shape "
                           f"{x.shape}")
    first = _channels_first(layer)
    return (np.moveaxis(x, 1, -1) if first else x), first


def _conv(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    """Conv2D / Conv3D: y = act(conv(x, kernel) + bias), kernel (*k, in, filters)."""
    cfg = layer.config
    rank = _rank(layer)
    if int(cfg.get("groups", 1) or 1) != 1:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): grouped convolution is not supported")
    x, first = _spatial_input(run, layer, x, rank)
    kernel = run.weight(layer, "kernel")
    if kernel.ndim != rank + 2 or kernel.shape[rank] != x.shape[-1]:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): kernel {kernel.shape} does not fit an input "
                           f"with {x.shape[-1]} channels")
    strides = _tuple(layer, "strides", rank, 1)
    dilation = _tuple(layer, "dilation_rate", rank, 1)
    padding = _padding(layer)
    spans = [(k - 1) * d + 1 for k, d in zip(kernel.shape[:rank], dilation)]
    if padding == "valid" and any(size < span for size, span in zip(x.shape[1:-1], spans)):
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): input {x.shape[1:-1]} is smaller than the "
                           f"kernel's span {tuple(spans)}")
    y = conv_nd(x, kernel, strides, padding, dilation)
    if cfg.get("use_bias", True):
        y = y + run.weight(layer, "bias")
    y = run.activation(layer, cfg.get("activation", "linear"))(y)
    return np.moveaxis(y, -1, 1) if first else y


def _pool(run: Context, layer: Layer, x: np.ndarray, mask: Any) -> np.ndarray:
    """MaxPooling / AveragePooling 1D-3D: valid or same windows, strides (default: the pool size)."""
    rank = _rank(layer)
    x, first = _spatial_input(run, layer, x, rank)
    size = _tuple(layer, "pool_size", rank, 2)
    strides = _tuple(layer, "strides", rank, size) if layer.config.get("strides") is not None else size
    padding = _padding(layer)
    is_max = layer.class_name.startswith("Max")
    spatial = x.shape[1:-1]
    if padding == "same":
        pads = [same_padding(n, k, s)[1:] for n, k, s in zip(spatial, size, strides)]
    else:
        if any(n < k for n, k in zip(spatial, size)):
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): input {spatial} is smaller than the pool "
                               f"{size}")
        pads = [(0, 0)] * rank
    axes = tuple(range(1, rank + 1))
    padded = np.pad(x, [(0, 0)] + pads + [(0, 0)], constant_values=-np.inf if is_max else 0.0)
    window = (slice(None),) + tuple(slice(None, None, s) for s in strides)
    # A strided view of the windows (n, *out, c, *size): reduced without copying them.
    windows = np.lib.stride_tricks.sliding_window_view(padded, size, axis=axes)[window]
    reduce_axes = tuple(range(rank + 2, 2 * rank + 2))
    if is_max:
        y = windows.max(axis=reduce_axes)
    else:
        # TensorFlow's SAME average pooling divides by the number of real elements in each window
        real = np.pad(np.ones(spatial, dtype=x.dtype), pads)
        counts = np.lib.stride_tricks.sliding_window_view(real, size)[window[1:]].sum(
            axis=tuple(range(rank, 2 * rank)))
        y = windows.sum(axis=reduce_axes) / counts[None, ..., None]
    y = y.astype(x.dtype, copy=False)
    return np.moveaxis(y, -1, 1) if first else y


def _global_pool(run: Context, layer: Layer, x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """GlobalMax/GlobalAveragePooling 1D-3D over every spatial axis; the 1-D average honours a time mask."""
    rank = _rank(layer)
    x = run.floating(x)
    if x.ndim != rank + 2:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}) takes {rank + 2}-d inputs, got shape "
                           f"{x.shape}")
    axes = tuple(range(2, rank + 2)) if _channels_first(layer) else tuple(range(1, rank + 1))
    keep = bool(layer.config.get("keepdims", False))
    if layer.class_name.startswith("GlobalMax"):
        return x.max(axis=axes, keepdims=keep)
    if mask is not None and rank == 1:  # Keras averages over the unmasked steps only
        m = np.asarray(mask).astype(x.dtype)
        m = m[:, None, :] if _channels_first(layer) else m[..., None]
        return (x * m).sum(axis=axes, keepdims=keep) / m.sum(axis=axes, keepdims=keep)
    return x.mean(axis=axes, keepdims=keep)


def _aliases(funcs: dict[str, Callable]) -> dict[str, Callable]:
    """Keras's short names: MaxPool2D for MaxPooling2D, AvgPool3D, GlobalAvgPool1D, ..."""
    return {**funcs, **{name.replace("Pooling", "Pool").replace("Average", "Avg"): f for name, f in funcs.items()}}


CONV_FUNCS: dict[str, Callable[[Context, Layer, np.ndarray, Any], np.ndarray]] = _aliases({
    "Conv2D": _conv,
    "Conv3D": _conv,
    **{f"{kind}Pooling{rank}D": _pool for kind in ("Max", "Average") for rank in (1, 2, 3)},
    **{f"Global{kind}Pooling{rank}D": _global_pool for kind in ("Max", "Average") for rank in (1, 2, 3)},
})

"""The forward pass's attention layers with Keras's inference semantics: Attention (Luong, ``score_mode`` dot or
concat, ``use_scale``), AdditiveAttention (Bahdanau) and MultiHeadAttention (query / key / value / output
projections, ``key_dim``, ``value_dim``, ``output_shape``, ``use_bias``, Keras 3's ``use_gate``).

Masks, as Keras computes them: the Keras masks of the inputs (a query step that is masked, a value step that may
not be attended to), ``use_causal_mask`` (a step attends to no later step), and MultiHeadAttention's explicit
``attention_mask``. A masked score gets Keras's −1e9 before the softmax. A row whose every score is masked
(a masked query step in MultiHeadAttention) gets uniform weights — in float32 every score rounds to −1e9 — except on
Keras 3's MultiHeadAttention path that returns the scores, which zeroes them; reproduced here in any dtype.
Keras 3 runs Attention / AdditiveAttention without the Keras masks of their inputs (only an explicit
``mask=[query_mask, value_mask]`` reaches them), tf-keras with them. Dropout is inactive at inference.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import InspectError
from ..model import Layer
from .layer_ops import Context

#: Call keywords the graph walk keeps for these layers (tensors resolved, flags as recorded).
ATTENTION_KEYWORDS = ("key", "value", "query_mask", "value_mask", "key_mask", "attention_mask", "use_causal_mask",
                      "return_attention_scores")
_MASKED_SCORE = 1.0e9


def _masked_softmax(scores: np.ndarray, keep: np.ndarray | None, zero_masked: bool) -> np.ndarray:
    """softmax over the last axis where `keep` is true; masked entries get score − 1e9 (Keras). A row with nothing
    kept: uniform weights (float32 Keras, every score −1e9) or zeros (Keras 3 MultiHeadAttention)."""
    if keep is not None:
        keep = np.broadcast_to(keep, scores.shape)
        scores = np.where(keep, scores, scores - _MASKED_SCORE)
        empty = ~keep.any(axis=-1, keepdims=True)
        scores = np.where(empty, 0.0, scores).astype(scores.dtype, copy=False)
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    weights = shifted / shifted.sum(axis=-1, keepdims=True)
    if keep is not None and zero_masked:
        weights = np.where(keep, weights, 0.0).astype(weights.dtype, copy=False)
    return weights


def _causal(t: int, s: int) -> np.ndarray:
    """(1, T, S): query step i attends to value steps j <= i (Keras's cumsum comparison)."""
    return (np.arange(t)[:, None] >= np.arange(s)[None, :])[None]


def _mask_of(kwargs: dict[str, Any], value: np.ndarray, keyword: str) -> np.ndarray | None:
    """The mask Keras uses for one input: given as a call keyword, else the input's Keras mask."""
    if kwargs.get(keyword) is not None:
        return np.asarray(kwargs[keyword]).astype(bool)
    mask = (kwargs.get("masks_by_id") or {}).get(id(value))
    return None if mask is None else np.asarray(mask).astype(bool)


def _sequence(run: Context, layer: Layer, x: Any, what: str) -> np.ndarray:
    x = run.floating(x)
    if x.ndim != 3:
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}): the {what} has shape {x.shape}; only "
                           "(batch, steps, features) is supported")
    return x


def _dense_attention(run: Context, layer: Layer, x: Any, mask: Any, kwargs: dict[str, Any]
                     ) -> tuple[Any, np.ndarray | None]:
    """Attention / AdditiveAttention called on [query, value] or [query, value, key] (mask=[q_mask, v_mask])."""
    if not isinstance(x, list) or len(x) not in (2, 3):
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}) takes [query, value] or [query, value, key]")
    query, value = _sequence(run, layer, x[0], "query"), _sequence(run, layer, x[1], "value")
    key = _sequence(run, layer, x[2], "key") if len(x) == 3 else value
    explicit = kwargs.get("explicit_mask")
    if isinstance(explicit, list) and len(explicit) >= 2:
        q_mask, v_mask = (None if m is None else np.asarray(m).astype(bool) for m in explicit[:2])
    elif run.keras_major is not None and run.keras_major >= 3:
        # Keras 3 calls these layers in a model without their inputs' Keras masks (measured: Keras 3.15's output
        # equals the unmasked layer's, the masked one is 0.3 away); only an explicit mask=[...] reaches them
        q_mask = v_mask = None
    else:
        q_mask, v_mask = _mask_of(kwargs, x[0], "query_mask"), _mask_of(kwargs, x[1], "value_mask")
    cfg = layer.config
    scale = run.weight(layer, "scale") if cfg.get("use_scale", layer.class_name == "AdditiveAttention") else None
    if layer.class_name == "AdditiveAttention":
        summed = np.tanh(query[:, :, None, :] + key[:, None, :, :])
        scores = (summed * scale).sum(axis=-1) if scale is not None else summed.sum(axis=-1)
    elif cfg.get("score_mode", "dot") == "concat":
        summed = query[:, :, None, :] + key[:, None, :, :]
        scores = np.tanh(summed * scale if scale is not None else summed).sum(axis=-1)
        scores = scores * run.weight(layer, "concat_score_weight")
    elif cfg.get("score_mode", "dot") == "dot":
        scores = query @ np.swapaxes(key, -1, -2)
        if scale is not None:
            scores = scores * scale
    else:
        raise InspectError(f"layer {layer.key!r} (Attention): score_mode {cfg.get('score_mode')!r} is not supported")
    keep = None if v_mask is None else v_mask[:, None, :]
    if kwargs.get("use_causal_mask") or cfg.get("causal"):  # tf.keras 2.x recorded causal=True in the config
        causal = _causal(scores.shape[-2], scores.shape[-1])
        keep = causal if keep is None else keep & causal
    weights = _masked_softmax(scores, keep, zero_masked=False)
    out = weights @ value
    if q_mask is not None:
        out = np.where(q_mask[..., None], out, 0.0).astype(out.dtype, copy=False)
    result: Any = [out, weights] if kwargs.get("return_attention_scores") else out
    return result, q_mask


def _project(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """EinsumDense on the last axis: x (..., d) with kernel (d, *out) -> (..., *out)."""
    y = np.tensordot(x, kernel, axes=([-1], [0]))
    return y + bias if bias is not None else y


def _multi_head_attention(run: Context, layer: Layer, x: Any, mask: Any, kwargs: dict[str, Any]
                          ) -> tuple[Any, np.ndarray | None]:
    """MultiHeadAttention(query, value, key=None): heads over the last axis before the features."""
    cfg = layer.config
    axes = cfg.get("attention_axes")
    if axes not in (None, [1], (1,), 1, [-2], (-2,), -2):
        raise InspectError(f"layer {layer.key!r} (MultiHeadAttention): attention_axes={axes!r} is not supported "
                           "(only attention over the time axis of (batch, steps, features) inputs)")
    if cfg.get("sliding_window") is not None:
        raise InspectError(f"layer {layer.key!r} (MultiHeadAttention): sliding_window is not supported")
    args = kwargs.get("extra_args") or []
    if isinstance(x, list):  # tf-keras may record the call on a list [query, value, (key)]
        x, args = x[0], list(x[1:]) + list(args)
    raw_query = x
    raw_value = kwargs["value"] if kwargs.get("value") is not None else (args[0] if args else None)
    if raw_value is None:
        raise InspectError(f"layer {layer.key!r} (MultiHeadAttention): the call records no value tensor")
    raw_key = kwargs["key"] if kwargs.get("key") is not None else (args[1] if len(args) > 1 else None)
    query = _sequence(run, layer, raw_query, "query")
    value = _sequence(run, layer, raw_value, "value")
    key = _sequence(run, layer, raw_key, "key") if raw_key is not None else value
    use_bias = cfg.get("use_bias", True)

    def dense(name: str, inputs: np.ndarray) -> np.ndarray:
        return _project(inputs, run.weight(layer, f"{name}_kernel"),
                        run.weight(layer, f"{name}_bias") if use_bias else None)

    q = dense("query", query)                    # (B, T, N, key_dim)
    k = dense("key", key)                        # (B, S, N, key_dim)
    v = dense("value", value)                    # (B, S, N, value_dim)
    q = q * np.asarray(1.0 / np.sqrt(float(q.shape[-1])), dtype=q.dtype)
    scores = np.einsum("bsnh,btnh->bnts", k, q)  # (B, N, T, S)

    # the attention mask: query mask (B, T, 1) & value mask (B, 1, S) & key mask & causal & the explicit one
    keep = None
    keras3 = run.keras_major is not None and run.keras_major >= 3
    # Keras 3 takes the query's mask from the tensor only (a query_mask keyword is ignored); tf-keras has no such
    # keywords and reads every input's Keras mask
    q_mask = _mask_of({"masks_by_id": kwargs.get("masks_by_id")} if keras3 else kwargs, raw_query, "query_mask")
    for part in (None if q_mask is None else q_mask[:, :, None],
                 _expand(_mask_of(kwargs, raw_value, "value_mask")),
                 _expand(_mask_of(kwargs, raw_key, "key_mask") if raw_key is not None else None),
                 _causal(q.shape[1], k.shape[1]) if kwargs.get("use_causal_mask") else None,
                 None if kwargs.get("attention_mask") is None else np.asarray(kwargs["attention_mask"]).astype(bool)):
        if part is not None:
            keep = part if keep is None else keep & part
    # Keras 3 zeroes the weights of masked scores only on its Softmax path, taken when the scores are returned;
    # otherwise (ops.dot_product_attention) and in tf-keras a fully masked row is uniform
    zero_masked = keras3 and bool(kwargs.get("return_attention_scores"))
    weights = _masked_softmax(scores, None if keep is None else keep[:, None], zero_masked=zero_masked)
    heads = np.einsum("bnts,bsnh->btnh", weights, v)
    if cfg.get("use_gate", False):
        heads = heads * (1.0 / (1.0 + np.exp(-dense("gate", query))))
    kernel = run.weight(layer, "attention_output_kernel")  # (N, value_dim, *output_shape)
    out = np.tensordot(heads, kernel, axes=([2, 3], [0, 1]))
    if use_bias:
        out = out + run.weight(layer, "attention_output_bias")
    out = out.astype(query.dtype, copy=False)
    result: Any = [out, weights] if kwargs.get("return_attention_scores") else out
    return result, q_mask


def _expand(mask: np.ndarray | None) -> np.ndarray | None:
    return None if mask is None else mask[:, None, :]


ATTENTION_FUNCS: dict[str, Callable[..., tuple[Any, np.ndarray | None]]] = {
    "Attention": _dense_attention,
    "AdditiveAttention": _dense_attention,
    "MultiHeadAttention": _multi_head_attention,
}

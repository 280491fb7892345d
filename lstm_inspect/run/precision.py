"""The dtype a forward pass computes in: the file's own precision unless the caller asks for another.

Keras computes float32 weights in float32, so `forward` does too by default; float64 weights (a model built with
``floatx='float64'``, a float64 state dict) run in float64; float16 / bfloat16 weights are widened to float32, as
Keras's mixed precision keeps its variables. ``dtype=np.float64`` (``--float64``) asks for a float64 reference run
of any file, ``dtype=np.float32`` (``--float32``) for float32 even on float64 weights.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import InspectError
from ..model import Layer

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)


def file_precision(layers: Iterable[Layer]) -> np.dtype:
    """float64 when any floating-point weight of `layers` (and their sub-layers) is stored wider than float32,
    else float32."""
    for layer in layers:
        for sub in layer.walk():
            for tensor in sub.weights:
                try:
                    stored = np.dtype(tensor.dtype)
                except TypeError:  # a dtype numpy does not name (bfloat16, float8...): narrower than float32
                    continue
                if stored.kind == "f" and stored.itemsize > 4:
                    return FLOAT64
    return FLOAT32


def compute_dtype(dtype: Any, layers: Iterable[Layer]) -> np.dtype:
    """`dtype` as a numpy dtype (float32 or float64), or the file's precision when it is None."""
    if dtype is None:
        return file_precision(layers)
    try:
        chosen = np.dtype(dtype)
    except TypeError as exc:
        raise InspectError(f"dtype {dtype!r} is not a numpy dtype: the forward pass computes in float32 or "
                           "float64") from exc
    if chosen not in (FLOAT32, FLOAT64):
        raise InspectError(f"dtype {chosen} is not supported: the forward pass computes in float32 or float64")
    return chosen

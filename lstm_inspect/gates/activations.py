"""Keras activations as numpy functions, with the definitions of the Keras version that wrote the file."""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np


def hard_sigmoid_formula(keras_major: int | None) -> str:
    """hard_sigmoid changed slope in Keras 3 with no compatibility shim."""
    return "clip(x/6 + 0.5, 0, 1)" if keras_major == 3 else "clip(0.2·x + 0.5, 0, 1)"


def activation_name(value: Any) -> str:
    """The activation's name as a config records it (a string, or a serialized function object)."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        config = value.get("config")
        if isinstance(config, str):
            return config
        if isinstance(config, dict) and isinstance(config.get("name"), str):
            return config["name"]
        return str(value.get("class_name", "custom"))
    return str(value)


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[x.dtype])(x)


def get(name: str, keras_major: int | None) -> Callable[[np.ndarray], np.ndarray] | None:
    """The numpy function for a Keras activation name, or None when it is not one we know."""
    if name == "hard_sigmoid":
        if keras_major == 3:
            return lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(x.dtype)
        return lambda x: np.clip(0.2 * x + 0.5, 0.0, 1.0).astype(x.dtype)
    return _ACTIVATIONS.get(name)


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype)


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)).astype(x.dtype),
    "selu": lambda x: (_SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(x))).astype(x.dtype),
    "gelu": lambda x: (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0).astype(x.dtype)))).astype(x.dtype),
    "swish": lambda x: x * _sigmoid(x),
    "silu": lambda x: x * _sigmoid(x),
    "softplus": lambda x: np.logaddexp(0, x).astype(x.dtype),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "exponential": np.exp,
}

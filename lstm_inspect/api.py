"""The Python API: the same operations as the commands, returning data instead of printing it.

    >>> import lstm_inspect as li
    >>> with li.open_model("model.h5") as model:
    ...     for layer in model.layers:
    ...         split = li.split_gates(layer)
    ...         if split:
    ...             W_f = split.arrays()["W_f"]        # (input_dim, units): x @ W_f is the forget gate's input term
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Any

import numpy as np

from . import export as _export
from . import report as _report
from .readers import open_model


def example_path() -> str:
    """The bundled example model: LSTM(120, relu, input (10, 5)) -> Dense(100, relu) -> Dense(50, relu) -> Dense(1)."""
    return str(resources.files("lstm_inspect") / "data" / "example_lstm.keras")


def inspect(path: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (), stats: bool = True) -> dict[str, Any]:
    """The report `lstm-inspect inspect` prints, as a dict (the documented JSON schema)."""
    with open_model(path) as model:
        return _report.inspect(model, layers, with_stats=stats)


def export_arrays(path: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (), fused: bool = False) -> dict[str, np.ndarray]:
    """Every weight as ``{"<layer path>/<block>": array}``, the keys `lstm-inspect export` writes."""
    with open_model(path) as model:
        return _export.export_arrays(model, layers, fused)


def export(path: str | os.PathLike[str], output: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (),
           fused: bool = False) -> list[str]:
    """Write the arrays of `export_arrays` to an .npz file; returns the keys written."""
    arrays = export_arrays(path, layers, fused)
    _export.write_npz(arrays, output)
    return list(arrays)

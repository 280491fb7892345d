"""Every weight of a model as flat ``<layer path>/<block>`` arrays, ready for ``np.savez``."""
from __future__ import annotations

import os

import numpy as np

from . import gates
from .errors import InspectError
from .output_paths import ARRAYS, NPZ, checked_output
from .gates import conversion
from .model import Layer, ModelFile, select_layers


def export_arrays(model: ModelFile, layers: tuple[str, ...] | list[str] = (), fused: bool = False,
                  forget_bias: float | None = None) -> dict[str, np.ndarray]:
    """``lstm/W_i``, ``bidi/forward_lstm/U_f``, ``dense/kernel``...; with ``fused`` Keras's recurrent layers keep
    their original ``kernel``, ``recurrent_kernel`` and ``bias``, and those of torch / ONNX / TF1 files are
    converted to them (`conversion.convert` to ``keras``)."""
    return fused_keras_arrays(model, layers, forget_bias)[0] if fused else _arrays(model, layers, False, None)


def fused_keras_arrays(model: ModelFile, layers: tuple[str, ...] | list[str] = (),
                       forget_bias: float | None = None) -> tuple[dict[str, np.ndarray], conversion.Converted]:
    """Every layer's fused arrays as Keras's `set_weights` takes them, and the conversion of the non-Keras ones."""
    converted = conversion.convert(model, "keras", select_layers(model, layers), forget_bias=forget_bias)
    return _arrays(model, layers, True, converted), converted


def _arrays(model: ModelFile, layers: tuple[str, ...] | list[str], fused: bool,
            converted: conversion.Converted | None) -> dict[str, np.ndarray]:
    by_layer = {m.layer: m.key for m in converted.modules} if converted is not None else {}
    out: dict[str, np.ndarray] = {}
    for layer in select_layers(model, layers):
        if layer.key in by_layer:  # a converted leaf: its Keras arrays in its place
            prefix = by_layer[layer.key] + "/"
            out.update((k, v) for k, v in converted.arrays.items() if k.startswith(prefix))
            continue
        for key, value in layer_arrays(layer, fused).items():
            full = f"{layer.key}/{key}"
            if full in out:  # two stored arrays with one role name: keep both, numbered
                n = 1
                while f"{full}_{n}" in out:
                    n += 1
                full = f"{full}_{n}"
            out[full] = value
    return out


def layer_arrays(layer: Layer, fused: bool = False) -> dict[str, np.ndarray]:
    """One layer's own arrays: gate blocks for a recurrent layer, weights under their names otherwise."""
    split = None if fused else gates.split(layer)
    if split is not None and split.blocks:
        arrays = split.arrays()
        split_sources = {id(b.tensor) for b in split.blocks}
        arrays.update({t.name: t.read() for t in layer.weights if id(t) not in split_sources})
        return arrays
    arrays: dict[str, np.ndarray] = {}
    for tensor in layer.weights:
        name = tensor.name
        n = 1
        while name in arrays:
            name = f"{tensor.name}_{n}"
            n += 1
        arrays[name] = tensor.read()
    return arrays


def write_arrays(arrays: dict[str, np.ndarray], path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> None:
    """Write to ``.safetensors`` (needs the optional ``safetensors`` package; `metadata` goes into its header)
    or, for any other name, ``.npz`` (`metadata` as its ``__metadata__`` entry, except in the torch layout, whose
    keys must be exactly a state dict's). The file is exactly `path`, which must end in one of those."""
    path = checked_output(path, ARRAYS)
    if not path.lower().endswith(".safetensors"):
        if metadata and metadata.get("layout") != "torch":
            from .readers.npz_file import METADATA_KEY, metadata_array

            arrays = {**arrays, METADATA_KEY: metadata_array(metadata)}
        return write_npz(arrays, path)
    if not arrays:
        raise InspectError("nothing to export (no layer with weights matched)", os.fspath(path))
    try:
        from safetensors.numpy import save_file
    except ImportError:
        raise InspectError("writing .safetensors needs the safetensors package: "
                           "pip install 'lstm-inspect[safetensors]' (or write .npz)", os.fspath(path)) from None
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, os.fspath(path), metadata=metadata)
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", os.fspath(path)) from exc


def write_npz(arrays: dict[str, np.ndarray], path: str | os.PathLike[str]) -> None:
    """An .npz at exactly `path` (which must end in .npz)."""
    path = checked_output(path, NPZ)
    if not arrays:
        raise InspectError("nothing to export (no layer with weights matched)", path)
    try:
        with open(path, "wb") as handle:  # a file object: numpy adds no ".npz" to the name
            np.savez(handle, **arrays)
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", os.fspath(path)) from exc

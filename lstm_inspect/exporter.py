"""Every weight of a model as flat ``<layer path>/<block>`` arrays, written to ``.npz`` or ``.safetensors``.

The writers stream: each array (a gate block, a weight, or an in-memory array) is read from the model file in row
chunks (`Tensor.row_chunks` / `Block.row_chunks`, at most ``--chunk-size`` each) and written as it comes — an
``.npy`` header then its rows into a stored zip member, or its bytes at their offset after a ``.safetensors``
header — so that no whole large array is ever in memory.
"""
from __future__ import annotations

import json
import math
import os
import struct
import zipfile
from typing import Any

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
    return {key: read(source) for key, source in export_sources(model, layers, fused, forget_bias).items()}


def export_sources(model: ModelFile, layers: tuple[str, ...] | list[str] = (), fused: bool = False,
                   forget_bias: float | None = None) -> dict[str, Any]:
    """The keys of `export_arrays` and where each array's values come from — a gate block or a weight still in the
    file, or an array — for `write_arrays` to stream."""
    return fused_keras_arrays(model, layers, forget_bias, sources=True)[0] if fused \
        else _arrays(model, layers, False, None)


def read(source: Any) -> np.ndarray:
    """The whole array of a source (a `Tensor`, a gate `Block` or an array)."""
    return source.read() if hasattr(source, "read") else np.asarray(source)


def fused_keras_arrays(model: ModelFile, layers: tuple[str, ...] | list[str] = (), forget_bias: float | None = None,
                       sources: bool = False) -> tuple[dict[str, Any], conversion.Converted]:
    """Every layer's fused arrays as Keras's `set_weights` takes them, and the conversion of the non-Keras ones
    (with `sources`, Keras's own weights are left in the file for `write_arrays` to stream)."""
    converted = conversion.convert(model, "keras", select_layers(model, layers), forget_bias=forget_bias)
    found = _arrays(model, layers, True, converted)
    return (found if sources else {key: read(value) for key, value in found.items()}), converted


def _arrays(model: ModelFile, layers: tuple[str, ...] | list[str], fused: bool,
            converted: conversion.Converted | None) -> dict[str, Any]:
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


def layer_arrays(layer: Layer, fused: bool = False) -> dict[str, Any]:
    """One layer's own arrays, as sources (`Block`, `Tensor`): gate blocks for a recurrent layer, weights under
    their names otherwise."""
    split = None if fused else gates.split(layer)
    if split is not None and split.blocks:
        arrays: dict[str, Any] = {block.key: block for block in split.blocks}
        split_sources = {id(b.tensor) for b in split.blocks}
        arrays.update({t.name: t for t in layer.weights if id(t) not in split_sources})
        return arrays
    arrays = {}
    for tensor in layer.weights:
        name = tensor.name
        n = 1
        while name in arrays:
            name = f"{tensor.name}_{n}"
            n += 1
        arrays[name] = tensor
    return arrays


def write_arrays(arrays: dict[str, Any], path: str | os.PathLike[str],
                 metadata: dict[str, str] | None = None) -> None:
    """Write arrays or sources (`export_sources`) to ``.safetensors`` (`metadata` goes into its header) or
    ``.npz`` (`metadata` as its ``__metadata__`` entry, except in the torch layout, whose keys must be exactly a
    state dict's), streaming each array in row chunks. The file is exactly `path`, which must end in one of those."""
    path = checked_output(path, ARRAYS)
    if not arrays:
        raise InspectError("nothing to export (no layer with weights matched)", path)
    if not path.lower().endswith(".safetensors"):
        if metadata and metadata.get("layout") != "torch":
            from .readers.npz_file import METADATA_KEY, metadata_array

            arrays = {**arrays, METADATA_KEY: metadata_array(metadata)}
        return write_npz(arrays, path)
    try:
        _write_safetensors(arrays, path, metadata)
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", path) from exc


def write_npz(arrays: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """An ``.npz`` at exactly `path` (which must end in .npz), as `np.savez` writes it (stored members
    ``KEY.npy``), each member streamed in row chunks."""
    path = checked_output(path, NPZ)
    if not arrays:
        raise InspectError("nothing to export (no layer with weights matched)", path)
    try:
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for key, source in arrays.items():
                shape, dtype = _shape_dtype(source)
                with archive.open(key + ".npy", "w", force_zip64=True) as member:
                    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                              "shape": tuple(shape)}
                    np.lib.format.write_array_header_2_0(member, header) if _header_too_long(header) \
                        else np.lib.format.write_array_header_1_0(member, header)
                    for _, rows in _chunks(source):
                        member.write(np.ascontiguousarray(rows, dtype=dtype).data)
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", path) from exc


#: numpy dtype -> safetensors dtype name (little-endian data).
SAFETENSORS_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64", "int32": "I32",
                      "int16": "I16", "int8": "I8", "uint64": "U64", "uint32": "U32", "uint16": "U16", "uint8": "U8",
                      "bool": "BOOL"}


def _write_safetensors(arrays: dict[str, Any], path: str, metadata: dict[str, str] | None) -> None:
    """The safetensors format: an 8-byte little-endian header length, the JSON header (space-padded to 8 bytes),
    then each array's little-endian bytes at its offsets, in header order."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    layout = []
    offset = 0
    for key, source in arrays.items():
        shape, dtype = _shape_dtype(source)
        name = SAFETENSORS_DTYPES.get(dtype.name)
        if name is None:
            raise InspectError(f"{key}: {dtype} cannot be written to .safetensors (write .npz)", path)
        size = math.prod(shape) * dtype.itemsize
        header[key] = {"dtype": name, "shape": list(shape), "data_offsets": [offset, offset + size]}
        layout.append((source, dtype.newbyteorder("<")))
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for source, little in layout:
            for _, rows in _chunks(source):
                handle.write(np.ascontiguousarray(rows, dtype=little).data)


def _shape_dtype(source: Any) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(source, np.ndarray) or not hasattr(source, "row_chunks"):
        array = np.asarray(source)
        return tuple(array.shape), array.dtype
    return tuple(int(n) for n in source.shape), np.dtype(source.dtype)


def _chunks(source: Any):
    """Row chunks of a source, or of an array (one chunk when it is small)."""
    if hasattr(source, "row_chunks"):
        yield from source.row_chunks()
        return
    array = np.asarray(source)
    yield 0, array.reshape(-1) if array.ndim else array


def _header_too_long(header: dict[str, Any]) -> bool:
    return len(repr(header)) > 60_000

"""Reading ``.safetensors`` files without the safetensors package: an 8-byte little-endian header length, a JSON
header ``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}``, then the data buffer.

The header is validated the way safetensors validates it before any tensor is read: a bounded header size, known
dtypes, offsets that tile the data buffer exactly (no gaps, no overlaps, nothing past the end) and byte sizes
that match dtype × shape. Tensors are read lazily, each from its own offsets.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any

import numpy as np

from ..errors import CorruptFile, UnsupportedFile
from ..model import MAX_DIMENSION, ModelFile, Tensor, element_count

#: safetensors refuses headers larger than this (100 MB).
MAX_HEADER_BYTES = 100_000_000
#: dtype name -> (numpy dtype it is stored as, numpy dtype it is read into).
DTYPES: dict[str, tuple[str, str]] = {
    "F64": ("<f8", "float64"), "F32": ("<f4", "float32"), "F16": ("<f2", "float16"),
    "BF16": ("<u2", "float32"),  # numpy has no bfloat16: widened to float32 on read
    "I64": ("<i8", "int64"), "I32": ("<i4", "int32"), "I16": ("<i2", "int16"), "I8": ("i1", "int8"),
    "U64": ("<u8", "uint64"), "U32": ("<u4", "uint32"), "U16": ("<u2", "uint16"), "U8": ("u1", "uint8"),
    "BOOL": ("u1", "bool"),
}


def looks_like(head: bytes, size: int) -> bool:
    """An 8-byte header length, then a JSON object (whether the length fits is checked by `read_header`)."""
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return length >= 2


def read_header(handle: Any, size: int, label: str) -> tuple[dict[str, Any], dict[str, str], int]:
    """(entries by name, metadata, offset of the data buffer); raises on anything safetensors would refuse."""
    handle.seek(0)
    raw = handle.read(8)
    if len(raw) != 8:
        raise CorruptFile("safetensors file shorter than its 8-byte header length", label)
    (length,) = struct.unpack("<Q", raw)
    if length > MAX_HEADER_BYTES:
        raise CorruptFile(f"safetensors header claims {length:,} bytes (more than {MAX_HEADER_BYTES:,}); refusing it",
                          label)
    if 8 + length > size:
        raise CorruptFile(f"safetensors header claims {length:,} bytes but the file has {size - 8:,} after it "
                          "(truncated?)", label)
    text = handle.read(length)
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptFile(f"safetensors header is not valid JSON: {exc}", label) from exc
    if not isinstance(header, dict):
        raise CorruptFile("safetensors header is not a JSON object", label)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CorruptFile("safetensors __metadata__ must map strings to strings", label)
    buffer_size = size - 8 - length
    entries: dict[str, Any] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise CorruptFile(f"safetensors entry {name!r} must have exactly dtype, shape and data_offsets", label)
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dtype, str):
            raise CorruptFile(f"safetensors entry {name!r} has a bad dtype {dtype!r}", label)
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool)
                                                  and 0 <= d <= MAX_DIMENSION for d in shape):
            raise CorruptFile(f"safetensors entry {name!r} has a bad shape {shape!r}", label)
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise CorruptFile(f"safetensors entry {name!r} has bad data_offsets {offsets!r}", label)
        entries[name] = {"dtype": dtype, "shape": tuple(shape), "begin": offsets[0], "end": offsets[1]}
    position = 0
    for name, entry in sorted(entries.items(), key=lambda item: (item[1]["begin"], item[1]["end"])):
        if entry["begin"] != position:
            raise CorruptFile(f"safetensors entry {name!r} starts at byte {entry['begin']:,}, expected {position:,} "
                              "(tensors must tile the data buffer without gaps or overlaps)", label)
        if entry["dtype"] in DTYPES:
            itemsize = np.dtype(DTYPES[entry["dtype"]][0]).itemsize
            expected = element_count(entry["shape"]) * itemsize
            if entry["end"] - entry["begin"] != expected:
                raise CorruptFile(f"safetensors entry {name!r} holds {entry['end'] - entry['begin']:,} bytes but "
                                  f"{entry['dtype']} {list(entry['shape'])} needs {expected:,}", label)
        elif element_count(entry["shape"]) > 8 * (entry["end"] - entry["begin"]):  # no dtype has under one bit
            raise CorruptFile(f"safetensors entry {name!r} declares shape {list(entry['shape'])} in "
                              f"{entry['end'] - entry['begin']:,} bytes", label)
        position = entry["end"]
    if position != buffer_size:
        raise CorruptFile(f"safetensors data buffer is {buffer_size:,} bytes but the tensors cover {position:,}", label)
    return entries, metadata, 8 + length


def read(path: str, label: str) -> ModelFile:
    """A ``.safetensors`` file, read without the safetensors package (header validated first): a PyTorch state
    dict, or the arrays of ``lstm-inspect export`` in the keras / onnx layout (`flat_arrays`)."""
    from . import flat_arrays

    tensors, metadata, handle = read_tensors(path, label)
    try:
        kind = "torch-safetensors" if flat_arrays.scheme_of([t.name for t in tensors], metadata) == "torch" \
            else "safetensors"
        model = flat_arrays.build(label, kind, tensors, metadata)
    except BaseException:
        handle.close()
        raise
    model._closers.append(handle.close)
    return model


def read_tensors(path: str, label: str) -> tuple[list[Tensor], dict[str, str], Any]:
    """The file's tensors (lazy), its metadata, and the open handle (close it when done)."""
    size = os.path.getsize(path)
    handle = open(path, "rb")
    try:
        entries, metadata, start = read_header(handle, size, label)
    except BaseException:
        handle.close()
        raise
    tensors = []
    for name, entry in entries.items():
        stored = DTYPES.get(entry["dtype"])
        dtype = stored[1] if stored else entry["dtype"]
        tensors.append(Tensor(name=name, shape=entry["shape"], dtype=dtype, source=name,
                              _load=_loader(handle, start, entry, label, name), _mapped=_place(handle, start, entry)))
    return tensors, metadata, handle


def _place(handle: Any, start: int, entry: dict[str, Any]):
    """Where a tensor stored as it is read (not BF16, not BOOL) lies, for a memory map (`model.Tensor._mapped`):
    `read_header` checked that the offsets tile the data buffer, inside the file."""
    stored = DTYPES.get(entry["dtype"])
    if stored is None or np.dtype(stored[0]) != np.dtype(stored[1]) or not np.dtype(stored[0]).isnative:
        return None
    return lambda: (handle.fileno(), start + entry["begin"])


def _loader(handle: Any, start: int, entry: dict[str, Any], label: str, name: str):
    def load() -> np.ndarray:
        if entry["dtype"] not in DTYPES:
            raise UnsupportedFile(f"tensor {name!r} has dtype {entry['dtype']}, which lstm-inspect cannot read", label)
        stored, wanted = DTYPES[entry["dtype"]]
        handle.seek(start + entry["begin"])
        data = handle.read(entry["end"] - entry["begin"])
        if len(data) != entry["end"] - entry["begin"]:
            raise CorruptFile(f"tensor {name!r} runs past the end of the file (truncated?)", label)
        array = np.frombuffer(data, dtype=stored).reshape(entry["shape"])
        if entry["dtype"] == "BF16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        return array.astype(wanted)
    return load

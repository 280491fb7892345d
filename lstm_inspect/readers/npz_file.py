"""``.npz`` files (``np.savez``, ``lstm-inspect export``) read without ``np.load``: each ``<key>.npy`` member's
header is parsed by numpy's format module, arrays of Python objects (which only unpickling could read) are
refused, and data is read lazily — through a window on the archive for stored members; a compressed member
(``np.savez_compressed``) is inflated under the archive's bound when first read, a large one to an anonymous
temporary file read like a stored member (`archive.Archive.open_member`), so that both are memory-mapped a row chunk
at a time. Only the header is inflated to list the file. The keys then follow `flat_arrays`' schemes.

A reserved member ``__metadata__.npy`` (a 0-d unicode array holding a JSON object of strings) carries what a
.safetensors header's ``__metadata__`` carries: the layout and how each exported module is built.
"""
from __future__ import annotations

import io
import json

import numpy as np

from ..errors import CorruptFile, InspectError, UnsupportedFile
from ..model import MAX_DIMENSION, ModelFile, Tensor, element_count
from . import flat_arrays
from .archive import Archive

METADATA_KEY = "__metadata__"
#: numpy dtype kinds a weight can have: bool, signed / unsigned integer, float, complex.
NUMERIC_KINDS = "biufc"
#: numpy's own bound on an .npy header.
MAX_HEADER_BYTES = 10_000
#: The bytes read to parse a header: the magic string, the version, the header's length field, the header.
_HEADER_PREFIX = 6 + 2 + 4 + MAX_HEADER_BYTES


def looks_like(names: list[str]) -> bool:
    return bool(names) and all(n.endswith(".npy") for n in names)


def read(path: str, label: str) -> ModelFile:
    archive = Archive(path, label)
    try:
        tensors, metadata = [], {}
        for member in archive.names():
            key = member[: -len(".npy")]
            shape, fortran, dtype, offset = _header(archive, member, label)
            if key == METADATA_KEY:
                metadata = _metadata(_read(archive, member, shape, fortran, dtype, offset, label), label)
                continue
            tensors.append(Tensor(name=key, shape=shape, dtype=str(dtype), source=key,
                                  _load=_loader(archive, member, shape, fortran, dtype, offset, label),
                                  _mapped=_place(archive, member, fortran, dtype, offset)))
        if not tensors:
            raise UnsupportedFile("the .npz archive holds no arrays", label)
        model = flat_arrays.build(label, "npz", tensors, metadata)
    except BaseException:
        archive.close()
        raise
    model._closers.append(archive.close)
    return model


def _header(archive: Archive, member: str, label: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, offset of the data) of one ``.npy`` member, checked against its size (the
    declared size: reading a member checks it holds that many bytes). Only the header's bytes are inflated."""
    handle = io.BytesIO(archive.read_prefix(member, _HEADER_PREFIX))
    size = archive.file_size(member)
    try:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(handle, max_header_size=MAX_HEADER_BYTES)
        offset = handle.tell()
    except InspectError:
        raise
    except Exception as exc:  # numpy's header parser raises ValueError, SyntaxError, tokenize.TokenError, ...
        raise CorruptFile(f"array {member!r} is not a readable .npy member: {exc}", label) from exc
    if dtype.hasobject:
        raise UnsupportedFile(f"array {member!r} holds Python objects (readable only by unpickling, which "
                              "lstm-inspect never does)", label)
    if dtype.kind not in NUMERIC_KINDS and not (member == METADATA_KEY + ".npy" and dtype.kind == "U"):
        raise UnsupportedFile(f"array {member!r} has dtype {dtype}, not numbers", label)
    if any(d > MAX_DIMENSION for d in shape):
        raise CorruptFile(f"array {member!r} declares shape {list(shape)}, beyond any real array", label)
    needed = element_count(shape) * dtype.itemsize
    if size - offset != needed:
        raise CorruptFile(f"array {member!r} holds {size - offset:,} bytes of data but {dtype} {list(shape)} needs "
                          f"{needed:,} (truncated?)", label)
    return tuple(int(d) for d in shape), bool(fortran), dtype, offset


def _read(archive: Archive, member: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, offset: int,
          label: str) -> np.ndarray:
    count = element_count(shape)
    values = np.empty(count, dtype=dtype)
    handle = archive.open_member(member)
    try:
        handle.seek(offset)
        got = handle.readinto(memoryview(values).cast("B")) if count else 0  # no second copy
    finally:
        handle.close()
    if got != count * dtype.itemsize:
        raise CorruptFile(f"array {member!r} is shorter than its header says (truncated?)", label)
    return values.reshape(shape, order="F" if fortran else "C")


def _loader(archive: Archive, member: str, shape: tuple[int, ...], fortran: bool, dtype: np.dtype, offset: int,
            label: str):
    return lambda: _read(archive, member, shape, fortran, dtype, offset, label)


def _place(archive: Archive, member: str, fortran: bool, dtype: np.dtype, offset: int):
    """Where a member's C-order, native-order values lie for a memory map (`model.Tensor._mapped`): in the archive
    for a stored member, in its inflated temporary copy for a large compressed one (inflated on the first call);
    None for a Fortran-order or byte-swapped member, or a small compressed one, which is read whole."""
    if fortran or not dtype.isnative or not archive.mappable(member):
        return None

    def place() -> tuple[int, int]:
        fd, base, _ = archive.open_member(member).extent()  # checked to lie inside the archive (or its copy)
        return fd, base + offset
    return place


def _metadata(value: np.ndarray, label: str) -> dict[str, str]:
    try:
        parsed = json.loads(str(value.item())) if value.dtype.kind == "U" and value.shape == () else None
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise CorruptFile(f"{METADATA_KEY!r} must be a 0-d string array holding a JSON object of strings", label)
    return parsed


def metadata_array(metadata: dict[str, str]) -> np.ndarray:
    """The ``__metadata__`` entry an .npz writer stores (read back by `read`)."""
    return np.array(json.dumps(metadata))

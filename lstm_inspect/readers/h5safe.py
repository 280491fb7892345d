"""Guarded access to HDF5 files: nothing is read from outside the file and no dataset is read past a bound.

Every reader goes through these helpers instead of indexing h5py objects directly, so that links, external
storage, virtual datasets and size bombs are refused on every path (the holes behind CVE-2026-1669 and
CVE-2026-0897 in Keras's own loader).
"""
from __future__ import annotations

import contextlib
import json
import os
import traceback
from pathlib import PurePath
from typing import Any, Iterator

import h5py
import numpy as np

from .. import limits
from ..errors import CorruptFile, UnsafeFile
from ..model import MAX_DIMENSION, element_count

#: A single tensor larger than this is refused (no Keras recurrent model needs one).
MAX_DATASET_BYTES = 4 << 30
#: A dataset may declare at most this many times the bytes it stores, past the floor below.
MAX_DECLARED_RATIO = 1000
DECLARED_FLOOR_BYTES = 16 << 20
MAX_RANK = 8
#: An attribute larger than this is refused (model configs are kilobytes to a few megabytes).
MAX_ATTRIBUTE_BYTES = 64 << 20
MAX_JSON_DEPTH = 200
#: HDF5 filters h5py can apply without plugins: deflate, shuffle, fletcher32, szip, scaleoffset, lzf.
KNOWN_FILTERS = {1, 2, 3, 4, 6, 32000}

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(head: bytes) -> bool:
    return head.startswith(HDF5_SIGNATURE)


@contextlib.contextmanager
def library_errors_as_corrupt(label: str) -> Iterator[None]:
    """Report an exception raised inside h5py or libhdf5 (damaged metadata met while walking the file) as a
    corrupt file; an exception raised in our own code is a bug and passes through."""
    try:
        yield
    except (CorruptFile, UnsafeFile, MemoryError):
        raise
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        if frames and "h5py" in PurePath(frames[-1].filename).parts:
            raise CorruptFile(f"damaged HDF5 structure: {_short(exc)}", label) from exc
        raise


def open_file(source: Any, label: str) -> h5py.File:
    """Open an HDF5 file (a path or a seekable file object) read-only, or raise CorruptFile."""
    try:
        f = h5py.File(source, "r")
    except Exception as exc:  # h5py raises OSError, ValueError, KeyError... for damaged files
        raise CorruptFile(f"not a readable HDF5 file (truncated or corrupt?): {_short(exc)}", label) from exc
    _register(f, source)
    return f


#: Where the bytes of each open HDF5 file lie, by HDF5 file number (a serial number libhdf5 never reuses):
#: (file descriptor, offset of the HDF5 file's first byte in it, the HDF5 file's size). For `mapped_place`.
_PLACES: dict[int, tuple[int, int, int]] = {}


def _register(f: h5py.File, source: Any) -> None:
    """Note where `f`'s bytes lie when they are a plain file (opened by path) or a window on one (a stored member
    of a .keras archive): its large datasets can then be memory-mapped."""
    try:
        if hasattr(source, "extent"):
            fd, base, size = source.extent()
        elif isinstance(source, (str, os.PathLike)) and f.driver == "sec2":
            fd, base = int(f.id.get_vfd_handle()), 0
            size = os.fstat(fd).st_size
        else:
            return
        _PLACES[f.id.fileno] = (fd, base, size)
    except Exception:
        return  # no map: the dataset is read through libhdf5


def mapped_place(ds: h5py.Dataset) -> tuple[int, int] | None:
    """(file descriptor, byte offset) of a dataset's values when they lie in the file as one run of native-order
    numbers that can be mapped (contiguous layout, no filter, fully written, inside the file), else None."""
    try:
        place = _PLACES.get(ds.id.fileno)
        if place is None or ds.chunks is not None or ds.is_virtual:
            return None
        dtype = ds.dtype
        plist = ds.id.get_create_plist()
        if dtype.kind not in "fiu" or not dtype.isnative or plist.get_nfilters() or plist.get_external_count():
            return None
        if plist.get_layout() != h5py.h5d.CONTIGUOUS:
            return None
        offset = ds.id.get_offset()
        nbytes = element_count(ds.shape) * dtype.itemsize
        fd, base, size = place
        if offset is None or not nbytes or ds.id.get_storage_size() != nbytes or not 0 <= offset <= size - nbytes:
            return None
        return fd, base + offset
    except Exception:
        return None


def child(group: h5py.Group, name: str, label: str) -> h5py.Group | h5py.Dataset:
    """The object at `name` below `group`, following only hard links at every path component."""
    node: Any = group
    for part in [p for p in name.split("/") if p]:
        if not isinstance(node, h5py.Group):
            raise CorruptFile(f"{node.name} is not a group, cannot look up {part!r}", label)
        try:
            link = node.get(part, getlink=True)
        except Exception as exc:
            raise CorruptFile(f"cannot read link {part!r} in {node.name}: {_short(exc)}", label) from exc
        if link is None:
            raise CorruptFile(f"missing {(node.name.rstrip('/') + '/' + part)!r}", label)
        if isinstance(link, h5py.ExternalLink):
            raise UnsafeFile(
                f"{node.name.rstrip('/')}/{part} is an external link to {link.filename!r}; refusing to leave the file",
                label,
            )
        if isinstance(link, h5py.SoftLink):
            raise UnsafeFile(f"{node.name.rstrip('/')}/{part} is a soft link to {link.path!r}; refusing links", label)
        try:
            node = node[part]
        except Exception as exc:
            raise CorruptFile(f"cannot open {part!r} in {node.name}: {_short(exc)}", label) from exc
    return node


def has(group: h5py.Group, name: str) -> bool:
    try:
        return group.get(name, getlink=True) is not None
    except Exception:
        return False


def members(group: h5py.Group, label: str) -> Iterator[tuple[str, Any]]:
    """The (name, object) pairs of a group in creation order where the file tracks it, refusing links."""
    try:
        names = list(group.keys())
    except Exception as exc:
        raise CorruptFile(f"cannot list {group.name}: {_short(exc)}", label) from exc
    for name in names:
        if not isinstance(name, str):
            raise CorruptFile(f"{group.name} has a member whose name is not text: {name!r}", label)
        yield name, child(group, name, label)


def check_dataset(ds: h5py.Dataset, label: str) -> None:
    """Refuse datasets that read outside the file, that are not plain numbers, or that declare absurd sizes."""
    where = ds.name
    try:
        if ds.is_virtual:
            raise UnsafeFile(f"{where} is a virtual dataset (its data lives in other files); refusing it", label)
        plist = ds.id.get_create_plist()
        if plist.get_external_count() > 0:
            name = plist.get_external(0)[0]
            name = name.decode(errors="replace") if isinstance(name, bytes) else name
            raise UnsafeFile(f"{where} keeps its data in external file {name!r}; refusing to read outside the file", label)
        shape = ds.shape
        dtype = ds.dtype
    except (UnsafeFile, CorruptFile):
        raise
    except Exception as exc:
        raise CorruptFile(f"cannot read header of {where}: {_short(exc)}", label) from exc
    if shape is None:
        raise CorruptFile(f"{where} has no data space", label)
    if len(shape) > MAX_RANK:
        raise UnsafeFile(f"{where} has rank {len(shape)} (more than {MAX_RANK}); refusing it", label)
    if dtype.kind not in "fiub":
        raise CorruptFile(f"{where} holds {dtype} values, not numbers", label)
    if any(d > MAX_DIMENSION for d in shape):
        raise UnsafeFile(f"{where} declares shape {shape}, beyond any real array; refusing it", label)
    declared = element_count(shape) * dtype.itemsize
    if declared > MAX_DATASET_BYTES:
        raise UnsafeFile(
            f"{where} declares {declared:,} bytes (shape {shape}), more than the {MAX_DATASET_BYTES:,}-byte limit", label
        )
    try:
        stored = ds.id.get_storage_size()
    except Exception:
        stored = 0
    if declared > DECLARED_FLOOR_BYTES and declared > MAX_DECLARED_RATIO * max(stored, 1):
        raise UnsafeFile(
            f"{where} declares {declared:,} bytes but stores {stored:,}; refusing a dataset that would inflate "
            f"more than {MAX_DECLARED_RATIO}x",
            label,
        )
    for index in range(plist.get_nfilters()):
        code = plist.get_filter(index)[0]
        if code not in KNOWN_FILTERS:
            raise UnsafeFile(f"{where} needs HDF5 filter {code}, which is not a built-in filter; refusing plugins", label)


def dataset_info(ds: h5py.Dataset, label: str) -> tuple[tuple[int, ...], str]:
    check_dataset(ds, label)
    return tuple(int(n) for n in ds.shape), str(ds.dtype)


def read_dataset(ds: h5py.Dataset, label: str) -> np.ndarray:
    check_dataset(ds, label)
    try:
        return np.asarray(ds[()])
    except MemoryError:
        raise  # not a damaged file: the isolated reader names --max-memory
    except Exception as exc:
        raise CorruptFile(f"cannot read {ds.name}: {_short(exc)}", label) from exc


def read_part(ds: h5py.Dataset, index: tuple, out: np.ndarray | None, label: str) -> np.ndarray:
    """The values at `index` (a tuple of slices / ints: an HDF5 hyperslab), read straight into `out` when given
    (a C-contiguous array of the selection's shape and the dataset's dtype), else into a new array."""
    check_dataset(ds, label)
    try:
        if out is None:
            return np.asarray(ds[index])
        ds.read_direct(out, source_sel=index)
        return out
    except MemoryError:
        raise
    except Exception as exc:
        raise CorruptFile(f"cannot read {ds.name}: {_short(exc)}", label) from exc


def attr(obj: h5py.HLObject, name: str, label: str) -> Any:
    """An attribute decoded to str / list of str / Python scalars, or None when absent."""
    try:
        if name not in obj.attrs:
            return None
        attr_id = obj.attrs.get_id(name)
        size = _attribute_bytes(attr_id)
        if size > MAX_ATTRIBUTE_BYTES:
            raise UnsafeFile(f"attribute {name!r} of {obj.name} is {size:,} bytes; refusing it", label)
        value = _read_attribute(obj, name, attr_id, label)
    except UnsafeFile:
        raise
    except Exception as exc:
        raise CorruptFile(f"cannot read attribute {name!r} of {obj.name}: {_short(exc)}", label) from exc
    return _decode(value)


#: Memory a variable-length attribute may take while read: its strings, h5py's copies, numpy's object array.
VARIABLE_ATTRIBUTE_BUDGET = 4 * MAX_ATTRIBUTE_BYTES


def _read_attribute(obj: h5py.HLObject, name: str, attr_id: Any, label: str) -> Any:
    """The attribute's value. A variable-length one's storage size counts 16-byte heap descriptors, not the
    strings they point to (80 MB hid behind 16 bytes; 3,000 descriptors of one 1 MiB object took 4.1 GB), so its
    real bytes are counted before it is used, and it is read under a memory budget unless it cannot be large:
    libhdf5 checks every heap object against its collection and every collection against the file's end, so each
    string is at most the file's size, and descriptors × file size bounds the whole. Past that bound it is read in
    the isolated child under a lowered address-space limit, or, in-process (``--no-isolation``, the Python API),
    in a forked helper under the same budget (a library must not set limits on its host process)."""
    if not _is_variable(attr_id):
        return obj.attrs[name]
    refused = UnsafeFile(f"attribute {name!r} of {obj.name} holds more than {MAX_ATTRIBUTE_BYTES:,} bytes of "
                         "variable-length data; refusing it", label)
    if _descriptors(attr_id) * _file_bytes(obj) * 4 > VARIABLE_ATTRIBUTE_BUDGET:
        if not limits.in_child() and limits.can_fork():
            return _read_in_helper(obj, name, refused, label)
    bounded = False
    try:
        with limits.memory_budget(VARIABLE_ATTRIBUTE_BUDGET) as bounded:
            value = obj.attrs[name]
    except MemoryError:
        raise refused from None
    except Exception as exc:
        if bounded and "alloc" in str(exc).lower():  # libhdf5 could not allocate within the budget
            raise refused from exc
        raise
    if _real_bytes(value) > MAX_ATTRIBUTE_BYTES:
        raise refused
    return value


#: How long the forked helper may take to read one attribute (libhdf5 loops on some damaged files).
ATTRIBUTE_SECONDS = 60.0


def _read_in_helper(obj: h5py.HLObject, name: str, refused: UnsafeFile, label: str) -> Any:
    """A variable-length attribute read in a forked child under the budget; its value comes back as JSON."""
    from h5py._objects import phil

    def read() -> Any:
        value = obj.attrs[name]
        return None if _real_bytes(value) > MAX_ATTRIBUTE_BYTES else _plain(_decode(value))

    status, value = limits.run_bounded(read, VARIABLE_ATTRIBUTE_BUDGET, ATTRIBUTE_SECONDS, lock=phil)
    if status == "ok" and value is not None:
        return value
    if status in ("ok", "memory"):
        raise refused
    if status == "timeout":
        raise UnsafeFile(f"reading attribute {name!r} of {obj.name} took longer than {ATTRIBUTE_SECONDS:.0f} s; "
                         "refusing it", label)
    what = f"the HDF5 library crashed (signal {value})" if status == "crash" else str(value)
    raise CorruptFile(f"cannot read attribute {name!r} of {obj.name}: {what}", label)


def _plain(value: Any) -> Any:
    """`_decode`'s result as JSON-able data (variable-length numbers come as arrays)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _descriptors(attr_id: Any) -> int:
    try:
        shape = attr_id.shape
    except Exception:
        return 1
    return 0 if shape is None else element_count(shape)


def _file_bytes(obj: h5py.HLObject) -> int:
    try:
        return int(obj.file.id.get_filesize())
    except Exception:
        return MAX_ATTRIBUTE_BYTES  # cannot tell: treated as large


def _is_variable(attr_id: Any) -> bool:
    try:
        kind = attr_id.get_type()
        return kind.is_variable_str() if isinstance(kind, h5py.h5t.TypeStringID) else \
            isinstance(kind, h5py.h5t.TypeVlenID)
    except Exception:
        return False


def _real_bytes(value: Any) -> int:
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        return sum(len(v) if isinstance(v, (bytes, str)) else getattr(v, "nbytes", 8) for v in value.flat)
    return 0


def _attribute_bytes(attr_id: Any) -> int:
    try:
        return int(attr_id.get_storage_size())
    except Exception:  # HDF5 reports an error, not 0, for empty attributes
        shape = attr_id.shape or ()
        return element_count(shape) * attr_id.get_type().get_size()


def chunked_attr(obj: h5py.HLObject, name: str, label: str) -> list[str] | None:
    """A list attribute Keras may split into ``name0``, ``name1``, ... when it is larger than 64 KB."""
    value = attr(obj, name, label)
    if value is None:
        parts = []
        index = 0
        while (part := attr(obj, f"{name}{index}", label)) is not None:
            parts.extend(part if isinstance(part, list) else [part])
            index += 1
        if not index:
            return None
        value = parts
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def json_attr(obj: h5py.HLObject, name: str, label: str) -> Any:
    text = attr(obj, name, label)
    if text is None:
        return None
    return parse_json(text, f"attribute {name!r}", label)


def parse_json(text: str | bytes, what: str, label: str) -> Any:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        raise CorruptFile(f"{what} is not text", label)
    try:
        value = json.loads(text)
    except RecursionError as exc:
        raise UnsafeFile(f"{what} is JSON nested too deeply", label) from exc
    except ValueError as exc:
        raise CorruptFile(f"{what} is not valid JSON: {exc}", label) from exc
    if _depth(value) > MAX_JSON_DEPTH:
        raise UnsafeFile(f"{what} is JSON nested deeper than {MAX_JSON_DEPTH} levels", label)
    return value


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        nxt: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                nxt.extend(item.values())
            elif isinstance(item, list):
                nxt.extend(item)
        level = nxt
    return depth


def _decode(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        if value.ndim == 0:
            return _decode(value.item())
        return [_decode(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]

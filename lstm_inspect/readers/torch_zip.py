"""PyTorch ``torch.save`` files read without torch and without unpickling.

``torch.save`` writes a zip: ``<archive>/data.pkl`` (a pickle of the state dict whose tensors point, through
persistent ids ``('storage', torch.FloatStorage, '<key>', 'cpu', numel)``, at raw little-endian storages), and
``<archive>/data/<key>`` (each storage's bytes). Files from ``torch.save(..., _use_new_zipfile_serialization=False)``
are five pickles in a row (magic number, protocol, system info, the object, the storage keys) followed by each
storage as an int64 element count and its bytes.

The pickle is first scanned (`pickle_scan`: any import outside the tensor allow-list refuses the file), then
*interpreted* by a tiny machine that knows only the opcodes a state dict needs and only these calls:
``collections.OrderedDict()``, ``torch._utils._rebuild_tensor_v2`` / ``_rebuild_tensor`` (a view of a storage:
offset, shape, stride) and ``_rebuild_parameter``. Nothing is imported or called; every other opcode or call refuses
the file in one line. Each tensor becomes a lazily read `Tensor`: its bytes are read from the storage member only
when asked, checked to lie inside the storage, and copied out as a numpy array (bfloat16 widened to float32 exactly,
as the torch path does).
"""
from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Mapping, NamedTuple

import numpy as np

from ..errors import CorruptFile, InspectError, UnsafeFile, UnsupportedFile
from ..model import ModelFile, Tensor
from . import pickle_scan
from .archive import Archive, FileWindow

#: torch storage class -> numpy dtype of its elements ("bfloat16" is widened after reading).
STORAGE_DTYPES = {
    "torch.DoubleStorage": "float64", "torch.FloatStorage": "float32", "torch.HalfStorage": "float16",
    "torch.BFloat16Storage": "bfloat16", "torch.LongStorage": "int64", "torch.IntStorage": "int32",
    "torch.ShortStorage": "int16", "torch.CharStorage": "int8", "torch.ByteStorage": "uint8",
    "torch.BoolStorage": "bool", "torch.ComplexFloatStorage": "complex64", "torch.ComplexDoubleStorage": "complex128",
}
_REBUILDS = frozenset({"torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                       "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"})
INTERPRETED = frozenset({"collections.OrderedDict", *_REBUILDS, *STORAGE_DTYPES})
#: The magic number the legacy (non-zip) format starts with.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_RANK = 64
MAX_NESTING = 100
MAX_TENSORS = 1_000_000
_MARK = object()


class NotAStateDict(UnsupportedFile):
    """The pickle is free of code but uses something a plain state dict does not (the caller may fall back to
    ``torch.load(weights_only=True)``)."""


@dataclass(frozen=True)
class _Global:
    name: str


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class _OrderedDict(dict):
    """What ``collections.OrderedDict()`` builds here (a dict that may take BUILD's attribute state)."""


# ------------------------------------------------------------------------------------------------ the readers


class _Member(NamedTuple):
    """A storage's bytes: how to open them, their size, and whether they lie in a file as they are (a stored
    member or a legacy file's run, or a large deflated member's inflated temporary copy: memory-mappable)."""

    open: Callable[[], BinaryIO]
    size: int
    plain: bool


def read(path: str, label: str) -> ModelFile:
    """A ``torch.save`` zip (``.pt`` / ``.pth`` / ``.bin``)."""
    archive = Archive(path, label)
    return _closing(archive.close, lambda: _read_zip(archive, label))


def _read_zip(archive: Archive, label: str) -> ModelFile:
    pickles = [n for n in archive.names() if n == "data.pkl" or n.endswith("/data.pkl")]
    if len(pickles) != 1:
        raise CorruptFile(f"a torch zip holds one data.pkl, this one {len(pickles)}", label)
    prefix = pickles[0][: -len("data.pkl")]
    data = archive.read_bytes(pickles[0], limit=pickle_scan.MAX_PICKLE_BYTES)
    _refuse_code(pickle_scan.scan_bytes(data, pickles[0]), label)
    big = archive.has(prefix + "byteorder") and archive.read_bytes(prefix + "byteorder", 16).strip() == b"big"
    obj = _Machine(label).run(io.BytesIO(data), pickles[0])

    def member_of(storage: _Storage) -> _Member:
        name = f"{prefix}data/{storage.key}"
        if "/" in storage.key or not archive.has(name):
            raise CorruptFile(f"storage {storage.key!r} has no member {name!r} in the archive", label)
        return _Member(lambda: archive.open_member(name), archive.file_size(name), archive.mappable(name))

    return _build(obj, member_of, big, label, "torch-zip")


def read_legacy(path: str, label: str) -> ModelFile:
    """A file from ``torch.save(..., _use_new_zipfile_serialization=False)``: five pickles, then the storages."""
    handle = open(path, "rb")
    return _closing(handle.close, lambda: _read_legacy(handle, label))


def _read_legacy(handle: BinaryIO, label: str) -> ModelFile:
    values, storages = [], {}
    for index in range(5):
        where = f"pickle {index + 1} of 5"
        start = handle.tell()
        _refuse_code(pickle_scan.scan(handle, where), label)
        handle.seek(start)
        machine = _Machine(label, legacy=True)
        values.append(machine.run(pickle_scan.Bounded(handle, pickle_scan.MAX_PICKLE_BYTES), where))
        storages.update(machine.storages)
        if index == 0 and values[0] != LEGACY_MAGIC:
            raise UnsupportedFile("a pickle that is not a torch.save file (no torch magic number); "
                                  "lstm-inspect never unpickles files", label)
    keys = values[4]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CorruptFile("the legacy torch file's storage key list is not a list of strings", label)
    layout = _legacy_storages(handle, keys, storages, label)

    def member_of(storage: _Storage) -> _Member:
        if storage.key not in layout:
            raise CorruptFile(f"storage {storage.key!r} is not in the file's storage list", label)
        offset, size = layout[storage.key]
        return _Member(lambda: FileWindow(handle, offset, size), size, True)

    return _build(values[3], member_of, False, label, "torch-legacy")


def _closing(close: Callable[[], None], build: Callable[[], ModelFile]) -> ModelFile:
    """The model `build` makes; `close` releases its file when building fails, else when the model is closed."""
    try:
        model = build()
    except BaseException:
        close()
        raise
    model._closers.append(close)
    return model


def _build(obj: Any, member_of: Callable[[_Storage], _Member], big: bool, label: str, source: str) -> ModelFile:
    from .torch_state import build_model

    return build_model(label, "torch-state-dict", _tensors(obj, member_of, big, label, source))


def _refuse_code(scanned: pickle_scan.PickleScan, label: str) -> None:
    if scanned.findings:
        names = list(dict.fromkeys(f.what for f in scanned.findings))
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        raise UnsafeFile(f"the pickle imports what loading it would call: {shown} (first at "
                         f"{scanned.findings[0].where}); refusing it: lstm-inspect never unpickles, "
                         "`lstm-inspect check` lists every place", label)
    if not scanned.complete:
        raise CorruptFile(f"the pickle is not readable: {scanned.error}", label)


def _legacy_storages(handle: BinaryIO, keys: list[str], storages: dict[str, _Storage],
                     label: str) -> dict[str, tuple[int, int]]:
    """Where each storage's bytes sit, (offset, byte size): in key order, an int64 element count, then the bytes."""
    offset = handle.tell()
    end = handle.seek(0, io.SEEK_END)
    layout = {}
    for key in keys:
        if key not in storages:
            raise CorruptFile(f"the legacy torch file lists storage {key!r}, which no tensor uses", label)
        storage = storages[key]
        handle.seek(offset)
        head = handle.read(8)
        if len(head) != 8 or int.from_bytes(head, "little", signed=True) != storage.numel:
            raise CorruptFile(f"storage {key!r}: its stored element count does not match the pickle's", label)
        size = storage.numel * _itemsize(storage.dtype)
        if offset + 8 + size > end:
            raise CorruptFile(f"storage {key!r} runs past the end of the file (truncated?)", label)
        layout[key] = (offset + 8, size)
        offset += 8 + size
    return layout


# ------------------------------------------------------------------------------------------ tensors from refs


def _tensors(obj: Any, member_of: Callable[[_Storage], _Member], big: bool, label: str,
             source: str) -> list[Tensor]:
    from .torch_state import _common_wrapper

    flat: dict[str, _TensorRef] = {}
    _flatten(obj, "", flat, 0, label)
    if not flat:
        raise UnsupportedFile("the PyTorch file holds no tensors (expected a state dict)", label)
    prefix = _common_wrapper(flat)
    tensors = []
    for name, ref in flat.items():
        member = member_of(ref.storage)
        opener, stored = member.open, member.size
        itemsize = _itemsize(ref.storage.dtype)
        if stored != ref.storage.numel * itemsize:
            raise CorruptFile(f"tensor {name!r}: its storage {ref.storage.key!r} holds {stored:,} bytes, not "
                              f"{ref.storage.numel:,} x {itemsize}", label)
        _check_view(name, ref, label)
        shown = "float32" if ref.storage.dtype == "bfloat16" else ref.storage.dtype
        tensors.append(Tensor(name=name[len(prefix):], shape=ref.shape, dtype=shown,
                              source=f"{source}:{ref.storage.key}",
                              _load=lambda r=ref, o=opener, n=name: _read_view(r, o, big, n, label),
                              _mapped=_place(ref, member, big)))
    return tensors


def _place(ref: _TensorRef, member: _Member, big: bool):
    """Where a view's values lie when they are one C-order run of a plain storage in native order (no bfloat16 to
    widen), for a memory map (`model.Tensor._mapped`); `_check_view` checked the view lies inside its storage."""
    if big or not member.plain or ref.storage.dtype == "bfloat16" or 0 in ref.shape:
        return None
    expected, step = [], 1
    for size in reversed(ref.shape):
        expected.append(step)
        step *= size
    if tuple(reversed(expected)) != tuple(s for s in ref.stride):
        return None  # a transposed or strided view: read whole
    itemsize = _itemsize(ref.storage.dtype)

    def place() -> tuple[int, int]:
        fd, base, _ = member.open().extent()
        return fd, base + ref.offset * itemsize
    return place


def _itemsize(dtype: str) -> int:
    return np.dtype("uint16" if dtype == "bfloat16" else dtype).itemsize


def _flatten(value: Any, prefix: str, out: dict[str, _TensorRef], depth: int, label: str) -> None:
    if depth > MAX_NESTING:
        raise UnsafeFile(f"the pickled object nests deeper than {MAX_NESTING} levels (or refers to itself)", label)
    if isinstance(value, _TensorRef):
        out[prefix.rstrip(".")] = value
        if len(out) > MAX_TENSORS:
            raise UnsafeFile(f"more than {MAX_TENSORS:,} tensors; refusing the file", label)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, f"{prefix}{key}.", out, depth + 1, label)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _flatten(item, f"{prefix}{i}.", out, depth + 1, label)


def _check_view(name: str, ref: _TensorRef, label: str) -> None:
    """The view (offset, shape, stride) must lie inside its storage; Python ints, so nothing overflows."""
    if len(ref.shape) != len(ref.stride) or len(ref.shape) > MAX_RANK:
        raise CorruptFile(f"tensor {name!r}: shape {list(ref.shape)} and stride {list(ref.stride)} do not fit", label)
    if ref.offset < 0 or any(d < 0 for d in ref.shape) or any(s < 0 for s in ref.stride):
        raise CorruptFile(f"tensor {name!r}: negative offset, size or stride", label)
    if 0 in ref.shape:
        return
    last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride))
    if last >= ref.storage.numel:
        raise CorruptFile(f"tensor {name!r}: its view reaches element {last:,} of a storage of "
                          f"{ref.storage.numel:,} elements", label)


def _read_view(ref: _TensorRef, opener: Callable[[], BinaryIO], big: bool, name: str, label: str) -> np.ndarray:
    raw_dtype = np.dtype("uint16" if ref.storage.dtype == "bfloat16" else ref.storage.dtype)
    if big:
        raw_dtype = raw_dtype.newbyteorder(">")
    count = 0 if 0 in ref.shape else 1 + ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride))
    handle = opener()
    try:
        data = handle.read(count * raw_dtype.itemsize) if count else b""
    finally:
        handle.close()
    if len(data) != count * raw_dtype.itemsize:
        raise CorruptFile(f"tensor {name!r}: its storage is shorter than the view (truncated?)", label)
    flat = np.frombuffer(data, dtype=raw_dtype, count=count)
    view = np.lib.stride_tricks.as_strided(flat[ref.offset:] if count else flat, shape=ref.shape,
                                           strides=tuple(s * raw_dtype.itemsize for s in ref.stride),
                                           writeable=False)
    array = np.array(view, dtype=raw_dtype.newbyteorder("="))
    if ref.storage.dtype == "bfloat16":  # bfloat16 is the top half of a float32: widening is exact
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


# -------------------------------------------------------------------------------- the state-dict pickle machine


class _Machine:
    """Interprets the opcodes of a state-dict pickle; anything else is refused. Imports and calls nothing."""

    def __init__(self, label: str, legacy: bool = False):
        self.label, self.legacy = label, legacy
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.storages: dict[str, _Storage] = {}

    def refuse(self, what: str, pos: int | None, where: str) -> NotAStateDict:
        return NotAStateDict(f"{where} @ byte {pos}: {what}, which a plain state dict does not need; lstm-inspect "
                             "reads only tensors, dicts, lists and numbers from a PyTorch pickle", self.label)

    def pop(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise CorruptFile("the pickle's stack runs empty (corrupt file)", self.label)
        return self.stack.pop()

    def pop_mark(self) -> list[Any]:
        items = []
        while self.stack and self.stack[-1] is not _MARK:
            items.append(self.stack.pop())
        if not self.stack:
            raise CorruptFile("the pickle pops a mark it never set (corrupt file)", self.label)
        self.stack.pop()
        return items[::-1]

    def run(self, stream: BinaryIO, where: str) -> Any:
        count = 0
        try:
            for opcode, arg, pos in pickletools.genops(stream):
                count += 1
                if count > pickle_scan.MAX_OPS:
                    raise UnsafeFile(f"{where}: more than {pickle_scan.MAX_OPS:,} opcodes", self.label)
                if opcode.name == "STOP":
                    return self.pop()
                self.step(opcode.name, arg, pos, where)
        except InspectError:
            raise
        except Exception as exc:
            raise CorruptFile(f"{where}: the pickle is not readable: {exc}", self.label) from exc
        raise CorruptFile(f"{where}: the pickle ends without a STOP opcode", self.label)

    def step(self, name: str, arg: Any, pos: int, where: str) -> None:
        push = self.stack.append
        if name in ("PROTO", "FRAME"):
            return
        if name == "MARK":
            push(_MARK)
        elif name in ("EMPTY_DICT",):
            push({})
        elif name == "EMPTY_LIST":
            push([])
        elif name == "EMPTY_TUPLE":
            push(())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            n = int(name[-1])
            items = [self.pop() for _ in range(n)][::-1]
            push(tuple(items))
        elif name == "TUPLE":
            push(tuple(self.pop_mark()))
        elif name == "LIST":
            push(self.pop_mark())
        elif name == "DICT":
            items = self.pop_mark()
            push(self._pairs({}, items, pos, where))
        elif name == "SETITEM":
            value, key = self.pop(), self.pop()
            self._pairs(self._top(dict, pos, where), [key, value], pos, where)
        elif name == "SETITEMS":
            items = self.pop_mark()
            self._pairs(self._top(dict, pos, where), items, pos, where)
        elif name == "APPEND":
            value = self.pop()
            self._top(list, pos, where).append(value)
        elif name == "APPENDS":
            items = self.pop_mark()
            self._top(list, pos, where).extend(items)
        elif name in ("BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4", "BINFLOAT", "FLOAT",
                      "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "BINSTRING", "SHORT_BINSTRING",
                      "STRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8"):
            push(arg)
        elif name in ("NEWTRUE", "NEWFALSE"):
            push(name == "NEWTRUE")
        elif name == "NONE":
            push(None)
        elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
            self.memo[arg] = self._peek()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self._peek()
        elif name in ("BINGET", "LONG_BINGET", "GET"):
            if arg not in self.memo:
                raise CorruptFile(f"{where} @ byte {pos}: memo entry {arg} was never stored", self.label)
            push(self.memo[arg])
        elif name == "POP":
            self.pop()
        elif name == "POP_MARK":
            self.pop_mark()
        elif name == "DUP":
            push(self._peek())
        elif name in ("GLOBAL", "STACK_GLOBAL"):
            if name == "GLOBAL":
                module, _, attr = str(arg).partition(" ")
            else:
                attr, module = self.pop(), self.pop()
            dotted = f"{module}.{attr}"
            if dotted not in INTERPRETED:
                raise self.refuse(f"it imports {dotted}", pos, where)
            push(_Global(dotted))
        elif name == "BINPERSID":
            push(self._storage(self.pop(), pos, where))
        elif name == "REDUCE":
            args, func = self.pop(), self.pop()
            push(self._call(func, args, pos, where))
        elif name == "BUILD":
            state = self.pop()
            if not isinstance(self._peek(), _OrderedDict) or not isinstance(state, dict):
                raise self.refuse("BUILD on something other than an OrderedDict", pos, where)
            # an OrderedDict's attribute state (a state_dict's `_metadata`): not a tensor, dropped
        else:
            raise self.refuse(f"opcode {name}", pos, where)

    def _peek(self) -> Any:
        if not self.stack or self.stack[-1] is _MARK:
            raise CorruptFile("the pickle's stack runs empty (corrupt file)", self.label)
        return self.stack[-1]

    def _top(self, kind: type, pos: int, where: str) -> Any:
        top = self._peek()
        if not isinstance(top, kind):
            raise CorruptFile(f"{where} @ byte {pos}: adds items to a {type(top).__name__}", self.label)
        return top

    def _pairs(self, target: dict, items: list[Any], pos: int, where: str) -> dict:
        if len(items) % 2:
            raise CorruptFile(f"{where} @ byte {pos}: an odd number of dict items", self.label)
        for key, value in zip(items[::2], items[1::2]):
            if not isinstance(key, (str, int, float, bool, type(None), bytes)):
                raise self.refuse(f"a dict key of type {type(key).__name__}", pos, where)
            target[key] = value
        return target

    def _storage(self, pid: Any, pos: int, where: str) -> _Storage:
        # zip: ('storage', type, key, location, numel); legacy: the same plus view metadata (None for plain storages)
        size = 6 if self.legacy else 5
        if (not isinstance(pid, tuple) or len(pid) != size or pid[0] != "storage"
                or not isinstance(pid[1], _Global) or pid[1].name not in STORAGE_DTYPES
                or not isinstance(pid[2], str) or not isinstance(pid[4], int) or isinstance(pid[4], bool)
                or pid[4] < 0 or (self.legacy and pid[5] is not None)):
            raise self.refuse("a persistent id that is not a plain storage", pos, where)
        storage = _Storage(pid[2], STORAGE_DTYPES[pid[1].name], pid[4])
        if self.storages.setdefault(storage.key, storage) != storage:
            raise CorruptFile(f"{where} @ byte {pos}: storage {storage.key!r} is described twice, differently",
                              self.label)
        return storage

    def _call(self, func: Any, args: Any, pos: int, where: str) -> Any:
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.refuse("a call of something that is not an allowed function", pos, where)
        if func.name == "collections.OrderedDict":
            if args:
                raise self.refuse("OrderedDict called with arguments", pos, where)
            return _OrderedDict()
        if func.name in ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor"):
            if len(args) < 4 or not isinstance(args[0], _Storage):
                raise self.refuse(f"{func.name} without a storage", pos, where)
            storage, offset, shape, stride = args[:4]
            if not (_ints(shape) and _ints(stride) and _ints((offset,))):
                raise CorruptFile(f"{where} @ byte {pos}: a tensor whose offset, size or stride is not integers",
                                  self.label)
            return _TensorRef(storage, offset, tuple(shape), tuple(stride))
        if func.name in ("torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state"):
            if not args or not isinstance(args[0], _TensorRef):
                raise self.refuse(f"{func.name} without a tensor", pos, where)
            return args[0]
        raise self.refuse(f"a call of {func.name}", pos, where)


def _ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)

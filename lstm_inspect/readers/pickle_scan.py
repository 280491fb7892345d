"""Find the callables a pickle would import and call — without unpickling it.

A pickle is a program: ``GLOBAL`` / ``STACK_GLOBAL`` / ``INST`` import any ``module.name`` and ``REDUCE`` / ``OBJ`` /
``NEWOBJ`` / ``BUILD`` call what they imported, so ``pickle.load`` runs whatever the file names (``os.system``,
``builtins.exec``). Here the opcode stream is only *disassembled* (`pickletools.genops` decodes opcodes and their
arguments; it executes nothing) under a byte and an opcode budget, and every imported name outside `SAFE_CALLABLES`
(torch's tensor and storage rebuild functions, numpy's array reconstruction, ``collections.OrderedDict``) is a
`CodeFinding` naming the callable, the pickle and the byte offset.

``STACK_GLOBAL`` takes its module and name from the stack, so a small stack model follows the string constants
through the stack and the memo (``BINPUT`` / ``BINGET`` / ``MEMOIZE``); a ``STACK_GLOBAL`` whose operands are not
string constants, an extension-registry code (``EXT1``...), a stream past the budgets, and a stream that cannot be
disassembled past some offset are findings too: what cannot be checked is not passed.
"""
from __future__ import annotations

import io
import pickletools
from dataclasses import dataclass
from typing import BinaryIO, Iterator

#: Bytes of one pickle stream that are disassembled at most (a state dict's pickle is ~70 bytes per tensor).
MAX_PICKLE_BYTES = 256 << 20
#: Opcodes of one pickle stream that are disassembled at most.
MAX_OPS = 5_000_000

_TORCH_STORAGES = ("Double", "Float", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool",
                   "ComplexFloat", "ComplexDouble", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4")
_TORCH_DTYPES = ("float16", "float32", "float64", "bfloat16", "half", "float", "double", "complex32", "complex64",
                 "complex128", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool",
                 "qint8", "quint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn", "float8_e5m2",
                 "float8_e4m3fnuz", "float8_e5m2fnuz")
_TORCH_REBUILDS = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                   "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
                   "_rebuild_nested_tensor", "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
                   "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor")

#: What a tensor / array pickle may import: the names torch.load(weights_only=True) accepts for plain tensors and
#: numpy's array reconstruction. ``torch.storage._load_from_bytes`` is *not* here: it calls a full torch.load.
SAFE_CALLABLES = frozenset({
    "collections.OrderedDict", "collections.Counter",
    "torch.Size", "torch.device", "torch.Tensor", "torch.nn.parameter.Parameter", "torch.serialization._get_layout",
    "torch._tensor._rebuild_from_type_v2", "torch.storage.TypedStorage", "torch.storage.UntypedStorage",
    "torch.per_tensor_affine", "torch.per_tensor_symmetric", "torch.per_channel_affine",
    "torch.per_channel_symmetric", "torch.per_channel_affine_float_qparams",
    "_codecs.encode", "builtins.bytearray", "builtins.set", "builtins.frozenset", "builtins.complex",
    "builtins.slice",
    "numpy.ndarray", "numpy.dtype", "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
    *(f"torch.{kind}Storage" for kind in _TORCH_STORAGES),
    *(f"torch.{dtype}" for dtype in _TORCH_DTYPES),
    *(f"torch._utils.{func}" for func in _TORCH_REBUILDS),
})

_STRING_OPS = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
                         "BINUNICODE8"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_MARK = object()
_UNKNOWN = object()


@dataclass(frozen=True)
class CodeFinding:
    """Code a file would run when loaded: where it is and what it names."""

    where: str
    """The pickle (``archive/data.pkl``, ``pickle 4 of the file``) and byte offset, or a JSON path in a config."""
    what: str
    """What was found: ``os.system``, or why the stream could not be checked."""
    layer: str = ""
    """The names of the layers the place sits in, ``/``-joined like a layer path (``encoder/td``); empty if none."""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass
class PickleScan:
    """The outcome of scanning one pickle stream."""

    findings: list[CodeFinding]
    globals: list[tuple[int, str]]
    """Every callable the stream imports, allowed or not, as (offset, ``module.name``)."""
    end: int
    """Offset just past the STOP opcode (where a following pickle would start), or where the scan stopped."""
    complete: bool
    """False when the stream ended early or could not be decoded (a corrupt file; the findings up to there stand)."""
    error: str | None = None


class Bounded(io.RawIOBase):
    """A read-only view of at most `limit` bytes of `base` from its current position (so a length field in the
    stream never makes a read allocate more than the budget)."""

    def __init__(self, base: BinaryIO, limit: int):
        self._base, self._left, self.exhausted, self.consumed = base, limit, False, 0

    def readable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.consumed

    def read(self, size: int = -1) -> bytes:  # type: ignore[override]
        if size is None or size < 0 or size > self._left:
            data = self._base.read(self._left + 1)  # one byte more tells a stream past the budget from its end
            self.exhausted = len(data) > self._left
            data = data[: self._left]
        else:
            data = self._base.read(size)
        self._left -= len(data)
        self.consumed += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:  # type: ignore[override]
        out = bytearray()
        while not out.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                break
            out += byte
        return bytes(out)


def scan(stream: BinaryIO, where: str, max_bytes: int = MAX_PICKLE_BYTES, max_ops: int = MAX_OPS) -> PickleScan:
    """Disassemble one pickle from `stream`'s position and report the callables it imports outside the allow-list.

    `where` names the pickle in findings (``archive/data.pkl``); offsets are relative to the stream's start position.
    """
    bounded = Bounded(stream, max_bytes)
    findings: list[CodeFinding] = []
    imported: list[tuple[int, str]] = []

    def found(pos: int, what: str) -> None:
        findings.append(CodeFinding(f"{where} @ byte {pos}", what))

    def imports(pos: int, name: str) -> None:
        imported.append((pos, name))
        if name not in SAFE_CALLABLES:
            found(pos, name)

    stack: list[object] = []
    memo: dict[int, object] = {}
    count, pos, protocol = 0, 0, 0
    try:
        for opcode, arg, pos in _genops(bounded):
            count += 1
            if count > max_ops:
                found(pos, f"more than {max_ops:,} opcodes: the rest of the pickle was not checked")
                return PickleScan(findings, imported, bounded.consumed, False, "opcode budget exhausted")
            name = opcode.name
            if name == "PROTO":
                protocol = arg
            if name == "GLOBAL" or name == "INST":
                module, _, attr = str(arg).partition(" ")
                imports(pos, _resolve(module, attr, protocol))
            elif name == "STACK_GLOBAL":
                attr = stack.pop() if stack else _UNKNOWN  # the name was pushed last
                module = stack.pop() if stack else _UNKNOWN
                if isinstance(module, str) and isinstance(attr, str):
                    imports(pos, _resolve(module, attr, protocol))
                else:
                    found(pos, "STACK_GLOBAL with a module or name that is not a string constant (not resolvable "
                               "without running the pickle)")
                stack.append(_UNKNOWN)
                continue
            elif name in ("EXT1", "EXT2", "EXT4"):
                found(pos, f"{name} {arg}: a callable from the loading process's copyreg extension registry")
            if name in _STRING_OPS:
                stack.append(arg if isinstance(arg, str) else arg.decode("latin-1") if isinstance(arg, bytes)
                             else _UNKNOWN)
            elif name in _PUT_OPS:
                memo[arg] = stack[-1] if stack else _UNKNOWN
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1] if stack else _UNKNOWN
            elif name in _GET_OPS:
                stack.append(memo.get(arg, _UNKNOWN))
            elif name == "DUP":
                stack.append(stack[-1] if stack else _UNKNOWN)
            elif name == "STOP":
                return PickleScan(findings, imported, bounded.consumed, True)
            else:
                _apply(opcode, stack)
    except Exception as exc:  # genops raises ValueError for truncated arguments and unknown opcodes, and more
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if bounded.exhausted:
            found(pos, f"pickle longer than {max_bytes:,} bytes: the rest was not checked")
        return PickleScan(findings, imported, bounded.consumed, False,
                          f"cannot disassemble the pickle past byte {pos}: {detail}")
    if bounded.exhausted:
        found(pos, f"pickle longer than {max_bytes:,} bytes: the rest was not checked")
    return PickleScan(findings, imported, bounded.consumed, False, "the pickle ends without a STOP opcode")


def scan_bytes(data: bytes, where: str, max_ops: int = MAX_OPS) -> PickleScan:
    return scan(io.BytesIO(data), where, max_bytes=len(data), max_ops=max_ops)


def _genops(stream: Bounded) -> Iterator[tuple[pickletools.OpcodeInfo, object, int]]:
    return pickletools.genops(stream)  # type: ignore[arg-type]


def _resolve(module: str, name: str, protocol: int) -> str:
    """``module.name`` as Python 3's unpickler imports it: below protocol 3 it maps Python 2 names
    (``__builtin__.exec`` is ``builtins.exec``, ``copy_reg`` is ``copyreg``) with `_compat_pickle`'s tables."""
    if protocol < 3:
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _apply(opcode: pickletools.OpcodeInfo, stack: list[object]) -> None:
    """Move the stack model by one opcode, from the opcode's documented stack effect (values become unknown)."""
    before, after = opcode.stack_before, opcode.stack_after
    if pickletools.markobject in before or (opcode.name == "POP" and stack and stack[-1] is _MARK):
        while stack and stack.pop() is not _MARK:
            pass
        below = before.index(pickletools.markobject) if pickletools.markobject in before else 0
        del stack[max(0, len(stack) - below):]
    else:
        del stack[max(0, len(stack) - len(before)):]
    for item in after:
        stack.append(_MARK if item is pickletools.markobject else _UNKNOWN)

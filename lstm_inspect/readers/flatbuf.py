"""A small, bounded reader of FlatBuffers tables, for TFLite's schema (no flatbuffers package, no generated code).

A FlatBuffer is read in place: a table starts with a signed offset back to its vtable (a list of uint16 field
offsets, 0 for an absent field); a field is either a scalar stored inline or a uint32 offset, relative to where it
is stored, to a table, a vector (uint32 length, then the elements) or a string (a vector of bytes). Every offset,
vtable and vector is checked to lie inside the buffer before it is read, so a hostile file can only make the
reader raise `FlatBufferError` (a ValueError); nesting is only as deep as the caller's schema walks.
"""
from __future__ import annotations

import struct

import numpy as np


class FlatBufferError(ValueError):
    """The bytes are not a valid FlatBuffer (an offset or length points outside the buffer)."""


class Table:
    """One table of `buf` at `pos`."""

    __slots__ = ("buf", "pos", "_vtable", "_vsize")

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = pos
        _need(buf, pos, 4, "table")
        (back,) = struct.unpack_from("<i", buf, pos)
        vtable = pos - back
        _need(buf, vtable, 4, "vtable")
        vsize, _ = struct.unpack_from("<HH", buf, vtable)
        if vsize < 4 or vsize % 2:
            raise FlatBufferError(f"vtable at {vtable} has an invalid size {vsize}")
        _need(buf, vtable, vsize, "vtable")
        self._vtable, self._vsize = vtable, vsize

    def _field(self, index: int) -> int:
        """The absolute position of field `index`, or 0 when it is absent."""
        slot = 4 + 2 * index
        if slot + 2 > self._vsize:
            return 0
        (offset,) = struct.unpack_from("<H", self.buf, self._vtable + slot)
        return self.pos + offset if offset else 0

    def scalar(self, index: int, fmt: str, default: int | float | bool = 0) -> int | float | bool:
        at = self._field(index)
        if not at:
            return default
        _need(self.buf, at, struct.calcsize(fmt), "scalar field")
        return struct.unpack_from("<" + fmt, self.buf, at)[0]

    def _target(self, index: int) -> int:
        at = self._field(index)
        if not at:
            return 0
        _need(self.buf, at, 4, "offset field")
        (rel,) = struct.unpack_from("<I", self.buf, at)
        target = at + rel
        _need(self.buf, target, 4, "offset target")
        return target

    def table(self, index: int) -> "Table | None":
        target = self._target(index)
        return Table(self.buf, target) if target else None

    def _vector(self, index: int, item: int) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        target = self._target(index)
        if not target:
            return 0, 0
        (length,) = struct.unpack_from("<I", self.buf, target)
        _need(self.buf, target + 4, length * item, "vector")
        return target + 4, length

    def tables(self, index: int) -> list["Table"]:
        start, length = self._vector(index, 4)
        out = []
        for i in range(length):
            at = start + 4 * i
            (rel,) = struct.unpack_from("<I", self.buf, at)
            out.append(Table(self.buf, at + rel))
        return out

    def array(self, index: int, dtype: str) -> np.ndarray:
        """A vector of scalars as a numpy array (a view of the buffer)."""
        item = np.dtype(dtype).itemsize
        start, length = self._vector(index, item)
        return np.frombuffer(self.buf, dtype=dtype, count=length, offset=start) if length else np.zeros(0, dtype)

    def string(self, index: int) -> str:
        start, length = self._vector(index, 1)
        return bytes(self.buf[start:start + length]).decode("utf-8", errors="replace") if length else ""


def _need(buf: bytes, pos: int, size: int, what: str) -> None:
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise FlatBufferError(f"{what} at {pos} ({size} bytes) lies outside the {len(buf):,}-byte buffer")


def root(buf: bytes) -> Table:
    _need(buf, 0, 8, "root offset")
    (offset,) = struct.unpack_from("<I", buf, 0)
    return Table(buf, offset)

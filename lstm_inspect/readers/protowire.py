"""A small, bounded decoder of the protobuf wire format, for the few TensorFlow messages lstm-inspect reads
(``BundleEntryProto``, ``TrackableObjectGraph``, ``SavedMetadata``) without the protobuf package.

It decodes one message level at a time into field number -> values; the caller knows its schema and decodes a
nested message only by asking for it, so nesting depth is the schema's, never the file's. Every length is checked
against the bytes left, varints are at most 10 bytes, groups (wire types 3 and 4, deprecated) are refused, and
any problem raises `ProtoError` (a ValueError) with one line saying what is wrong.
"""
from __future__ import annotations

import struct

#: Wire types: varint, 64-bit, length-delimited, 32-bit.
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
#: No message lstm-inspect reads needs more fields than this at one level; a bound against quadratic work.
MAX_FIELDS = 1_000_000


class ProtoError(ValueError):
    """The bytes are not a valid protobuf message (truncated, bad wire type, length past the end)."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, next position); at most 10 bytes, as protobuf writes them."""
    result = shift = 0
    end = len(data)
    for _ in range(10):
        if pos >= end:
            raise ProtoError("varint runs past the end of the data")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result & 0xFFFFFFFFFFFFFFFF, pos
        shift += 7
    raise ProtoError("varint longer than 10 bytes")


class Message:
    """One message's fields: ``fields[number]`` is the list of its values in file order (int for varint and fixed
    fields, bytes for length-delimited ones)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self.fields: dict[int, list[int | bytes]] = {}
        pos, end, count = 0, len(data), 0
        view = memoryview(data)
        while pos < end:
            count += 1
            if count > MAX_FIELDS:
                raise ProtoError(f"more than {MAX_FIELDS:,} fields in one message")
            key, pos = read_varint(view, pos)
            number, wire = key >> 3, key & 7
            if number == 0 or number > 0x1FFFFFFF:
                raise ProtoError(f"invalid field number {number}")
            value: int | bytes
            if wire == VARINT:
                value, pos = read_varint(view, pos)
            elif wire == FIXED64:
                if pos + 8 > end:
                    raise ProtoError("64-bit field runs past the end of the data")
                (value,) = struct.unpack_from("<Q", view, pos)
                pos += 8
            elif wire == FIXED32:
                if pos + 4 > end:
                    raise ProtoError("32-bit field runs past the end of the data")
                (value,) = struct.unpack_from("<I", view, pos)
                pos += 4
            elif wire == LENGTH:
                length, pos = read_varint(view, pos)
                if length > end - pos:
                    raise ProtoError(f"field {number} declares {length:,} bytes but {end - pos:,} remain")
                value = bytes(view[pos:pos + length])
                pos += length
            else:
                raise ProtoError(f"unsupported wire type {wire} (field {number})")
            self.fields.setdefault(number, []).append(value)

    def int(self, number: int, default: int = 0) -> int:
        """A scalar integer field (the last value wins, as in protobuf); must not be length-delimited."""
        values = self.fields.get(number)
        if not values:
            return default
        value = values[-1]
        if isinstance(value, bytes):
            raise ProtoError(f"field {number} should be an integer but is length-delimited")
        return value

    def signed(self, number: int, default: int = 0) -> int:
        """An int32 / int64 field: two's complement of the 64-bit varint."""
        value = self.int(number, default)
        return value - (1 << 64) if value >= 1 << 63 else value

    def ints(self, number: int) -> list[int]:
        """A repeated integer field, packed (one length-delimited run of varints) or not."""
        out: list[int] = []
        for value in self.fields.get(number, []):
            if isinstance(value, bytes):
                pos = 0
                while pos < len(value):
                    item, pos = read_varint(value, pos)
                    out.append(item)
            else:
                out.append(value)
        return out

    def bytes(self, number: int, default: bytes = b"") -> bytes:
        values = self.fields.get(number)
        if not values:
            return default
        value = values[-1]
        if not isinstance(value, bytes):
            raise ProtoError(f"field {number} should be length-delimited but is an integer")
        return value

    def text(self, number: int, default: str = "") -> str:
        raw = self.bytes(number, default.encode())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtoError(f"field {number} is not valid UTF-8") from exc

    def message(self, number: int) -> "Message":
        """A nested message field (empty when absent)."""
        return Message(self.bytes(number))

    def messages(self, number: int) -> list["Message"]:
        out = []
        for value in self.fields.get(number, []):
            if not isinstance(value, bytes):
                raise ProtoError(f"field {number} should be a message but is an integer")
            out.append(Message(value))
        return out

    def has(self, number: int) -> bool:
        return number in self.fields

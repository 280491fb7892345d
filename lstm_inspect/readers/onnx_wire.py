"""An ONNX file read without holding it: a walk of its protobuf wire format that copies everything except the large
tensor payloads into a small *skeleton* (which onnx then parses as usual), and records where each payload lies.

The walk follows only the fields of onnx.proto that can lead to a TensorProto — ModelProto.graph / training_info /
functions, GraphProto.node / initializer / sparse_initializer, NodeProto.attribute, AttributeProto.t / g / tensors /
graphs / sparse_tensor(s), SparseTensorProto.values / indices, TrainingInfoProto's graphs, FunctionProto.node /
attribute_proto — and copies any other field, and any message too small to hold a large payload, byte for byte. A TensorProto's
``raw_data`` of at least `LAZY_BYTES` (or its one packed ``float_data`` / ``double_data`` run, for FLOAT / DOUBLE)
becomes a 24-byte marker in ``raw_data``: a nonce drawn for this read (a file cannot forge it) and the payload's
index in `Skeleton.payloads`, ``(offset, length)`` in the file. Reading a tensor then reads those bytes, or maps
them a row chunk at a time (`model.Tensor._mapped`).

Bounded and strict: the file is read through a small window (the payloads are never read here); every length is
checked against the end of the message holding it; varints are at most 10 bytes; groups are refused; subgraphs
nest at most `onnx_fold.MAX_SUBGRAPH_DEPTH` deep; a field that may appear once appearing twice on the walked path
(a second message protobuf would merge into the first) is refused. Every problem is one line.
"""
from __future__ import annotations

import os
import struct
from typing import Iterator

from ..errors import CorruptFile, UnsafeFile
from .protowire import FIXED32, FIXED64, LENGTH, VARINT, ProtoError

#: Payloads at least this large stay in the file (smaller tensors are copied into the skeleton).
LAZY_BYTES = 4096
#: Bytes read at a time while walking the tags and lengths.
WINDOW_BYTES = 1 << 16
NONCE_BYTES = 16
MARKER_BYTES = NONCE_BYTES + 8

#: The fields followed (onnx.proto numbers; tests/test_onnx_wire.py checks them against the installed onnx):
#: message -> {field number: the message it holds}.
SCHEMA: dict[str, dict[int, str]] = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "function": {7: "node", 11: "attribute"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {},
}
#: The followed fields that may appear only once in their message (protobuf would merge a second copy).
SINGULAR = {"model": {7}, "training": {1, 2}, "attribute": {5, 6, 22}, "sparse": {1, 2}}
#: TensorProto fields: data_type, float_data, raw_data, double_data; the data types whose packed values equal raw_data.
DATA_TYPE, FLOAT_DATA, RAW_DATA, DOUBLE_DATA = 2, 4, 9, 10
PACKED_AS_RAW = {FLOAT_DATA: (1, 4), DOUBLE_DATA: (11, 8)}
FIELD_NAMES = {RAW_DATA: "raw_data", FLOAT_DATA: "float_data", DOUBLE_DATA: "double_data"}


class Skeleton:
    """The skeleton's bytes and where each payload left out of it lies in the file."""

    def __init__(self, data: bytes, nonce: bytes, payloads: list[tuple[int, int, str]]) -> None:
        self.data, self.nonce = data, nonce
        self.payloads = payloads
        """``(offset, length, field)``: field is ``raw_data``, ``float_data`` or ``double_data``."""

    def payload(self, raw_data: bytes) -> tuple[int, int, str] | None:
        """The payload a TensorProto's ``raw_data`` marks, or None when it holds its own bytes."""
        if len(raw_data) != MARKER_BYTES or raw_data[:NONCE_BYTES] != self.nonce:
            return None
        (index,) = struct.unpack_from("<Q", raw_data, NONCE_BYTES)
        return self.payloads[index]


def skeleton(fd: int, label: str, max_subgraph_depth: int) -> Skeleton:
    """Walk the ONNX file open as `fd`; a one-line `CorruptFile` / `UnsafeFile` when its wire format is broken."""
    size = os.fstat(fd).st_size
    walker = _Walker(fd, size, label, max_subgraph_depth)
    try:
        data = walker.message("model", 0, size, 0)
    except ProtoError as exc:
        raise CorruptFile(f"not a readable ONNX model: {exc}", label) from None
    except OSError as exc:
        raise CorruptFile(f"cannot read: {exc.strerror or exc}", label) from None
    return Skeleton(bytes(data), walker.nonce, walker.payloads)


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


class _Walker:
    def __init__(self, fd: int, size: int, label: str, max_subgraph_depth: int) -> None:
        self.fd, self.size, self.label, self.max_graphs = fd, size, label, max_subgraph_depth
        self.nonce = os.urandom(NONCE_BYTES)
        self.payloads: list[tuple[int, int, str]] = []
        self.window, self.base = b"", 0

    def read(self, pos: int, length: int) -> bytes:
        data = os.pread(self.fd, length, pos)
        if len(data) != length:
            raise ProtoError(f"the file ends at byte {pos + len(data):,}, inside a field (truncated while read?)")
        return data

    def varint(self, pos: int, end: int) -> tuple[int, int]:
        """(value, next position) of the varint at `pos`, which must end before `end`."""
        if pos < self.base or min(pos + 10, self.size) > self.base + len(self.window):
            self.window, self.base = os.pread(self.fd, WINDOW_BYTES, pos), pos
        result = shift = 0
        at = pos - self.base
        for count in range(10):
            if pos + count >= end:
                raise ProtoError(f"a varint runs past the end of its message at byte {pos:,}")
            if at + count >= len(self.window):
                raise ProtoError(f"the file ends at byte {pos + count:,}, inside a varint (truncated while read?)")
            byte = self.window[at + count]
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result & 0xFFFFFFFFFFFFFFFF, pos + count + 1
            shift += 7
        raise ProtoError(f"a varint longer than 10 bytes at byte {pos:,}")

    def fields(self, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
        """``(number, wire type, start of the field's tag, start of its value, end of the field)`` of one message
        in file order, bounds checked (a generator: a graph of a million nodes is not listed)."""
        pos = start
        while pos < end:
            tag_start = pos
            key, pos = self.varint(pos, end)
            number, wire = key >> 3, key & 7
            if number == 0 or number > 0x1FFFFFFF:
                raise ProtoError(f"invalid field number {number} at byte {tag_start:,}")
            value_start = pos
            if wire == VARINT:
                _, pos = self.varint(pos, end)
            elif wire in (FIXED64, FIXED32):
                pos += 8 if wire == FIXED64 else 4
            elif wire == LENGTH:
                length, value_start = self.varint(pos, end)
                pos = value_start + length
            else:
                raise ProtoError(f"unsupported wire type {wire} (field {number}) at byte {tag_start:,}")
            if pos > end:
                raise ProtoError(f"field {number} at byte {tag_start:,} runs {pos - end:,} bytes past the end of "
                                 "its message")
            yield number, wire, tag_start, value_start, pos

    def message(self, kind: str, start: int, end: int, graphs: int) -> bytearray:
        """The skeleton of the `kind` message stored at [start, end)."""
        if kind == "graph":
            graphs += 1
            if graphs > self.max_graphs + 1:  # the main graph, then subgraphs as deep as onnx_fold.all_nodes reads
                raise UnsafeFile(f"ONNX subgraphs nested deeper than {self.max_graphs}; not read", self.label)
        if kind == "tensor":
            return self.tensor(start, end)
        children, singular, seen = SCHEMA[kind], SINGULAR.get(kind, set()), set()
        out, copied = bytearray(), start  # bytes [copied, tag start) are still to be copied as they are
        for number, wire, tag_start, value_start, field_end in self.fields(start, end):
            if number in singular and wire == LENGTH:
                if number in seen:
                    raise UnsafeFile(f"ONNX {kind} message at byte {start:,} holds field {number}, which may appear "
                                     f"once, twice (again at byte {tag_start:,}); refusing what protobuf would merge",
                                     self.label)
                seen.add(number)
            child = children.get(number) if wire == LENGTH else None
            if child is None or field_end - value_start < LAZY_BYTES:
                continue  # copied with its neighbours
            out += self.read(copied, tag_start - copied) if tag_start > copied else b""
            body = self.message(child, value_start, field_end, graphs)
            out += _varint_bytes(number << 3 | LENGTH) + _varint_bytes(len(body)) + body
            copied = field_end
        out += self.read(copied, end - copied) if end > copied else b""
        return out

    def tensor(self, start: int, end: int) -> bytearray:
        """A TensorProto's skeleton: its large ``raw_data`` (or single packed float / double run) as a marker. A first
        pass finds the data type (it may follow the values) and which value fields are there."""
        data_type, has_raw, runs = 0, False, {FLOAT_DATA: 0, DOUBLE_DATA: 0}
        for number, wire, _, value_start, _ in self.fields(start, end):
            if number == DATA_TYPE and wire == VARINT:
                data_type, _ = self.varint(value_start, end)  # the last one counts, as in protobuf
            has_raw = has_raw or number == RAW_DATA and wire == LENGTH
            if number in runs:
                runs[number] += 1 if wire == LENGTH else 2  # unpacked values: never one run
        packed = next((number for number, (wanted, _) in PACKED_AS_RAW.items()
                       if not has_raw and data_type == wanted and runs[number] == 1), None)
        out, copied = bytearray(), start
        for number, wire, tag_start, value_start, field_end in self.fields(start, end):
            length = field_end - value_start
            if wire != LENGTH or number not in (RAW_DATA, packed) or length < LAZY_BYTES:
                continue
            if number != RAW_DATA and length % PACKED_AS_RAW[number][1]:
                raise ProtoError(f"packed field {number} at byte {tag_start:,} holds {length:,} bytes, not whole "
                                 f"{PACKED_AS_RAW[number][1]}-byte values")
            out += self.read(copied, tag_start - copied) if tag_start > copied else b""
            self.payloads.append((value_start, length, FIELD_NAMES[number]))
            marker = self.nonce + struct.pack("<Q", len(self.payloads) - 1)
            out += _varint_bytes(RAW_DATA << 3 | LENGTH) + _varint_bytes(MARKER_BYTES) + marker
            copied = field_end
        out += self.read(copied, end - copied) if end > copied else b""
        return out

"""TensorFlow's tensor bundle — the storage of TF1 checkpoints, TF2 checkpoints and a SavedModel's ``variables/`` —
read without TensorFlow.

``<prefix>.index`` is a LevelDB-style table (an SSTable): a 48-byte footer with the handles of the metaindex and
index blocks and the magic ``0xdb4775248b80fb57``; the index block maps the last key of each data block to that
block's handle; each block holds prefix-compressed entries (shared / unshared key length, value length as varints)
and a restart array, and is followed by a compression-type byte and a masked CRC-32C. The empty key holds a
``BundleHeaderProto`` (num_shards, endianness, version); every other key is a tensor name whose value is a
``BundleEntryProto`` (dtype, shape, shard_id, offset, size, masked crc32c, slices). The bytes live in
``<prefix>.data-NNNNN-of-NNNNN``: raw little-endian for numbers; for strings, varint lengths, a masked CRC of them,
then the bytes.

Guards: the index is read whole only below `MAX_INDEX_BYTES`; every block handle lies inside the index and every
block's CRC is checked; keys must be strictly increasing (no tensor stored twice); shard names are built from the
prefix alone (``.data-%05d-of-%05d``), must be regular files in the prefix's directory (not symbolic links), and
are at most `MAX_SHARDS`; every tensor's offset and size lie inside its shard, and its size equals dtype × shape;
the CRC-32C TensorFlow stored for each tensor is checked against the bytes read, every time they are read.
Compressed blocks (TensorFlow never writes them for bundles), big-endian bundles and partitioned (sliced)
variables are refused or listed, not guessed.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import CorruptFile, InspectError, UnsafeFile, UnsupportedFile
from ..model import element_count
from . import crc32c
from .protowire import Message, ProtoError, read_varint

TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
FOOTER_BYTES = 48
MAX_INDEX_BYTES = 256 << 20
MAX_SHARDS = 100_000
MAX_DIMS = 64

#: TensorFlow DataType enum -> (name, numpy dtype of the stored bytes). bfloat16 is widened to float32 when read.
DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"), 2: ("float64", "<f8"), 3: ("int32", "<i4"), 4: ("uint8", "u1"), 5: ("int16", "<i2"),
    6: ("int8", "i1"), 8: ("complex64", "<c8"), 9: ("int64", "<i8"), 10: ("bool", "u1"), 14: ("bfloat16", "<u2"),
    17: ("uint16", "<u2"), 18: ("complex128", "<c16"), 19: ("float16", "<f2"), 22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}
#: Types listed but never read as arrays.
OTHER_DTYPES = {7: "string", 11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16", 20: "resource",
                21: "variant"}


@dataclass
class Entry:
    """One tensor as the index describes it."""

    name: str
    dtype: str
    dtype_code: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int  # masked, as stored
    slices: int  # > 0: a partitioned variable whose data sits in slice entries

    @property
    def readable(self) -> bool:
        return self.dtype_code in DTYPES


def shard_name(prefix: str, shard: int, count: int) -> str:
    return f"{prefix}.data-{shard:05d}-of-{count:05d}"


def _open_regular(path: str, what: str, label: str) -> tuple[int, os.stat_result]:
    """`path` opened once without following a symbolic link (O_NOFOLLOW), checked on the handle to be a regular
    file: (descriptor, its fstat). The caller closes the descriptor."""
    from . import safe_open

    try:
        os.lstat(path)
    except FileNotFoundError:
        raise CorruptFile(f"missing {what} {os.path.basename(path)!r} beside the index", label) from None
    except OSError as exc:
        raise CorruptFile(f"cannot read {what} {os.path.basename(path)!r}: {exc.strerror or exc}", label) from exc
    name = os.path.basename(path)
    try:
        fd = safe_open.open_regular(path, path, follow=False)
    except UnsafeFile as exc:  # "the file is a symbolic link..." / "...is not a regular file (a FIFO)..."
        raise UnsafeFile(f"{what} {name!r}{exc.message.removeprefix('the file')}", label) from None
    except InspectError as exc:
        raise CorruptFile(f"{what} {name!r}: {exc.message}", label) from None
    return fd, os.fstat(fd)


def _read_all(fd: int, size: int, offset: int = 0) -> bytes:
    """Up to `size` bytes at `offset` of the open file `fd` (fewer only at its end)."""
    chunks, total = [], 0
    while total < size:
        chunk = os.pread(fd, min(size - total, 64 << 20), offset + total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


#: Data shards kept open at once; past this, a shard is reopened when read and must be the very file checked.
OPEN_SHARDS = 64


class Bundle:
    """The tensors of one bundle (``prefix.index`` + its shards); data is read on demand, CRC-checked."""

    def __init__(self, prefix: str, label: str) -> None:
        self.prefix = prefix
        self.label = label
        self._shards: dict[int, int] = {}  # shard id -> open descriptor
        self._identity: list[tuple[int, int, int]] = []  # (device, inode, size) of each shard as checked
        index_path = prefix + ".index"
        fd, info = _open_regular(index_path, "index file", label)
        try:
            size = info.st_size
            if size < FOOTER_BYTES:
                raise CorruptFile("checkpoint index shorter than its 48-byte footer", label)
            if size > MAX_INDEX_BYTES:
                raise UnsupportedFile(f"checkpoint index of {size:,} bytes (more than {MAX_INDEX_BYTES:,}); refusing "
                                      "it", label)
            self._index = _read_all(fd, size + 1)
        finally:
            os.close(fd)
        if len(self._index) != size:
            raise CorruptFile("checkpoint index changed size while being read", label)
        raw = self._table()
        if b"" not in raw:
            raise CorruptFile("checkpoint index has no header entry (the empty key)", label)
        try:
            header = Message(raw.pop(b""))
            self.num_shards = header.signed(1, 1)
            endianness = header.int(2, 0)
            self.producer = header.message(3).signed(1, 0)
        except ProtoError as exc:
            raise CorruptFile(f"checkpoint header is not a valid BundleHeaderProto: {exc}", label) from exc
        if endianness != 0:
            raise UnsupportedFile("a big-endian tensor bundle; only little-endian ones are read", label)
        if not 1 <= self.num_shards <= MAX_SHARDS:
            raise CorruptFile(f"checkpoint header declares {self.num_shards} data shards", label)
        try:
            for shard in range(self.num_shards):  # each opened once (no link followed), checked on the handle
                fd, info = _open_regular(shard_name(prefix, shard, self.num_shards), "data shard", label)
                self._identity.append((info.st_dev, info.st_ino, info.st_size))
                if len(self._shards) < OPEN_SHARDS:
                    self._shards[shard] = fd
                else:
                    os.close(fd)
        except BaseException:
            self.close()
            raise
        self.shard_sizes = [size for _, _, size in self._identity]
        self.entries: dict[str, Entry] = {}
        self.slices: dict[str, list[tuple[tuple[tuple[int, int], ...], Entry]]] = {}
        for key, value in raw.items():
            if key.startswith(b"\0"):  # a slice of a partitioned variable, under an encoded key: read with it
                try:
                    name, extents = decode_slice_key(key)
                except ProtoError as exc:
                    raise CorruptFile(f"checkpoint index: broken slice key {key[:40]!r}: {exc}", label) from exc
                self.slices.setdefault(name, []).append((extents, self._entry(key, value, name)))
                continue
            entry = self._entry(key, value)
            self.entries[entry.name] = entry

    # -- the table -----------------------------------------------------------------------------------------------

    def _block(self, handle: tuple[int, int], what: str) -> bytes:
        offset, size = handle
        if offset + size + 5 > len(self._index):
            raise CorruptFile(f"checkpoint index: {what} block [{offset:,}, +{size:,}] runs past the end of the file",
                              self.label)
        block = self._index[offset:offset + size]
        kind = self._index[offset + size]
        (stored,) = struct.unpack_from("<I", self._index, offset + size + 1)
        if crc32c.unmask(stored) != crc32c.crc32c(self._index[offset:offset + size + 1]):
            raise CorruptFile(f"checkpoint index: {what} block at {offset:,} fails its CRC-32C check", self.label)
        if kind == 1:
            raise UnsupportedFile("checkpoint index block is snappy-compressed; lstm-inspect reads uncompressed "
                                  "tables only (what TensorFlow writes for checkpoints)", self.label)
        if kind != 0:
            raise CorruptFile(f"checkpoint index block has unknown compression type {kind}", self.label)
        return block

    def _entries(self, block: bytes, what: str) -> list[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise CorruptFile(f"checkpoint index: {what} block shorter than its restart count", self.label)
        (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
        limit = len(block) - 4 - 4 * restarts
        if restarts < 1 or limit < 0:
            raise CorruptFile(f"checkpoint index: {what} block declares {restarts:,} restart points", self.label)
        out: list[tuple[bytes, bytes]] = []
        key, pos = b"", 0
        try:
            while pos < limit:
                shared, pos = read_varint(block, pos)
                unshared, pos = read_varint(block, pos)
                length, pos = read_varint(block, pos)
                if shared > len(key) or pos + unshared + length > limit:
                    raise ProtoError("entry runs past the block")
                key = key[:shared] + block[pos:pos + unshared]
                pos += unshared
                out.append((key, block[pos:pos + length]))
                pos += length
        except ProtoError as exc:
            raise CorruptFile(f"checkpoint index: broken {what} block: {exc}", self.label) from exc
        return out

    def _handle(self, data: bytes, pos: int = 0) -> tuple[tuple[int, int], int]:
        try:
            offset, pos = read_varint(data, pos)
            size, pos = read_varint(data, pos)
        except ProtoError as exc:
            raise CorruptFile(f"checkpoint index: broken block handle: {exc}", self.label) from exc
        return (offset, size), pos

    def _table(self) -> dict[bytes, bytes]:
        footer = self._index[-FOOTER_BYTES:]
        if footer[-8:] != TABLE_MAGIC:
            raise CorruptFile("checkpoint index does not end in the table magic (truncated?)", self.label)
        _, pos = self._handle(footer)  # the metaindex block: empty in bundles, not needed
        index_handle, _ = self._handle(footer, pos)
        table: dict[bytes, bytes] = {}
        last: bytes | None = None
        for _, value in self._entries(self._block(index_handle, "index"), "index"):
            handle, _ = self._handle(value)
            for key, entry in self._entries(self._block(handle, "data"), "data"):
                if last is not None and key <= last:
                    raise CorruptFile(f"checkpoint index: key {key[:80]!r} out of order or stored twice", self.label)
                table[key] = entry
                last = key
        return table

    # -- entries -------------------------------------------------------------------------------------------------

    def _entry(self, key: bytes, value: bytes, slice_of: str | None = None) -> Entry:
        try:
            name = key.decode("utf-8") if slice_of is None else f"{slice_of} (slice)"
        except UnicodeDecodeError:
            raise CorruptFile(f"checkpoint index: tensor name {key[:80]!r} is not UTF-8", self.label) from None
        try:
            proto = Message(value)
            code = proto.int(1)
            shape_proto = proto.message(2)
            dims = [d.signed(1) for d in shape_proto.messages(2)]
            entry = Entry(name=name, dtype_code=code,
                          dtype=DTYPES.get(code, (OTHER_DTYPES.get(code, f"dtype {code}"), ""))[0],
                          shape=tuple(dims), shard_id=proto.signed(3), offset=proto.signed(4), size=proto.signed(5),
                          crc32c=proto.int(6), slices=len(proto.fields.get(7, [])))
        except ProtoError as exc:
            raise CorruptFile(f"checkpoint entry {name!r} is not a valid BundleEntryProto: {exc}", self.label) from exc
        if shape_proto.int(3, 0) or len(dims) > MAX_DIMS or any(d < 0 for d in dims):
            raise CorruptFile(f"checkpoint entry {name!r} has an invalid shape {dims[:8]}", self.label)
        if entry.slices:
            return entry  # its bytes are in the slice entries
        if not 0 <= entry.shard_id < self.num_shards:
            raise CorruptFile(f"checkpoint entry {name!r} names data shard {entry.shard_id} of {self.num_shards}",
                              self.label)
        shard = self.shard_sizes[entry.shard_id]
        if entry.offset < 0 or entry.size < 0 or entry.offset + entry.size > shard:
            raise CorruptFile(f"checkpoint entry {name!r}: bytes [{entry.offset:,}, +{entry.size:,}] lie outside "
                              f"its data shard ({shard:,} bytes)", self.label)
        if code in DTYPES:
            expected = element_count(dims) * np.dtype(DTYPES[code][1]).itemsize  # exact, unlike a float product
            if expected != entry.size:
                raise CorruptFile(f"checkpoint entry {name!r}: {entry.dtype} {tuple(dims)} needs {expected:,} bytes "
                                  f"but {entry.size:,} are stored", self.label)
        return entry

    # -- data ----------------------------------------------------------------------------------------------------

    def _shard(self, shard: int) -> int:
        """The open descriptor of a data shard. One closed to bound the open files is reopened without following a
        link and must be the very file checked when the bundle was opened (same device, inode and size)."""
        fd = self._shards.get(shard)
        if fd is not None:
            return fd
        path = shard_name(self.prefix, shard, self.num_shards)
        fd, info = _open_regular(path, "data shard", self.label)
        if (info.st_dev, info.st_ino, info.st_size) != self._identity[shard]:
            os.close(fd)
            raise UnsafeFile(f"data shard {os.path.basename(path)!r} was replaced since the checkpoint was opened; "
                             "refusing it", self.label)
        while len(self._shards) >= max(OPEN_SHARDS, 1):  # the oldest opened goes
            os.close(self._shards.pop(next(iter(self._shards))))
        self._shards[shard] = fd
        return fd

    def close(self) -> None:
        """Close the data shards' descriptors (the model's closers call this)."""
        shards, self._shards = getattr(self, "_shards", {}), {}
        for fd in shards.values():
            os.close(fd)

    def __del__(self) -> None:
        self.close()

    def _bytes(self, entry: Entry, check: bool = True) -> bytes:
        path = shard_name(self.prefix, entry.shard_id, self.num_shards)
        data = _read_all(self._shard(entry.shard_id), entry.size, entry.offset)
        if len(data) != entry.size:
            raise CorruptFile(f"data shard {os.path.basename(path)!r} ends before tensor {entry.name!r}", self.label)
        if check and crc32c.crc32c(data) != crc32c.unmask(entry.crc32c):
            raise CorruptFile(f"tensor {entry.name!r} fails its CRC-32C check (corrupt data shard)", self.label)
        return data

    def read(self, name: str) -> np.ndarray:
        """A numeric tensor as a numpy array (bfloat16 widened to float32, bool as bool)."""
        entry = self.entries[name]
        if entry.slices:
            return self._read_sliced(entry)
        if entry.dtype_code not in DTYPES:
            raise UnsupportedFile(f"{name!r} holds {entry.dtype} values, which are not read as arrays", self.label)
        array = np.frombuffer(self._bytes(entry), dtype=DTYPES[entry.dtype_code][1]).reshape(entry.shape)
        if entry.dtype == "bfloat16":
            return (array.astype(np.uint32) << 16).view(np.float32)
        if entry.dtype == "bool":
            return array != 0
        return array.astype(array.dtype.newbyteorder("="))

    def _read_sliced(self, entry: Entry) -> np.ndarray:
        """A partitioned variable (TF1 partitioners, TF2's experimental_sharding_callback): its slices, each a
        tensor of its own under an encoded key, put together; they must cover every element exactly once."""
        parts = self.slices.get(entry.name, [])
        if entry.dtype_code not in DTYPES or len(parts) != entry.slices:
            raise CorruptFile(f"{entry.name!r}: {entry.slices} slices declared, {len(parts)} stored", self.label)
        out = np.zeros(entry.shape, dtype=DTYPES[entry.dtype_code][1])
        covered = np.zeros(entry.shape, dtype=np.uint8)
        for extents, part in parts:
            if len(extents) != len(entry.shape) or part.dtype_code != entry.dtype_code:
                raise CorruptFile(f"{entry.name!r}: a slice does not match the variable", self.label)
            where = tuple(slice(0, dim) if length < 0 else slice(start, start + length)
                          for (start, length), dim in zip(extents, entry.shape))
            shape = tuple(len(range(dim)[w]) for w, dim in zip(where, entry.shape))
            if part.shape != shape or any(s < 0 or (n >= 0 and s + n > d)
                                          for (s, n), d in zip(extents, entry.shape)):
                raise CorruptFile(f"{entry.name!r}: a slice {extents} does not fit {entry.shape}", self.label)
            out[where] = np.frombuffer(self._bytes(part), dtype=DTYPES[part.dtype_code][1]).reshape(shape)
            covered[where] += 1
        if not (covered == 1).all():
            raise CorruptFile(f"{entry.name!r}: its slices do not cover it exactly once", self.label)
        if entry.dtype == "bfloat16":
            return (out.astype(np.uint32) << 16).view(np.float32)
        return out != 0 if entry.dtype == "bool" else out.astype(out.dtype.newbyteorder("="))

    def read_strings(self, name: str) -> list[bytes]:
        """A string tensor's elements (e.g. the serialized object graph of a TF2 checkpoint)."""
        entry = self.entries[name]
        if entry.dtype != "string" or entry.slices:
            raise UnsupportedFile(f"{name!r} is not a string tensor", self.label)
        count = element_count(entry.shape)
        data = self._bytes(entry, check=False)  # TensorFlow's CRC covers the lengths as uint32, not as varints
        lengths, pos = [], 0
        try:
            for _ in range(count):
                length, pos = read_varint(data, pos)
                lengths.append(length)
        except ProtoError as exc:
            raise CorruptFile(f"string tensor {name!r}: broken lengths: {exc}", self.label) from exc
        if any(length >= 1 << 32 for length in lengths) or pos + 4 + sum(lengths) != len(data):
            raise CorruptFile(f"string tensor {name!r}: its lengths do not add up to its {len(data):,} bytes",
                              self.label)
        as_uint32 = np.asarray(lengths, dtype="<u4").tobytes()
        (stored,) = struct.unpack_from("<I", data, pos)
        if crc32c.unmask(stored) != crc32c.crc32c(as_uint32):
            raise CorruptFile(f"string tensor {name!r}: its lengths fail their CRC-32C check", self.label)
        if crc32c.crc32c(as_uint32 + data[pos:]) != crc32c.unmask(entry.crc32c):
            raise CorruptFile(f"tensor {name!r} fails its CRC-32C check (corrupt data shard)", self.label)
        pos += 4
        out = []
        for length in lengths:
            out.append(data[pos:pos + length])
            pos += length
        return out


_HEADER_BITS = {1: (0x80, 0), 2: (0xC0, 0), 3: (0xE0, 0), 4: (0xF0, 0), 5: (0xF8, 0), 6: (0xFC, 0), 7: (0xFE, 0),
                8: (0xFF, 0), 9: (0xFF, 0x80), 10: (0xFF, 0xC0)}


def decode_slice_key(key: bytes) -> tuple[str, tuple[tuple[int, int], ...]]:
    """(variable name, ((start, length) per dimension; length -1: all of it)) from TensorFlow's slice key:
    OrderedCode's NumIncreasing(0), String(name), NumIncreasing(rank), then SignedNumIncreasing start and length."""
    pos = 0

    def number() -> int:
        nonlocal pos
        size = key[pos] if pos < len(key) else -1
        if not 0 <= size <= 8 or pos + 1 + size > len(key):
            raise ProtoError("bad unsigned number")
        value = int.from_bytes(key[pos + 1:pos + 1 + size], "big")
        pos += 1 + size
        return value

    def signed() -> int:
        nonlocal pos
        if pos >= len(key):
            raise ProtoError("runs past the end")
        pair = (key[pos] << 8) | (key[pos + 1] if pos + 1 < len(key) else 0)
        bits = pair if key[pos] & 0x80 else ~pair & 0xFFFF
        length = next((n for n in range(16) if not bits & (0x8000 >> n)), 16)
        if not 1 <= length <= 10 or pos + length > len(key):
            raise ProtoError("bad signed number")
        raw = bytearray(key[pos:pos + length])
        high, low = _HEADER_BITS[length]
        raw[0] ^= high
        if length > 1:
            raw[1] ^= low
        pos += length
        return int.from_bytes(raw, "big", signed=True)

    if number() != 0:
        raise ProtoError("not a slice key")
    end = key.find(b"\0\1", pos)
    if end < 0:
        raise ProtoError("unterminated name")
    name = key[pos:end].replace(b"\0\xff", b"\0").replace(b"\xff\0", b"\xff")
    pos = end + 2
    rank = number()
    if rank > MAX_DIMS:
        raise ProtoError(f"rank {rank}")
    extents = tuple((signed(), signed()) for _ in range(rank))
    if pos != len(key):
        raise ProtoError("trailing bytes")
    try:
        return name.decode("utf-8"), extents
    except UnicodeDecodeError:
        raise ProtoError("name is not UTF-8") from None


_CHECKPOINT_LINE = re.compile(r'^model_checkpoint_path:\s*"(?P<name>[^"\\]*)"\s*$', re.M)


def checkpoint_in(directory: str, label: str | None = None) -> str | None:
    """The prefix a TensorFlow ``checkpoint`` state file in `directory` names (its ``model_checkpoint_path``): the
    last component of that path, looked for beside the state file and nowhere else; None when there is no state
    file."""
    from . import safe_open

    path = os.path.join(directory, "checkpoint")
    if not os.path.isfile(path):
        return None
    try:  # a link, a FIFO or a file over 1 MiB is not a state file: ignored, never followed or waited on
        text = safe_open.read_bounded(path, path, 1 << 20, follow=False).decode("utf-8", errors="replace")
    except InspectError:
        return None
    found = _CHECKPOINT_LINE.search(text)
    if found is None:
        return None
    # TF1's Saver writes absolute paths here; only the last component is looked for, beside this file
    name = re.split(r"[/\\]", found["name"])[-1]
    if name in ("", ".", ".."):
        raise CorruptFile(f"the checkpoint file names {found['name']!r}, not a checkpoint", label or directory)
    prefix = os.path.join(directory, name)
    if not is_index(prefix + ".index"):
        raise CorruptFile(f"the checkpoint file names {found['name']!r}, but there is no {name}.index beside it "
                          "(lstm-inspect looks only in the checkpoint file's own directory)", label or directory)
    return prefix


_SHARD = re.compile(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$")


def is_index(path: str) -> bool:
    """A file at least a footer long whose last 8 bytes are the table magic."""
    from . import safe_open

    if not os.path.isfile(path):
        return False
    try:  # opened without blocking (a FIFO) and without following a link (the bundle refuses one anyway)
        fd = safe_open.open_regular(path, path, follow=False)
    except InspectError:
        return os.path.islink(path) and path.endswith(".index")  # then the bundle names the link and refuses it
    try:
        size = os.fstat(fd).st_size
        return size >= FOOTER_BYTES and os.pread(fd, 8, size - 8) == TABLE_MAGIC
    finally:
        os.close(fd)


def prefix_of(label: str) -> str | None:
    """The bundle prefix a path names: ``model.ckpt`` itself (no such file, but ``model.ckpt.index`` exists),
    ``model.ckpt.index``, or a ``model.ckpt.data-00000-of-00001`` shard; None otherwise."""
    if label.endswith(".index") and is_index(label):
        return label[: -len(".index")]
    shard = _SHARD.match(label)
    if shard and is_index(shard["prefix"] + ".index"):
        return shard["prefix"]
    if not os.path.exists(label) and is_index(label + ".index"):
        return label
    return None

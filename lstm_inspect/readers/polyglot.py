"""Files valid as more than one format, or holding bytes no reader of their format reads, are refused as ambiguous.

libhdf5 finds an HDF5 superblock at offset 0 or at any power of two from 512 on (after a "user block"), and zip
readers find an archive from the end-of-central-directory record at the end of the file, allowing any bytes before
it. A file can be both: a benign `.keras` zip whose local headers sit in an HDF5 user block, its central directory
at the end, is read as the zip by lstm-inspect (and passes `check`) while h5py and Keras's `.h5` loader see an HDF5
model with a Lambda. No reading of such a file can speak for what other tools will load, so it is refused (one line,
exit 2). The same holds for:

- a zip archive after other bytes (an ONNX model, a pickle, a safetensors file with a zip at its end; or two zip
  archives one after the other, where a streaming unzipper reads the first and `zipfile` the second);
- trailing data: bytes after a zip's end-of-central-directory record (and its comment), or after the end-of-file
  address an HDF5 file's superblock records — nothing reads them, so anything could hide there;
- an ONNX model with top-level fields onnx does not know, or a field that may appear once appearing twice (a
  second message appended to the first: protobuf merges them silently);
- an HDF5 superblock after a user block in a file read as safetensors, a pickle, ONNX or TFLite.

(Safetensors bytes after the last tensor are refused by the safetensors reader itself: the tensors must tile the
data buffer exactly.)

Not ambiguous: an HDF5 file stored uncompressed as a member of a zip (a `.keras` archive's model.weights.h5), which
libhdf5 may also find when the member's data happens to start at a power of two: that view is the member itself.
And a TFLite model with a zip of "associated files" (labels.txt...) appended, as TFLite's metadata writer does,
unless that zip holds a model (a Keras config or weights, a pickle, `.npy` arrays).
"""
from __future__ import annotations

import os
import struct
import zipfile
from typing import NamedTuple

from ..errors import UnsafeFile
from .h5safe import HDF5_SIGNATURE

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_LOCAL = b"PK\x03\x04"
_CENTRAL = b"PK\x01\x02"
#: The end-of-central-directory record is 22 bytes plus a comment of at most 65,535.
_EOCD_SEARCH = 22 + 0xFFFF
_AMBIGUOUS = "refusing an ambiguous file (other tools may read the other view)"


class ZipView(NamedTuple):
    """Where a zip reader finds an archive in the file: its first byte and the end of its end record."""

    start: int
    end: int


def hdf5_offsets(fd: int, size: int) -> list[int]:
    """Where libhdf5 would find a superblock signature: offset 0, 512, 1024, 2048, ..."""
    found, offset = [], 0
    while offset + len(HDF5_SIGNATURE) <= size:
        if os.pread(fd, len(HDF5_SIGNATURE), offset) == HDF5_SIGNATURE:
            found.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return found


def zip_view(fd: int, size: int) -> ZipView | None:
    """The archive a zip reader finds from the end of the file: the last end-of-central-directory record (zip64
    too) whose central directory lies inside the file and starts like one; None when there is none."""
    search_start = max(0, size - _EOCD_SEARCH)
    tail = os.pread(fd, size - search_start, search_start)
    at = tail.rfind(_EOCD)
    while at != -1:
        view = _view_at(fd, search_start + at, tail[at:at + 22])
        if view is not None:
            return view
        at = tail.rfind(_EOCD, 0, at)
    return None


def _view_at(fd: int, eocd: int, record: bytes) -> ZipView | None:
    if len(record) != 22:
        return None
    cd_size, cd_offset, comment = struct.unpack("<IIH", record[12:22])
    directory_end = eocd  # the central directory ends where the end record (or the zip64 record) begins
    locator = os.pread(fd, 20, eocd - 20) if eocd >= 20 else b""
    if locator.startswith(_EOCD64_LOCATOR):  # zip64 (torch.save writes it always), as zipfile reads it
        directory_end = eocd - 20 - 56
        record64 = os.pread(fd, 56, directory_end) if directory_end >= 0 else b""
        if len(record64) != 56 or not record64.startswith(_EOCD64):
            return None
        cd_size, cd_offset = struct.unpack("<QQ", record64[40:56])
    cd_start = directory_end - cd_size  # where the directory really is (zip readers allow bytes before it)
    if cd_start < 0 or cd_start < cd_offset:
        return None
    if cd_size and os.pread(fd, 4, cd_start) != _CENTRAL:
        return None
    return ZipView(start=cd_start - cd_offset, end=eocd + 22 + comment)


def _stored_member_starts(fd: int) -> set[int]:
    """The offsets where the data of each uncompressed zip member begins."""
    starts: set[int] = set()
    try:
        with zipfile.ZipFile(os.fdopen(os.dup(fd), "rb")) as archive:
            for info in archive.infolist():
                if info.compress_type != zipfile.ZIP_STORED:
                    continue
                header = os.pread(fd, 30, info.header_offset)
                if len(header) == 30 and header[:4] == _LOCAL:
                    name_length, extra_length = struct.unpack("<HH", header[26:30])
                    starts.add(info.header_offset + 30 + name_length + extra_length)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        pass
    return starts


def _zip_holds_a_model(fd: int) -> bool:
    """True when the zip at the end of the file has a member a model loader reads (or cannot be listed)."""
    try:
        with zipfile.ZipFile(os.fdopen(os.dup(fd), "rb")) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return True
    return any(n.rsplit("/", 1)[-1] in ("config.json", "model.weights.h5", "model.weights.npz")
               or n.endswith((".pkl", ".npy", ".h5", ".keras", ".onnx", ".pt", ".pth", ".safetensors"))
               for n in names)


def hdf5_end(fd: int) -> int | None:
    """The end-of-file address the superblock at offset 0 records (versions 0-3); None when it cannot tell."""
    block = os.pread(fd, 64, 0)
    if not block.startswith(HDF5_SIGNATURE) or len(block) < 48:
        return None
    version = block[8]
    # the third address after `start`: (base, free-space or superblock-extension, end-of-file)
    if version in (0, 1):
        offset_size, start = block[13], 24 + (4 if version == 1 else 0)
    elif version in (2, 3):
        offset_size, start = block[9], 12
    else:
        return None
    if offset_size not in (2, 4, 8):
        return None
    at = start + 2 * offset_size
    raw = block[at:at + offset_size]
    if len(raw) != offset_size:
        return None
    end = int.from_bytes(raw, "little")
    return None if end == (1 << (8 * offset_size)) - 1 else end


def refuse_ambiguous(fd: int, head: bytes, label: str, read_as: str | None = None) -> None:
    """Refuse a polyglot or a file with trailing data. Without `read_as`: the checks every file gets (HDF5 and
    zip at once, a zip after other bytes, bytes after a zip's or an HDF5 file's end). With `read_as` (the format
    the file's first bytes say: "a safetensors file", "a pickle", "an ONNX model", "a TFLite model"): an HDF5
    superblock after a user block as well."""
    size = os.fstat(fd).st_size
    offsets = hdf5_offsets(fd, size)
    if read_as is not None:
        if offsets:
            raise UnsafeFile(f"the file is both an HDF5 file (superblock at offset {offsets[0]:,}) and {read_as}; "
                             + _AMBIGUOUS, label)
        return
    starts_as_zip = head.startswith((_LOCAL, _EOCD))
    view = zip_view(fd, size)
    if offsets and (starts_as_zip or view is not None):
        offsets = [o for o in offsets if o not in _stored_member_starts(fd)]
        if offsets:  # else the HDF5 views are the archive's own stored members
            raise UnsafeFile(f"the file is both an HDF5 file (superblock at offset {offsets[0]:,}) and a zip "
                             "archive; " + _AMBIGUOUS, label)
    if view is not None:
        if view.start > 0 and not (_is_tflite(head) and not _zip_holds_a_model(fd)):
            what = "another zip archive" if starts_as_zip else "other data"
            raise UnsafeFile(f"the file holds a zip archive starting at byte {view.start:,}, after {what}; "
                             + _AMBIGUOUS, label)
        if view.end < size:
            raise UnsafeFile(f"{size - view.end:,} bytes of trailing data after the zip archive's end record; "
                             + _AMBIGUOUS, label)
    if head.startswith(HDF5_SIGNATURE):
        end = hdf5_end(fd)
        if end is not None and end < size:
            raise UnsafeFile(f"{size - end:,} bytes of trailing data after the HDF5 end-of-file address ({end:,}); "
                             + _AMBIGUOUS, label)


def _is_tflite(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == b"TFL3"


def refuse_onnx_extras(fd: int, label: str) -> None:
    """Refuse an ONNX file whose top-level fields are not all ModelProto's, or whose singular fields appear more
    than once: bytes onnx skips or merges (a second model appended to the first) are a view other tools differ
    on. Only the top level is walked (tags and lengths), so the cost is a few reads whatever the file's size."""
    try:
        import onnx
    except ImportError:
        return  # the ONNX reader says onnx is needed
    fields = onnx.ModelProto.DESCRIPTOR.fields_by_number
    size = os.fstat(fd).st_size
    seen: set[int] = set()
    pos = 0
    while pos < size:
        start = pos
        tag, pos = _varint(fd, pos, size, label)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            return  # not a valid protobuf: the ONNX parser reports it
        if wire == 0:
            _, pos = _varint(fd, pos, size, label)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            length, pos = _varint(fd, pos, size, label)
            pos += length
        else:
            return  # not a valid protobuf: the ONNX parser reports it
        if pos > size:
            return  # truncated: the ONNX parser reports it
        field = fields.get(number)
        if field is None:
            raise UnsafeFile(f"the ONNX model holds a field onnx does not know (number {number}, at byte {start:,}); "
                             "refusing data no ONNX reader reads (" + _AMBIGUOUS + ")", label)
        if not _repeated(field):
            if number in seen:
                raise UnsafeFile(f"the ONNX model's field {field.name!r} appears twice (again at byte {start:,}): a "
                                 "second message appended to the first; " + _AMBIGUOUS, label)
            seen.add(number)


def _repeated(field: object) -> bool:
    repeated = getattr(field, "is_repeated", None)
    if isinstance(repeated, bool):
        return repeated
    return getattr(field, "label", None) == 3  # FieldDescriptor.LABEL_REPEATED


def _varint(fd: int, pos: int, size: int, label: str) -> tuple[int, int]:
    raw = os.pread(fd, 10, pos)
    result = shift = 0
    for index, byte in enumerate(raw):
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + index + 1
        shift += 7
    return 0, size + 1  # runs past the end or over 10 bytes: treated as truncated

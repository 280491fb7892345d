"""Files valid as more than one format are refused as ambiguous.

libhdf5 finds an HDF5 superblock at offset 0 or at any power of two from 512 on (after a "user block"), and zip
readers find an archive from the end-of-central-directory record at the end of the file. A file can be both: a
benign `.keras` zip whose local headers sit in an HDF5 user block, its central directory at the end, is read as the
zip by lstm-inspect (and passes `check`) while h5py and Keras's `.h5` loader see an HDF5 model with a Lambda. No
reading of such a file can speak for what other tools will load, so it is refused (one line, exit 2).

Not ambiguous: an HDF5 file stored uncompressed as a member of a zip (a `.keras` archive's model.weights.h5), which
libhdf5 may also find when the member's data happens to start at a power of two: that view is the member itself.
"""
from __future__ import annotations

import os
import struct
import zipfile

from ..errors import UnsafeFile
from .h5safe import HDF5_SIGNATURE

_EOCD = b"PK\x05\x06"
_LOCAL = b"PK\x03\x04"
#: The end-of-central-directory record is 22 bytes plus a comment of at most 65,535.
_EOCD_SEARCH = 22 + 0xFFFF


def hdf5_offsets(fd: int, size: int) -> list[int]:
    """Where libhdf5 would find a superblock signature: offset 0, 512, 1024, 2048, ..."""
    found, offset = [], 0
    while offset + len(HDF5_SIGNATURE) <= size:
        if os.pread(fd, len(HDF5_SIGNATURE), offset) == HDF5_SIGNATURE:
            found.append(offset)
        offset = 512 if offset == 0 else offset * 2
    return found


def zip_view(fd: int, size: int) -> bool:
    """True when the file ends like a zip archive: an end-of-central-directory record whose central directory lies
    inside the file and starts like one."""
    start = max(0, size - _EOCD_SEARCH)
    tail = os.pread(fd, size - start, start)
    at = tail.rfind(_EOCD)
    while at != -1:
        record = tail[at:at + 22]
        if len(record) == 22:
            cd_size, cd_offset = struct.unpack("<II", record[12:20])
            cd_start = start + at - cd_size  # where the directory really is (zip readers allow a prefix)
            if 0 <= cd_start and (cd_size == 0 or os.pread(fd, 4, cd_start) == b"PK\x01\x02"):
                return True
        at = tail.rfind(_EOCD, 0, at)
    return False


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


def refuse_ambiguous(fd: int, head: bytes, label: str, read_as: str | None = None) -> None:
    """Refuse a file that is an HDF5 file and also a zip archive, or (`read_as`: the format its first bytes say,
    such as safetensors) HDF5 after a user block as well."""
    size = os.fstat(fd).st_size
    offsets = hdf5_offsets(fd, size)
    if not offsets:
        return
    if read_as is not None:
        other = read_as
    else:
        if not (head.startswith((_LOCAL, _EOCD)) or zip_view(fd, size)):
            return  # HDF5 and nothing else (or a user block nobody reads as a model)
        offsets = [o for o in offsets if o not in _stored_member_starts(fd)]
        if not offsets:
            return  # the HDF5 views are the archive's own stored members
        other = "a zip archive"
    raise UnsafeFile(f"the file is both an HDF5 file (superblock at offset {offsets[0]:,}) and {other}; refusing "
                     "an ambiguous file (other tools may read the other view)", label)

"""Guarded reading of ``.keras`` zip archives, without extracting anything to disk.

Members are read into memory with a bound checked while inflating (the header's sizes are not trusted), except
stored (uncompressed) members, which are read in place through a window on the archive so that a large
``model.weights.h5`` costs no memory until a tensor is read.
"""
from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
from typing import BinaryIO

from ..errors import CorruptFile, UnsafeFile

MAX_MEMBERS = 10_000
#: A member may inflate to at most this many times its compressed size, past the floor below...
MAX_INFLATE_RATIO = 100
INFLATE_FLOOR_BYTES = 1 << 20
#: ...and never past this absolute size.
MAX_MEMBER_BYTES = 4 << 30
_CHUNK = 1 << 20


def is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


class Archive:
    """The members of a zip file, checked for traversal names, links, duplicates and bombs before use."""

    def __init__(self, path: str, label: str):
        self.label = label
        self._file = open(path, "rb")
        try:
            self._zip = zipfile.ZipFile(self._file)
            infos = self._zip.infolist()
        except Exception as exc:
            self._file.close()
            raise CorruptFile(f"not a readable zip archive (truncated or corrupt?): {exc}", label) from exc
        if len(infos) > MAX_MEMBERS:
            self.close()
            raise UnsafeFile(f"archive has {len(infos):,} members (more than {MAX_MEMBERS:,}); refusing it", label)
        self._infos: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            self._check_member(info)
            self._infos[info.filename] = info

    def _check_member(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        parts = name.replace("\\", "/").split("/")
        if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
            raise UnsafeFile(f"archive member {name!r} has a path that escapes the archive; refusing it", self.label)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeFile(f"archive member {name!r} is a symbolic link; refusing it", self.label)
        if name in self._infos:
            raise UnsafeFile(f"archive has two members named {name!r}; refusing an ambiguous archive", self.label)

    def names(self) -> list[str]:
        return list(self._infos)

    def has(self, name: str) -> bool:
        return name in self._infos

    def is_compressed(self, name: str) -> bool:
        return self._infos[name].compress_type != zipfile.ZIP_STORED

    def file_size(self, name: str) -> int:
        """The member's size as its header declares it (reads check it against what is there)."""
        return self._infos[name].file_size

    def read_bytes(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """A whole member, inflated in chunks and refused as soon as it passes its bound."""
        info = self._infos[name]
        bound = min(limit, max(INFLATE_FLOOR_BYTES, MAX_INFLATE_RATIO * info.compress_size))
        out = io.BytesIO()
        try:
            with self._zip.open(info) as member:
                while chunk := member.read(_CHUNK):
                    out.write(chunk)
                    if out.tell() > bound:
                        raise UnsafeFile(
                            f"archive member {name!r} inflates past {bound:,} bytes "
                            f"({info.compress_size:,} compressed); refusing a zip bomb",
                            self.label,
                        )
        except UnsafeFile:
            raise
        except Exception as exc:
            raise CorruptFile(f"cannot read archive member {name!r}: {exc}", self.label) from exc
        return out.getvalue()

    def open_member(self, name: str) -> BinaryIO:
        """A seekable file object on a member: a window on the archive if stored, else its bounded inflated bytes."""
        info = self._infos[name]
        if info.compress_type == zipfile.ZIP_STORED:
            offset = self._data_offset(info)
            if offset + info.compress_size > self._size():
                raise CorruptFile(f"archive member {name!r} runs past the end of the file (truncated?)", self.label)
            return FileWindow(self._file, offset, info.file_size)
        return io.BytesIO(self.read_bytes(name))

    def _data_offset(self, info: zipfile.ZipInfo) -> int:
        if not 0 <= info.header_offset < self._size():
            raise CorruptFile(f"archive member {info.filename!r} points outside the archive", self.label)
        self._file.seek(info.header_offset)
        header = self._file.read(30)
        if len(header) != 30 or header[:4] != b"PK\x03\x04":
            raise CorruptFile(f"archive member {info.filename!r} has a bad local header", self.label)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        return info.header_offset + 30 + name_len + extra_len

    def _size(self) -> int:
        self._file.seek(0, io.SEEK_END)
        return self._file.tell()

    def close(self) -> None:
        try:
            self._zip.close()
        except Exception:
            pass
        self._file.close()


class FileWindow(io.RawIOBase):
    """A read-only, seekable view of ``size`` bytes of `base` starting at ``offset``."""

    def __init__(self, base: BinaryIO, offset: int, size: int):
        self._base, self._offset, self._size, self._pos = base, offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def extent(self) -> tuple[int, int, int]:
        """(file descriptor of the archive, offset of the window in it, its size): for a memory map of a member."""
        return self._base.fileno(), self._offset, self._size

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        start = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, start + pos)
        return self._pos

    def readinto(self, buffer) -> int:  # type: ignore[override]
        count = max(0, min(len(buffer), self._size - self._pos))
        if not count:
            return 0
        # Straight into the caller's buffer (HDF5's destination array): no intermediate bytes object.
        target = memoryview(buffer).cast("B")[:count]
        done = 0
        if hasattr(os, "preadv"):
            fd = self._base.fileno()
            while done < count:
                got = os.preadv(fd, [target[done:]], self._offset + self._pos + done)
                if not got:
                    break
                done += got
        else:
            self._base.seek(self._offset + self._pos)
            done = self._base.readinto(target) or 0
        self._pos += done
        return done

"""Guarded reading of zip archives (``.keras``, ``.npz``, ``torch.save``), never extracting a member by its name.

Stored (uncompressed) members are read in place through a window on the archive, so that a large
``model.weights.h5`` costs no memory until a tensor is read. Compressed members are inflated under the zip-bomb bound
(checked on the declared size before inflating and on the bytes while inflating): small ones into memory, large ones (past
`SPILL_BYTES`) once, in bounded chunks, into an anonymous temporary file — created in a private directory and
unlinked before a byte is written, so it has no name anyone could open and vanishes when the archive is closed or
the process dies however it dies — then read through a window on that file like a stored member (memory-mapped a
row chunk at a time). Memory then stays independent of the member's size; the cost is the member's inflated size
in the temporary directory (``TMPDIR``) while the archive is open.
"""
from __future__ import annotations

import errno
import io
import os
import stat
import struct
import tempfile
import zipfile
from typing import BinaryIO

from ..errors import CorruptFile, InspectError, UnsafeFile

MAX_MEMBERS = 10_000
#: A member may inflate to at most this many times its compressed size, past the floor below...
MAX_INFLATE_RATIO = 100
INFLATE_FLOOR_BYTES = 1 << 20
#: ...and never past this absolute size.
MAX_MEMBER_BYTES = 4 << 30
#: Compressed members declaring more than this are inflated to a temporary file rather than into memory.
SPILL_BYTES = 1 << 20
_CHUNK = 1 << 20
_SPILL_CHUNK = 4 << 20


def is_zip(head: bytes) -> bool:
    return head[:4] in (b"PK\x03\x04", b"PK\x05\x06")


class Archive:
    """The members of a zip file, checked for traversal names, links, duplicates and bombs before use."""

    def __init__(self, path: str, label: str):
        self.label = label
        self._spilled: dict[str, BinaryIO] = {}
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

    def mappable(self, name: str) -> bool:
        """True when `open_member` gives a window on a file (`FileWindow.extent`, for a memory map): a stored
        member, or a compressed one large enough to be inflated to a temporary file."""
        info = self._infos[name]
        return info.compress_type == zipfile.ZIP_STORED or info.file_size > SPILL_BYTES

    def file_size(self, name: str) -> int:
        """The member's size as its header declares it (reads check it against what is there)."""
        return self._infos[name].file_size

    def read_bytes(self, name: str, limit: int = MAX_MEMBER_BYTES) -> bytes:
        """A whole member, inflated in chunks and refused as soon as it passes its bound."""
        out = io.BytesIO()
        self._inflate(name, out, limit, _CHUNK)
        return out.getvalue()

    def read_prefix(self, name: str, count: int) -> bytes:
        """The first `count` bytes of a member (fewer if it is shorter), inflating no more than that."""
        stream = self.open_stream(name)
        try:
            return stream.read(count)
        except Exception as exc:
            raise CorruptFile(f"cannot read archive member {name!r}: {exc}", self.label) from exc
        finally:
            stream.close()

    def open_stream(self, name: str) -> BinaryIO:
        """A file object on a member that inflates only what is read, front to back (for a header or a scan; a
        backward seek inflates again from the start): a window on the archive if the member is stored."""
        info = self._infos[name]
        if info.compress_type == zipfile.ZIP_STORED:
            return self.open_member(name)
        self._bound(info, MAX_MEMBER_BYTES)  # zipfile stops at the declared size, so the stream stays in bounds
        try:
            return self._zip.open(info)
        except Exception as exc:
            raise CorruptFile(f"cannot read archive member {name!r}: {exc}", self.label) from exc

    def _bound(self, info: zipfile.ZipInfo, limit: int) -> int:
        """The most a member may inflate to; one declaring more is refused before anything is inflated."""
        bound = min(limit, max(INFLATE_FLOOR_BYTES, MAX_INFLATE_RATIO * info.compress_size))
        if info.file_size > bound:
            raise UnsafeFile(f"archive member {info.filename!r} declares {info.file_size:,} bytes inflated, past its "
                             f"bound of {bound:,} ({info.compress_size:,} compressed); refusing a zip bomb", self.label)
        return bound

    def _inflate(self, name: str, out: BinaryIO, limit: int, chunk_bytes: int) -> int:
        """Inflate a member into `out` chunk by chunk, refused as soon as it passes its bound; returns its size."""
        info = self._infos[name]
        bound = self._bound(info, limit)
        size = 0
        try:
            with self._zip.open(info) as member:
                while chunk := member.read(chunk_bytes):
                    size += len(chunk)
                    if size > bound:
                        raise UnsafeFile(
                            f"archive member {name!r} inflates past {bound:,} bytes "
                            f"({info.compress_size:,} compressed); refusing a zip bomb",
                            self.label,
                        )
                    out.write(chunk)
            out.flush()  # a temporary file is then read through its descriptor (preadv, memory maps)
        except InspectError:
            raise
        except OSError as exc:
            if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise InspectError(f"no room to inflate archive member {name!r} ({info.file_size:,} bytes) in the "
                                   f"temporary directory {tempfile.gettempdir()!r}: {exc.strerror}; set TMPDIR to "
                                   "a directory with more free space", self.label) from exc
            raise CorruptFile(f"cannot read archive member {name!r}: {exc}", self.label) from exc
        except Exception as exc:
            raise CorruptFile(f"cannot read archive member {name!r}: {exc}", self.label) from exc
        if size != info.file_size:  # zipfile stops at the declared size; a member shorter than it is damaged
            raise CorruptFile(f"archive member {name!r} inflates to {size:,} bytes, not the {info.file_size:,} its "
                              "header declares (truncated?)", self.label)
        return size

    def open_member(self, name: str) -> BinaryIO:
        """A seekable file object on a member: a window on the archive if stored, else its bounded inflated bytes."""
        info = self._infos[name]
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise CorruptFile(f"stored archive member {name!r} declares {info.file_size:,} bytes but holds "
                                  f"{info.compress_size:,}", self.label)
            offset = self._data_offset(info)
            if offset + info.compress_size > self._size():
                raise CorruptFile(f"archive member {name!r} runs past the end of the file (truncated?)", self.label)
            return FileWindow(self._file, offset, info.file_size)
        if info.file_size <= SPILL_BYTES:
            return io.BytesIO(self.read_bytes(name))
        if name not in self._spilled:
            self._spilled[name] = self._spill(name)
        return FileWindow(self._spilled[name], 0, info.file_size)

    def _spill(self, name: str) -> BinaryIO:
        """A member inflated, once, into an anonymous temporary file (see the module docstring)."""
        info = self._infos[name]
        self._bound(info, MAX_MEMBER_BYTES)  # a bomb is a bomb before it is a shortage of disk space
        try:
            spill = anonymous_temporary_file()
        except OSError as exc:
            raise InspectError(f"cannot make a temporary file to inflate archive member {name!r} in "
                               f"{tempfile.gettempdir()!r}: {exc.strerror or exc}; set TMPDIR to a writable "
                               "directory", self.label) from exc
        try:
            free = _free_bytes(spill)
            if free is not None and free < info.file_size:
                raise InspectError(f"archive member {name!r} inflates to {info.file_size:,} bytes, but the temporary "
                                   f"directory {tempfile.gettempdir()!r} has {free:,} bytes free; set TMPDIR to a "
                                   "directory with more free space", self.label)
            self._inflate(name, spill, MAX_MEMBER_BYTES, _SPILL_CHUNK)
        except BaseException:
            spill.close()
            raise
        return spill

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
        while self._spilled:
            self._spilled.popitem()[1].close()
        self._file.close()


def anonymous_temporary_file() -> BinaryIO:
    """A read-write file with no name: made in a fresh private directory (mode 0700) under the temporary directory,
    unlinked at once (or never linked: O_TMPFILE), the directory removed; the space is freed when the file is closed
    or the process ends, even by a signal."""
    directory = tempfile.mkdtemp(prefix="lstm-inspect-")
    try:
        return tempfile.TemporaryFile(dir=directory)
    finally:
        os.rmdir(directory)


def _free_bytes(handle: BinaryIO) -> int | None:
    try:
        found = os.fstatvfs(handle.fileno())
        return found.f_bavail * found.f_frsize
    except (OSError, AttributeError):
        return None


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

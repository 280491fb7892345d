"""Opening files from a model safely: a regular file only (never a FIFO, which blocks, nor a device such as
/dev/zero, which never ends), opened once, checked on the open handle (fstat, so the check and the read see the
same file), and read through that handle.

Libraries that want a path (libhdf5, onnx, zipfile) get `handle_path(fd)`, the /proc/self/fd (or /dev/fd) name of
the open handle: opening it reopens the very file that was checked, whatever happens to the original path.
"""
from __future__ import annotations

import errno
import os
import stat

from ..errors import InspectError, UnsafeFile


def check_regular(path: str, label: str, follow: bool = True) -> None:
    """Refuse, without opening it, a path that is not a regular file or directory (a FIFO, device or socket), or a
    symbolic link when `follow` is false."""
    try:
        info = os.stat(path) if follow else os.lstat(path)
    except OSError:
        return  # missing or unreadable: the caller reports it
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile(f"{_name(path, label)} is a symbolic link; refusing to follow it", label)
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        raise UnsafeFile(f"{_name(path, label)} is not a regular file ({_kind(info.st_mode)}); refusing it", label)


def open_regular(path: str, label: str, follow: bool = True) -> int:
    """A read-only descriptor of `path`, which must be a regular file (and not a symbolic link unless `follow`).
    The caller closes it."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if not follow and exc.errno == errno.ELOOP:  # O_NOFOLLOW met a link (told by the open, not a 2nd look)
            raise UnsafeFile(f"{_name(path, label)} is a symbolic link; refusing to follow it", label) from exc
        raise InspectError(f"cannot read {_name(path, label)}: {exc.strerror or exc}", label) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFile(f"{_name(path, label)} is not a regular file ({_kind(info.st_mode)}); refusing it", label)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bounded(path: str, label: str, limit: int, follow: bool = False) -> bytes:
    """The whole content of the regular file `path`, refused past `limit` bytes (counted on the handle, so a file
    that grows while read is still bounded)."""
    fd = open_regular(path, label, follow=follow)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise UnsafeFile(f"{_name(path, label)} is {size:,} bytes, more than the {limit:,}-byte limit", label)
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise UnsafeFile(f"{_name(path, label)} grew past the {limit:,}-byte limit while read", label)
        return b"".join(chunks)
    finally:
        os.close(fd)


def handle_path(fd: int, fallback: str) -> str:
    """A path that opens the file behind `fd` itself (not whatever its original name points to now); `fallback`
    (the original name) where the system has no /proc/self/fd or /dev/fd (Windows)."""
    for base in ("/proc/self/fd", "/dev/fd"):
        candidate = f"{base}/{fd}"
        if os.path.exists(candidate):
            return candidate
    return fallback


def _name(path: str, label: str) -> str:
    return "the file" if path == label else os.path.basename(path) or path


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a plain file"

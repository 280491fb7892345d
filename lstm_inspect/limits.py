"""Bounds on this process's address space: the reading child's ``--max-memory`` and the parent's own bound (set
by `isolation`), and `memory_budget`, a tighter bound for one read whose real size no header tells (used by the
readers), and `run_bounded`, one such read in a forked child. The bottom layer: imports only `forking`."""
from __future__ import annotations

import contextlib
import errno
import os
from typing import Any, Callable, Iterator

from . import forking

_STATE = {"in_child": False}


def mark_child() -> None:
    """Called by `isolation` in a forked reading child (single-threaded, so it may tighten its own limit)."""
    _STATE["in_child"] = True


def in_child() -> bool:
    """True in an isolated reading child."""
    return _STATE["in_child"]


@contextlib.contextmanager
def memory_budget(extra: int) -> Iterator[bool]:
    """In an isolated child, lower the address-space limit to what the process has now plus `extra` for the
    block, then restore it; yields whether the bound applies. A read whose real size no header tells (an HDF5
    variable-length string attribute) then fails with MemoryError past `extra`, not at --max-memory."""
    import resource

    if not in_child():
        yield False
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = address_space() + extra
    if soft != resource.RLIM_INFINITY:
        limit = min(limit, soft)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield True
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def address_space() -> int:
    """The process's current address-space size in bytes (0 where /proc does not tell)."""
    try:  # os-level calls: in a freshly forked child, each Python object touched costs a copied page
        fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            return int(os.read(fd, 200).split()[0]) * os.sysconf("SC_PAGE_SIZE")
        finally:
            os.close(fd)
    except (OSError, ValueError, IndexError):
        return 0


def address_space_room() -> int | None:
    """How many more bytes of address space this process may take under its limit (RLIMIT_AS, which --max-memory
    sets); None when it has none."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(0, soft - address_space())


def limit_memory(max_memory: int) -> None:
    """Bound the address space to what the process has now plus `max_memory`."""
    import resource

    limit = address_space() + max_memory
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def run_bounded(func: Callable[[], Any], extra: int, timeout: float, lock: Any = None) -> tuple[str, Any]:
    """`func()` run in a forked child whose address space is bounded to what this process has now plus `extra`,
    for a read whose real size no header tells, where this process may not bound itself (a library must not set
    limits on its host). Returns ("ok", the JSON round trip of func's result), ("memory", None) when the child ran
    out of memory, ("error", message) for an exception, ("timeout", None) or ("crash", signal number). `lock`, when
    given, is held across the fork so the child does not inherit it held by another thread (h5py's global lock)."""
    import json

    def answer() -> bytes:
        try:
            limit_memory(extra)
            return b"o" + json.dumps(func()).encode("ascii")
        except MemoryError:
            return b"m"
        except BaseException as exc:  # noqa: BLE001 — reported to the parent, which decides
            if "alloc" in str(exc).lower():
                return b"m"
            return b"e" + f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:500]

    # The child keeps the other descriptors: it reads through the HDF5 file this process has open.
    pid, read_end = forking.fork(answer, lock=lock, close_other_fds=False)
    outcome, answer_bytes, status = forking.collect(read_end, pid, timeout)
    if outcome == "timeout":
        return "timeout", None
    if not answer_bytes:
        return ("crash", os.WTERMSIG(status)) if os.WIFSIGNALED(status) else ("error", "no answer")
    kind, payload = answer_bytes[:1], answer_bytes[1:]
    if kind == b"o":
        return "ok", json.loads(payload)
    if kind == b"m":
        return "memory", None
    return "error", payload.decode("utf-8", "replace")


def can_fork() -> bool:
    return hasattr(os, "fork")


def out_of_memory(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from or while handling, is running out of memory: a
    MemoryError, or an OSError with ENOMEM (a memory map or a write refused under the address-space limit) — which
    a reader may have turned into its own one-line error, and which must name --max-memory instead."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or (isinstance(exc, OSError) and exc.errno == errno.ENOMEM):
            return True
        exc = exc.__cause__ or exc.__context__
    return False

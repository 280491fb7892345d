"""Bounds on this process's address space: the reading child's ``--max-memory`` and the parent's own bound (set
by `isolation`), and `memory_budget`, a tighter bound for one read whose real size no header tells (used by the
readers). The bottom layer: imports nothing from lstm_inspect."""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

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
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def limit_memory(max_memory: int) -> None:
    """Bound the address space to what the process has now plus `max_memory`."""
    import resource

    limit = address_space() + max_memory
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))

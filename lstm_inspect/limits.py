"""Bounds on this process's address space: the reading child's ``--max-memory`` and the parent's own bound (set
by `isolation`), and `memory_budget`, a tighter bound for one read whose real size no header tells (used by the
readers). The bottom layer: imports nothing from lstm_inspect."""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator

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


def run_bounded(func: Callable[[], Any], extra: int, timeout: float, lock: Any = None) -> tuple[str, Any]:
    """`func()` run in a forked child whose address space is bounded to what this process has now plus `extra`,
    for a read whose real size no header tells, where this process may not bound itself (a library must not set
    limits on its host). Returns ("ok", the JSON round trip of func's result), ("memory", None) when the child ran
    out of memory, ("error", message) for an exception, ("timeout", None) or ("crash", signal number). `lock`, when
    given, is held across the fork so the child does not inherit it held by another thread (h5py's global lock)."""
    import json
    import select
    import signal
    import time

    import gc

    read_end, write_end = os.pipe()
    # As in `isolation.run`: the child must not collect the parent's objects (a native runtime's finalizer waits
    # on threads that do not exist after fork), so they are frozen across the fork and the child never collects.
    with lock if lock is not None else contextlib.nullcontext():
        gc.freeze()
        pid = -1
        try:
            pid = os.fork()
        finally:
            if pid != 0:
                gc.unfreeze()
        if pid == 0:  # the child: bounded, answers once on the pipe, never returns
            gc.disable()
            status, payload = b"e", b""
            try:
                os.close(read_end)
                limit_memory(extra)
                payload = json.dumps(func()).encode("ascii")
                status = b"o"
            except MemoryError:
                status = b"m"
            except BaseException as exc:  # noqa: BLE001 — reported to the parent, which decides
                status = b"m" if "alloc" in str(exc).lower() else b"e"
                payload = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:500]
            try:
                view = memoryview(status + payload)
                while view:
                    view = view[os.write(write_end, view):]
            finally:
                os._exit(0)
    os.close(write_end)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return "timeout", None
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
    _, status = os.waitpid(pid, 0)
    answer = b"".join(chunks)
    if not answer:
        return ("crash", os.WTERMSIG(status)) if os.WIFSIGNALED(status) else ("error", "no answer")
    kind, payload = answer[:1], answer[1:]
    if kind == b"o":
        return "ok", json.loads(payload)
    if kind == b"m":
        return "memory", None
    return "error", payload.decode("utf-8", "replace")


def can_fork() -> bool:
    return hasattr(os, "fork")

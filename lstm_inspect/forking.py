"""Fork a child that answers once on a pipe, and collect that answer within a time and size bound: the core shared
by `isolation.run` (a whole file read in a child) and `limits.run_bounded` (one HDF5 attribute read in a child).
The bottom layer: imports nothing from lstm_inspect.

What the answer means is the caller's business; here only bytes, an exit status and the bounds."""
from __future__ import annotations

import atexit
import contextlib
import gc
import os
import select
import signal
import struct
import threading
import time
from typing import Any, Callable

#: Held across every fork of this process: `check --jobs` forks from several threads, and gc.freeze / unfreeze
#: are process-wide.
_FORK_LOCK = threading.Lock()
#: A child's exit status when writing its answer failed (or `answer` raised past everything it catches).
FAILED = 70
#: The answer's length, sent before it: the parent then knows a whole answer from one cut short by a crash.
_HEADER = struct.Struct("<Q")
#: Children that sent their whole answer and were still tearing down their address space when it arrived (a few
#: milliseconds for a process this size), with the time by which they must have ended: reaped later, without
#: waiting (`_reap_finished`). One still running past it, or when this process exits, is killed: a child that
#: read a hostile file is not trusted to end just because it answered.
_UNREAPED: dict[int, float] = {}
_ENDING_SECONDS = 5.0


def fork(answer: Callable[[], bytes], *, lock: Any = None, close_other_fds: bool = True) -> tuple[int, int]:
    """Fork a child that calls `answer()`, writes the bytes it returns to a pipe and exits (status 0, or `FAILED`
    if `answer` raised); the child never returns from here. In the parent, returns the child's pid and the pipe's
    read end, for `collect`.

    `lock`, when given, is held across the fork so that the child does not inherit it held by another thread
    (h5py's global lock). With `close_other_fds`, the child keeps only stdio and its pipe end: the pipe ends of
    siblings forked by other threads would otherwise stay open in it and delay their end of file."""
    read_end, write_end = os.pipe()
    # The garbage collector must not run, in the child, the finalizers of objects the parent let go of: a native
    # runtime's object (an onnxruntime session, a TensorFlow graph) waits in its destructor on threads that do not
    # exist after fork, and the child hangs. Frozen, the parent's objects are out of the child's collections; the
    # child then never collects (it is short-lived, and bounded in memory by its caller).
    with lock if lock is not None else contextlib.nullcontext(), _FORK_LOCK:
        _reap_finished()
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            os.close(read_end)
            os.close(write_end)
            raise
        if pid != 0:
            gc.unfreeze()
    if pid == 0:
        _child(answer, read_end, write_end, close_other_fds)
    os.close(write_end)
    return pid, read_end


def _child(answer: Callable[[], bytes], read_end: int, write_end: int, close_other_fds: bool) -> None:
    status = FAILED
    try:
        gc.disable()
        if close_other_fds:
            os.closerange(3, write_end)
            os.closerange(write_end + 1, _max_fd())
        else:
            os.close(read_end)
        data = answer()
        view = memoryview(_HEADER.pack(len(data)) + data)
        while view:
            view = view[os.write(write_end, view):]
        # The answer is whole: end of file now, not after the kernel has torn down this address space (which
        # exit does before it closes descriptors), so the parent goes on while this process ends.
        os.close(write_end)
        status = 0
    except BaseException:  # noqa: BLE001 — the parent sees the status (and no answer)
        pass
    finally:
        os._exit(status)


def collect(read_end: int, pid: int, timeout: float | None, max_bytes: int | None = None) -> tuple[str, bytes, int]:
    """Wait for the child's answer; closes `read_end`. Returns ("done", the answer, the child's wait status — 0
    when the answer is whole and the child is still ending: it is reaped later), or ("timeout", b"", 0) / ("too
    large", b"", 0) after killing and reaping the child; an answer cut short (the child crashed) comes back empty,
    with the status that says why. The child is watched with waitpid as well as for end of file: children forked
    at the same time by other threads briefly hold each other's pipe ends, so end of file can come late."""
    try:
        os.set_blocking(read_end, False)
        chunks: list[bytes] = []
        size = [0]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([read_end], [], [], 0.05)
            if ready and _drain(read_end, chunks, size, max_bytes):
                answer = _whole(b"".join(chunks))
                if answer is not None:
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if not done:
                        _UNREAPED[pid] = time.monotonic() + _ENDING_SECONDS
                    return "done", answer, status if done else 0
                _, status = os.waitpid(pid, 0)
                return "done", b"", status
            if max_bytes is not None and size[0] > max_bytes:
                _kill(pid)
                return "too large", b"", 0
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                _drain(read_end, chunks, size, max_bytes)
                if max_bytes is not None and size[0] > max_bytes:
                    return "too large", b"", 0
                return "done", _whole(b"".join(chunks)) or b"", status
            if deadline is not None and time.monotonic() > deadline:
                _kill(pid)
                return "timeout", b"", 0
    finally:
        os.close(read_end)


def _whole(data: bytes) -> bytes | None:
    """The answer in `data` if all of it arrived (see `_HEADER`), else None."""
    if len(data) < _HEADER.size or _HEADER.unpack_from(data)[0] != len(data) - _HEADER.size:
        return None
    return data[_HEADER.size:]


def _reap_finished(at_exit: bool = False) -> None:
    """Reap the children that answered and have ended since (`_UNREAPED`), without waiting; kill the ones still
    running past their time (or all of them `at_exit`)."""
    now = time.monotonic()
    for pid, deadline in list(_UNREAPED.items()):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if not done and (at_exit or now > deadline):
                _kill(pid)
                done = pid
        except (ChildProcessError, ProcessLookupError):  # reaped already, or inherited by a child: not its own
            done = pid
        if done:
            _UNREAPED.pop(pid, None)


atexit.register(_reap_finished, at_exit=True)


def _drain(fd: int, chunks: list[bytes], size: list[int], max_bytes: int | None) -> bool:
    """Read what the pipe holds now; True at end of file."""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            return True
        chunks.append(chunk)
        size[0] += len(chunk)
        if max_bytes is not None and size[0] > max_bytes:
            return False  # the caller refuses an answer this large


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _max_fd() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (ValueError, OSError):
        return 1024

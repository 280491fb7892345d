"""Run the parsing of an untrusted file in a child process, so that what no Python code can catch — a segfault or
an endless loop inside libhdf5, a runaway allocation — costs that one file, not the whole run.

The child is forked from the running process and imports what reading needs before anything else: for one file
the child alone pays for numpy and h5py (the parent only shows the answer); a run over many files loads it all in
the parent once (`preload_every_reader`), so that no child imports anything again. The child gets an address-space
limit, and sends its result back as JSON: the parent never unpickles anything the child says, since a child that
read a hostile file is not trusted either. Where fork is not available (Windows) the work runs
in-process.
"""
from __future__ import annotations

import json
import os
import signal
import threading
from typing import Any, Callable

from . import forking, limits
from .errors import ExitCode, InspectError

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_MEMORY = 4 << 30
#: The largest answer a child may send. The parent parses and renders it, so it is bounded too: past this the
#: child is killed and the file refused (a report this large comes from a hostile config, not a model).
MAX_RESULT_BYTES = 64 << 20


class InternalError(Exception):
    """A bug in lstm-inspect that happened inside an isolated child (reported as exit code 3)."""


def available() -> bool:
    return hasattr(os, "fork")


def run(func: Callable[..., Any], *args: Any, label: str, timeout: float | None = DEFAULT_TIMEOUT,
        max_memory: int | None = DEFAULT_MAX_MEMORY) -> Any:
    """``func(*args)`` in a forked child with a time and memory bound; returns its JSON-able result.

    InspectErrors raised in the child are raised again here with the same message and exit code; a crash, a
    timeout or running out of memory becomes an InspectError naming `label`.
    """
    if not available():
        return func(*args)
    pid, read_end = forking.fork(lambda: _child(func, args, max_memory))
    outcome, payload, status = forking.collect(read_end, pid, timeout, MAX_RESULT_BYTES)
    if outcome == "timeout":
        raise InspectError(f"reading took longer than {timeout:g} s (the --timeout limit); gave up on this file: "
                           f"raise --timeout above {timeout:g} if it is a large file", label)
    if outcome == "too large":
        raise InspectError(f"the result is larger than {MAX_RESULT_BYTES:,} bytes; refusing it (narrow it with "
                           "--layer)", label)
    if os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        why = "it is corrupt or hostile" + (" (or needs more memory than --max-memory)" if max_memory else "")
        raise InspectError(f"the reader crashed ({name}) on this file: {why}", label)
    try:
        message = json.loads(payload.decode("utf-8"))
    except ValueError as exc:
        raise InspectError("the isolated reader died without an answer (out of memory? "
                           f"raise --max-memory{_mib(max_memory)})", label) from exc
    if "ok" in message:
        return message["ok"]
    if "error" in message:
        error = message["error"]
        exc = InspectError(error["message"], error.get("path") or label)
        exc.exit_code = ExitCode(error.get("exit_code", ExitCode.BAD_INPUT))
        raise exc
    raise InternalError(message.get("internal", "unknown failure in the isolated reader"))


class _RenderingTimeout(InspectError):
    pass


def _on_alarm(signum: int, frame: Any) -> None:
    raise _RenderingTimeout(f"showing the result took longer than {_PARENT['timeout']:g} s (--timeout); gave up")


#: The parent's own bounds, set once (memory) or re-armed after each child (time).
_PARENT: dict[str, Any] = {"memory_set": False, "timeout": None}


def bound_parent(timeout: float | None, max_memory: int | None) -> None:
    """Bound the rest of this (parent) process's work — parsing the child's answer, rendering it — like the child:
    an address-space limit of what it has now plus `max_memory` (set once), and `timeout` seconds from now (a timer
    re-armed after every child; only in the main thread, where signals arrive)."""
    if max_memory and not _PARENT["memory_set"]:
        _PARENT["memory_set"] = True
        limits.limit_memory(max_memory)
    if timeout and threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        _PARENT["timeout"] = timeout
        signal.signal(signal.SIGALRM, _on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)


def disarm_parent() -> None:
    """Stop the parent's timer while a child works (the child has its own)."""
    if hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)


def _preload() -> None:
    """Import what reading uses, in a child before its memory limit is set (under it, a child may not be able to
    map new shared libraries). A command that reads one file leaves it to the child, which imports it once and
    alone: imported in the parent before the fork, each page of it that the child then writes would be copied for
    the child. A run over many files calls `preload_every_reader` first, and its children find all loaded."""
    import faulthandler  # noqa: F401  (the child switches it off)
    import resource  # noqa: F401  (the child's memory limit)

    from . import gates, report  # noqa: F401  (check's CLI has loaded `analysis.check` already)
    from .analysis import notes, stats  # noqa: F401
    from .readers import keras_config  # noqa: F401
    from .readers import archive, h5safe, infer, keras3, legacy_h5, polyglot, safe_open  # noqa: F401


#: Imported by `preload_every_reader` besides every reader and analysis module: what they load on first use
#: (numpy loads `numpy.ma` on the first `np.median`; zipfile the cp437 codec for a name without the UTF-8 flag;
#: HDF5 names decode as ASCII; the report names a model's inputs with `run.forward`).
_MANY_FILES = ("numpy.ma", "pickletools", "encodings.cp437", "encodings.ascii", "lstm_inspect.api",
               "lstm_inspect.run.forward")


def preload_every_reader() -> None:
    """Import every reader and analysis module (and what they load on first use) in this process, once: for a run
    over many files, whose children would otherwise each import the same modules again (`check` over 1,000 files).
    No reader imports a framework (torch, onnx, TensorFlow) at module level, so this loads none."""
    import importlib
    import pkgutil

    from . import analysis, readers

    _preload()
    for package in (readers, analysis):
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
    for name in _MANY_FILES:
        importlib.import_module(name)
    _warm_up()
    _PRELOADED[0] = True


#: Set once `preload_every_reader` has run: a child then has nothing to import (and skips even asking).
_PRELOADED = [False]


def _warm_up() -> None:
    """Check the bundled example model (our own file, not a user's) in this process once: what the first read of
    a file sets up — the HDF5 library's internal state, Python's specialised bytecode, compiled regular
    expressions — is then inherited by every child instead of being set up again in each. Best effort: a
    failure here only costs that saving."""
    try:
        from importlib import resources

        from .analysis import check

        example = str(resources.files("lstm_inspect") / "data" / "example_lstm.keras")
        check.check_path(example)
    except Exception:  # noqa: BLE001  (an optimisation only)
        pass


def _preload_onnx(args: tuple[Any, ...]) -> None:
    """onnx (and the protobuf library it parses with), when a file to read is an .onnx: like numpy's and h5py's,
    its libraries (28 MB of address space) are not what --max-memory bounds; the file's reading is."""
    if any(isinstance(a, (str, os.PathLike)) and os.fspath(a).lower().endswith(".onnx") for a in args):
        try:
            import onnx  # noqa: F401
        except ImportError:
            pass  # the reader says onnx is needed


def _child(func: Callable[..., Any], args: tuple[Any, ...], max_memory: int | None) -> bytes:
    """In the forked child: read under the memory limit; the answer as JSON bytes (`forking` sends it)."""
    import faulthandler

    faulthandler.disable()  # a crash here is reported by the parent, in one line
    limits.mark_child()
    if not _PRELOADED[0]:
        _preload()  # before the memory limit, which bounds the reading, not numpy's and h5py's libraries
    _preload_onnx(args)
    if max_memory:
        limits.limit_memory(max_memory)
    try:
        message: dict[str, Any] = {"ok": func(*args)}
    except (MemoryError, OSError, InspectError) as exc:
        if limits.out_of_memory(exc):  # also a reader's error raised from it: the limit is what to name
            detail = exc if isinstance(exc, MemoryError) else None
            message = {"error": {"message": memory_message(max_memory, detail), "path": None,
                                 "exit_code": int(ExitCode.BAD_INPUT)}}
        elif isinstance(exc, InspectError):
            message = {"error": {"message": exc.message, "path": exc.path, "exit_code": int(exc.exit_code)}}
        else:
            message = {"internal": f"{type(exc).__name__}: {exc}"}
    except RecursionError:
        message = {"error": {"message": "structure nested too deeply to read", "path": None,
                             "exit_code": int(ExitCode.BAD_INPUT)}}
    except Exception as exc:  # a bug: carried to the parent as one line
        message = {"internal": f"{type(exc).__name__}: {exc}"}
    return json.dumps(message, allow_nan=True).encode("utf-8")


def memory_message(max_memory: int | None, exc: BaseException | None = None) -> str:
    """What running out of memory says: the memory limit (naming --max-memory and its value), how much the failed
    allocation asked for when numpy says so, and what to raise."""
    detail = str(exc).strip() if exc is not None else ""
    asked = f": {detail[:160]}" if detail else ""
    if not max_memory:
        return f"out of memory{asked}"
    return (f"reading needs more than the memory limit, --max-memory {max_memory / 2**20:,.0f} MiB{asked}; raise "
            "--max-memory (or lower --chunk-size)")


def _mib(max_memory: int | None) -> str:
    return f" above {max_memory / 2**20:,.0f} MiB" if max_memory else ""

"""How many CPUs one computation may use, and running its independent pieces in threads: numpy releases the GIL in
BLAS and in its ufunc loops, so threads that each run large numpy operations use several CPUs at once.

Threads pay only when numpy's BLAS runs one thread (the CLI sets that before numpy loads; left multi-threaded,
BLAS's own threads already use the CPUs and ours only compete with them), when this process may run on more than
one CPU, and when the machine is not already busy (a thread descheduled while it holds the GIL stalls the others).
"""
from __future__ import annotations

import contextvars
import os
import threading
from typing import Any, Callable, Sequence

from . import limits

#: The 1-minute load average per CPU from which the machine counts as busy: above what this process's own threads
#: add (at most one per CPU), so a long run does not switch itself off. Measured on 2 CPUs (docs/benchmarks.md):
#: a forward pass split over two threads ran 2.0x as fast idle, 0.8-1.2x at load 5-7.
BUSY_LOAD_PER_CPU = 1.5

#: The variables each BLAS reads its thread count from, first match wins (OpenBLAS, then MKL's).
_BLAS_THREAD_VARIABLES = {
    "openblas": ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"),
    "mkl": ("MKL_NUM_THREADS", "OMP_NUM_THREADS"),
}

#: Address space a thread beyond the first takes before it computes anything — its stack, the C library's malloc
#: arena (64 MiB reserved) and OpenBLAS's buffer: 72 MiB measured — with room for its share of the work. Under
#: --max-memory a thread is used only where this fits (OpenBLAS gives up on a thread whose buffer it cannot map).
THREAD_ADDRESS_SPACE = 160 << 20

#: At most this many threads per computation (None: no cap). `check --jobs N` sets 1: its N children already use
#: the CPUs, one file each.
thread_cap: int | None = None


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the system tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def blas_single_threaded() -> bool:
    """Whether the environment holds numpy's BLAS to one thread (read when numpy loaded it: the CLI sets these
    variables before). Unknown BLAS: only when every variable that any of them reads says 1."""
    name = _blas_name()
    lists = [v for key, v in _BLAS_THREAD_VARIABLES.items() if key in name] or list(_BLAS_THREAD_VARIABLES.values())
    for variables in lists:
        first = next((os.environ[v].strip() for v in variables if os.environ.get(v, "").strip()), None)
        if first != "1":
            return False
    return True


def machine_busy() -> bool:
    """Whether the system's 1-minute load average is at least `BUSY_LOAD_PER_CPU` per CPU of the system (the load
    average counts every CPU's runnable tasks, so it is compared with all of them, not this process's share)."""
    try:
        return os.getloadavg()[0] >= BUSY_LOAD_PER_CPU * (os.cpu_count() or 1)
    except (AttributeError, OSError):
        return False


def auto_threads() -> int:
    """The threads an automatic choice uses: the usable CPUs when BLAS runs one thread and the machine is not
    busy, else 1; never more than `thread_cap`, nor than the address-space limit leaves room for."""
    threads = usable_cpus() if blas_single_threaded() and not machine_busy() else 1
    room = limits.address_space_room() if threads > 1 else None
    if room is not None:
        threads = min(threads, 1 + room // THREAD_ADDRESS_SPACE)
    return max(1, min(threads, thread_cap)) if thread_cap is not None else threads


def _blas_name() -> str:
    import numpy as np

    try:
        return str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"]).lower()
    except (AttributeError, KeyError, TypeError):
        return ""


def in_threads(func: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """[func(item) for item in items], the first in this thread and each other in a thread of its own, in a copy
    of this thread's context (numpy's error state, np.errstate, is a context variable). A thread the system refuses
    (a bounded address space) runs its item here after the first; the first exception is raised once all are
    done."""
    results: list[Any] = [None] * len(items)
    errors: list[BaseException] = []

    def work(index: int, context: contextvars.Context) -> None:
        try:
            results[index] = context.run(func, items[index])
        except BaseException as exc:  # noqa: BLE001 - raised again in the calling thread
            errors.append(exc)

    started, refused = [], []
    try:
        for index in range(1, len(items)):
            thread = threading.Thread(target=work, args=(index, contextvars.copy_context()), daemon=True,
                                      name=f"lstm-inspect-part-{index}")
            try:
                thread.start()
                started.append(thread)
            except RuntimeError:  # "can't start new thread"
                refused.append(index)
        if items:
            work(0, contextvars.copy_context())
        for index in refused:
            work(index, contextvars.copy_context())
    finally:
        for thread in started:
            thread.join()
    if errors:
        raise errors[0]
    return results

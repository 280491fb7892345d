"""Running a recurrent layer's batch rows on several CPUs: the rows of a batch never meet in a recurrent layer, so
row ranges run their whole time loop (`recurrent_fast.run_loop`) each in its own thread, with no synchronisation
per step, writing into their rows of shared outputs. numpy releases the GIL in BLAS and in its ufunc loops, so the
threads' matmuls and elementwise steps run at once; the Python between them is short.

When it pays (`parts`): the batch is large enough (each part at least `MIN_ROWS` rows and `MIN_WORK` values per
step), this process may use more than one CPU, numpy's BLAS runs one thread — the CLI sets that before numpy
loads; left multi-threaded, BLAS's own threads already use the CPUs and a split only competes with them — and the
machine is not busy (`cpus.machine_busy`): with other processes on every CPU the threads wait for each other (a thread
descheduled while it holds the GIL stops the others at their next numpy call) and the split lost ~10%.

Each row is computed by the same operations whether or not the batch is split, so the results are bit-identical
(tested) with a BLAS that computes a row of a product the same whatever the other rows, as OpenBLAS (numpy's
wheels) does; the parts are whole multiples of `ALIGN` rows so SIMD and kernel tiles fall on the same rows.
"""
from __future__ import annotations

import numpy as np

from .. import cpus
from . import recurrent_fast

#: Below these a part's steps are too short for two threads to beat the Python that drives them (each step's ~15
#: numpy calls need the GIL in turn). From the idle 2-CPU measurement of the stacked LSTM(256)x2 (docs/benchmarks.md):
#: batch 32 split in two ran 1.43x faster, 128 1.2x, 512 2.0x; smaller layers were not measured idle, hence the
#: bound on the work per step too.
MIN_ROWS = 16
MIN_WORK = 16 * 256
"""rows × units of a part, a step's work (an LSTM(256) at 16 rows, an LSTM(64) at 64, an LSTM(16) at 256)."""
ALIGN = 16


def parts(batch: int, units: int, threads: int | None) -> list[slice]:
    """The row ranges to run apart: one (the whole batch) unless splitting pays. `threads`: None decides
    (`cpus.auto_threads`: the usable CPUs when BLAS runs one thread and the machine is not busy, else 1); a number
    asks for at most that many parts (1: never split)."""
    if threads is None:
        threads = min(cpus.auto_threads(), batch // MIN_ROWS, batch * units // MIN_WORK)
    threads = max(1, min(int(threads), -(-batch // ALIGN)))
    if threads == 1:
        return [slice(0, batch)]
    size = -(-batch // threads)
    size = -(-size // ALIGN) * ALIGN
    return [slice(lo, min(batch, lo + size)) for lo in range(0, batch, size)]


def run_loop(rows: list[slice], weights: recurrent_fast.LoopWeights, act: recurrent_fast.Activation,
             rec_act: recurrent_fast.Activation, x: np.ndarray, states: list[np.ndarray], mask: np.ndarray | None,
             backwards: bool, zero_out: bool, keep_sequence: bool,
             trace: bool) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """`recurrent_fast.run_loop` with its arguments and results, the row ranges `rows` each in a thread (the
    first in this one). The parts share the unsplit run's bound on the input terms' buffers."""
    if len(rows) == 1 or any(np.shape(s)[:1] != x.shape[:1] for s in states) \
            or (mask is not None and np.shape(mask)[:1] != x.shape[:1]):
        return recurrent_fast.run_loop(weights, act, rec_act, x, states, mask, backwards, zero_out, keep_sequence,
                                       trace)
    batch, steps = x.shape[:2]
    dtype = np.result_type(x.dtype, weights.kernel.dtype)
    shape = (steps, batch, weights.units)
    sequence = np.empty(shape, dtype=dtype) if keep_sequence else None
    traces = {name: np.empty(shape, dtype=dtype) for name in recurrent_fast.trace_names(weights.family)} \
        if trace else {}

    def part(r: slice) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
        return recurrent_fast.run_loop(
            weights, act, rec_act, x[r], [s[r] for s in states], None if mask is None else mask[r], backwards,
            zero_out, keep_sequence, trace, None if sequence is None else sequence[:, r],
            {name: array[:, r] for name, array in traces.items()}, recurrent_fast.INPUT_BLOCK_BYTES // len(rows))

    results = cpus.in_threads(part, rows)
    output = np.swapaxes(sequence, 0, 1) if keep_sequence else np.concatenate([r[0] for r in results])
    final = [np.concatenate([r[1][i] for r in results]) for i in range(len(results[0][1]))]
    return output, final, {name: np.swapaxes(array, 0, 1) for name, array in traces.items()}

"""Summary statistics of weight arrays, as plain records, computed in one pass over bounded chunks.

Every value is summarised once: `Partial.add` takes a chunk (any dtype, any strides), copies it piece by piece
(``PIECE`` values at a time, a cache-sized float64 scratch buffer) and folds the piece's count, mean, squared
deviations (M2), sum of squares, min, max, zeros and non-finite counts into float64 accumulators; partials merge with
Chan et al.'s pairwise update, so the statistics of a whole tensor are the merge of its gate blocks' partials when the
blocks cover it (`summarise`). No float64 copy of a whole array is ever made.

Accuracy (tests/test_stats_onepass.py): against numpy on a float64 copy, mean / std / l2 agree to a relative 1e-12
(plus 1e-12 of the largest magnitude for the mean), min / max / counts exactly, for float32 and float64 data
including NaN / Inf, all-zero arrays and values near the float32 range limits.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

import numpy as np

#: Values copied to the float64 scratch buffer at a time: 512 KiB, so the passes over a piece run from cache.
PIECE = 1 << 16


@dataclass(frozen=True)
class Stats:
    """Statistics of one array. mean/std/min/max/l2 are over its finite values (None when it has none)."""

    shape: tuple[int, ...]
    params: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    l2: float | None
    """Frobenius (L2) norm."""
    zero_fraction: float
    """Share of values exactly 0."""
    nan: int
    inf: int

    def as_dict(self) -> dict:
        data = asdict(self)
        data["shape"] = list(self.shape)
        return data


class Scratch:
    """The reused buffers of `Partial.add`: float64 values and their flags, `size` of each."""

    def __init__(self, size: int = PIECE):
        self.values = np.empty(size, dtype=np.float64)
        self.flags = np.empty(size, dtype=np.bool_)


class Partial:
    """Running statistics of the values seen so far, in float64."""

    __slots__ = ("params", "count", "mean", "m2", "sumsq", "min", "max", "zeros", "nan", "inf")

    def __init__(self) -> None:
        self.params = self.count = self.zeros = self.nan = self.inf = 0
        self.mean = self.m2 = self.sumsq = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, values: np.ndarray, scratch: Scratch | None = None) -> None:
        """Fold every value of `values` in, `PIECE` values at a time through `scratch`."""
        if values.size == 0:
            return
        if scratch is None:
            scratch = Scratch(min(values.size, PIECE))
        for piece in _pieces(values):
            self._add_piece(piece, scratch)

    def _add_piece(self, piece: np.ndarray, scratch: "Scratch") -> None:
        n = piece.size
        flat = scratch.values[:n]
        np.copyto(flat.reshape(piece.shape), piece, casting="unsafe")
        self.params += n
        # == 0 then counting the booleans: 2.5x faster than np.count_nonzero on float64
        self.zeros += int(np.count_nonzero(np.equal(flat, 0, out=scratch.flags[:n])))
        total = float(flat.sum())
        if not math.isfinite(total):  # a NaN or Inf among the values (or float64 values near overflow)
            finite = np.isfinite(flat)
            bad = n - int(np.count_nonzero(finite))
            if bad:
                nan = int(np.count_nonzero(np.isnan(flat)))
                self.nan += nan
                self.inf += bad - nan
                flat = flat[finite]
                n = flat.size
                if not n:
                    return
                total = float(flat.sum())
        mean = total / n
        low, high = float(flat.min()), float(flat.max())
        flat -= mean
        np.square(flat, out=flat)  # not np.dot: BLAS threads on a busy machine made it 100x slower
        m2 = float(flat.sum())
        self._merge(n, mean, m2, m2 + n * mean * mean, low, high)

    def _merge(self, n: int, mean: float, m2: float, sumsq: float, low: float, high: float) -> None:
        if not n:
            return
        total = self.count + n
        delta = mean - self.mean
        # Chan, Golub & LeVeque: the pairwise update of the mean and the sum of squared deviations.
        self.m2 += m2 + delta * delta * (self.count * n / total)
        self.mean += delta * (n / total)
        self.count = total
        self.sumsq += sumsq
        self.min, self.max = min(self.min, low), max(self.max, high)

    def merge(self, other: "Partial") -> None:
        self.params += other.params
        self.zeros += other.zeros
        self.nan += other.nan
        self.inf += other.inf
        self._merge(other.count, other.mean, other.m2, other.sumsq, other.min, other.max)

    def result(self, shape: Sequence[int]) -> Stats:
        shape = tuple(int(n) for n in shape)
        params = self.params
        zero_fraction = self.zeros / params if params else 0.0
        if not self.count:
            return Stats(shape, params, None, None, None, None, None, zero_fraction, self.nan, self.inf)
        return Stats(shape, params, self.mean, math.sqrt(max(self.m2, 0.0) / self.count), self.min, self.max,
                     math.sqrt(self.sumsq), zero_fraction, self.nan, self.inf)


def _pieces(values: np.ndarray) -> Iterable[np.ndarray]:
    """Views of `values` of at most PIECE values (split along the first axes), covering each value once."""
    if values.ndim == 0 or values.size <= PIECE:
        yield values
        return
    row = values.size // values.shape[0]
    if row > PIECE:
        for index in range(values.shape[0]):
            yield from _pieces(values[index])
        return
    step = PIECE // row
    for start in range(0, values.shape[0], step):
        yield values[start:start + step]


def compute(values: np.ndarray) -> Stats:
    """The statistics of one in-memory array (one pass, no float64 copy of it)."""
    values = np.asarray(values)
    partial = Partial()
    partial.add(values)
    return partial.result(values.shape)


def summarise(tensor: Any, blocks: Sequence[Any] = (), max_bytes: int | None = None) -> tuple[Stats, list[Stats]]:
    """The statistics of a stored `tensor` (a `model.Tensor`) and of each of `blocks` (gate blocks slicing it), reading
    it once in row chunks of at most `max_bytes`. The tensor's own statistics are merged from the blocks' partials
    when the blocks cover it exactly, so no value is summarised twice."""
    shape = tuple(tensor.shape)
    regions = [_region(b, shape) for b in blocks]
    streamed = [i for i, region in enumerate(regions) if region is not None]
    covered = _partition(shape, [regions[i] for i in streamed])
    partials = {i: Partial() for i in streamed}
    whole = Partial()
    scratch = Scratch()
    for start, rows in tensor.row_chunks(max_bytes):
        for i in streamed:
            piece = _rows_of(regions[i], start, rows)
            if piece is not None:
                partials[i].add(piece, scratch)
        if not covered:
            whole.add(rows, scratch)
        del rows
    if covered:
        for partial in partials.values():
            whole.merge(partial)
    results = []
    for i, block in enumerate(blocks):
        results.append(partials[i].result(block.shape) if i in partials else compute(block.read()))
    return whole.result(shape), results


Region = tuple[tuple[int, int], ...]
"""A block as [start, stop) per axis of its tensor."""


def _region(block: Any, shape: tuple[int, ...]) -> Region | None:
    """The box a block's index selects, or None when its values are not a plain box of the tensor (a sum of two
    slices, a stepped slice) or the tensor has no axes."""
    if getattr(block, "plus", None) is not None or not shape:
        return None
    index = tuple(block.index)
    if any(part is Ellipsis for part in index):
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    index = index + (slice(None),) * (len(shape) - len(index))
    if len(index) != len(shape):
        return None
    box = []
    for part, size in zip(index, shape):
        if isinstance(part, (int, np.integer)):
            position = int(part) + (size if part < 0 else 0)
            if not 0 <= position < size:
                return None
            box.append((position, position + 1))
        elif isinstance(part, slice):
            start, stop, step = part.indices(size)
            if step != 1:
                return None
            box.append((start, max(start, stop)))
        else:
            return None
    return tuple(box)


def _rows_of(region: Region, start: int, rows: np.ndarray) -> np.ndarray | None:
    """The part of a block's region inside the chunk of rows [start, start + len(rows)), as a view."""
    (low, high), rest = region[0], region[1:]
    low, high = max(low, start), min(high, start + rows.shape[0])
    if low >= high:
        return None
    return rows[(slice(low - start, high - start),) + tuple(slice(a, b) for a, b in rest)]


def _partition(shape: tuple[int, ...], regions: list[Region]) -> bool:
    """True when the boxes are pairwise disjoint and together hold every value of the tensor."""
    if not regions:
        return False
    total = int(np.prod(shape, dtype=np.int64))
    if sum(math.prod(b - a for a, b in box) for box in regions) != total:
        return False
    for i, first in enumerate(regions):
        for second in regions[i + 1:]:
            if all(a1 < b2 and a2 < b1 for (a1, b1), (a2, b2) in zip(first, second)):
                return False
    return True


def layer_stats(weights: Sequence[Any], blocks: Sequence[Any]) -> tuple[dict[int, Stats], dict[int, Stats]]:
    """The statistics of each weight (`model.Tensor`) and of each gate block, by ``id``: every stored array read
    once, in bounded chunks, each value summarised once (`summarise`)."""
    by_tensor: dict[int, list[Any]] = {}
    for block in blocks:
        by_tensor.setdefault(id(block.tensor), []).append(block)
    tensors = {id(t): t for t in weights}
    tensors.update((id(b.tensor), b.tensor) for b in blocks)
    weight_stats, block_stats = {}, {}
    for key, tensor in tensors.items():
        own = by_tensor.get(key, [])
        weight_stats[key], results = summarise(tensor, own)
        block_stats.update((id(b), s) for b, s in zip(own, results))
    return weight_stats, block_stats

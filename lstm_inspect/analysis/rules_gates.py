"""Check rules on the gates of recurrent layers: an LSTM's forget bias, sigmoid gates pinned by their bias, and the
spectral norm of recurrent kernel blocks.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .. import cpus, gates
from .. import model as model_module
from . import stats
from .findings import CheckOptions, Finding
from .view import ModelView, finding, fmt


def _effective_bias(split: gates.GateSplit, gate: str) -> np.ndarray | None:
    block = split.block("b_" + gate)
    if block is None:
        return None
    bias = block.read().astype(np.float64)
    recurrent = split.block("rb_" + gate)
    if recurrent is not None and gate in ("z", "r"):  # GRU reset_after: both biases add up before the sigmoid
        bias = bias + recurrent.read()
    return bias


def rule_forget_bias(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("forget_bias_min")
    if limit is None:
        return
    for split in view.splits.values():
        if split.layout.family != "LSTM":
            continue
        bias = _effective_bias(split, "f")
        if bias is None or not bias.size or not np.isfinite(bias).all():
            continue
        median = float(np.median(bias))
        if median < limit:
            share = float((bias < limit).mean())
            yield finding(o, "forget-bias-negative", split.layer, "b_f",
                           f"median forget bias {fmt(median)} < {fmt(limit)} ({share:.0%} of units): "
                           f"sigmoid(b_f) ~ {fmt(1 / (1 + math.exp(-median)))}, the cell forgets at every step")


def rule_bias_saturation(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit, share_limit = o.t("saturation_bias"), o.t("saturation_share")
    if limit is None:
        return
    sigmoid_gates = {"LSTM": ("i", "f", "o"), "GRU": ("z", "r")}
    for split in view.splits.values():
        for gate in sigmoid_gates.get(split.layout.family, ()):
            bias = _effective_bias(split, gate)
            if bias is None or not bias.size or not np.isfinite(bias).all():
                continue
            high, low = float((bias > limit).mean()), float((bias < -limit).mean())
            for share, state in ((high, "open"), (low, "shut")):
                if share >= share_limit and share > 0:
                    name = split.layout.gate_names[split.layout.gates.index(gate)]
                    yield finding(o, "bias-saturation", split.layer, "b_" + gate,
                                   f"{share:.0%} of units have |bias| > {fmt(limit)}: the {name} is pinned {state}")


#: Lanczos: vectors per block, Krylov vectors at most, and the relative change of the estimate of σ₁² that stops it.
SPECTRAL_BLOCK = 8
SPECTRAL_MAX_STEPS = 64
SPECTRAL_TOL = 3e-4
#: A block larger than this many times --chunk-size is not held in memory: each step streams it from the file.
SPECTRAL_IN_MEMORY_CHUNKS = 4
#: The check rule stops early on a block once the chance that σ₁ is above its limit, given the Lanczos estimate so
#: far, is at most this (Kuczyński & Woźniakowski's bound for a random start vector; `_lanczos`).
SPECTRAL_RISK = 1e-9


def spectral_norm(matrix: Any, tol: float = SPECTRAL_TOL, max_steps: int = SPECTRAL_MAX_STEPS, seed: int = 0,
                  exact_below: int = 256, limit: float | None = None) -> float:
    """The largest singular value σ₁ of an array reshaped to (-1, last axis), or of a gate `Block` / `Tensor`.

    Exact (SVD) when the smaller side is at most `exact_below`. Otherwise Lanczos on AᵀA, in the array's own
    precision (float32 stays float32; no float64 copy), with full reorthogonalisation: each step is one product
    Aᵀ(Av), and the largest Ritz value rises to σ₁² from below; it stops when it changes by less than `tol`
    relative, or after `max_steps` steps. Measured (tests/test_check_rules.py, docs/check.md): always from below;
    within 1e-4 relative of the SVD on the fixtures, 0.1-0.2% on Gaussian 1024-4096 square blocks (the hardest
    case: no gap between the top singular values), in 20-30 steps. A block larger than a few chunks is streamed
    (`spectral_norms`).

    With a `limit`, the iteration may stop as soon as σ₁ ≤ limit is all but certain (`_lanczos`): the value returned
    is then a lower bound of σ₁ that is at most the limit, not σ₁ within the accuracy above. Blocks above the limit
    always get the converged value."""
    if hasattr(matrix, "row_chunks") and not isinstance(matrix, np.ndarray):
        if _streamable(matrix, exact_below):
            return spectral_norms([matrix], tol, max_steps, seed, limit)[0]
        matrix = matrix.read()
    a = np.asarray(matrix)
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    if not a.size or not a.any():
        return 0.0
    if min(a.shape) <= exact_below:
        return float(np.linalg.norm(a.astype(np.float64), ord=2))
    a = a.astype(_work_dtype(a.dtype), copy=False)
    run = _lanczos(a.shape[1], a.dtype, tol, max_steps, seed, limit=limit)
    vector = next(run)
    try:
        while True:
            vector = run.send(a.T @ (a @ vector))
    except StopIteration as done:
        return done.value


def _streamable(block: Any, exact_below: int) -> bool:
    """A gate block that is a plain box of its array, and too large to hold (more than SPECTRAL_IN_MEMORY_CHUNKS
    chunks) or in an array read through a memory map (where a pass over the file costs no copy)."""
    shape = tuple(block.shape)
    nbytes = math.prod(shape) * np.dtype(block.dtype).itemsize
    return (len(shape) >= 2 and min(shape[0], shape[-1]) > exact_below and not getattr(block, "memory_order", False)
            and (nbytes > SPECTRAL_IN_MEMORY_CHUNKS * model_module.CHUNK_BYTES or _mapped(block.tensor))
            and stats._region(block, tuple(block.tensor.shape)) is not None)


def _mapped(tensor: Any) -> bool:
    return bool(getattr(tensor, "mapped", False))


def spectral_norms(blocks: list[Any], tol: float = SPECTRAL_TOL, max_steps: int = SPECTRAL_MAX_STEPS,
                   seed: int = 0, limit: float | None = None, count: int = 1) -> list[Any]:
    """σ₁ of several plain gate blocks (or their `count` largest singular values, as arrays), streamed: the blocks of
    one array run their Lanczos steps in lockstep, and each step is one pass over that array in row chunks
    (contiguous reads, each row chunk serving every block), so memory stays at one chunk whatever the block's size.
    σ of a transposed block is its slice's."""
    results: dict[int, float] = {}
    by_tensor: dict[int, list[Any]] = {}
    for block in blocks:
        by_tensor.setdefault(id(block.tensor), []).append(block)
    for group in by_tensor.values():
        tensor = group[0].tensor
        regions = [stats._region(b, tuple(tensor.shape)) for b in group]
        dtype = _work_dtype(tensor.dtype)
        # a mapped pass costs only its products: one vector a step converges in the fewest (cheapest) products
        width = count + SPECTRAL_BLOCK if count > 1 else 1 if _mapped(tensor) else SPECTRAL_BLOCK
        runs = [_lanczos(r[-1][1] - r[-1][0], dtype, tol, max_steps, seed, width, limit, count) for r in regions]
        vectors: list[np.ndarray | None] = [next(run) for run in runs]
        row_ranges = _row_ranges(tensor)
        share = max(1, model_module.CHUNK_BYTES // len(row_ranges))  # the ranges share the chunk budget
        while any(v is not None for v in vectors):
            partial = cpus.in_threads(lambda rows: _products(tensor, regions, vectors, dtype, rows, share),
                                      row_ranges)
            products = partial[0]
            for other in partial[1:]:
                for total, part in zip(products, other):
                    if total is not None:
                        total += part
            for i, vector in enumerate(vectors):
                if vector is None:
                    continue
                try:
                    vectors[i] = runs[i].send(products[i])
                except StopIteration as done:
                    results[id(group[i])] = done.value
                    vectors[i] = None
    return [results[id(b)] for b in blocks]


#: A mapped array of at least this many bytes has each pass of products split into row ranges run in threads
#: (`cpus.auto_threads`): each range's products are summed, so σ may differ from a one-thread run in its last bits.
THREADED_BYTES = 64 << 20


def _row_ranges(tensor: Any) -> list[tuple[int, int]]:
    """The row ranges one pass of products runs apart, one per thread: the whole array unless it is mapped (read
    without the file library's lock), large, and threads may be used."""
    rows = tensor.shape[0] if getattr(tensor, "shape", None) else 0
    threads = cpus.auto_threads() if _mapped(tensor) and tensor.nbytes >= THREADED_BYTES else 1
    threads = max(1, min(threads, rows))
    size = -(-rows // threads) if rows else 0
    return [(lo, min(rows, lo + size)) for lo in range(0, rows, size)] if threads > 1 else [(0, rows)]


def _products(tensor: Any, regions: list[Any], vectors: list[np.ndarray | None], dtype: np.dtype,
              row_range: tuple[int, int], chunk_bytes: int | None = None) -> list[np.ndarray | None]:
    """Each live vector's AᵀA·v summed over rows [low, high) of `tensor` (its block `regions[i]`), read in row
    chunks, so memory stays at one chunk whatever the block's size."""
    products = [np.zeros_like(v) if v is not None else None for v in vectors]
    low, high = row_range
    for start, rows in _cache_sized(tensor.row_chunks(chunk_bytes, low=low, high=high)):
        for i, vector in enumerate(vectors):
            part = stats._rows_of(regions[i], start, rows) if vector is not None else None
            if part is not None:
                part = part.reshape(-1, part.shape[-1]).astype(dtype, copy=False)
                products[i] += part.T @ (part @ vector)
                del part
        del rows
    return products


#: Bytes of the pieces the products work on: a piece's columns stay in cache between A·v and Aᵀ(A·v).
PIECE_BYTES = 4 << 20


def _cache_sized(chunks: Iterable[tuple[int, np.ndarray]]) -> Iterable[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of `chunks` cut into PIECE_BYTES pieces, each copied into one reused contiguous buffer:
    on a mapped 8192 x 32768 float32 array, a pass of products costs 0.28 s of CPU per GiB this way against 2.1 s on
    the mapped 32 MiB chunks themselves (each block's part read twice from memory, through 4 KiB pages)."""
    buffer = None
    for start, rows in chunks:
        if rows.ndim < 2 or rows.nbytes <= PIECE_BYTES:
            yield start, rows
            continue
        step = max(1, PIECE_BYTES // max(1, rows.nbytes // rows.shape[0]))
        if buffer is None or buffer.shape[1:] != rows.shape[1:] or buffer.dtype != rows.dtype:
            buffer = np.empty((step, *rows.shape[1:]), dtype=rows.dtype)
        for first in range(0, rows.shape[0], step):
            piece = buffer[:min(step, rows.shape[0] - first)]
            np.copyto(piece, rows[first:first + step])
            yield start + first, piece
        del rows


def _work_dtype(dtype: Any) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _lanczos(n: int, dtype: np.dtype, tol: float, max_steps: int, seed: int, width: int = 1,
             limit: float | None = None, count: int = 1):
    """(Block) Lanczos on a symmetric positive semi-definite n x n operator AᵀA, as a generator: it yields a block of
    orthonormal vectors it needs multiplied, is sent the product, and returns √ of the largest
    Ritz value (σ₁ of A, from below). The Ritz values come from the whole Krylov basis and its products (exact
    Rayleigh-Ritz, with full reorthogonalisation). `width` vectors per block: 1 for a matrix in memory or mapped
    (cheapest), `SPECTRAL_BLOCK` when each pass copies the matrix from the file (half the passes for a 4096² Gaussian
    block).

    With a `limit` on σ₁ it also stops when σ₁ ≤ limit is all but certain. Kuczyński & Woźniakowski (1992, Thm 4.2):
    for a start vector uniform on the sphere, after k Lanczos steps the largest Ritz value θ of an n x n PSD matrix
    with largest eigenvalue λ satisfies P(θ < (1 - ε)λ) ≤ 1.648·√n·exp(-√ε·(2k - 1)). With ε = 1 - θ/limit², that is
    the chance that λ = σ₁² is above limit²; it stops once this is at most SPECTRAL_RISK (a block's Krylov space
    holds its first vector's, so k counts block steps). A block near its limit runs to convergence as before.

    With `count` > 1 it returns the `count` largest (σ₁ ≥ σ₂ ≥ ..., each from below) as an array, and stops when each
    of their squares changes by less than `tol` relative (`width` should exceed `count`)."""
    width = max(1, min(width, n))
    block, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, width)))
    block = block.astype(dtype)
    room = min(n, max(1, max_steps // width) * width)
    basis = np.empty((n, room), dtype=dtype)  # the Krylov basis, filled block by block
    projected = np.zeros((room, room))  # basisᵀ (AᵀA) basis, grown by the new block's row and column each step
    dim = 0

    def result(squares: np.ndarray) -> Any:
        roots = np.sqrt(np.clip(squares, 0.0, None))
        return float(roots[0]) if count == 1 else roots

    estimate = np.zeros(1)
    while dim < room:
        block = block[:, :room - dim]
        product = np.asarray((yield block), dtype=dtype)[:, :block.shape[1]]
        first, dim = dim, dim + block.shape[1]
        basis[:, first:dim] = block
        current = basis[:, :dim]
        cross = current.T.astype(np.float64) @ product.astype(np.float64)
        projected[:dim, first:dim] = cross
        projected[first:dim, :dim] = cross.T
        corner = projected[first:dim, first:dim]
        projected[first:dim, first:dim] = (corner + corner.T) / 2
        values = np.linalg.eigvalsh(projected[:dim, :dim])[::-1][:count]
        new = float(values[0])
        if new <= 0.0:
            return result(np.zeros(len(values)))
        if limit is not None and new < limit * limit:
            margin = 1.0 - new / (limit * limit)
            if 1.648 * math.sqrt(n) * math.exp(-math.sqrt(margin) * (2 * (dim // width) - 1)) <= SPECTRAL_RISK:
                return result(values)
        settled = estimate.shape == values.shape and bool(np.all(np.abs(values - estimate) <= tol * values))
        if settled or dim >= n:
            return result(values)
        estimate = values
        rest = product - current @ (current.T @ product)
        rest -= current @ (current.T @ rest)  # twice: Gram-Schmidt loses orthogonality in float32 otherwise
        if float(np.linalg.norm(rest)) <= 10 * np.finfo(dtype).eps * new:
            return result(values)  # the Krylov space is exhausted: the whole spectrum is found
        block, _ = np.linalg.qr(rest)
        block = block.astype(dtype)
    return result(estimate)


def rule_spectral_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("spectral_norm_max")
    if limit is None:
        return
    # σ₁ ≤ the Frobenius norm (l2): a block whose l2 is within the limit needs no product
    pieces = [p for p in view.weights() if p.kind == "U" and p.stats.params and not (p.stats.nan or p.stats.inf)
              and (p.stats.l2 or 0.0) > limit]
    # the large blocks streamed together (one pass over each array per Lanczos step serves all its blocks)
    streamed = [p for p in pieces if p.source is not None and hasattr(p.source, "row_chunks")
                and hasattr(p.source, "tensor") and _streamable(p.source, 256)]
    sigmas = dict(zip(map(id, streamed), spectral_norms([p.source for p in streamed], limit=limit)))
    for piece in pieces:
        sigma = sigmas.get(id(piece))
        if sigma is None:
            sigma = spectral_norm(piece.source if piece.source is not None else piece.read(), limit=limit)
        if sigma > limit:
            yield finding(o, "spectral-norm", piece.layer, piece.name,
                           f"spectral norm {fmt(sigma)} > {fmt(limit)}: the recurrence can amplify its state")

"""Check rules on the gates of recurrent layers: an LSTM's forget bias, sigmoid gates pinned by their bias, and the
spectral norm of recurrent kernel blocks.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .. import gates
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


def spectral_norm(matrix: Any, tol: float = SPECTRAL_TOL, max_steps: int = SPECTRAL_MAX_STEPS, seed: int = 0,
                  exact_below: int = 256) -> float:
    """The largest singular value σ₁ of an array reshaped to (-1, last axis), or of a gate `Block` / `Tensor`.

    Exact (SVD) when the smaller side is at most `exact_below`. Otherwise Lanczos on AᵀA, in the array's own
    precision (float32 stays float32; no float64 copy), with full reorthogonalisation: each step is one product
    Aᵀ(Av), and the largest Ritz value rises to σ₁² from below; it stops when it changes by less than `tol`
    relative, or after `max_steps` steps. Measured (tests/test_check_rules.py, docs/check.md): always from below;
    within 1e-4 relative of the SVD on the fixtures, 0.1-0.2% on Gaussian 1024-4096 square blocks (the hardest
    case: no gap between the top singular values), in 20-30 steps. A block larger than a few chunks is streamed
    (`spectral_norms`)."""
    if hasattr(matrix, "row_chunks") and not isinstance(matrix, np.ndarray):
        if _streamable(matrix, exact_below):
            return spectral_norms([matrix], tol, max_steps, seed)[0]
        matrix = matrix.read()
    a = np.asarray(matrix)
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    if not a.size or not a.any():
        return 0.0
    if min(a.shape) <= exact_below:
        return float(np.linalg.norm(a.astype(np.float64), ord=2))
    a = a.astype(_work_dtype(a.dtype), copy=False)
    run = _lanczos(a.shape[1], a.dtype, tol, max_steps, seed)
    vector = next(run)
    try:
        while True:
            vector = run.send(a.T @ (a @ vector))
    except StopIteration as done:
        return done.value


def _streamable(block: Any, exact_below: int) -> bool:
    """A gate block too large to hold (more than SPECTRAL_IN_MEMORY_CHUNKS chunks) that is a plain box of its array."""
    shape = tuple(block.shape)
    nbytes = math.prod(shape) * np.dtype(block.dtype).itemsize
    return (len(shape) >= 2 and min(shape[0], shape[-1]) > exact_below and not getattr(block, "memory_order", False)
            and nbytes > SPECTRAL_IN_MEMORY_CHUNKS * model_module.CHUNK_BYTES
            and stats._region(block, tuple(block.tensor.shape)) is not None)


def spectral_norms(blocks: list[Any], tol: float = SPECTRAL_TOL, max_steps: int = SPECTRAL_MAX_STEPS,
                   seed: int = 0) -> list[float]:
    """σ₁ of several plain gate blocks, streamed: the blocks of one array run their Lanczos steps in lockstep, and
    each step is one pass over that array in row chunks (contiguous reads, each row chunk serving every block), so
    memory stays at one chunk whatever the block's size. σ of a transposed block is its slice's."""
    results: dict[int, float] = {}
    by_tensor: dict[int, list[Any]] = {}
    for block in blocks:
        by_tensor.setdefault(id(block.tensor), []).append(block)
    for group in by_tensor.values():
        tensor = group[0].tensor
        regions = [stats._region(b, tuple(tensor.shape)) for b in group]
        dtype = _work_dtype(tensor.dtype)
        runs = [_lanczos(r[-1][1] - r[-1][0], dtype, tol, max_steps, seed, SPECTRAL_BLOCK) for r in regions]
        vectors: list[np.ndarray | None] = [next(run) for run in runs]
        while any(v is not None for v in vectors):
            products = [np.zeros_like(v) if v is not None else None for v in vectors]
            for start, rows in tensor.row_chunks():
                for i, vector in enumerate(vectors):
                    part = stats._rows_of(regions[i], start, rows) if vector is not None else None
                    if part is not None:
                        part = part.reshape(-1, part.shape[-1]).astype(dtype, copy=False)
                        products[i] += part.T @ (part @ vector)
            for i, vector in enumerate(vectors):
                if vector is None:
                    continue
                try:
                    vectors[i] = runs[i].send(products[i])
                except StopIteration as done:
                    results[id(group[i])] = done.value
                    vectors[i] = None
    return [results[id(b)] for b in blocks]


def _work_dtype(dtype: Any) -> np.dtype:
    return np.dtype(np.float64) if np.dtype(dtype) == np.float64 else np.dtype(np.float32)


def _lanczos(n: int, dtype: np.dtype, tol: float, max_steps: int, seed: int, width: int = 1):
    """(Block) Lanczos on a symmetric positive semi-definite n x n operator AᵀA, as a generator: it yields a block of
    orthonormal vectors it needs multiplied, is sent the product, and returns √ of the largest
    Ritz value (σ₁ of A, from below). The Ritz values come from the whole Krylov basis and its products (exact
    Rayleigh-Ritz, with full reorthogonalisation). `width` vectors per block: 1 for a matrix in memory (cheapest),
    `SPECTRAL_BLOCK` when each pass streams the matrix from the file (half the passes for a 4096² Gaussian block)."""
    width = max(1, min(width, n))
    block, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((n, width)))
    block = block.astype(dtype)
    bases: list[np.ndarray] = []
    products: list[np.ndarray] = []
    estimate = 0.0
    for _ in range(max(1, max_steps // width)):
        product = yield block
        bases.append(block)
        products.append(np.asarray(product, dtype=dtype))
        basis, image = np.hstack(bases), np.hstack(products)
        projected = basis.T.astype(np.float64) @ image.astype(np.float64)
        new = float(np.linalg.eigvalsh((projected + projected.T) / 2)[-1])
        if new <= 0.0:
            return 0.0
        if abs(new - estimate) <= tol * new or basis.shape[1] + width > n:
            return math.sqrt(new)
        estimate = new
        rest = product - basis @ (basis.T @ product)
        rest -= basis @ (basis.T @ rest)  # twice: Gram-Schmidt loses orthogonality in float32 otherwise
        if float(np.linalg.norm(rest)) <= 10 * np.finfo(dtype).eps * new:
            return math.sqrt(new)  # the Krylov space is exhausted: the whole spectrum is found
        block, _ = np.linalg.qr(rest)
        block = block.astype(dtype)
    return math.sqrt(estimate)


def rule_spectral_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("spectral_norm_max")
    if limit is None:
        return
    pieces = [p for p in view.weights() if p.kind == "U" and p.stats.params and not (p.stats.nan or p.stats.inf)]
    # the large blocks streamed together (one pass over each array per Lanczos step serves all its blocks)
    streamed = [p for p in pieces if p.source is not None and hasattr(p.source, "row_chunks")
                and hasattr(p.source, "tensor") and _streamable(p.source, 256)]
    sigmas = dict(zip(map(id, streamed), spectral_norms([p.source for p in streamed])))
    for piece in pieces:
        sigma = sigmas.get(id(piece))
        if sigma is None:
            sigma = spectral_norm(piece.source if piece.source is not None else piece.read())
        if sigma > limit:
            yield finding(o, "spectral-norm", piece.layer, piece.name,
                           f"spectral norm {fmt(sigma)} > {fmt(limit)}: the recurrence can amplify its state")

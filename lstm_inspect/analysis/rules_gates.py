"""Check rules on the gates of recurrent layers: an LSTM's forget bias, sigmoid gates pinned by their bias, and the
spectral norm of recurrent kernel blocks.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

from .. import gates
from .findings import CheckOptions, Finding
from .view import ModelView, all_finite, finding, fmt


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


def spectral_norm(matrix: np.ndarray, iterations: int = 500, tol: float = 1e-9, seed: int = 0,
                  exact_below: int = 256) -> float:
    """The largest singular value of an array reshaped to (-1, last axis).

    Exact (SVD) when the smaller side is at most `exact_below`; otherwise power iteration on AᵀA, which costs two
    matrix-vector products per step and converges from below (slowly only when the top two singular values are
    close, and then the shortfall is tiny: ~1e-4 relative on a 120x120 Gaussian matrix)."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    if not a.size or not a.any():
        return 0.0
    if min(a.shape) <= exact_below:
        return float(np.linalg.norm(a, ord=2))
    v = np.random.default_rng(seed).standard_normal(a.shape[1])
    v /= np.linalg.norm(v)
    sigma = 0.0
    for _ in range(iterations):
        w = a.T @ (a @ v)
        norm = float(np.linalg.norm(w))
        if norm == 0.0:
            return 0.0
        v = w / norm
        new = math.sqrt(norm)
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def rule_spectral_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("spectral_norm_max")
    if limit is None:
        return
    for piece in view.pieces:
        if piece.kind != "U":
            continue
        values = piece.read()
        if not values.size or not all_finite(values):
            continue
        sigma = spectral_norm(values)
        if sigma > limit:
            yield finding(o, "spectral-norm", piece.layer, piece.name,
                           f"spectral norm {fmt(sigma)} > {fmt(limit)}: the recurrence can amplify its state")

"""Check rules on the values of every block and weight: non-finite, dead (constant) and duplicated blocks, magnitudes
(largest |value|, block RMS / norm, outliers among a model's blocks of one kind) and float16 headroom.
"""
from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from .. import gates
from .findings import CheckOptions, Finding
from .view import STATISTICS, ModelView, Piece, finding, fmt


FLOAT16_MAX = 65504.0


def rule_non_finite(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.weights():
        stats = piece.stats
        if not piece.floating or not (stats.nan or stats.inf):
            continue
        parts = [f"{stats.nan} NaN" if stats.nan else "", f"{stats.inf} Inf" if stats.inf else ""]
        yield finding(o, "non-finite", piece.layer, piece.name,
                       f"{' and '.join(p for p in parts if p)} of {stats.params} values")


def _finite(piece: Piece) -> bool:
    return not (piece.stats.nan or piece.stats.inf)


def rule_dead_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.weights():
        stats = piece.stats
        if piece.kind not in ("W", "U") or stats.params < 2 or not _finite(piece):
            continue
        if stats.zero_fraction == 1.0:
            yield finding(o, "dead-block", piece.layer, piece.name, f"all {stats.params} values are zero: dead gate")
        elif stats.min == stats.max:
            yield finding(o, "dead-block", piece.layer, piece.name,
                           f"all {stats.params} values equal {fmt(stats.min)}: the gate ignores which input it sees")


def equal_by_construction(first: Piece, second: Piece, view: ModelView) -> bool:
    """Two bias blocks of one recurrent layer that training keeps equal when they start equal: the input bias b_g
    and recurrent bias rb_g of a gate whose two biases are only ever added (every LSTM gate, GRU z and r, and GRU h
    when the reset gate comes before U_h). Both get the same gradient at every step, so from Keras's zero
    initialisation (or torch's when both are zeroed) they stay equal. GRU reset-after h is not such a pair: rb_h is
    scaled by r, so equal b_h and rb_h still mean a copy."""
    if first.layer is not second.layer or {first.kind, second.kind} != {"b", "rb"}:
        return False
    gate = first.name.split("_", 1)[1] if "_" in first.name else ""
    if gate != (second.name.split("_", 1)[1] if "_" in second.name else ""):
        return False
    split = view.splits.get(id(first.layer))
    return split is not None and not (split.layout.family == "GRU" and gate == "h" and split.reset_after)


def rule_duplicate_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    """Candidates share shape, dtype, min, max and the count of zeros (exact, whatever order the values were
    summarised in); only those are compared value by value, row chunk by row chunk."""
    seen: dict[tuple[Any, ...], list[Piece]] = {}
    min_size = o.t("duplicate_min_size") or 2
    for piece in view.weights():
        stats = piece.stats
        if stats.params < min_size or not piece.floating or not _finite(piece) or stats.min == stats.max:
            continue
        key = (tuple(stats.shape), np.dtype(piece.tensor.dtype).str, stats.min, stats.max, stats.zero_fraction)
        earlier = seen.setdefault(key, [])
        first = next((p for p in earlier if _same_values(p, piece)), None)
        if first is None:
            earlier.append(piece)
            continue
        if equal_by_construction(first, piece, view):
            continue
        where = first.name if first.layer is piece.layer else f"{first.layer.key} {first.name}"
        yield finding(o, "duplicate-block", piece.layer, piece.name,
                       f"identical to {where} ({stats.params} values): copied weights?")


def _same_values(a: Piece, b: Piece) -> bool:
    rows = max(1, (1 << 22) // max(1, 8 * math.prod(a.stats.shape[1:])))
    for (_, x), (_, y) in zip(_rows(a, rows), _rows(b, rows)):
        if not np.array_equal(x, y):
            return False
    return True


def _rows(piece: Piece, rows: int):
    if piece.source is not None and hasattr(piece.source, "row_chunks") and piece.stats.shape:
        yield from piece.source.row_chunks(rows=rows)
    else:
        yield 0, piece.read()


def _max_abs(piece: Piece) -> float:
    return max(abs(piece.stats.min), abs(piece.stats.max)) if piece.stats.min is not None else 0.0


def rule_max_abs(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("max_abs")
    if limit is None:
        return
    for piece in view.weights():
        if piece.tensor.name in STATISTICS:
            continue
        if piece.stats.min is not None and _max_abs(piece) > limit:
            yield finding(o, "max-abs", piece.layer, piece.name, f"max |w| = {fmt(_max_abs(piece))} > {fmt(limit)}")


def _rms(piece: Piece) -> float:
    return piece.stats.l2 / math.sqrt(piece.stats.params) if piece.stats.params and piece.stats.l2 else 0.0


def rule_block_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    max_rms, max_norm = o.t("max_block_rms"), o.t("max_block_norm")
    for piece in view.weights():
        if piece.tensor.name in STATISTICS:
            continue
        if not piece.stats.params or not _finite(piece):
            continue
        norm = piece.stats.l2 or 0.0
        rms = _rms(piece)
        if max_rms is not None and rms > max_rms:
            yield finding(o, "block-norm", piece.layer, piece.name, f"RMS {fmt(rms)} > {fmt(max_rms)}")
        elif max_norm is not None and norm > max_norm:
            yield finding(o, "block-norm", piece.layer, piece.name, f"Frobenius norm {fmt(norm)} > {fmt(max_norm)}")


def rule_outlier_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    factor, min_blocks = o.t("outlier_factor"), int(o.t("outlier_min_blocks") or 2)
    min_size = int(o.t("outlier_min_size") or 1)
    if factor is None:
        return
    for kind in ("W", "U"):
        peers = []
        for piece in view.weights():
            if piece.kind == kind and piece.stats.params >= min_size and _finite(piece):
                rms = _rms(piece)
                if rms > 0:
                    peers.append((piece, rms))
        if len(peers) < min_blocks:
            continue
        median = float(np.median([rms for _, rms in peers]))
        for piece, rms in peers:
            ratio = rms / median
            if ratio > factor or ratio < 1 / factor:
                yield finding(o, "outlier-block", piece.layer, piece.name,
                               f"RMS {fmt(rms)} is {fmt(ratio)}x the median {fmt(median)} of the model's "
                               f"{len(peers)} {gates.BLOCK_KINDS[kind]} blocks (limit {fmt(factor)}x either way)")


def rule_float16(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    headroom = o.t("float16_headroom")
    if headroom is None:
        return
    limit = FLOAT16_MAX / headroom
    for piece in view.weights():
        if piece.tensor.dtype not in ("float16", "<f2", "f2"):
            continue
        if piece.stats.min is not None and _max_abs(piece) > limit:
            yield finding(o, "float16-overflow", piece.layer, piece.name,
                           f"float16 value {fmt(_max_abs(piece))} is within {fmt(headroom)}x of "
                           f"the float16 maximum {FLOAT16_MAX:g}")

"""Check rules on the values of every block and weight: non-finite, dead (constant) and duplicated blocks, magnitudes
(largest |value|, block RMS / norm, outliers among a model's blocks of one kind) and float16 headroom.
"""
from __future__ import annotations

import hashlib
import math
from typing import Any, Iterable

import numpy as np

from .. import gates
from .findings import CheckOptions, Finding
from .view import STATISTICS, ModelView, Piece, all_finite, finding, fmt, rms_of


FLOAT16_MAX = 65504.0


def rule_non_finite(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.pieces:
        values = piece.read()
        if not np.issubdtype(values.dtype, np.floating) or all_finite(values):
            continue
        nan, inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
        parts = [f"{nan} NaN" if nan else "", f"{inf} Inf" if inf else ""]
        yield finding(o, "non-finite", piece.layer, piece.name,
                       f"{' and '.join(p for p in parts if p)} of {values.size} values")


def rule_dead_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    for piece in view.pieces:
        if piece.kind not in ("W", "U"):
            continue
        values = piece.read()
        if values.size < 2 or not all_finite(values):
            continue
        if not values.any():
            yield finding(o, "dead-block", piece.layer, piece.name, f"all {values.size} values are zero: dead gate")
        elif values.min() == values.max():
            yield finding(o, "dead-block", piece.layer, piece.name,
                           f"all {values.size} values equal {fmt(float(values.flat[0]))}: the gate ignores "
                           "which input it sees")


def rule_duplicate_block(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    seen: dict[tuple[Any, ...], Piece] = {}
    min_size = o.t("duplicate_min_size") or 2
    for piece in view.pieces:
        values = piece.read()
        if values.size < min_size or not np.issubdtype(values.dtype, np.floating) or not all_finite(values):
            continue
        if values.min() == values.max():
            continue
        key = (values.shape, values.dtype.str, hashlib.sha1(np.ascontiguousarray(values).tobytes()).digest())
        first = seen.get(key)
        if first is None:
            seen[key] = piece
        elif np.array_equal(first.read(), values):
            where = first.name if first.layer is piece.layer else f"{first.layer.key} {first.name}"
            yield finding(o, "duplicate-block", piece.layer, piece.name,
                           f"identical to {where} ({values.size} values): copied weights?")


def rule_max_abs(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    limit = o.t("max_abs")
    if limit is None:
        return
    for piece in view.pieces:
        if piece.tensor.name in STATISTICS:
            continue
        values = piece.read()
        finite = values[np.isfinite(values)] if not all_finite(values) else values
        if finite.size and float(np.abs(finite).max()) > limit:
            yield finding(o, "max-abs", piece.layer, piece.name,
                           f"max |w| = {fmt(float(np.abs(finite).max()))} > {fmt(limit)}")


def rule_block_norm(view: ModelView, o: CheckOptions) -> Iterable[Finding]:
    max_rms, max_norm = o.t("max_block_rms"), o.t("max_block_norm")
    for piece in view.pieces:
        if piece.tensor.name in STATISTICS:
            continue
        values = piece.read()
        if not values.size or not all_finite(values):
            continue
        norm = float(np.linalg.norm(values.ravel().astype(np.float64)))
        rms = norm / math.sqrt(values.size)
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
        for piece in view.pieces:
            if piece.kind == kind:
                values = piece.read()
                if values.size >= min_size and all_finite(values):
                    rms = rms_of(values)
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
    for piece in view.pieces:
        if piece.tensor.dtype not in ("float16", "<f2", "f2"):
            continue
        values = piece.read()
        finite = values[np.isfinite(values)]
        if finite.size and float(np.abs(finite).max()) > limit:
            yield finding(o, "float16-overflow", piece.layer, piece.name,
                           f"float16 value {fmt(float(np.abs(finite).max()))} is within {fmt(headroom)}x of "
                           f"the float16 maximum {FLOAT16_MAX:g}")

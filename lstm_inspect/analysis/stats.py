"""Summary statistics of weight arrays, as plain records."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


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


def compute(values: np.ndarray) -> Stats:
    values = np.asarray(values)
    if values.size == 0:  # no values; a float64 copy of a shape like (0, 10**6, 10**6, ...) would not even fit
        return Stats(tuple(int(n) for n in values.shape), 0, None, None, None, None, None, 0.0, 0, 0)
    array = values.astype(np.float64, copy=False)
    params = int(array.size)
    nan = int(np.isnan(array).sum())
    inf = int(np.isinf(array).sum())
    finite = array[np.isfinite(array)] if (nan or inf) else array.ravel()
    zero_fraction = float((array == 0).sum() / params) if params else 0.0
    if finite.size == 0:
        return Stats(tuple(array.shape), params, None, None, None, None, None, zero_fraction, nan, inf)
    return Stats(
        shape=tuple(int(n) for n in array.shape),
        params=params,
        mean=float(finite.mean()),
        std=float(finite.std()),
        min=float(finite.min()),
        max=float(finite.max()),
        l2=float(np.sqrt(np.square(finite).sum())),
        zero_fraction=zero_fraction,
        nan=nan,
        inf=inf,
    )

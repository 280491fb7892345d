"""The one-pass, chunked statistics (`stats.compute`, `stats.summarise`) against numpy on a float64 copy.

Tolerance: mean, std and l2 to a relative 1e-12 (the mean also to 1e-12 of the largest finite magnitude, since a
mean near zero has no relative precision); min, max and every count exactly.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lstm_inspect.analysis import stats
from lstm_inspect.gates.split import Block
from lstm_inspect.model import Tensor

RTOL = 1e-12


def reference(values: np.ndarray) -> dict:
    """The statistics the straightforward way: numpy on a float64 copy of the whole array."""
    array = np.asarray(values).astype(np.float64)
    finite = array[np.isfinite(array)]
    out = {"params": array.size, "nan": int(np.isnan(array).sum()), "inf": int(np.isinf(array).sum()),
           "zero_fraction": float((array == 0).sum() / array.size) if array.size else 0.0}
    if finite.size:
        out.update(mean=finite.mean(), std=finite.std(), min=finite.min(), max=finite.max(),
                   l2=math.sqrt(np.square(finite).sum()), scale=np.abs(finite).max())
    return out


def assert_matches(result: stats.Stats, values: np.ndarray) -> None:
    ref = reference(values)
    assert result.shape == tuple(values.shape)
    for key in ("params", "nan", "inf", "zero_fraction"):
        assert getattr(result, key) == ref[key], key
    if "mean" not in ref:
        assert result.mean is None and result.std is None and result.l2 is None
        return
    assert result.min == ref["min"] and result.max == ref["max"]
    assert result.mean == pytest.approx(ref["mean"], rel=RTOL, abs=RTOL * ref["scale"])
    assert result.std == pytest.approx(ref["std"], rel=RTOL, abs=RTOL * ref["scale"] * 1e-3)
    assert result.l2 == pytest.approx(ref["l2"], rel=RTOL)


def arrays():
    rng = np.random.default_rng(14)
    yield "small", rng.standard_normal((3, 5)).astype(np.float32)
    yield "several pieces", rng.standard_normal((700, 300)).astype(np.float32)
    yield "offset mean", (rng.standard_normal(300_000) * 1e-3 + 1000).astype(np.float32)
    yield "float64", rng.standard_normal((257, 1031))
    yield "one long row", rng.standard_normal((1, 200_001)).astype(np.float32)
    yield "rank 4", rng.standard_normal((3, 3, 100, 400)).astype(np.float32)
    yield "all zero", np.zeros((500, 300), dtype=np.float32)
    yield "scalar", np.array(2.5, dtype=np.float32)
    yield "empty", np.zeros((0, 7), dtype=np.float32)
    huge = rng.uniform(-3e38, 3e38, size=(400, 400)).astype(np.float32)
    yield "near float32 max", huge
    yield "tiny", (rng.standard_normal(100_000) * 1e-40).astype(np.float32)  # subnormal float32
    with_bad = rng.standard_normal((600, 250)).astype(np.float32)
    with_bad[3, 4] = np.nan
    with_bad[500, 1] = np.inf
    with_bad[599, 249] = -np.inf
    with_bad[10, :] = 0
    yield "nan and inf", with_bad
    yield "only nan", np.full((70_000,), np.nan, dtype=np.float32)
    yield "int8", rng.integers(-128, 127, size=(300, 300), dtype=np.int8)
    yield "bool", rng.integers(0, 2, size=(100, 100)).astype(bool)
    yield "float16", rng.standard_normal((300, 300)).astype(np.float16)


@pytest.mark.parametrize("name,values", list(arrays()), ids=[name for name, _ in arrays()])
def test_compute_matches_numpy(name, values):
    assert_matches(stats.compute(values), values)


def _tensor(values: np.ndarray) -> Tensor:
    """A Tensor that reads parts of `values` the way the HDF5 readers do (into the given buffer)."""
    def read_part(index, out):
        if out is None:
            return values[index].copy()
        out[...] = values[index]
        return out
    return Tensor("kernel", tuple(values.shape), str(values.dtype), "test", _load=lambda: values.copy(),
                  _read_part=read_part)


@pytest.mark.parametrize("chunk", [4096, 100_000, 1 << 30])
def test_summarise_gate_blocks_in_chunks(chunk):
    """An LSTM-like kernel (in, 4u) read in row chunks: every gate block and the whole tensor (merged from the
    blocks' partials) match numpy."""
    rng = np.random.default_rng(1)
    units, inputs = 300, 257
    kernel = rng.standard_normal((inputs, 4 * units)).astype(np.float32)
    kernel[:, units:2 * units] += 5  # one gate far from the others: the merge must carry the mean shift
    kernel[7, 7] = np.nan
    tensor = _tensor(kernel)
    blocks = [Block(f"W_{g}", "W", g, tensor, (Ellipsis, slice(i * units, (i + 1) * units)), "")
              for i, g in enumerate("ifco")]
    whole, parts = stats.summarise(tensor, blocks, max_bytes=chunk)
    assert_matches(whole, kernel)
    for i, part in enumerate(parts):
        assert_matches(part, kernel[:, i * units:(i + 1) * units])


def test_summarise_partial_cover_and_row_blocks():
    """Blocks that do not cover the tensor (a TF1-style [x; h] kernel cut by rows and columns, one missing) and a
    block that is a sum of two slices: the tensor is summarised on its own, each block still right."""
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((90, 40)).astype(np.float64)
    tensor = _tensor(kernel)
    blocks = [Block("W_a", "W", "a", tensor, (slice(0, 30), slice(0, 20)), ""),
              Block("U_a", "U", "a", tensor, (slice(30, None), slice(0, 20)), ""),
              Block("W_b", "W", "b", tensor, (slice(0, 30), slice(20, 40)), ""),
              Block("row", "b", "", tensor, (5,), ""),
              Block("sum", "b", "", tensor, (0,), "", plus=(1,))]
    whole, parts = stats.summarise(tensor, blocks, max_bytes=7 * 40 * 8)
    assert_matches(whole, kernel)
    assert_matches(parts[0], kernel[0:30, 0:20])
    assert_matches(parts[1], kernel[30:, 0:20])
    assert_matches(parts[2], kernel[0:30, 20:40])
    assert_matches(parts[3], kernel[5])
    assert_matches(parts[4], kernel[0] + kernel[1])


def test_row_chunks_are_bounded_and_cover_the_array():
    values = np.arange(1000 * 30, dtype=np.float32).reshape(1000, 30)
    tensor = _tensor(values)
    seen = []
    for start, rows in tensor.row_chunks(max_bytes=30 * 4 * 64):
        assert rows.nbytes <= 30 * 4 * 64
        seen.append((start, rows.copy()))
    assert len(seen) == 16
    assert np.array_equal(np.concatenate([rows for _, rows in seen]), values)

"""The report's figures of large blocks are built from row chunks (no block read whole) and match what the whole
block gives: the same pooled heatmap, histogram and statistics, and its largest singular values within 0.1% of
numpy's SVD (block Lanczos, `figure_data.SPECTRUM_TOP` of them)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lstm_inspect import gates
from lstm_inspect import model as model_module
from lstm_inspect.analysis import rules_gates
from lstm_inspect.readers import open_model
from lstm_inspect.render import figure_data
from lstm_inspect.render.png import as_matrix, pool

FIXTURES = Path(__file__).parent / "fixtures"
FILES = [FIXTURES / "trained" / "k3_trained_char_lstm.keras", FIXTURES / "trained" / "k2_trained_gru_reset_after.h5",
         FIXTURES / "models" / "k2_bidi_concat.h5"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_streamed_figures_match_the_whole_block(path, monkeypatch):
    with open_model(str(path)) as model:
        splits = [s for s in (gates.split(layer) for layer in model.layers) if s is not None and s.blocks]
        whole = [figure_data.layer_figures(split) for split in splits]
        monkeypatch.setattr(figure_data, "STREAM_VALUES", 0)  # every 2-D block streamed...
        monkeypatch.setattr(model_module, "CHUNK_BYTES", 512)  # ...in many small row chunks
        for split, expected in zip(splits, whole):
            streamed = figure_data.layer_figures(split)
            assert streamed.scale == expected.scale
            for block, one, other in zip(split.blocks, streamed.blocks, expected.blocks):
                assert _same_stats(one.stats, other.stats)
                if other.matrix is None:
                    continue
                assert np.array_equal(one.matrix, other.matrix) and one.window == other.window
                assert np.array_equal(one.histogram, other.histogram)
                if block.kind == "U":
                    exact = np.linalg.svd(as_matrix(block.read()).astype(np.float64), compute_uv=False)
                    top = exact[:figure_data.SPECTRUM_TOP]
                    assert one.singular_values.shape == top.shape
                    assert one.singular_values == pytest.approx(top, rel=1e-3, abs=1e-6 * exact[0])
                    assert one.spectral_norm == pytest.approx(exact[0], rel=1e-3)


def _same_stats(one, other) -> bool:
    assert one.shape == other.shape and one.params == other.params
    assert one.min == other.min and one.max == other.max and one.nan == other.nan
    assert one.mean == pytest.approx(other.mean, rel=1e-12, abs=1e-15)
    assert one.std == pytest.approx(other.std, rel=1e-12)
    return True


@pytest.mark.parametrize("n", [300, 1024])
def test_top_singular_values_of_a_gaussian_block(n):
    """No gap between the singular values: the slowest case for Lanczos."""
    a = (np.random.default_rng(n).standard_normal((n, n)) * 0.05).astype(np.float32)
    exact = np.linalg.svd(a.astype(np.float64), compute_uv=False)[:figure_data.SPECTRUM_TOP]
    run = rules_gates._lanczos(n, np.dtype(np.float32), figure_data.SPECTRUM_TOL, figure_data.SPECTRUM_MAX_STEPS, 0,
                               figure_data.SPECTRUM_TOP + rules_gates.SPECTRAL_BLOCK, None, figure_data.SPECTRUM_TOP)
    vectors = next(run)
    try:
        while True:
            vectors = run.send(a.T @ (a @ vectors))
    except StopIteration as done:
        found = done.value
    assert found == pytest.approx(exact, rel=1e-3)
    assert np.all(found <= exact * (1 + 1e-5))  # from below


def test_pooling_in_row_chunks_is_the_whole_pooling():
    values = np.random.default_rng(2).standard_normal((1000, 700))
    values[517, 3] = 40.0
    block, window = pool(values, 64)
    rows = window[0] * 3
    from lstm_inspect.render.png import pool_by

    parts = np.concatenate([pool_by(values[i:i + rows], window)[0] for i in range(0, 1000, rows)])
    assert np.array_equal(parts, block)

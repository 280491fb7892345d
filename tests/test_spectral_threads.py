"""A large mapped array's spectral products run in row ranges on several threads (`cpus.auto_threads`): the same
singular values as one thread (to float32 rounding) and as numpy's SVD, each range read only once per pass; and
the rules that decide how many threads a computation may use."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lstm_inspect import cpus, gates
from lstm_inspect import model as model_module
from lstm_inspect.analysis import rules_gates
from lstm_inspect.readers import open_model
from lstm_inspect.render import figure_data
from lstm_inspect.render.png import as_matrix

TRAINED = Path(__file__).parent / "fixtures" / "trained" / "k3_trained_char_lstm.keras"


def _recurrent_blocks(model):
    for layer in model.layers:
        split = gates.split(layer)
        if split is not None and any(b.kind == "U" for b in split.blocks):
            return [b for b in split.blocks if b.kind == "U"]
    raise AssertionError("no recurrent blocks")


@pytest.mark.parametrize("count", [1, figure_data.SPECTRUM_TOP])
def test_threaded_products_give_the_one_thread_values(count, monkeypatch):
    monkeypatch.setattr(model_module, "CACHE_BYTES", 0)  # every array read through a memory map...
    monkeypatch.setattr(model_module, "CHUNK_BYTES", 4096)  # ...in many row chunks
    monkeypatch.setattr(rules_gates, "THREADED_BYTES", 0)
    ranges_seen = []
    products = rules_gates._products

    def spy(tensor, regions, vectors, dtype, row_range, chunk_bytes=None):
        ranges_seen.append(row_range)
        return products(tensor, regions, vectors, dtype, row_range, chunk_bytes)

    monkeypatch.setattr(rules_gates, "_products", spy)
    found = {}
    with open_model(str(TRAINED)) as model:
        blocks = _recurrent_blocks(model)
        assert all(b.tensor.mapped for b in blocks)
        rows = blocks[0].tensor.shape[0]
        for threads in (1, 2):
            monkeypatch.setattr(cpus, "auto_threads", lambda threads=threads: threads)
            ranges_seen.clear()
            found[threads] = rules_gates.spectral_norms(blocks, tol=figure_data.SPECTRUM_TOL, count=count,
                                                        max_steps=figure_data.SPECTRUM_MAX_STEPS)
            assert set(ranges_seen) == ({(0, rows)} if threads == 1 else {(0, -(-rows // 2)), (-(-rows // 2), rows)})
        for block, one, two in zip(blocks, found[1], found[2]):
            exact = np.linalg.svd(as_matrix(block.read()).astype(np.float64), compute_uv=False)[:count]
            assert np.asarray(two) == pytest.approx(np.asarray(one), rel=1e-5)
            assert np.asarray(two) == pytest.approx(exact if count > 1 else exact[0], rel=1e-3)


@pytest.mark.parametrize("mapped", [True, False])
def test_row_chunks_of_a_row_range(mapped, monkeypatch):
    monkeypatch.setattr(model_module, "CACHE_BYTES", 0 if mapped else 1 << 40)
    with open_model(str(TRAINED)) as model:
        tensor = _recurrent_blocks(model)[0].tensor
        assert tensor.mapped == mapped
        whole = np.array(tensor.read(), copy=True)
        low, high = 3, whole.shape[0] - 5
        pieces = [(start, np.array(rows, copy=True)) for start, rows in tensor.row_chunks(rows=7, low=low, high=high)]
        assert [start for start, _ in pieces] == list(range(low, high, 7))
        assert np.array_equal(np.concatenate([rows for _, rows in pieces]), whole[low:high])


def test_threads_only_with_a_one_thread_blas_on_an_idle_machine(monkeypatch):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 4)
    monkeypatch.setattr(cpus, "machine_busy", lambda: False)
    monkeypatch.setattr(cpus, "thread_cap", None)
    monkeypatch.setattr(cpus, "blas_single_threaded", lambda: True)
    assert cpus.auto_threads() == 4
    monkeypatch.setattr(cpus, "thread_cap", 1)  # check --jobs: the children share the CPUs
    assert cpus.auto_threads() == 1
    monkeypatch.setattr(cpus, "thread_cap", None)
    monkeypatch.setattr(cpus, "machine_busy", lambda: True)
    assert cpus.auto_threads() == 1
    monkeypatch.setattr(cpus, "machine_busy", lambda: False)
    monkeypatch.setattr(cpus, "blas_single_threaded", lambda: False)
    assert cpus.auto_threads() == 1


def test_in_threads_returns_in_order_and_raises_the_first_error():
    assert cpus.in_threads(lambda x: x * x, [1, 2, 3]) == [1, 4, 9]
    assert cpus.in_threads(lambda x: x, []) == []

    def fail_on_two(x):
        if x == 2:
            raise ValueError("two")
        return x

    with pytest.raises(ValueError, match="two"):
        cpus.in_threads(fail_on_two, [1, 2, 3])


def test_no_second_thread_where_the_memory_limit_leaves_no_room(monkeypatch):
    """Each extra thread takes ~72 MiB of address space before it computes (stack, malloc arena, OpenBLAS's
    buffer, which OpenBLAS gives up on when it cannot map it): under a tight --max-memory one thread is used."""
    from lstm_inspect import limits

    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpus, "machine_busy", lambda: False)
    monkeypatch.setattr(cpus, "thread_cap", None)
    monkeypatch.setattr(cpus, "blas_single_threaded", lambda: True)
    monkeypatch.setattr(limits, "address_space_room", lambda: None)
    assert cpus.auto_threads() == 2
    monkeypatch.setattr(limits, "address_space_room", lambda: 100 << 20)
    assert cpus.auto_threads() == 1
    monkeypatch.setattr(limits, "address_space_room", lambda: 4 << 30)
    assert cpus.auto_threads() == 2

"""A recurrent layer's batch rows split over threads (`run.row_split`) give exactly the unsplit run's results —
LSTM / GRU (both reset_after) / SimpleRNN, masked, go_backwards, Bidirectional, initial states, return_state, traces,
float32 and float64 — and still Keras's; `threads` / `--threads` choose, and the automatic choice splits only a
large batch with a one-thread BLAS and several usable CPUs on a machine that is not busy."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_inspect
from lstm_inspect import cpus
from conftest import run_cli
from lstm_inspect.errors import InspectError
from lstm_inspect.run import recurrent_fast, row_split
from lstm_inspect.run.forward import OUTPUT_KEY

BATCH, STEPS = 80, 9


def _models(dtype: str):
    """(name, Keras model, inputs) covering every option the split must carry, with random non-zero weights."""
    import keras

    L = keras.layers
    rng = np.random.default_rng(5)
    x = rng.standard_normal((BATCH, STEPS, 3)).astype(dtype)
    x[::3, -3:] = 0.0  # masked tails on every third row, a masked middle step on some others
    x[1::7, 4] = 0.0

    inp = keras.Input((STEPS, 3), dtype=dtype)
    m = L.Masking(0.0, dtype=dtype)(inp)
    a = L.LSTM(7, return_sequences=True, go_backwards=True, dtype=dtype, name="lstm_back")(m)
    b = L.GRU(6, return_sequences=True, reset_after=False, dtype=dtype, name="gru_v1")(a)
    c = L.Bidirectional(L.SimpleRNN(5, return_sequences=True, dtype=dtype), dtype=dtype, name="bidi")(b)
    d, state = L.GRU(4, return_state=True, dtype=dtype, name="gru_v3")(c)
    masked = keras.Model(inp, [L.Dense(3, dtype=dtype, name="head")(d), state])

    seq = keras.Input((STEPS, 3), dtype=dtype)
    h0, c0 = keras.Input((6,), dtype=dtype), keras.Input((6,), dtype=dtype)
    e = L.LSTM(6, return_sequences=True, dtype=dtype, name="lstm_init")(seq, initial_state=[h0, c0])
    f = L.Bidirectional(L.LSTM(4, dtype=dtype), merge_mode="sum", dtype=dtype, name="bidi_last")(e)
    initial = keras.Model([seq, h0, c0], f)

    for model in (masked, initial):
        model.set_weights([rng.uniform(-0.7, 0.7, size=w.shape).astype(dtype) for w in model.get_weights()])
    states = [rng.standard_normal((BATCH, 6)).astype(dtype) for _ in range(2)]
    return [("masked", masked, x), ("initial_state", initial, [x, *states])]


@pytest.fixture(scope="module", params=["float32", "float64"])
def saved(request, tmp_path_factory):
    out = []
    for name, model, inputs in _models(request.param):
        path = tmp_path_factory.mktemp("threads") / f"{name}_{request.param}.keras"
        model.save(path)
        want = model(inputs)
        out.append((path, inputs, [np.asarray(w) for w in (want if isinstance(want, list) else [want])]))
    return out


@pytest.mark.parametrize("threads", [2, 3, None])
def test_split_is_bit_identical_and_matches_keras(saved, threads, monkeypatch):
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpus, "machine_busy", lambda: False)
    monkeypatch.setattr(row_split, "MIN_WORK", 1)  # let the automatic choice split these small layers too
    calls = []
    real = recurrent_fast.run_loop
    monkeypatch.setattr(recurrent_fast, "run_loop", lambda *a, **k: calls.append(a[3].shape[0]) or real(*a, **k))
    for path, inputs, want in saved:
        whole = lstm_inspect.forward(path, inputs, trace=True, threads=1)
        assert set(calls) == {BATCH}
        calls.clear()
        split = lstm_inspect.forward(path, inputs, trace=True, threads=threads)
        assert calls and max(calls) < BATCH and sum(calls) % BATCH == 0, calls  # every layer ran in row parts
        calls.clear()
        assert whole.keys() == split.keys()
        for key in whole:
            assert whole[key].dtype == split[key].dtype and np.array_equal(whole[key], split[key]), key
        dtype = whole[OUTPUT_KEY if OUTPUT_KEY in whole else f"{OUTPUT_KEY}/0"].dtype
        tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-10, "atol": 1e-12}
        outs = [whole[OUTPUT_KEY]] if OUTPUT_KEY in whole else [whole[f"{OUTPUT_KEY}/{i}"] for i in range(len(want))]
        for ours, keras_out in zip(outs, want):
            np.testing.assert_allclose(ours, keras_out, **tol)


def test_parts_are_aligned_and_cover_the_batch():
    for batch in (1, 15, 16, 17, 80, 100, 511, 512):
        for threads in (1, 2, 3, 8):
            rows = row_split.parts(batch, 256, threads)
            assert rows[0].start == 0 and rows[-1].stop == batch and len(rows) <= threads
            assert all(a.stop == b.start for a, b in zip(rows, rows[1:]))
            assert all(r.start % row_split.ALIGN == 0 and r.stop > r.start for r in rows)
    assert [(r.start, r.stop) for r in row_split.parts(512, 256, 2)] == [(0, 256), (256, 512)]


def test_automatic_choice(monkeypatch):
    for variable in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cpus.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    assert len(row_split.parts(512, 256, None)) == 1  # BLAS left multi-threaded: its threads use the CPUs
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("MKL_NUM_THREADS", "1")
    assert len(row_split.parts(512, 256, None)) == 2
    assert len(row_split.parts(32, 256, None)) == 2
    assert len(row_split.parts(31, 256, None)) == 1  # too few rows
    assert len(row_split.parts(128, 64, None)) == 2
    assert len(row_split.parts(127, 64, None)) == 1  # too little work per step
    assert len(row_split.parts(512, 8, None)) == 1  # too little work per step
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # OpenBLAS and MKL read their own variable first
    assert len(row_split.parts(512, 256, None)) == 1
    monkeypatch.delenv("OPENBLAS_NUM_THREADS")
    monkeypatch.delenv("MKL_NUM_THREADS")
    assert len(row_split.parts(512, 256, None)) == 2
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (3.0, 1.0, 1.0))  # 1.5 per CPU: busy
    assert len(row_split.parts(512, 256, None)) == 1
    monkeypatch.setattr(cpus.os, "getloadavg", lambda: (2.9, 1.0, 1.0))
    assert len(row_split.parts(512, 256, None)) == 2
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 1)
    assert len(row_split.parts(512, 256, None)) == 1
    assert len(row_split.parts(512, 256, 2)) == 2  # asked for: split even so


def test_threads_must_be_a_positive_whole_number(saved):
    path, inputs, _ = saved[0]
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(InspectError, match="threads"):
            lstm_inspect.forward(path, inputs, threads=bad)


def test_cli_threads_option(saved, tmp_path):
    path, inputs, _ = saved[0]
    np.save(tmp_path / "x.npy", inputs)
    written = {}
    for name, flags in (("auto", []), ("one", ["--threads", "1"]), ("three", ["--threads", "3"]),
                        ("auto_word", ["--threads", "auto"])):
        out = tmp_path / f"{name}.npz"
        assert run_cli(["forward", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(out), *flags]) == 0
        with np.load(out) as npz:
            written[name] = {k: npz[k] for k in npz.files}
    for name in ("auto", "three", "auto_word"):
        assert written[name].keys() == written["one"].keys()
        assert all(np.array_equal(written[name][k], written["one"][k]) for k in written["one"])
    assert run_cli(["forward", str(path), "--input", str(tmp_path / "x.npy"), "-o", str(tmp_path / "b.npz"),
                    "--threads", "0"]) == 2


def test_split_keeps_the_memory_bound(monkeypatch):
    """The parts share the unsplit run's bound on the input terms' buffers: the split's peak (tracemalloc, which
    sees numpy's allocations in every thread) stays within the parts' per-step scratch of the unsplit peak."""
    import tracemalloc

    from lstm_inspect.run.recurrent import RecurrentCell

    rng = np.random.default_rng(2)
    batch, steps, features, units = 256, 60, 32, 64
    cell = RecurrentCell("LSTM", units, rng.uniform(-0.5, 0.5, (features, 4 * units)).astype("float32"),
                         rng.uniform(-0.5, 0.5, (units, 4 * units)).astype("float32"),
                         rng.uniform(-0.5, 0.5, 4 * units).astype("float32"), None, np.tanh, np.tanh)
    weights = recurrent_fast.LoopWeights.from_cell(cell, halve=True)
    x = rng.standard_normal((batch, steps, features)).astype("float32")
    states = [np.zeros((batch, units), np.float32)] * 2
    monkeypatch.setattr(recurrent_fast, "INPUT_BLOCK_BYTES", 1 << 20)  # 1 MiB: 4 steps of the whole batch

    def peak(rows):
        tracemalloc.start()
        try:
            out = row_split.run_loop(rows, weights, recurrent_fast._IN_PLACE["tanh"], recurrent_fast.sigmoid_of_halved,
                                     x, states, None, False, False, True, False)
            return tracemalloc.get_traced_memory()[1], out[0]
        finally:
            tracemalloc.stop()

    whole, expected = peak(row_split.parts(batch, units, 1))
    split, got = peak(row_split.parts(batch, units, 2))
    assert np.array_equal(expected, got)
    scratch = batch * 8 * units * 4  # each part's z, tmp, other and state buffers, about 8·units per row
    assert split <= whole + scratch, (split, whole)

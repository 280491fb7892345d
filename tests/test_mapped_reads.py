"""Large contiguous HDF5 datasets are read through a memory map of the file (no copy), in a .h5 and in the stored
model.weights.h5 of a .keras archive, with the same values as h5py; anything else (chunked, compressed, small)
goes through libhdf5 as before. And the spectral-norm rule's early decision (σ₁ ≤ limit) agrees with the SVD.
Files here are hand-built with h5py (the reading code does not care about Keras's layout)."""
from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest

from lstm_inspect import model as model_module
from lstm_inspect.analysis import rules_gates
from lstm_inspect.model import Tensor
from lstm_inspect.readers import h5safe
from lstm_inspect.readers.archive import Archive


def _tensor(ds: h5py.Dataset) -> Tensor:
    shape, dtype = h5safe.dataset_info(ds, "t")
    return Tensor(name="kernel", shape=shape, dtype=dtype, source=ds.name,
                  _load=lambda: h5safe.read_dataset(ds, "t"),
                  _read_part=lambda index, out: h5safe.read_part(ds, index, out, "t"),
                  _mapped=lambda: h5safe.mapped_place(ds))


@pytest.fixture()
def arrays(tmp_path):
    rng = np.random.default_rng(5)
    values = {"plain": rng.standard_normal((700, 1200), dtype=np.float32),
              "packed": rng.standard_normal((700, 1200), dtype=np.float32),
              "small": rng.standard_normal((10, 12), dtype=np.float32)}
    path = tmp_path / "w.h5"
    with h5py.File(path, "w") as f:
        f["plain"] = values["plain"]
        f.create_dataset("packed", data=values["packed"], chunks=(100, 1200), compression="gzip")
        f["small"] = values["small"]
    archive = tmp_path / "m.keras"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as z:
        z.writestr("config.json", "{}")
        z.write(path, "model.weights.h5")
    return path, archive, values


def _open(kind, path, archive):
    if kind == "h5":
        return h5safe.open_file(str(path), "t"), None
    zipped = Archive(str(archive), "t")
    return h5safe.open_file(zipped.open_member("model.weights.h5"), "t"), zipped


@pytest.mark.parametrize("kind", ["h5", "keras"])
def test_contiguous_datasets_are_mapped_with_the_same_values(arrays, kind, monkeypatch):
    path, archive, values = arrays
    monkeypatch.setattr(model_module, "CHUNK_BYTES", 1 << 20)  # several chunks per array
    f, zipped = _open(kind, path, archive)
    try:
        plain, packed, small = (_tensor(f[name]) for name in ("plain", "packed", "small"))
        assert plain.mapped and not packed.mapped and not small.mapped
        for tensor, name in ((plain, "plain"), (packed, "packed")):
            seen = np.concatenate([rows.copy() for _, rows in tensor.row_chunks()])
            assert np.array_equal(seen, values[name])
            # a gate block: a column slice, an int row, a slice after an Ellipsis
            for index in ((slice(None), slice(300, 600)), (5,), (Ellipsis, slice(1000, 1200)),
                          (slice(10, 650), 7)):
                assert np.array_equal(tensor.read_part(index), values[name][index])
            out = np.empty((700, 300), dtype=np.float32)
            assert tensor.read_part((slice(None), slice(900, 1200)), out) is out
            assert np.array_equal(out, values[name][:, 900:])
    finally:
        f.close()
        if zipped is not None:
            zipped.close()


def test_a_dataset_reaching_past_the_file_is_not_mapped(arrays, monkeypatch):
    path, _, _ = arrays
    f = h5safe.open_file(str(path), "t")
    try:
        fd, base, size = h5safe._PLACES[f.id.fileno]
        monkeypatch.setitem(h5safe._PLACES, f.id.fileno, (fd, base, 1 << 20))  # as if the file were shorter
        assert h5safe.mapped_place(f["plain"]) is None
    finally:
        f.close()


@pytest.mark.parametrize("n", [300, 1024])
def test_the_early_decision_below_the_limit_agrees_with_the_svd(n):
    """Gaussian blocks (no gap between the top singular values: the slowest case). Far below the limit the
    iteration stops early with a lower bound under the limit; near or above it, the value converges as before."""
    a = (np.random.default_rng(n).standard_normal((n, n)) * 0.05).astype(np.float32)
    exact = float(np.linalg.svd(a.astype(np.float64), compute_uv=False)[0])
    steps = {}
    for label, limit in (("far", 10 * exact), ("near", 1.02 * exact), ("above", 0.9 * exact), ("none", None)):
        run = rules_gates._lanczos(n, np.dtype(np.float32), rules_gates.SPECTRAL_TOL, rules_gates.SPECTRAL_MAX_STEPS,
                                   0, 1, limit)
        vector, count = next(run), 0
        try:
            while True:
                count += 1
                vector = run.send(a.T @ (a @ vector))
        except StopIteration as done:
            sigma = done.value
        steps[label] = count
        assert sigma <= exact * (1 + 1e-6)
        if limit is None or label == "above":
            assert sigma == pytest.approx(exact, rel=0.01)
        else:
            assert sigma <= limit
    assert steps["far"] < steps["none"]
    assert steps["above"] == steps["none"]

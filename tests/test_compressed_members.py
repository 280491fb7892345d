"""Compressed (deflated) zip members are read in bounded memory too: a large one is inflated once, in bounded chunks,
into an anonymous temporary file (no name, gone when the archive closes or the process dies) and memory-mapped a row
chunk at a time from there, like a stored member; the zip-bomb bound still holds (readers/archive.py).

The large files: one torch ``nn.LSTM(2048, 2048)`` state dict (128 MiB, two 64 MiB arrays), written by the real
writers — ``np.savez_compressed``; ``torch.save`` then re-zipped with deflate; a Keras 3 ``model.save`` of
``LSTM(2048)`` holding the same arrays, re-zipped with deflate — next to the stored originals (``np.savez``, the
``torch.save`` and ``model.save`` files as written). The weights are magnitude-free *pruned*: 97% of the values zeroed
at random, so that deflating 128 MiB takes a second or two (dense random floats deflate at 10–30 MB/s on a shared
machine, too slow for a test; bench/bench_compressed.py measures dense ones).
"""
from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from test_bounded_memory import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "models"
UNITS = 2048


def rezip_deflated(source: Path, target: Path) -> None:
    """`source` re-zipped with every member deflated, as ``zip -r`` or a user's script would."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            with src.open(info) as reader, dst.open(info.filename, "w", force_zip64=info.file_size > 1 << 30) as out:
                while chunk := reader.read(4 << 20):
                    out.write(chunk)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    import torch

    out = tmp_path_factory.mktemp("deflated")
    torch.manual_seed(14)
    lstm = torch.nn.LSTM(UNITS, UNITS, batch_first=True)
    with torch.no_grad():
        for parameter in lstm.parameters():
            parameter.normal_(0, 0.05)
            parameter.masked_fill_(torch.rand(parameter.shape) >= 0.03, 0.0)  # pruned: 97% zeros
    state = {key: value.contiguous() for key, value in lstm.state_dict().items()}
    arrays = {key: value.numpy() for key, value in state.items()}
    np.savez_compressed(out / "lstm.npz", **arrays)
    np.savez(out / "stored.npz", **arrays)
    torch.save(state, out / "stored.pt")
    rezip_deflated(out / "stored.pt", out / "lstm.pt")
    keras_weights = _save_keras(arrays, out / "stored.keras")
    rezip_deflated(out / "stored.keras", out / "lstm.keras")
    for name in ("lstm.npz", "lstm.pt", "lstm.keras"):
        with zipfile.ZipFile(out / name) as z:
            assert max(z.infolist(), key=lambda i: i.file_size).compress_type == zipfile.ZIP_DEFLATED
    return {"dir": out, "keras_weights": keras_weights}


def _save_keras(arrays: dict, path: Path) -> list[np.ndarray]:
    """A real Keras 3 save of LSTM(2048) on 2048 inputs holding the torch arrays (same gate order i, f, c/g, o);
    returns the weights as Keras holds them after the save."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    model = keras.Sequential([keras.Input((3, UNITS)), keras.layers.LSTM(
        UNITS, kernel_initializer="zeros", recurrent_initializer="zeros")])  # set below; skips a slow orthogonal init
    model.set_weights([arrays["weight_ih_l0"].T, arrays["weight_hh_l0"].T,
                       arrays["bias_ih_l0"] + arrays["bias_hh_l0"]])
    model.save(path)
    return [np.asarray(w) for w in model.get_weights()]


def _framework_arrays(files: dict, kind: str) -> dict[str, np.ndarray]:
    """The recurrent matrix and its forget-gate block U_f (units x units, Keras orientation) as the framework reads
    the *deflated* file (np.load, torch.load), or as Keras holds the weights it saved."""
    path = files["dir"] / f"lstm.{kind}"
    if kind == "npz":
        with np.load(path) as loaded:
            recurrent = loaded["weight_hh_l0"].T
    elif kind == "pt":
        import torch

        recurrent = torch.load(path, weights_only=True)["weight_hh_l0"].numpy().T
    else:
        recurrent = files["keras_weights"][1]
    return {"U_f": np.ascontiguousarray(recurrent[:, UNITS:2 * UNITS])}


@pytest.mark.parametrize("kind", ["npz", "pt", "keras"])
@pytest.mark.parametrize("command", ["json", "check", "export", "diff"])
def test_deflated_members_under_a_small_limit(files, kind, command, tmp_path):
    """Under --max-memory 100M (whose address space cannot hold a 64 MiB array next to the rest; the previous
    reader inflated each member whole and ran out of memory), the whole process tree under 200 MiB."""
    path = str(files["dir"] / f"lstm.{kind}")
    stored = str(files["dir"] / f"stored.{kind}")
    args = {"json": ["inspect", "--json", path], "check": ["check", "--format", "json", path],
            "export": ["export", path, "-o", str(tmp_path / "e.npz")], "diff": ["diff", path, stored]}[command]
    result, peak = run_cli("--max-memory", "100M", *args)
    assert result.returncode in ((0, 1) if command == "check" else (0,)), result.stderr
    assert peak < 200 << 20, f"peak RSS {peak / 2**20:.0f} MiB"
    expected = _framework_arrays(files, kind)["U_f"]
    if command == "json":
        layer = next(entry for entry in json.loads(result.stdout)["layers"] if entry["recurrent"])
        stats = next(b for b in layer["recurrent"]["blocks"] if b["key"] == "U_f")["stats"]
        wide = expected.astype(np.float64)
        assert stats["max"] == wide.max() and stats["min"] == wide.min()
        assert stats["mean"] == pytest.approx(wide.mean(), rel=1e-9, abs=1e-12)
        assert stats["std"] == pytest.approx(wide.std(), rel=1e-9)
    if command == "check":  # the same findings as the stored original's, read the stored way
        again, _ = run_cli("--max-memory", "100M", "check", "--format", "json", stored)
        assert _findings(result.stdout) == _findings(again.stdout)
    if command == "export":
        with np.load(tmp_path / "e.npz") as exported:
            key = next(k for k in exported.files if k.endswith("U_f"))
            assert np.array_equal(exported[key], expected)
    if command == "diff":  # the deflated file against the stored original: every block equal
        assert "identical" in result.stdout.lower()


def _findings(text: str) -> list:
    report = json.loads(text)
    for file in report.get("files", []):
        file.pop("path", None)
        file.pop("file", None)
    return [report.get("summary"), report.get("files")]


def test_a_small_deflated_keras_archive_reads_as_keras_loads_it(tmp_path, monkeypatch):
    """A real Keras 3 .keras re-zipped with deflate reads the values Keras loads from the same deflated archive —
    with the bounds lowered so that its small weights member is spilled to a temporary file and each array is
    memory-mapped from there a row chunk at a time, as a large one would be."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    from lstm_inspect import model as model_module
    from lstm_inspect.readers import archive, open_model

    path = tmp_path / "m.keras"
    rezip_deflated(FIXTURES / "k3_classic.keras", path)
    loaded = keras.saving.load_model(path, compile=False, safe_mode=True)
    expected = {(layer.name, w.name): np.asarray(w) for layer in loaded.layers for w in layer.weights}
    monkeypatch.setattr(archive, "SPILL_BYTES", 0)
    monkeypatch.setattr(model_module, "CACHE_BYTES", 0)
    monkeypatch.setattr(model_module, "CHUNK_BYTES", 4096)
    got = {}
    with open_model(path) as model:
        for layer in model.layers:
            for tensor in layer.weights:
                assert tensor.mapped, tensor.source
                got[(layer.key, tensor.name)] = np.concatenate([rows.copy() for _, rows in tensor.row_chunks()])
                assert np.array_equal(tensor.read(), got[(layer.key, tensor.name)])
    assert got.keys() == expected.keys()
    for key, theirs in expected.items():
        assert got[key].dtype == theirs.dtype and np.array_equal(got[key], theirs), key


def _open_paths_under(directory: Path) -> list[str]:
    """What this process's open descriptors point at under `directory` (a deleted file shows ' (deleted)')."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    import tempfile

    directory = tmp_path / "tmp"
    directory.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(directory))
    return directory


def test_a_spilled_member_has_no_name_and_goes_with_the_archive(tmp_path, private_tmp):
    from lstm_inspect.readers.archive import Archive

    values = np.random.default_rng(3).standard_normal((600, 1000)).astype(np.float32)  # 2.4 MB: past SPILL_BYTES
    np.savez_compressed(tmp_path / "a.npz", big=values)
    archive = Archive(str(tmp_path / "a.npz"), "a.npz")
    try:
        assert archive.mappable("big.npy")
        window = archive.open_member("big.npy")
        fd, base, size = window.extent()
        assert base == 0 and size == archive.file_size("big.npy") and os.fstat(fd).st_size == size
        assert list(private_tmp.iterdir()) == []  # no name anyone could open, not even an empty directory
        opened = _open_paths_under(private_tmp)
        assert len(opened) == 1 and opened[0].endswith("(deleted)")
        assert archive.open_member("big.npy").extent()[0] == fd  # inflated once
        np.lib.format.read_magic(window)
        np.lib.format.read_array_header_1_0(window)
        assert np.array_equal(np.frombuffer(window.read(), np.float32).reshape(values.shape), values)
    finally:
        archive.close()
    assert _open_paths_under(private_tmp) == []


def test_no_room_in_the_temporary_directory_names_tmpdir(tmp_path, private_tmp, monkeypatch):
    from lstm_inspect.errors import InspectError
    from lstm_inspect.readers import archive, open_model

    np.savez_compressed(tmp_path / "a.npz", big=np.random.default_rng(5).standard_normal((600, 1000)))
    monkeypatch.setattr(archive, "_free_bytes", lambda handle: 1000)
    with open_model(tmp_path / "a.npz") as model:
        with pytest.raises(InspectError, match="set TMPDIR to a directory with more free space"):
            model.layers[0].weights[0].read()
    assert _open_paths_under(private_tmp) == []


def test_a_damaged_deflated_member_is_a_corrupt_file(tmp_path):
    from lstm_inspect.errors import CorruptFile
    from lstm_inspect.readers import open_model

    path = tmp_path / "a.npz"
    np.savez_compressed(path, big=np.random.default_rng(4).standard_normal((600, 1000)).astype(np.float32))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the deflate stream: a bad CRC or a bad stream
    path.write_bytes(bytes(data))
    with open_model(path) as model:
        with pytest.raises(CorruptFile, match="cannot read archive member 'big.npy'"):
            model.layers[0].weights[0].read()


def test_a_deflated_npz_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, zeros=np.zeros((200, 1 << 18), np.float32))  # 200 MiB of zeros: ~200 KB deflated
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "lstm_inspect", "inspect", "--json", str(path)],
                            capture_output=True, text=True,
                            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert result.returncode == 2 and "zip bomb" in result.stderr and result.stderr.count("\n") == 1
    assert time.monotonic() - started < 60


def test_a_killed_reader_leaves_nothing_in_tmpdir(files, tmp_path):
    """The reading child holds the inflated copy open with no name; SIGKILL mid-read leaves nothing behind."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    process = subprocess.Popen([sys.executable, "-m", "lstm_inspect", "check", str(files["dir"] / "lstm.npz")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    seen_spill, named = False, []
    try:
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline and not seen_spill:
            seen_spill = any(_spill_of(pid, tmpdir) for pid in _tree(process.pid))
            named += [p for p in tmpdir.rglob("*") if p.is_file()]
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert seen_spill, "the reader never held an inflated copy under TMPDIR"
    assert named == [] and list(tmpdir.iterdir()) == []


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                queue += [int(p) for p in handle.read().split()]
        except OSError:
            pass
    return pids


def _spill_of(pid: int, directory: Path) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(str(directory)):
                return True
        except OSError:
            pass
    return False


def test_an_object_array_in_a_deflated_npz_is_still_found_by_the_code_scan(tmp_path):
    """The scan reads a compressed .npy member as a stream: its header, then the pickle after it."""
    from lstm_inspect.analysis import code_scan

    path = tmp_path / "object.npz"
    rezip_deflated(Path(__file__).parent / "fixtures" / "code" / "npz_object_array.npz", path)
    found = code_scan.scan_file(str(path))
    assert [f.what.split(" ")[0] for f in found] == ["builtins.exec"]
    assert found[0].where.startswith("weights.npy (object array pickle at byte 128) @ byte ")


def test_a_deflated_member_shorter_than_it_declares_is_a_corrupt_file(tmp_path):
    """Hand-built (labelled): an .npy member whose header and central-directory size claim one more row than its
    deflate stream holds (CRC right for what is there): inflating stops short of the declared size."""
    from lstm_inspect.errors import CorruptFile
    from lstm_inspect.readers import open_model

    values = np.random.default_rng(6).standard_normal((600, 1000)).astype(np.float32)
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "<f4", "fortran_order": False, "shape": (601, 1000)})
    npy.write(values.tobytes())
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("w.npy", npy.getvalue())
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    declared = struct.unpack_from("<I", data, central + 24)[0]
    struct.pack_into("<I", data, central + 24, declared + 4000)
    path.write_bytes(bytes(data))
    with open_model(path) as model:
        with pytest.raises(CorruptFile, match="not the .* its header declares"):
            model.layers[0].weights[0].read()

"""Bad and hostile input: one line on stderr naming the file and the problem, exit code 2, no traceback."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from handbuilt import copy
from lstm_inspect import InspectError, open_model
from lstm_inspect.cli import cli


def run_cli(*args: str):
    return CliRunner().invoke(cli, list(args))


def assert_refused(path: Path, *fragments: str) -> str:
    result = run_cli("inspect", str(path))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert str(path) in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


# --- files that are simply not models ---------------------------------------------------------------------------

def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nope.h5", "no such file")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    assert_refused(path, "empty")


def test_text_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello, not a model\n")
    assert_refused(path, "neither HDF5 nor a zip")


def test_truncated_hdf5(tmp_path):
    data = (Path(__file__).parent / "fixtures" / "models" / "k3_classic.h5").read_bytes()
    path = tmp_path / "truncated.h5"
    path.write_bytes(data[: len(data) // 3])
    assert_refused(path, "HDF5")


def test_hdf5_that_is_not_keras(tmp_path):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(4.0)
    assert_refused(path, "no Keras model")


def test_corrupt_config_json(tmp_path):
    path = copy("k2_classic.h5", tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = '{"class_name": "Sequential", "config": {'
    assert_refused(path, "not valid JSON")


def test_config_nested_too_deeply(tmp_path):
    path = copy("k2_classic.h5", tmp_path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = "[" * 100_000 + "]" * 100_000
    assert_refused(path, "nested")


def test_keras_archive_without_weights(tmp_path):
    path = tmp_path / "noweights.keras"
    source = Path(__file__).parent / "fixtures" / "models" / "k3_classic.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        for name in ("config.json", "metadata.json"):
            dst.writestr(name, src.read(name))
    assert_refused(path, "model.weights.h5")


def test_zip_that_is_not_keras(tmp_path):
    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("readme.txt", "hi")
    assert_refused(path, "config.json")


def test_truncated_keras_archive(tmp_path):
    data = (Path(__file__).parent / "fixtures" / "models" / "k3_classic.keras").read_bytes()
    path = tmp_path / "cut.keras"
    path.write_bytes(data[: len(data) // 2])
    assert_refused(path, "zip")


# --- hostile files: everything that would read outside the file or past a bound is refused --------------------

def _replace_kernel(path: Path, make) -> None:
    """Replace the LSTM kernel dataset of a k2 classic copy with whatever `make(group, name)` creates."""
    with h5py.File(path, "r+") as f:
        group = f["model_weights/lstm/lstm/lstm_cell"]
        shape = group["kernel:0"].shape
        del group["kernel:0"]
        make(group, "kernel:0", shape)


def test_external_link_refused(tmp_path):
    other = tmp_path / "secret.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.ones((5, 480), dtype="float32")
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.__setitem__(n, h5py.ExternalLink(str(other), "/data")))
    assert_refused(path, "external link")


def test_soft_link_refused(tmp_path):
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.__setitem__(n, h5py.SoftLink("/model_weights/dense/dense/kernel:0")))
    assert_refused(path, "soft link")


def test_external_storage_refused(tmp_path):
    raw = tmp_path / "etc_passwd_stand_in.bin"
    raw.write_bytes(b"\0" * 5 * 480 * 4)
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.create_dataset(n, shape=s, dtype="float32",
                                                           external=[(str(raw), 0, 5 * 480 * 4)]))
    assert_refused(path, "external file")


def test_virtual_dataset_refused(tmp_path):
    other = tmp_path / "source.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.ones((5, 480), dtype="float32")

    def make(group, name, shape):
        layout = h5py.VirtualLayout(shape=shape, dtype="float32")
        layout[:] = h5py.VirtualSource(str(other), "data", shape=shape)
        group.create_virtual_dataset(name, layout)

    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, make)
    assert_refused(path, "virtual dataset")


def test_shape_bomb_refused(tmp_path):
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.create_dataset(n, shape=(200_000, 200_000), dtype="float32",
                                                           chunks=(1000, 1000)))
    assert_refused(path, "declares")


def test_declared_far_beyond_stored_refused(tmp_path):
    # 400 MB declared, nothing stored: under the absolute cap but far past the declared/stored ratio.
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.create_dataset(n, shape=(10_000, 10_000), dtype="float32",
                                                           chunks=(100, 100)))
    assert_refused(path, "declares", "stores")


def test_zip_bomb_refused(tmp_path):
    source = Path(__file__).parent / "fixtures" / "models" / "k3_classic.keras"
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        dst.writestr("config.json", src.read("config.json"))
        dst.writestr("metadata.json", src.read("metadata.json"))
        with dst.open("model.weights.h5", "w") as member:
            chunk = b"\0" * (1 << 20)
            for _ in range(200):  # 200 MiB of zeros deflates to ~200 KB: a 1000x ratio
                member.write(chunk)
    assert_refused(path, "zip bomb")


def test_path_traversal_member_refused(tmp_path):
    path = tmp_path / "evil.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        zf.writestr("../../evil.h5", "x")
    assert_refused(path, "escapes")


def test_duplicate_members_refused(tmp_path):
    path = tmp_path / "dup.keras"
    with pytest.warns(UserWarning):
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("config.json", "{}")
            zf.writestr("config.json", "{}")
    assert_refused(path, "two members")


def test_pickled_npz_weights_refused(tmp_path):
    source = Path(__file__).parent / "fixtures" / "models" / "k3_classic.keras"
    path = tmp_path / "npz.keras"
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(path, "w") as dst:
        dst.writestr("config.json", src.read("config.json"))
        dst.writestr("model.weights.npz", b"PK\x05\x06" + b"\0" * 18)
    assert_refused(path, "unpickle")


def test_traceback_flag_shows_the_traceback(tmp_path):
    result = run_cli("--traceback", "inspect", str(tmp_path / "nope.h5"))
    assert result.exit_code != 0
    assert isinstance(result.exception, InspectError)


def test_library_raises_inspect_error(tmp_path):
    path = tmp_path / "x.keras"
    path.write_text("nope")
    with pytest.raises(InspectError, match="not a Keras model file"):
        open_model(path)


def test_nothing_named_in_a_config_is_imported(tmp_path):
    """A config naming a module is recorded, never imported: the module below would fail the test if it ran."""
    path = copy("k2_classic.h5", tmp_path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        layer = config["config"]["layers"][-1]
        layer["class_name"] = "EvilLayer"
        layer["module"] = "os"
        layer["registered_name"] = "system"
        f.attrs["model_config"] = json.dumps(config)
    import sys

    before = set(sys.modules)
    with open_model(path) as model:
        evil = [layer for layer in model.layers if layer.class_name == "EvilLayer"]
        assert evil and evil[0].needs_code
        assert [t.name for t in evil[0].weights] == ["kernel", "bias"]
    assert not {m for m in set(sys.modules) - before if not m.startswith("lstm_inspect")}


def test_symlink_member_refused(tmp_path):
    path = tmp_path / "link.keras"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", "{}")
        info = zipfile.ZipInfo("model.weights.h5")
        info.external_attr = (0o120777 << 16)  # S_IFLNK: a symbolic link to /etc/passwd
        zf.writestr(info, "/etc/passwd")
    assert_refused(path, "symbolic link")


def test_huge_member_count_refused(tmp_path):
    path = tmp_path / "many.keras"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(10_001):
            zf.writestr(f"assets/{i}", b"")
    assert_refused(path, "members")


def test_absurd_attribute_refused(tmp_path):
    path = tmp_path / "weights.h5"
    with h5py.File(path, "w", libver="latest") as f:  # dense attribute storage allows attributes past 64 KB
        # A weights-only file whose layer_names is 80 MB: past the 64 MiB attribute bound.
        f.attrs.create("layer_names", np.array([b"x" * 1000] * 80_000, dtype="S1000"))
    assert_refused(path, "attribute", "refusing")


def test_object_reference_dataset_refused(tmp_path):
    path = copy("k2_classic.h5", tmp_path)
    _replace_kernel(path, lambda g, n, s: g.create_dataset(n, data=np.array([g.ref] * 4), dtype=h5py.ref_dtype))
    assert_refused(path, "not numbers")


def test_empty_dataset_with_huge_dimensions_is_read_not_crashed(tmp_path):
    """A kernel of shape (0, 256, 844, 854, 1144, 2108, 2591) holds no values, but a float64 copy of that shape
    overflows numpy's size check (found by tests/test_fuzz.py): inspect, diff and check handle it."""
    path = copy("k2_gru_ra.h5", tmp_path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/gru/gru/gru_cell"]
        del group["kernel:0"]
        group.create_dataset("kernel:0", shape=(0, 256, 844, 854, 1144, 2108, 2591), dtype="f4")
    for args in (["inspect", path], ["diff", path, path], ["check", path]):
        result = CliRunner().invoke(cli, [str(a) for a in args])
        assert result.exit_code in (0, 1) and "internal error" not in result.output, (args, result.output)

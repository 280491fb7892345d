"""Nothing outside the file, and linear-time walks: FIFOs, devices and symbolic links where a regular file belongs,
a Keras directory whose config.json / metadata.json / weights are links, HDF5 hard-link cycles and lattices, and a
state dict of 40,000 tensors.

Files come from the real writers (Keras 3's saved directory and .weights.h5 fixtures, h5py for the links,
safetensors for the state dict) and are edited to be hostile: all are labelled hand-built.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hostile import one_line_error, run


FIXTURES = Path(__file__).parent / "fixtures" / "models"


@pytest.mark.parametrize("name", ["fifo.h5", "x.json", "zero.keras"])
def test_fifo_and_device_are_refused_without_reading(tmp_path, name):
    """A FIFO would block the reader forever; /dev/zero (its size is 0, so the size bound passed) was read to 3.7 GB."""
    path = tmp_path / name
    if name.startswith("fifo"):
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    started = time.monotonic()
    one_line_error(run("inspect", path), "not a regular file")
    assert time.monotonic() - started < 20


@pytest.mark.parametrize("member,target", [("config.json", "/etc/passwd"), ("metadata.json", "/dev/zero"),
                                           ("model.weights.h5", "elsewhere.h5"), ("config.json", "/dev/zero")])
def test_keras_directory_never_follows_a_member_link(tmp_path, member, target):
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / "k3_nested_dir", model)
    if target == "elsewhere.h5":
        shutil.move(model / member, tmp_path / target)
        target = tmp_path / target
    else:
        (model / member).unlink()
    (model / member).symlink_to(target)
    error = one_line_error(run("inspect", model), member, "symbolic link")
    assert "root:" not in error


def test_keras_directory_member_that_is_a_fifo_is_refused(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(FIXTURES / "k3_nested_dir", model)
    (model / "metadata.json").unlink()
    os.mkfifo(model / "metadata.json")
    one_line_error(run("inspect", model), "metadata.json", "not a regular file")


def test_keras_directory_still_reads(tmp_path):
    result = run("inspect", "--json", FIXTURES / "k3_nested_dir")
    assert result.exit_code == 0, result.output


def test_check_gives_fifo_and_device_their_own_verdicts(tmp_path):
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(FIXTURES / "k3_lstm_init.keras", root / "good.keras")
    os.mkfifo(root / "fifo.h5")
    (root / "zero.h5").symlink_to("/dev/zero")
    result = run("check", root, "--format", "json")
    assert result.exit_code == 2, result.output
    import json

    files = {Path(f["file"]).name: f for f in json.loads(result.stdout)["files"]}
    assert files["good.keras"]["status"] == "pass"
    assert "not a regular file (a FIFO)" in files["fifo.h5"]["error"]
    assert "zero.h5" not in files and "zero.h5: a symbolic link out of" in result.stderr  # /dev is outside
    named = json.loads(run("check", root / "zero.h5", "--format", "json").stdout)["files"][0]  # named: followed
    assert "not a regular file (a device)" in named["error"]


# ---------------------------------------------------------------------------------------------------------------
# HDF5 structure walks

def test_hard_link_cycle_is_one_clear_line(tmp_path):
    """Keras 3's k3_lstm_init.weights.h5 with layers/dense/layers hard-linked back to /layers."""
    path = tmp_path / "cycle.weights.h5"
    shutil.copy(FIXTURES / "k3_lstm_init.weights.h5", path)
    with h5py.File(path, "r+") as f:
        f["layers/dense/layers"] = f["layers"]
    error = one_line_error(run("inspect", path), "linked from two places")
    assert len(error) < 400


def test_hard_link_lattice_is_refused_quickly(tmp_path):
    """40 groups, each linking the next twice: 2**40 paths, which the walk followed until the timeout."""
    path = tmp_path / "lattice.weights.h5"
    shutil.copy(FIXTURES / "k3_lstm_init.weights.h5", path)
    with h5py.File(path, "r+") as f:
        groups = [f.create_group(f"chain{i}") for i in range(41)]
        for here, after in zip(groups, groups[1:]):
            links = here.create_group("layers")
            links["a"] = after
            links["b"] = after
        f["layers/functional"] = groups[0]
    started = time.monotonic()
    one_line_error(run("inspect", path), "linked from two places")
    assert time.monotonic() - started < 30


def test_forty_thousand_one_tensor_modules_read_in_linear_time(tmp_path):
    """A state dict of 40,000 zero-size tensors, each its own module (2.4 MB): grouping was quadratic (over 120 s)."""
    from safetensors.numpy import save_file

    from lstm_inspect.readers import open_model

    path = tmp_path / "many.safetensors"
    save_file({f"m{i}.weight": np.zeros((0,), np.float32) for i in range(40_000)}, str(path))  # torch naming
    started = time.monotonic()
    with open_model(path) as model:
        assert len(model.layers) == 40_000
    assert time.monotonic() - started < 30


def test_check_never_follows_a_symlink_out_of_the_tree(tmp_path):
    """A walked directory holding links to a model outside it, to /etc/passwd and to a model directory outside
    it: none is read (each named in a note); a link that stays inside the tree is checked."""
    import json

    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(FIXTURES / "k3_lstm_init.keras", outside / "elsewhere.keras")
    shutil.copytree(FIXTURES / "k3_nested_dir", outside / "model_dir")
    root = tmp_path / "repo"
    (root / "sub").mkdir(parents=True)
    shutil.copy(FIXTURES / "k3_lstm_init.keras", root / "sub" / "good.keras")
    (root / "out.keras").symlink_to(outside / "elsewhere.keras")
    (root / "passwd.h5").symlink_to("/etc/passwd")
    (root / "linked_dir").symlink_to(outside / "model_dir")
    (root / "inside.keras").symlink_to(root / "sub" / "good.keras")
    result = run("check", root, "--format", "json")
    assert result.exit_code == 0, result.output
    checked = sorted(Path(f["file"]).name for f in json.loads(result.stdout)["files"])
    assert checked == ["good.keras", "inside.keras"]
    for name in ("out.keras", "passwd.h5", "linked_dir"):
        assert f"{name}: a symbolic link out of" in result.stderr

"""Polyglots: a file valid as more than one format is refused as ambiguous (one line, exit 2), since what
lstm-inspect reads cannot speak for what another tool loads.

Hand-built from real writers: Keras 3's k3_lstm_init.keras (zip) placed in the user block of an HDF5 file that
h5py writes from tf-keras's k2_classic.h5 plus a Lambda layer; a safetensors file (the layout, written here) whose
uint8 tensor is an HDF5 file at offset 512; and, as the case that must stay readable, a `.keras` zip whose stored
model.weights.h5 starts exactly at offset 1024 (libhdf5 finds it there too, but that view is the member itself).
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from lstm_inspect.cli import cli

FIXTURES = Path(__file__).parent / "fixtures" / "models"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def keras_in_hdf5_user_block(path: Path) -> Path:
    keras_zip = (FIXTURES / "k3_lstm_init.keras").read_bytes()
    cd_offset = struct.unpack("<I", keras_zip[-6:-2])[0]
    local_records, directory = keras_zip[:cd_offset], bytearray(keras_zip[cd_offset:])
    block = 512
    while block < len(local_records):
        block *= 2
    with h5py.File(FIXTURES / "k2_classic.h5", "r") as source, h5py.File(path, "w", userblock_size=block) as out:
        for key, value in source.attrs.items():
            out.attrs[key] = value
        for name in source:
            source.copy(name, out)
        config = json.loads(out.attrs["model_config"])
        config["config"]["layers"].append({"class_name": "Lambda",
                                           "config": {"name": "evil", "function": ["4wEAAAAA", None, None]}})
        out.attrs["model_config"] = json.dumps(config)
    data = bytearray(path.read_bytes())
    data[:len(local_records)] = local_records
    struct.pack_into("<I", directory, len(directory) - 6, len(data))  # the central directory moves to the end
    path.write_bytes(bytes(data) + bytes(directory))
    return path


def test_keras_zip_in_an_hdf5_user_block_is_refused(tmp_path):
    path = keras_in_hdf5_user_block(tmp_path / "polyglot.keras")
    assert zipfile.ZipFile(path).namelist() == ["metadata.json", "config.json", "model.weights.h5"]
    with h5py.File(path, "r") as f:  # what h5py (and Keras's .h5 loader) sees
        assert "Lambda" in f.attrs["model_config"]
    for args in (["inspect"], ["check", "--format", "github"]):
        result = run(*args, path)
        assert result.exit_code == 2, result.output
        assert "is both an HDF5 file (superblock at offset" in result.output
        assert "and a zip archive; refusing an ambiguous file" in result.output


def test_safetensors_holding_an_hdf5_file_at_512_is_refused(tmp_path):
    inner = (FIXTURES / "k2_classic.h5").read_bytes()
    header = {"x": {"dtype": "U8", "shape": [len(inner)], "data_offsets": [0, len(inner)]}}
    text = json.dumps(header).encode()
    text += b" " * (512 - 8 - len(text))  # the tensor data starts at offset 512
    path = tmp_path / "polyglot.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + inner)
    with h5py.File(path, "r"):  # libhdf5 opens it
        pass
    result = run("inspect", path)
    assert result.exit_code == 2, result.output
    assert "is both an HDF5 file (superblock at offset 512) and a safetensors file" in result.stderr


def test_stored_weights_member_at_a_power_of_two_is_not_ambiguous(tmp_path):
    """A .keras whose uncompressed model.weights.h5 begins at byte 1024: libhdf5 sees the member, which is what
    lstm-inspect reads anyway."""
    with zipfile.ZipFile(FIXTURES / "k3_lstm_init.keras") as archive:
        members = {m: archive.read(m) for m in archive.namelist()}
    path = tmp_path / "aligned.keras"
    pad = 0
    for _ in range(2):
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("metadata.json", members["metadata.json"] + b" " * pad)
            archive.writestr("config.json", members["config.json"])
            archive.writestr("model.weights.h5", members["model.weights.h5"])
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("model.weights.h5")
        start = info.header_offset + 30 + len("model.weights.h5")
        target = 1 << max(10, (start - 1).bit_length())
        pad += target - start
    assert (path.read_bytes()[start:start + 4], start & (start - 1)) == (b"\x89HDF", 0)
    result = run("inspect", "--json", "--no-stats", path)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("fixture", ["k2_classic.h5", "k3_lstm_init.keras", "k3_lstm_init.weights.h5",
                                     "k2_classic.keras"])
def test_plain_files_are_not_ambiguous(fixture):
    assert run("inspect", "--no-stats", FIXTURES / fixture).exit_code == 0

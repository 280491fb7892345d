"""Hostile files, round three: more polyglots and trailing data.

Every base file comes from a real writer (torch.onnx.export, Keras 3, tf-keras / h5py, torch.save, safetensors,
the TFLite converter); the hostile part is appended or embedded here, by hand, and labelled in each test. Every
case runs through the console script (`python -m lstm_inspect`, the bounded parent and its isolated child) and
must end in exit 0/1/2, never 3, with one line on stderr naming the file, well within 60 s.
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "models"
TF_FORMATS = Path(__file__).parent / "fixtures" / "tf_formats"
CODE = Path(__file__).parent / "fixtures" / "code"
AMBIGUOUS = "refusing an ambiguous file"


def console(*args, cwd=None):
    """(exit code, stdout, stderr, seconds) of the console script, run as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lstm_inspect", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def refused(path, *needles):
    """`inspect` and `check` both refuse `path`: exit 2, one line naming the file, holding every needle."""
    code, _, err, seconds = console("inspect", path)
    lines = err.splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lstm-inspect: error: {path}: "), lines[0]
    assert all(n in lines[0] for n in needles), lines[0]
    assert seconds < 60
    code, out, err, seconds = console("check", "--format", "github", path)
    assert code == 2 and seconds < 60, (out, err)
    assert out.count("::error") == 1 and all(n in out for n in needles), out
    return lines[0]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def protobuf_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (hand-built): protobuf readers skip an unknown one, keep a known one."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


@pytest.fixture(scope="module")
def onnx_lstm() -> bytes:
    """An ONNX LSTM written by torch.onnx.export (the real writer), random weights and biases."""
    import torch

    torch.manual_seed(13)
    net = torch.nn.LSTM(3, 4, batch_first=True)
    buffer = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 5, 3),), buffer, dynamo=False, input_names=["x"])
    return buffer.getvalue()


# -- polyglots ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field,name", [(999, "zip_in_unknown_field.onnx"), (6, "zip_in_doc_string.onnx"),
                                        (999, "onnx_named.keras")])
def test_onnx_that_is_also_a_keras_zip_is_refused(tmp_path, onnx_lstm, field, name):
    """Hand-built: a real ONNX model, then a protobuf field (unknown, or doc_string placed last) holding a real
    Keras 3 .keras archive. onnx and onnxruntime load the model; zipfile (and so Keras) opens the archive."""
    import onnx
    import onnxruntime

    path = tmp_path / name
    path.write_bytes(onnx_lstm + protobuf_field(field, (FIXTURES / "k3_lstm_init.keras").read_bytes()))
    assert zipfile.ZipFile(path).namelist() == ["metadata.json", "config.json", "model.weights.h5"]
    assert len(onnx.load(str(path)).graph.node) > 0
    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    refused(path, f"starting at byte {len(onnx_lstm) + 5:,}" if field == 999 else "zip archive starting at byte",
            "after other data", AMBIGUOUS)


def test_onnx_holding_an_hdf5_file_at_a_power_of_two_is_refused(tmp_path, onnx_lstm):
    """Hand-built: a real ONNX model with an unknown field whose bytes put tf-keras's k2_classic.h5 at byte 4,096,
    where libhdf5 looks for a superblock: h5py opens the HDF5 model, onnxruntime the ONNX one."""
    import onnxruntime

    inner = (FIXTURES / "k2_classic.h5").read_bytes()
    target = 4096
    for pad in range(target):  # the field's tag and length take 4-5 bytes whatever pad is
        data = onnx_lstm + protobuf_field(999, b"\0" * pad + inner)
        if len(data) - len(inner) == target:
            break
    assert data[target:target + 8] == b"\x89HDF\r\n\x1a\n"
    path = tmp_path / "hdf5_in_onnx.onnx"
    path.write_bytes(data)
    with h5py.File(path, "r") as f:
        assert "model_weights" in f
    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    refused(path, "both an HDF5 file (superblock at offset 4,096) and an ONNX model", AMBIGUOUS)


def test_two_zip_archives_one_after_the_other_are_refused(tmp_path):
    """Hand-built: two real .keras archives concatenated. zipfile reads the second (its end record is last); a
    streaming unzipper reads the first from its local headers."""
    first = (FIXTURES / "k3_lstm_init.keras").read_bytes()
    path = tmp_path / "two.keras"
    path.write_bytes(first + (FIXTURES / "k3_gru_ra.keras").read_bytes())
    with zipfile.ZipFile(path) as archive:
        assert b"GRU" in archive.read("config.json")
    refused(path, f"zip archive starting at byte {len(first):,}, after another zip archive", AMBIGUOUS)


# -- trailing data --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", [FIXTURES / "k3_lstm_init.keras", CODE / "torch_clean.pt"])
def test_bytes_after_a_zip_end_record_are_refused(tmp_path, source):
    """Hand-built: a real .keras / torch.save zip with 1,000 bytes appended; zipfile still opens it."""
    path = tmp_path / source.name
    path.write_bytes(source.read_bytes() + b"\x00hidden" * 1000)
    zipfile.ZipFile(path).namelist()
    refused(path, "7,000 bytes of trailing data after the zip archive's end record", AMBIGUOUS)


def test_bytes_after_the_hdf5_end_of_file_address_are_refused(tmp_path):
    """Hand-built: tf-keras's k2_classic.h5 with a pickle appended after its end-of-file address; h5py still
    opens it (libhdf5 ignores bytes past the address)."""
    import pickle

    path = tmp_path / "trailing.h5"
    path.write_bytes((FIXTURES / "k2_classic.h5").read_bytes() + pickle.dumps({"hidden": list(range(100))}))
    with h5py.File(path, "r") as f:
        assert "model_weights" in f
    refused(path, "bytes of trailing data after the HDF5 end-of-file address", AMBIGUOUS)


def test_bytes_after_a_safetensors_payload_are_refused(tmp_path):
    """Hand-built: a file written by safetensors with bytes appended after its last tensor. The safetensors
    package refuses it too (the tensors must tile the data buffer); lstm-inspect says so in one line."""
    import numpy as np
    import safetensors.numpy

    path = tmp_path / "trailing.safetensors"
    safetensors.numpy.save_file({"lstm.weight_ih_l0": np.random.default_rng(1).normal(size=(16, 3)).astype("f4")},
                                str(path))
    path.write_bytes(path.read_bytes() + b"hidden" * 100)
    with pytest.raises(Exception):
        safetensors.numpy.load_file(str(path))
    refused(path, "safetensors data buffer is", "but the tensors cover")


def test_a_second_onnx_message_appended_is_refused(tmp_path, onnx_lstm):
    """Hand-built: a real ONNX model twice, one after the other. onnx parses it as one model (protobuf merges
    the second graph into the first: twice the nodes)."""
    import onnx

    path = tmp_path / "twice.onnx"
    path.write_bytes(onnx_lstm + onnx_lstm)
    assert len(onnx.load(str(path)).graph.node) == 2 * len(onnx.load_from_string(onnx_lstm).graph.node)
    refused(path, "field 'ir_version' appears twice", f"at byte {len(onnx_lstm):,}", AMBIGUOUS)


def test_tflite_with_associated_files_is_read_and_with_a_model_zip_refused(tmp_path):
    """TFLite's metadata writer appends a zip of associated files (labels.txt) to the model: that is the format,
    read as usual. Hand-built: a real converter's .tflite with such a zip appended, and with one holding a Keras
    config instead (refused)."""
    base = (TF_FORMATS / "tfl_lstm.tflite").read_bytes()
    for name, members, ok in (("labels.tflite", {"labels.txt": "a\nb\n"}, True),
                              ("keras.tflite", {"config.json": "{}", "model.weights.h5": ""}, False)):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for member, text in members.items():
                archive.writestr(member, text)
        path = tmp_path / name
        path.write_bytes(base + buffer.getvalue())
        if ok:
            code, out, err, seconds = console("inspect", "--no-stats", path)
            assert code == 0 and "LSTM" in out and seconds < 60, err
        else:
            refused(path, "zip archive starting at byte", AMBIGUOUS)


@pytest.mark.parametrize("fixture", [FIXTURES / "k2_classic.h5", FIXTURES / "k3_lstm_init.keras",
                                     TF_FORMATS / "tfl_gru.tflite", CODE / "torch_clean.pt",
                                     CODE / "torch_clean_legacy.pt"])
def test_real_writers_files_have_no_trailing_data(fixture):
    code, _, err, _ = console("inspect", "--no-stats", fixture)
    assert code == 0, err


def test_real_writers_onnx_is_not_ambiguous(tmp_path, onnx_lstm):
    path = tmp_path / "plain.onnx"
    path.write_bytes(onnx_lstm)
    code, out, err, _ = console("inspect", "--no-stats", path)
    assert code == 0 and "LSTM" in out, err


# -- shards: opened once, never through a link, checked and read through the handle ---------------------------------

SHARDED = Path(__file__).parent / "fixtures" / "sharded"


def _tree(tmp_path, source, pattern):
    """A copy of the real writer's files matching `pattern` in tmp_path/model, and tmp_path/outside beside it."""
    import shutil

    model, outside = tmp_path / "model", tmp_path / "outside"
    model.mkdir()
    outside.mkdir()
    for item in source.glob(pattern):
        shutil.copy(item, model / item.name)
    return model, outside


def _straced(trace, *args):
    """The console script under strace -f (every process of the tree): (exit code, stderr, opened paths)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(["strace", "-f", "-qq", "-e", "trace=open,openat,openat2", "-o", str(trace),
                           sys.executable, "-m", "lstm_inspect", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)
    return done.returncode, done.stderr, trace.read_text()


@pytest.mark.parametrize("kind", ["keras", "tf"])
def test_shard_that_is_a_link_out_of_the_directory_is_refused_and_nothing_outside_is_opened(tmp_path, kind):
    """Hand-built from real writers' files (Keras 3's sharded weights, TensorFlow's 13-shard checkpoint): one shard
    moved outside the directory and replaced by a symbolic link to it. Refused in one line, and strace shows no
    open of the target by any process of the tree."""
    if kind == "keras":
        model, outside = _tree(tmp_path, SHARDED, "model*")
        shard, target = model / "model_00001.weights.h5", "model.weights.json"
    else:
        model, outside = _tree(tmp_path, TF_FORMATS, "tfk_sharded.*")
        shard, target = model / "tfk_sharded.data-00003-of-00013", "tfk_sharded"
    secret = outside / "secret.bin"
    shard.rename(secret)
    shard.symlink_to(secret)
    code, err, trace = _straced(tmp_path / "trace.txt", "inspect", model / target)
    assert code == 2 and len(err.splitlines()) == 1 and "link" in err, err
    assert "secret.bin" not in trace and "outside" not in trace
    assert not [line for line in trace.splitlines() if shard.name in line and "O_NOFOLLOW" not in line
                and "= -1" not in line], "a shard opened through its name without O_NOFOLLOW"


def test_keras_shard_swapped_for_a_link_after_the_check_is_refused_by_the_handle(tmp_path, monkeypatch):
    """The race: the shard becomes a link after the name was checked (simulated: the name check is told there is
    no link). O_NOFOLLOW on the one open refuses it; the outside file is never read."""
    from lstm_inspect.readers import keras3, open_model
    from lstm_inspect.errors import UnsafeFile

    model, outside = _tree(tmp_path, SHARDED, "model*")
    shard = model / "model_00002.weights.h5"
    (outside / "secret.h5").write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(outside / "secret.h5")
    monkeypatch.setattr(keras3.os.path, "islink", lambda path: False)
    with pytest.raises(UnsafeFile, match="model_00002.weights.h5 is a symbolic link"):
        open_model(model / "model.weights.json")


def test_keras_shard_that_is_a_fifo_is_refused_without_blocking(tmp_path, monkeypatch):
    from lstm_inspect.readers import keras3, open_model
    from lstm_inspect.errors import InspectError

    model, _ = _tree(tmp_path, SHARDED, "model*")
    shard = model / "model_00000.weights.h5"
    shard.unlink()
    os.mkfifo(shard)
    code, _, err, seconds = console("inspect", model / "model.weights.json")
    assert code == 2 and len(err.splitlines()) == 1 and "model_00000.weights.h5" in err and seconds < 60, err
    monkeypatch.setattr(keras3.os.path, "isfile", lambda path: True)  # past the name check: the handle decides
    with pytest.raises(InspectError, match="not a regular file \\(a FIFO\\)"):
        open_model(model / "model.weights.json")


def test_tf_shard_swapped_after_opening_is_read_through_the_handle_or_refused(tmp_path, monkeypatch):
    """TensorFlow's 13-shard checkpoint, opened; then a shard is replaced by a link to an outside file holding
    other bytes. Reads go through the handle opened and checked first (the values stay TensorFlow's); a shard
    closed to bound the open files and reopened must be the very file checked, else it is refused."""
    import numpy as np

    from lstm_inspect.errors import UnsafeFile
    from lstm_inspect.readers import open_model, tf_bundle

    model, outside = _tree(tmp_path, TF_FORMATS, "tfk_sharded.*")
    with open_model(model / "tfk_sharded") as opened:
        before = {t.name + layer.name: t.read() for layer in opened.layers for t in layer.weights}
    for open_shards in (tf_bundle.OPEN_SHARDS, 0):
        monkeypatch.setattr(tf_bundle, "OPEN_SHARDS", open_shards)
        with open_model(model / "tfk_sharded") as opened:
            for shard in sorted(model.glob("tfk_sharded.data-*")):  # every shard swapped for a link to altered bytes
                data = bytearray(shard.read_bytes())
                data[:] = bytes(len(data))
                (outside / shard.name).write_bytes(data)
                shard.rename(tmp_path / ("old-" + shard.name))  # the checked file lives on (the handle holds it)
                shard.symlink_to(outside / shard.name)
            if open_shards:
                after = {t.name + layer.name: t.read() for layer in opened.layers for t in layer.weights}
                assert all(np.array_equal(before[k], after[k]) for k in before)
            else:
                with pytest.raises(UnsafeFile, match="symbolic link|was replaced"):
                    for layer in opened.layers:
                        for t in layer.weights:
                            t.read()
        for old in sorted(tmp_path.glob("old-*")):
            (model / old.name[4:]).unlink()
            old.rename(model / old.name[4:])


def test_tf_index_or_shard_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    model, _ = _tree(tmp_path, TF_FORMATS, "tfk_sharded.*")
    shard = model / "tfk_sharded.data-00005-of-00013"
    shard.unlink()
    os.mkfifo(shard)
    code, _, err, seconds = console("inspect", model / "tfk_sharded")
    assert code == 2 and len(err.splitlines()) == 1 and "data-00005-of-00013" in err and "FIFO" in err, err
    assert seconds < 60
    shard.unlink()
    (model / "tfk_sharded.index").rename(model / "real.index")
    os.mkfifo(model / "tfk_sharded.index")
    code, _, err, seconds = console("inspect", model / "tfk_sharded.data-00000-of-00013")
    assert code == 2 and len(err.splitlines()) == 1 and seconds < 60, err

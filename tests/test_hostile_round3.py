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


# -- check DIR walks the pickle carriers ------------------------------------------------------------------------------


def test_check_dir_scans_npz_and_bin_and_passes_raw_bin(tmp_path):
    """A directory as a model hub repository holds it: torch.save files named .bin (clean, and with an os.system
    payload: tests/fixtures/code, written by torch.save), numpy's .npz (plain arrays, and an object array whose
    pickle calls builtins.exec), and a .bin of raw floats (ONNX external data) that is no model at all. The walk
    finds every one; the code fails the gate, the raw .bin passes as "not a model file"."""
    import json
    import shutil

    import numpy as np

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    shutil.copy(CODE / "torch_clean.pt", repo / "pytorch_model.bin")
    shutil.copy(CODE / "torch_os_system.pt", repo / "sub" / "optimizer.bin")
    shutil.copy(CODE / "npz_clean.npz", repo / "arrays.npz")
    shutil.copy(CODE / "npz_object_array.npz", repo / "sub" / "evil.npz")
    (repo / "weights.bin").write_bytes(np.random.default_rng(3).normal(size=4096).astype("<f4").tobytes())
    code, out, err, seconds = console("check", "--format", "json", repo)
    verdicts = {Path(r["file"]).name: r for r in json.loads(out)["files"]}
    assert set(verdicts) == {"pytorch_model.bin", "optimizer.bin", "arrays.npz", "evil.npz", "weights.bin"}, err
    assert code == 1 and seconds < 60, err
    assert [f["message"] for f in verdicts["optimizer.bin"]["findings"]] and \
        "posix.system" in verdicts["optimizer.bin"]["findings"][0]["message"]
    assert "builtins.exec" in verdicts["evil.npz"]["findings"][0]["message"]
    for clean in ("pytorch_model.bin", "arrays.npz"):
        assert verdicts[clean]["status"] == "pass" and not verdicts[clean]["findings"], verdicts[clean]
    assert verdicts["weights.bin"]["status"] == "pass" and verdicts["weights.bin"]["kind"] == \
        "not a model file; no code found"
    code, out, _, _ = console("check", "--format", "json", repo / "weights.bin")  # named, the same verdict
    assert code == 0 and json.loads(out)["files"][0]["kind"] == "not a model file; no code found"


def test_a_bin_that_is_a_fifo_or_a_pickle_with_code_is_never_passed_as_raw(tmp_path):
    """Hand-built: a protocol-0 pickle calling os.system named .bin (no PROTO header, so it does not look like
    torch.save), and a FIFO named .bin: neither is "not a model file"."""
    path = tmp_path / "evil.bin"
    marker = tmp_path / "pwned"
    path.write_bytes(f"cos\nsystem\n(S'touch {marker}'\ntR.".encode())
    code, out, err, _ = console("check", "--format", "json", path)
    assert code == 1 and "os.system" in out and not marker.exists(), (out, err)
    os.mkfifo(tmp_path / "fifo.bin")
    code, out, err, seconds = console("check", "--format", "json", tmp_path / "fifo.bin")
    assert code == 2 and "not a regular file" in out and seconds < 60, (out, err)


# -- in-process reads get the attribute budget too ---------------------------------------------------------------------


_MEASURED = ("import resource, subprocess, sys\n"
             "done = subprocess.run(sys.argv[1:])\n"
             "print('PEAK', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
             "sys.exit(done.returncode)")


def _peak_process(args):
    """(exit code, stderr, seconds, peak resident bytes of the process tree) of `python args...` (ROOT on the
    path), measured by a wrapper process whose only children are that tree."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", _MEASURED, sys.executable, *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    seconds = time.monotonic() - started
    lines = done.stderr.splitlines()
    peak = int(lines[-1].split()[1]) * 1024
    return done.returncode, "\n".join(lines[:-1]) + ("\n" if lines[:-1] else ""), seconds, peak


@pytest.fixture(scope="module")
def vlen_bombs(tmp_path_factory):
    """Hand-built from tf-keras's k2_classic.h5 (test_hostile_bounds' two cases): an 80 MB model_config as one
    variable-length string, and 3,000 layer_names descriptors pointing at one 1 MiB string (reads as 3 GiB)."""
    from test_hostile_bounds import shared_heap_attribute, vlen_config_copy

    root = tmp_path_factory.mktemp("vlen")
    return {"shared": shared_heap_attribute(root / "shared.h5"), "big": vlen_config_copy(root / "vlen80.h5")}


@pytest.mark.parametrize("case", ["shared", "big"])
@pytest.mark.parametrize("command", ["inspect", "check"])
def test_no_isolation_reads_variable_length_attributes_under_the_budget(vlen_bombs, case, command):
    """`--no-isolation` used to read them unbounded: shared.h5 took 45 s and 6.2 GB. Now the same 256 MiB budget
    as in the isolated child (a forked helper: the process may not bound itself in-process)."""
    path = vlen_bombs[case]
    options = ["--no-stats"] if command == "inspect" else ["--format", "json", "-o", f"{path}.{command}.json"]
    code, err, seconds, peak = _peak_process(["-m", "lstm_inspect", "--no-isolation", command, *options, path])
    if command == "inspect":
        assert code == 2 and len(err.splitlines()) == 1 and str(path) in err, err
        said = err
    else:  # an attribute not read is a config not scanned: an unsafe-code finding (exit 1) or the refusal (exit 2)
        assert code in (1, 2), err
        said = Path(f"{path}.{command}.json").read_text()
    assert "variable-length data" in said, said
    assert seconds < 60 and (peak is None or peak < 1 << 30), (seconds, peak)


def test_library_reads_variable_length_attributes_under_the_budget(vlen_bombs):
    """The Python API (open_model, in this process) gets the budget without touching the host's limits."""
    import resource

    from lstm_inspect.errors import UnsafeFile
    from lstm_inspect.readers import open_model

    before = resource.getrlimit(resource.RLIMIT_AS)
    for path in vlen_bombs.values():
        started = time.monotonic()
        with pytest.raises(UnsafeFile, match="variable-length data"):
            open_model(path)
        assert time.monotonic() - started < 60
    assert resource.getrlimit(resource.RLIMIT_AS) == before
    code, err, seconds, peak = _peak_process(["-c", "import sys; from lstm_inspect import open_model\n"
                                              "try: open_model(sys.argv[1])\nexcept Exception as e: sys.exit(str(e))",
                                              vlen_bombs["shared"]])
    assert code == 1 and "variable-length data" in err and seconds < 60 and (peak is None or peak < 1 << 30)


def test_small_variable_length_attributes_are_read_directly(monkeypatch):
    """Descriptors × file size bounds a variable-length attribute's real bytes: a real model's config is read
    in-process without the helper (no fork per attribute)."""
    from lstm_inspect import limits
    from lstm_inspect.readers import open_model

    def forbidden(*args, **kwargs):
        raise AssertionError("the helper ran")

    monkeypatch.setattr(limits, "run_bounded", forbidden)
    with open_model(FIXTURES / "k2_classic.h5") as model:
        assert model.has_config and model.layers


def test_the_api_reads_in_process_and_never_bounds_its_host(monkeypatch):
    """What docs/api.md and docs/threat-model.md say: the API forks no reading child (here fork is forbidden and
    inspect still works) and leaves the host's address-space limit and alarm alone; isolation.run is the bounded
    way, and it does fork."""
    import resource
    import signal

    import lstm_inspect as li
    from lstm_inspect import isolation

    limit, timer = resource.getrlimit(resource.RLIMIT_AS), signal.getitimer(signal.ITIMER_REAL)
    real_fork = os.fork

    def no_fork():
        raise AssertionError("the API forked")

    monkeypatch.setattr(os, "fork", no_fork)
    assert li.inspect(FIXTURES / "k2_classic.h5")["layers"]
    assert (resource.getrlimit(resource.RLIMIT_AS), signal.getitimer(signal.ITIMER_REAL)) == (limit, timer)
    monkeypatch.setattr(os, "fork", real_fork)
    summary = isolation.run(li.inspect, str(FIXTURES / "k2_classic.h5"), label="k2_classic.h5", timeout=60,
                            max_memory=1 << 30)
    assert summary["layers"]
    assert (resource.getrlimit(resource.RLIMIT_AS), signal.getitimer(signal.ITIMER_REAL)) == (limit, timer)


# -- fuzz: appended and prepended bytes -----------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from test_fuzz import EXAMPLES, FUZZ  # noqa: E402

_BASES = [FIXTURES / "k2_classic.h5", FIXTURES / "k3_lstm_init.keras", FIXTURES / "k3_lstm_init.weights.h5",
          CODE / "torch_clean.pt", CODE / "npz_clean.npz", Path(__file__).parent / "fixtures" / "exports" /
          "k3_bidi_gru.onnx.safetensors"]


@settings(FUZZ, max_examples=max(EXAMPLES // 5, 1))
@given(base=st.sampled_from(_BASES), junk=st.binary(min_size=1, max_size=300), where=st.sampled_from(["end", "start"]))
def test_bytes_added_to_a_real_file_are_always_refused(tmp_path_factory, base, junk, where):
    """Any bytes appended to (or, for a zip, put before) a real writer's file: never read one way, always a
    one-line refusal; the same file untouched reads."""
    from lstm_inspect.errors import InspectError
    from lstm_inspect.readers import open_model

    if where == "start" and base.suffix not in (".keras", ".pt", ".npz"):
        where = "end"
    data = base.read_bytes()
    path = tmp_path_factory.mktemp("added") / base.name
    path.write_bytes(data + junk if where == "end" else junk + data)
    with pytest.raises(InspectError):
        with open_model(path) as model:
            for layer in model.layers:
                for tensor in layer.weights:
                    tensor.read()

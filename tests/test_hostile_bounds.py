"""Bounded end to end: attribute bounds count the real bytes of variable-length strings, a hostile config cannot
make the report (and so the parent's parsing and rendering) huge, the child's answer is size-checked, and the
parent runs under --timeout / --max-memory too.

Files are hand-built from real writers: tf-keras's k2_classic.h5 with attributes rewritten by h5py (one with its
heap descriptors byte-edited to point 3,000 times at one 1 MiB string), Keras 3's k3_lstm_init.keras with its
config.json edited.
"""
from __future__ import annotations

import json
import resource
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from hostile import one_line_error, run


FIXTURES = Path(__file__).parent / "fixtures" / "models"
ROOT = Path(__file__).parent.parent


def cli_process(*args, timeout=120):
    """The real console script in a subprocess (the parent bounds itself only there): exit code, stderr, seconds,
    and the largest resident size of any process it ran (parent or reading child), in bytes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "import sys; from lstm_inspect.cli import main; "
                           "sys.exit(main(sys.argv[1:]))", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    seconds = time.monotonic() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return done, seconds, peak if peak > before * 1024 else None


def vlen_config_copy(path: Path) -> Path:
    """k2_classic.h5 copied to `path` with an 80 MB model_config stored as a variable-length string."""
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        config["padding"] = "x" * 80_000_000
        del f.attrs["model_config"]
        f.attrs.create("model_config", json.dumps(config), dtype=h5py.string_dtype())
    return path


def test_variable_length_attribute_counts_its_real_bytes(tmp_path):
    """An 80 MB model_config stored as a variable-length string: get_storage_size() says 16 bytes."""
    path = vlen_config_copy(tmp_path / "vlen.h5")
    with h5py.File(path, "r") as f:
        assert f.attrs.get_id("model_config").get_storage_size() == 16
    one_line_error(run("inspect", "--no-stats", path), "'model_config'", "variable-length data")


def shared_heap_attribute(path: Path) -> Path:
    """layer_names as 3,000 variable-length strings whose heap descriptors (byte-edited) all point at one 1 MiB
    string: a 1.5 MB file that reads as 3 GiB (4.1 GB and 44 s before MemoryError)."""
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights"]
        del group.attrs["layer_names"]
        values = ["B" * (1 << 20)] + [f"s{i:04d}" for i in range(2999)]
        group.attrs.create("layer_names", np.array(values, dtype=object), dtype=h5py.string_dtype())
    data = bytearray(path.read_bytes())
    big = struct.pack("<I", 1 << 20)
    start = data.find(big)
    while struct.unpack_from("<I", data, start + 16)[0] != 5:  # the descriptor followed by the small ones
        start = data.find(big, start + 1)
    descriptor = bytes(data[start:start + 16])
    for k in range(1, 3000):
        assert struct.unpack_from("<I", data, start + 16 * k)[0] == 5
        data[start + 16 * k:start + 16 * (k + 1)] = descriptor
    path.write_bytes(bytes(data))
    return path


def test_shared_heap_descriptors_are_bounded(tmp_path):
    path = shared_heap_attribute(tmp_path / "shared.h5")
    done, seconds, peak = cli_process("inspect", "--no-stats", path)
    assert done.returncode == 2, done.stderr
    assert "'layer_names'" in done.stderr and "variable-length data" in done.stderr
    assert len(done.stderr.splitlines()) == 1
    assert seconds < 60
    assert peak is None or peak < 1.5 * (1 << 30)


def edited_keras(path: Path, edit) -> Path:
    with zipfile.ZipFile(FIXTURES / "k3_lstm_init.keras") as archive:
        members = {m: archive.read(m) for m in archive.namelist()}
    config = json.loads(members["config.json"])
    edit(config["config"]["layers"])
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def huge_value(layers):
    layers[1]["config"]["units"] = list(range(1_000_000))
    layers[1]["config"]["activation"] = {"class_name": "x", "config": {"v": ["a" * 8] * 4_000_000}}


def many_layers(layers):
    layers.extend({"module": "keras.layers", "class_name": "Dropout", "config": {"name": f"d{i}", "rate": 0.1}}
                  for i in range(100_000))


def test_huge_config_value_is_summarised(tmp_path):
    """A 2 MB .keras whose LSTM config holds 40 MB in units / activation: the human output took 92 s."""
    path = edited_keras(tmp_path / "huge_value.keras", huge_value)
    report = json.loads(run("inspect", "--json", "--no-stats", path).stdout)
    lstm = next(layer for layer in report["layers"] if layer["class_name"] == "LSTM")
    assert lstm["config"]["units"] == "<list of 1,000,000 items: over 2,000 characters, not shown>"
    done, seconds, peak = cli_process("inspect", path)
    assert done.returncode == 0, done.stderr
    assert "not shown" in done.stdout and len(done.stdout) < 100_000
    assert seconds < 60 and (peak is None or peak < 1.5 * (1 << 30))


def test_hundred_thousand_layers_show_the_first_thousand(tmp_path):
    """100,000 layers in the config: the human output (126 s before) shows 1,000 and says how many more."""
    path = edited_keras(tmp_path / "many.keras", many_layers)
    done, seconds, peak = cli_process("inspect", path)
    assert done.returncode == 0, done.stderr
    assert "… and 99,003 more layers" in done.stdout or "more layers" in done.stdout
    assert seconds < 60 and (peak is None or peak < 1.5 * (1 << 30))


def test_child_answer_is_size_checked():
    code = ("import sys; import lstm_inspect.isolation as i; i.MAX_RESULT_BYTES = 4096; "
            "from lstm_inspect.cli import main; sys.exit(main(['inspect', '--json', sys.argv[1]]))")
    done = subprocess.run([sys.executable, "-c", code, str(FIXTURES / "k2_classic.h5")], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("the result is larger than 4,096 bytes; refusing it (narrow it with --layer)")


def test_parent_rendering_is_bounded_in_time_and_memory():
    """bound_parent, as the CLI arms it after each child's answer: a render that runs past --timeout ends in an
    InspectError, an allocation past --max-memory in a MemoryError (each then one line, exit 2)."""
    code = ("from lstm_inspect import isolation\n"
            "from lstm_inspect.errors import InspectError\n"
            "isolation.bound_parent(0.5, 256 << 20)\n"
            "try:\n"
            "    bytearray(1 << 30)\n"
            "except MemoryError:\n"
            "    print('memory bounded')\n"
            "import time\n"
            "try:\n"
            "    time.sleep(30)\n"
            "except InspectError as exc:\n"
            "    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.stdout.splitlines() == ["memory bounded",
                                        "showing the result took longer than 0.5 s (--timeout); gave up"], done


@pytest.mark.parametrize("args", [["inspect"], ["check", "--format", "github"]], ids=["inspect", "check"])
def test_memory_error_in_the_parent_is_one_line(args):
    code = ("import sys; import lstm_inspect.cli as c; import lstm_inspect.render.text as t; "
            "t.render_inspect = lambda *a: bytearray(1 << 40); "
            "import lstm_inspect.render.formats as f; f.FORMATTERS['github'] = lambda *a: bytearray(1 << 40); "
            "sys.exit(c.main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, *args, str(FIXTURES / "k2_classic.h5")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == ["lstm-inspect: error: showing the result needs more than --max-memory"]

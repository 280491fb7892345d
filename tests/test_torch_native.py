"""PyTorch files read natively (readers/torch_zip.py, no torch and no unpickling) equal torch.load bit for bit, and
a pickle that would run code is refused by reading without running it.

Every file is written by real ``torch.save`` (zip and legacy formats) from real modules with random non-zero
weights; the reference is ``torch.load(weights_only=True)`` on the same file.
"""
from __future__ import annotations

import os
import pickle
import sys

import numpy as np
import pytest

import torch
from lstm_inspect import open_model
from lstm_inspect.errors import UnsafeFile
from lstm_inspect.readers import pickle_scan, torch_zip

MODULES = {
    "lstm": lambda: torch.nn.LSTM(3, 4),
    "lstm_2l_bidi": lambda: torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True),
    "lstm_proj_bidi": lambda: torch.nn.LSTM(3, 6, num_layers=2, proj_size=2, bidirectional=True),
    "gru_2l_bidi": lambda: torch.nn.GRU(3, 4, num_layers=2, bidirectional=True),
    "rnn_relu_2l": lambda: torch.nn.RNN(3, 4, num_layers=2, nonlinearity="relu"),
}
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def module(name, dtype=torch.float32):
    torch.manual_seed(sum(map(ord, name)))
    built = MODULES[name]()
    with torch.no_grad():
        for p in built.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return built.to(dtype)


def strided_and_shared():
    """Views torch.save stores as (storage, offset, shape, stride): transposed, sliced with a step, offset into a
    storage, broadcast (stride 0), several tensors on one storage, the same tensor twice, empty, int and bool."""
    torch.manual_seed(7)
    base = torch.randn(6, 8, dtype=torch.float64)
    half = torch.randn(5, 4).to(torch.bfloat16)
    return {
        "base": base,
        "transposed": base.t(),
        "every_other_column": base[:, 1::2],
        "offset_rows": base[2:5],
        "broadcast": torch.randn(3)[None, :].expand(4, 3),
        "same_again": base,
        "flat_slice": base.view(-1)[5:17],
        "bf16_t": half.t(),
        "empty": torch.zeros(0, 3),
        "long": torch.arange(10, dtype=torch.int64).reshape(2, 5)[:, ::2],
        "mask": torch.rand(4) > 0.5,
        "param": torch.nn.Parameter(torch.randn(2, 2)),
        "nested": {"list": [torch.randn(2), (torch.randn(3),)], "epoch": 3, "lr": 0.1, "name": "x"},
    }


def torch_reference(path):
    """name -> array exactly as the torch path reads it (bfloat16 widened to float32 by torch itself)."""
    flat = {}

    def walk(value, prefix):
        if isinstance(value, torch.Tensor):
            tensor = value.detach()
            flat[prefix.rstrip(".")] = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                walk(item, f"{prefix}{i}.")

    walk(torch.load(path, weights_only=True), "")
    return flat


def assert_bit_equal(path):
    reference = torch_reference(path)
    legacy = not path.read_bytes().startswith(b"PK")
    with (torch_zip.read_legacy if legacy else torch_zip.read)(str(path), str(path)) as model:  # never torch
        tensors = [t for layer in model.layers for t in layer.weights]
        assert model.kind == "torch-state-dict"
        assert len(tensors) == len(reference), (len(tensors), sorted(reference))
        # the torch path (torch.load) builds the same neutral model: pair tensors by layer and name
        from lstm_inspect.readers.torch_state import read_torch_file
        with read_torch_file(str(path), str(path)) as via_torch:
            theirs = {(layer.key, t.name): t for layer in via_torch.layers for t in layer.weights}
            ours = {(layer.key, t.name): t for layer in model.layers for t in layer.weights}
            assert ours.keys() == theirs.keys()
            for key, tensor in ours.items():
                a, b = tensor.read(), theirs[key].read()
                assert a.dtype == b.dtype and a.shape == b.shape == tensor.shape, key
                assert tensor.dtype == str(a.dtype)
                assert a.tobytes() == np.ascontiguousarray(b).tobytes(), key  # bit for bit (NaN payloads too)
    return len(reference)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_state_dicts_equal_torch_load(name, dtype, legacy, tmp_path):
    path = tmp_path / f"{name}.pt"
    torch.save(module(name, dtype).state_dict(), path, _use_new_zipfile_serialization=not legacy)
    assert assert_bit_equal(path) == len(module(name).state_dict())


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_strided_shared_and_nested_tensors_equal_torch_load(legacy, tmp_path):
    path = tmp_path / "views.pth"
    torch.save(strided_and_shared(), path, _use_new_zipfile_serialization=not legacy)
    assert assert_bit_equal(path) == 14


def test_checkpoint_wrapper_and_module_grouping(tmp_path):
    path = tmp_path / "ckpt.bin"
    torch.save({"state_dict": {"enc." + k: v for k, v in module("lstm_2l_bidi").state_dict().items()},
                "epoch": 3}, path)
    with open_model(path) as model:
        assert [layer.class_name for layer in model.root.children] == ["torch.nn.LSTM"]
        assert model.root.children[0].name == "enc"


def test_read_without_torch(tmp_path, monkeypatch):
    path = tmp_path / "m.pt"
    torch.save(module("gru_2l_bidi").state_dict(), path)
    expected = torch_reference(path)["weight_hh_l1_reverse"]
    monkeypatch.setitem(sys.modules, "torch", None)
    with open_model(path) as model:
        leaf = next(layer for layer in model.layers if layer.name == "l1_reverse")
        assert leaf.weight("weight_hh_l1_reverse").read().tobytes() == expected.tobytes()


class Payload:
    """What an attacker pickles: unpickling calls os.system, which would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("how", ["zip", "legacy", "plain_pickle_p0", "plain_pickle_p2", "plain_pickle_p5"])
def test_malicious_pt_is_refused_and_never_runs(how, tmp_path):
    marker = tmp_path / "PWNED"
    state = dict(module("lstm").state_dict())
    state["evil"] = Payload(marker)
    path = tmp_path / "evil.pt"
    if how == "zip":
        torch.save(state, path)
    elif how == "legacy":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        path.write_bytes(pickle.dumps(state, protocol=int(how[-1])))
    with pytest.raises(UnsafeFile, match=r"(posix|os)\.system"):
        open_model(path)
    assert not marker.exists()


def test_whole_pickled_module_is_refused_naming_its_class(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(module("lstm"), path)
    with pytest.raises(UnsafeFile, match=r"torch\.nn\.modules\.rnn\.LSTM"):
        open_model(path)


def test_code_free_pickle_beyond_a_state_dict_goes_to_weights_only_torch_load(tmp_path):
    path = tmp_path / "extra.pt"
    torch.save({"w": torch.randn(2, 3), "device": torch.device("cpu")}, path)
    assert not pickle_scan.scan_bytes(_data_pkl(path), "data.pkl").findings
    with pytest.raises(torch_zip.NotAStateDict, match="torch.device"):
        torch_zip.read(str(path), str(path))
    with open_model(path) as model:  # torch is installed: torch.load(weights_only=True) reads it
        assert [t.name for layer in model.layers for t in layer.weights] == ["w"]


def _data_pkl(path):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("data.pkl")))


@pytest.mark.parametrize("edit, message", [
    (lambda pid: (pid[0], pid[1], pid[2], pid[3], pid[4] * 1000), "holds"),
])
def test_view_outside_its_storage_is_refused(edit, message, tmp_path):
    """Hand-built: a data.pkl whose storage claims more elements than its member holds."""
    import zipfile

    path = tmp_path / "m.pt"
    torch.save({"w": torch.randn(3, 4)}, path)
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    name = next(n for n in members if n.endswith("data.pkl"))
    members[name] = members[name].replace(b"K\x0ct", b"M\x00\x10t")  # numel 12 -> 4096 (BININT1 -> BININT2)
    assert b"M\x00\x10t" in members[name]
    with zipfile.ZipFile(path, "w") as archive:
        for n, data in members.items():
            archive.writestr(n, data)
    from lstm_inspect.errors import CorruptFile
    with pytest.raises(CorruptFile, match=message):
        open_model(path)


def test_check_flags_a_malicious_pt_without_running_it(tmp_path):
    from click.testing import CliRunner

    from lstm_inspect.cli import cli

    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    torch.save(dict(module("lstm").state_dict(), evil=Payload(marker)), path)
    result = CliRunner().invoke(cli, ["check", "--format", "json", str(path)])
    assert result.exit_code == 1, result.output
    [entry] = __import__("json").loads(result.stdout)["files"]
    assert entry["status"] == "fail" and [f["rule"] for f in entry["findings"]] == ["unsafe-code"]
    assert entry["findings"][0]["message"].startswith("evil/data.pkl @ byte ")
    assert entry["findings"][0]["message"].endswith(": posix.system")
    assert not marker.exists()

"""`lstm-inspect check` on the other model formats: a directory walk picks up .safetensors, .onnx, .pt and .pth
beside Keras files (and the pickle carriers .npz and .bin: a plain data .npz passes), the rules run on
their gate blocks, and a NaN in a torch state dict fails with the block named."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import save_file

from lstm_inspect.analysis import check as checks
from lstm_inspect.analysis import discovery
from lstm_inspect.cli import cli
from test_onnx_read import build as build_onnx


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def formats(tmp_path):
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    state = {f"enc.{k}": v.detach().numpy() for k, v in module.state_dict().items()}
    save_file(state, tmp_path / "torch.safetensors")
    torch.save({f"enc.{k}": v for k, v in module.state_dict().items()}, tmp_path / "torch.pt")
    build_onnx("lstm_fwd", "LSTM", "forward", {}, True, False, tmp_path / "model.onnx")
    np.savez(tmp_path / "inputs.npz", x=np.zeros((2, 5, 3)))  # data, not a model: walked into (a pickle carrier), passes
    return tmp_path, state


def test_directory_walk_finds_other_formats_and_npz(formats):
    root, _ = formats
    files, notes = discovery.discover([str(root)])
    assert sorted(os.path.basename(f) for f in files) == ["inputs.npz", "model.onnx", "torch.pt", "torch.safetensors"]
    assert notes == []


def test_check_passes_on_each_format_and_fails_on_a_nan_block(formats):
    root, state = formats
    result = run("check", root, "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {os.path.basename(f["file"]) for f in report["files"]} == {"inputs.npz", "model.onnx", "torch.pt",
                                                                      "torch.safetensors"}
    state["enc.weight_hh_l1_reverse"] = state["enc.weight_hh_l1_reverse"].copy()
    state["enc.weight_hh_l1_reverse"][5, 1] = np.nan  # rows 4:8 are torch's forget gate
    save_file(state, root / "broken.safetensors")
    result = run("check", root / "broken.safetensors", "--format", "json")
    assert result.exit_code == 1
    findings = json.loads(result.output)["files"][0]["findings"]
    assert any("enc/l1_reverse" in f.get("layer", "") and f.get("block") == "U_f" for f in findings), findings

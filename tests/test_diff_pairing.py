"""diff across frameworks pairs like with like: a Keras file against its torch.onnx.export (written here by torch
from our trained forecaster's weights). A graph constant (the zeros torch expands into the LSTM's initial state) is
never paired with a Dense nor listed as a layer, and the summary counts what the table shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import lstm_inspect as li
from lstm_inspect.analysis.diff import diff_models

KERAS = Path(__file__).parent / "fixtures" / "trained" / "k3_trained_forecaster.keras"


def export(tmp_path, head_out: int = 1, rename_head: str | None = None) -> Path:
    """LSTM(1 -> 8) + Linear(8 -> head_out) holding the Keras file's weights, through torch.onnx.export (opset 14)."""
    arrays = li.export_arrays(str(KERAS))

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(1, 8, batch_first=True)
            self.out = torch.nn.Linear(8, head_out)

        def forward(self, x):
            y, _ = self.lstm(x)
            return self.out(y[:, -1])

    model = Model()
    with torch.no_grad():
        model.lstm.weight_ih_l0.copy_(torch.tensor(np.concatenate([arrays[f"lstm/W_{g}"] for g in "ifco"], 1).T))
        model.lstm.weight_hh_l0.copy_(torch.tensor(np.concatenate([arrays[f"lstm/U_{g}"] for g in "ifco"], 1).T))
        model.lstm.bias_ih_l0.copy_(torch.tensor(np.concatenate([arrays[f"lstm/b_{g}"] for g in "ifco"])))
        model.lstm.bias_hh_l0.zero_()
        if head_out == 1:
            model.out.weight.copy_(torch.tensor(arrays["out/kernel"].T))
            model.out.bias.copy_(torch.tensor(arrays["out/bias"]))
    path = tmp_path / "exported.onnx"
    torch.onnx.export(model, torch.randn(1, 10, 1), str(path), opset_version=14, dynamo=False)
    if rename_head:  # as another exporter names it: the Keras name no longer matches
        proto = onnx.load(str(path))
        for node in proto.graph.node:
            node.name = node.name.replace("/out/", f"/{rename_head}/")
        onnx.save(proto, str(path))
    return path


def diff(path):
    with li.open_model(str(KERAS)) as a, li.open_model(str(path)) as b:
        return diff_models(a, b)


@pytest.mark.parametrize("rename", [None, "head"])
def test_a_keras_file_and_its_onnx_export_are_identical(tmp_path, rename):
    report = diff(export(tmp_path, rename_head=rename))
    assert report["identical"], report["summary"]
    paired = {(layer["a"], layer["b"]) for layer in report["layers"]}
    assert not any("Expand" in b or "Constant" in b for _, b in paired)
    assert report["added"] == [] and report["removed"] == []
    assert any(a == "out" for a, _ in paired)


def test_the_summary_counts_what_the_table_shows(tmp_path):
    """A two-unit head under the same name: its blocks' shapes differ, and the summary says so."""
    report = diff(export(tmp_path, head_out=2))
    rows = [b for layer in report["layers"] for b in layer["blocks"]]
    shape_changed_layers = {layer["b"] for layer in report["layers"]
                            if any(b["status"] == "shape-changed" for b in layer["blocks"])}
    s = report["summary"]
    assert shape_changed_layers and s["shape_changes"] == len(shape_changed_layers) == len(report["shape_changes"])
    assert s["blocks_compared"] == sum(b["status"] in ("changed", "unchanged", "shape-changed") for b in rows)
    assert s["blocks_changed"] == sum(b["status"] in ("changed", "shape-changed") for b in rows)
    assert s["layers_added"] == len(report["added"]) and s["layers_removed"] == len(report["removed"])
    assert not report["identical"]

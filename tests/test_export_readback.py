"""Exports read back: every array file `lstm-inspect export` writes (.npz and .safetensors, in the keras, torch
and onnx layouts) opens as what it was exported as and diffs identical to its source block by block, so
`lstm-inspect diff model.keras export.npz` is a check of any conversion. Plus the .npz reader's refusals: arrays
of Python objects (unpickling), truncated members, bad metadata."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES, manifest
from lstm_inspect import InspectError, api, open_model
from lstm_inspect.cli import cli
from lstm_inspect.analysis.diff import diff_models

CONFIG_KINDS = {"h5-full", "keras-zip"}
LAYOUTS = [("keras", ".npz"), ("keras", ".safetensors"), ("torch", ".npz"), ("torch", ".safetensors"),
           ("onnx", ".npz"), ("onnx", ".safetensors")]


def recurrent_files():
    for file, entry in sorted(manifest()["files"].items()):
        if entry["kind"] in CONFIG_KINDS and not entry["model"].startswith(("convlstm", "lambda")):
            yield pytest.param(file, id=file)


def export(file, layout, out):
    """The export, or the refusal when the layout cannot hold the model (its reasons are tested elsewhere)."""
    try:
        return api.export_layout(FIXTURES / file, out, layout=layout)
    except InspectError as refusal:
        return refusal


@pytest.mark.parametrize("layout,suffix", LAYOUTS, ids=[f"{l}{s}" for l, s in LAYOUTS])
@pytest.mark.parametrize("file", list(recurrent_files()))
def test_export_reads_back_identical(file, layout, suffix, tmp_path):
    out = tmp_path / f"export{suffix}"
    converted = export(file, layout, out)
    if isinstance(converted, InspectError):  # nothing written, nothing to read back
        assert layout in str(converted) and not out.exists()
        return
    with open_model(FIXTURES / file) as source, open_model(out) as back:
        assert back.kind == ("torch-safetensors" if (layout, suffix) == ("torch", ".safetensors")
                             else suffix.lstrip("."))
        result = diff_models(source, back)
    summary = result["summary"]
    assert summary["blocks_compared"] > 0
    assert summary["blocks_changed"] == 0 and summary["shape_changes"] == 0 and summary["layers_added"] == 0
    skipped = set(converted.skipped) if converted is not None else set()
    removed = {f"{r['layer']} ({r['class_name']})" for r in result["removed"]}
    assert removed <= skipped, result["removed"]
    if not skipped:
        assert result["identical"], result["summary"]


def test_onnx_layout_npz_keeps_node_attributes(tmp_path):
    """reset_after=True survives the round trip as linear_before_reset=1 (read from the __metadata__ entry)."""
    out = tmp_path / "gru.npz"
    api.export_layout(FIXTURES / "k3_gru_ra.keras", out, layout="onnx")
    assert "__metadata__" in np.load(out).files
    with open_model(out) as back:
        node = back.root.children[0]
        assert node.class_name == "onnx.GRU" and node.children[0].config["linear_before_reset"] == 1
        assert not back.warnings


def test_torch_layout_npz_is_exactly_a_state_dict(tmp_path):
    import torch
    out = tmp_path / "t.npz"
    api.export_layout(FIXTURES / "k3_gru_ra.keras", out, layout="torch")
    state = {k: torch.from_numpy(v) for k, v in np.load(out).items() if k.startswith("gru.")}
    assert set(np.load(out).files) == set(state) | {"dense.weight", "dense.bias"}
    torch.nn.GRU(3, 5, batch_first=True).load_state_dict({k[4:]: v for k, v in state.items()}, strict=True)


def test_plain_savez_of_a_torch_state_dict_reads_as_torch(tmp_path):
    import torch
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
    np.savez(tmp_path / "sd.npz", **{f"enc.{k}": v.detach().numpy() for k, v in module.state_dict().items()})
    with open_model(tmp_path / "sd.npz") as model:
        enc = model.root.children[0]
        assert enc.class_name == "torch.nn.LSTM" and [c.name for c in enc.children] == \
            ["l0", "l0_reverse", "l1", "l1_reverse"]
        from lstm_inspect import split_gates

        blocks = split_gates(enc.children[3]).arrays()
        w = module.weight_ih_l1_reverse.detach().numpy()
        np.testing.assert_array_equal(blocks["W_o"], w[12:16].T)  # torch order i, f, g, o


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_npz_of_python_objects_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, evil=np.array([{"a": 1}], dtype=object))
    result = run("inspect", path)
    assert result.exit_code == 2
    assert "Python objects" in result.output and "unpickling" in result.output


def test_truncated_npz_member_is_a_clear_error(tmp_path):
    path = tmp_path / "short.npz"
    data = np.arange(12.0).reshape(3, 4)
    with zipfile.ZipFile(path, "w") as z:
        import io

        buf = io.BytesIO()
        np.lib.format.write_array(buf, data)
        z.writestr("lstm/kernel.npy", buf.getvalue()[:-8])
    result = run("inspect", path)
    assert result.exit_code == 2 and "truncated" in result.output


def test_bad_metadata_member_is_a_clear_error(tmp_path):
    path = tmp_path / "meta.npz"
    np.savez(path, __metadata__=np.array("not json"), **{"lstm/W": np.zeros((1, 4, 2))})
    result = run("inspect", path)
    assert result.exit_code == 2 and "__metadata__" in result.output


def test_compressed_npz_reads(tmp_path):
    path = tmp_path / "c.npz"
    kernel = np.random.default_rng(0).normal(size=(3, 8))
    np.savez_compressed(path, **{"rnn/kernel": kernel, "rnn/recurrent_kernel": np.eye(2, 8), "rnn/bias": np.ones(8)})
    with open_model(path) as model:
        layer = model.root.children[0]
        assert layer.class_name == "LSTM" and layer.inferred
        np.testing.assert_array_equal(layer.weight("kernel").read(), kernel)


def test_torch_file_and_its_keras_arrays_diff_identical(tmp_path):
    """A 2-layer bidirectional torch LSTM and a GRU, exported as Keras set_weights arrays (--fused): each torch
    layer is one Keras Bidirectional (enc/l0, enc/l1), matched block by block after reordering."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    lstm, gru = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), torch.nn.GRU(3, 5)
    state = {f"enc.{k}": v for k, v in lstm.state_dict().items()} | {f"dec.{k}": v for k, v in gru.state_dict().items()}
    save_file(state, tmp_path / "m.safetensors")
    result = run("export", tmp_path / "m.safetensors", "--fused", "-o", tmp_path / "k.npz")
    assert result.exit_code == 0, result.output
    with open_model(tmp_path / "m.safetensors") as source, open_model(tmp_path / "k.npz") as back:
        assert [c.class_name for c in back.root.children[1].children] == ["Bidirectional", "Bidirectional"]
        result = diff_models(source, back)
    assert result["identical"] and result["summary"]["blocks_compared"] == 60, result["summary"]


def test_forward_runs_an_onnx_layout_export_like_its_torch_source(tmp_path):
    """torch GRU + 2-layer bidirectional LSTM -> --layout onnx .npz; forward runs the exported nodes (found below
    their path) with ONNX semantics and gives the torch file's outputs."""
    import torch
    from safetensors.torch import save_file

    from lstm_inspect import forward

    torch.manual_seed(1)
    lstm, gru = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True), torch.nn.GRU(3, 5)
    state = {f"enc.{k}": v for k, v in lstm.state_dict().items()} | {f"dec.{k}": v for k, v in gru.state_dict().items()}
    save_file(state, tmp_path / "m.safetensors")
    assert run("export", tmp_path / "m.safetensors", "--layout", "onnx", "-o", tmp_path / "o.npz").exit_code == 0
    x = np.random.default_rng(0).normal(size=(2, 5, 3))
    source = forward(tmp_path / "m.safetensors", x, layers=["dec"])
    exported = forward(tmp_path / "o.npz", x, layers=["dec"])
    np.testing.assert_allclose(exported["dec/Y"][:, 0].transpose(1, 0, 2), source["dec/output"], rtol=1e-6, atol=1e-7)

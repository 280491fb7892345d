"""ONNX files written by torch.onnx.export (the legacy TorchScript exporter, dynamo=False; torch 2.13): one LSTM node
per layer of a multi-layer module, fed through Transpose / Reshape, initial states Slice(ConstantOfShape(0)) or
Expand(zeros), weights already in ONNX's i, o, f, c order. lstm-inspect groups the nodes back into the torch module
(``lstm`` with leaves l0, l0_reverse, ...), so `diff` against the state dict compares every block, and `forward`
on the file equals onnxruntime on every node's Y, Y_h, Y_c."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import onnx
import onnxruntime as ort
import torch
from safetensors.torch import save_file
from lstm_inspect import open_model
from lstm_inspect.cli import cli

WORST: dict[str, float] = {}


class Tagger(torch.nn.Module):
    """A 2-layer bidirectional LSTM and a Linear on its outputs; or a GRU."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "lstm":
            self.lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, batch_first=True)
            self.fc = torch.nn.Linear(8, 2)
        else:
            self.gru = torch.nn.GRU(3, 5, batch_first=True)

    def forward(self, x):
        return self.fc(self.lstm(x)[0]) if self.kind == "lstm" else self.gru(x)[0]


@pytest.fixture(scope="module", params=["lstm", "gru"])
def exported(request, tmp_path_factory):
    torch.manual_seed(5)
    model = Tagger(request.param).eval()
    out = tmp_path_factory.mktemp(request.param)
    export_both(model, out / "m")
    return request.param, out


def export_both(model, stem):
    """`stem`.onnx written by torch.onnx.export (input x: batch, time, 3) and `stem`.safetensors, the state dict."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's batch-size advice for GRU
        torch.onnx.export(model, (torch.randn(2, 5, 3),), f"{stem}.onnx", dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch", 1: "time"}})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{stem}.safetensors")


def test_nodes_group_into_the_torch_module(exported):
    kind, out = exported
    with open_model(out / "m.onnx") as model:
        (module,) = [layer for layer in model.root.children if layer.class_name.startswith(("onnx.LSTM", "onnx.GRU"))]
        assert module.key == kind
        expected = ["l0", "l0_reverse", "l1", "l1_reverse"] if kind == "lstm" else ["l0"]
        assert [leaf.name for leaf in module.children] == expected
        # shape plumbing (int64 Constant / initializer operands) is not listed as weights
        assert all(t.dtype.startswith("float") for layer in model.layers for t in layer.weights)


def test_diff_against_the_state_dict_is_identical(exported):
    """Every array pairs up: the LSTM's 48 gate blocks and the Linear's weight and bias (MatMul + Add in the file)."""
    kind, out = exported
    result = CliRunner().invoke(cli, ["diff", str(out / "m.safetensors"), str(out / "m.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["identical"] and report["summary"]["blocks_compared"] == (50 if kind == "lstm" else 12)
    assert not report["added"] and not report["removed"]


class LastStep(torch.nn.Module):
    """An nn.Linear on the last step: a 2-D input, exported as Gemm(x, weight, bias, transB=1)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(3, 4, batch_first=True)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def test_exported_linear_reads_as_the_module(tmp_path):
    torch.manual_seed(4)
    model = LastStep().eval()
    export_both(model, tmp_path / "m")
    with open_model(tmp_path / "m.onnx") as opened:
        (head,) = [layer for layer in opened.root.children if layer.name == "head"]
        assert head.class_name == "onnx.Linear" and [t.name for t in head.weights] == ["weight", "bias"]
        np.testing.assert_array_equal(head.weights[0].read(), model.head.weight.detach().numpy())
    result = CliRunner().invoke(cli, ["diff", str(tmp_path / "m.safetensors"), str(tmp_path / "m.onnx"), "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 0 and report["identical"] and report["summary"]["blocks_compared"] == 14, result.output


def test_a_bare_module_groups_under_its_state_dict_name(tmp_path):
    """torch.onnx.export of an nn.GRU itself names its nodes /GRU, /GRU_1 (no scope): read as module ``gru``, like the
    state dict of the same module, so diff pairs them without --layer."""
    torch.manual_seed(2)
    export_both(torch.nn.GRU(3, 4, num_layers=2, batch_first=True).eval(), tmp_path / "g")
    with open_model(tmp_path / "g.onnx") as model:
        assert [(m.key, [leaf.name for leaf in m.children]) for m in model.root.children
                if m.class_name == "onnx.GRU"] == [("gru", ["l0", "l1"])]
    result = CliRunner().invoke(cli, ["diff", str(tmp_path / "g.safetensors"), str(tmp_path / "g.onnx"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["summary"]["blocks_compared"] == 24


def test_forward_equals_onnxruntime_on_every_node(exported, tmp_path):
    kind, out = exported
    proto = onnx.load(str(out / "m.onnx"))
    nodes = [n for n in proto.graph.node if n.op_type in ("LSTM", "GRU")]
    for node in nodes:  # expose each recurrent node's outputs to onnxruntime
        for name in node.output:
            if name:
                proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(11).normal(size=(3, 7, 3))  # another batch and length than the export's
    theirs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x.astype(np.float32)})))
    np.save(tmp_path / "x.npy", x)
    # In-process: this test proves forward's semantics. Forking this pytest process after the TF1 tests have run
    # TensorFlow in it hangs the forked reader here (reproducible with test_tf1_checkpoint.py run first; never seen
    # from the CLI itself, whose process loads no TensorFlow); isolation is tested in test_isolation / test_fuzz.
    result = CliRunner().invoke(cli, ["--no-isolation", "forward", str(out / "m.onnx"), "--input",
                                      str(tmp_path / "x.npy"), "-o", str(tmp_path / "o.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "o.npz") as data:
        ours = {k: data[k] for k in data.files}
    for node in nodes:
        short = node.name.rsplit("/", 1)[-1]
        for name, role in zip(node.output, ("Y", "Y_h", "Y_c")):
            if name:
                key = f"{kind}/{short}/{role}" if len(nodes) > 1 else f"{kind}/{role}"
                WORST[kind] = max(WORST.get(kind, 0.0), float(np.abs(ours[key] - theirs[name]).max()))
                np.testing.assert_allclose(ours[key], theirs[name], rtol=0, atol=1e-5, err_msg=key)


def test_zz_report_worst():
    print("\nworst |numpy - onnxruntime| on torch.onnx.export files:", {k: f"{v:.1e}" for k, v in WORST.items()})

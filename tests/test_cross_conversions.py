"""Conversions between the non-Keras layouts, proven with the real libraries: a torch file exported with
`--layout onnx` runs in onnxruntime like the torch module; an ONNX file exported with `--layout torch` loads into
torch.nn modules (strict=True) that reproduce onnxruntime; a torch file re-exported with `--layout torch` rebuilds the
module layer by layer. A bidirectional torch layer / ONNX node stays one bidirectional unit."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from lstm_inspect.cli import cli
from test_keras_fused import onnx_node

ATOL = 1e-5
WORST = [0.0]


def close(ours, theirs, what):
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, atol=ATOL, rtol=1e-5, err_msg=what)


def export(source, layout, out):
    result = CliRunner().invoke(cli, ["export", str(source), "--layout", layout, "-o", str(out)])
    assert result.exit_code == 0, result.output
    with np.load(out) as data:
        return {k: data[k] for k in data.files if k != "__metadata__"}, result.output


def torch_file(tmp_path, module, prefix):
    torch.manual_seed(0)
    net = module(3, 4, num_layers=2, bidirectional=True, batch_first=True)
    path = tmp_path / "m.safetensors"
    save_file({f"{prefix}.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}, str(path))
    return net, path


@pytest.mark.parametrize("module,op,attrs", [(torch.nn.LSTM, "LSTM", {}),
                                             (torch.nn.GRU, "GRU", {"linear_before_reset": 1}),
                                             (torch.nn.RNN, "RNN", {})])
def test_torch_to_onnx_runs_in_onnxruntime_like_torch(module, op, attrs, tmp_path):
    net, path = torch_file(tmp_path, module, "enc")
    arrays, messages = export(path, "onnx", tmp_path / "o.npz")
    assert "direction=bidirectional" in messages and arrays["enc/l1/W"].shape[0] == 2
    x = np.random.default_rng(1).normal(size=(2, 6, 3)).astype(np.float32)
    nodes, inits, previous = [], [], "X"
    for n in range(2):  # chain the two layers: Y [T, 2, B, H] -> [T, B, 2H]
        key = f"enc/l{n}"
        names = [previous, f"{key}/W", f"{key}/R", f"{key}/B"]
        inits += [numpy_helper.from_array(arrays[name], name) for name in names[1:]]
        nodes.append(helper.make_node(op, names, [f"Y{n}"], hidden_size=4, direction="bidirectional", **attrs))
        nodes.append(helper.make_node("Transpose", [f"Y{n}"], [f"T{n}"], perm=[0, 2, 1, 3]))
        nodes.append(helper.make_node("Reshape", [f"T{n}", "shape"], [f"H{n}"]))
        previous = f"H{n}"
    inits.append(numpy_helper.from_array(np.array([6, 2, 8], dtype=np.int64), "shape"))
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [6, 2, 3])],
                              [helper.make_tensor_value_info("H1", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (y,) = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"X": x.transpose(1, 0, 2)})
    with torch.no_grad():
        expected = net(torch.from_numpy(x))[0].numpy()
    close(y.transpose(1, 0, 2), expected, f"torch {op} -> ONNX")


@pytest.mark.parametrize("op,attrs,module", [("LSTM", {}, torch.nn.LSTM),
                                             ("GRU", {"linear_before_reset": 1}, torch.nn.GRU)])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_onnx_to_torch_loads_strict_and_matches_onnxruntime(op, attrs, module, direction, tmp_path):
    rng = np.random.default_rng(2)
    x_bt = rng.normal(size=(2, 6, 3)).astype(np.float32)
    x = np.ascontiguousarray(x_bt.transpose(1, 0, 2))
    path = tmp_path / "m.onnx"
    path.write_bytes(onnx_node(op, x, 4, direction, rng, **attrs).SerializeToString())
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    expected = np.concatenate([y[:, d].transpose(1, 0, 2) for d in range(y.shape[1])], axis=-1)
    arrays, messages = export(path, "torch", tmp_path / "t.npz")
    prefix = next(iter(arrays)).split(".")[0]
    bidirectional = direction == "bidirectional"
    assert f"{prefix}: torch.nn.{op}(" in messages and ("bidirectional=True" in messages) == bidirectional
    net = module(3, 4, batch_first=True, bidirectional=bidirectional)
    net.load_state_dict({k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)
    with torch.no_grad():
        close(net(torch.from_numpy(x_bt))[0].numpy(), expected, f"ONNX {op} {direction} -> torch")


def test_torch_to_torch_rebuilds_the_module_layer_by_layer(tmp_path):
    net, path = torch_file(tmp_path, torch.nn.LSTM, "enc")
    arrays, _ = export(path, "torch", tmp_path / "t.npz")
    x = torch.from_numpy(np.random.default_rng(3).normal(size=(2, 6, 3)).astype(np.float32))
    y = x
    for n, size in enumerate((3, 8)):
        layer = torch.nn.LSTM(size, 4, batch_first=True, bidirectional=True)
        prefix = f"enc.l{n}."
        layer.load_state_dict({k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items()
                               if k.startswith(prefix)}, strict=True)
        with torch.no_grad():
            y = layer(y)[0]
    with torch.no_grad():
        close(y.numpy(), net(x)[0].numpy(), "torch -> torch")


def test_zz_report_worst():
    print(f"\ntorch <-> ONNX conversions: largest difference {WORST[0]:.2e}")


def test_verify_on_a_torch_file_runs_torch_and_keras_arrays_are_refused(tmp_path):
    _, path = torch_file(tmp_path, torch.nn.GRU, "enc")
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 0 and "vs torch" in result.output, result.output
    out = tmp_path / "keras.npz"
    assert CliRunner().invoke(cli, ["export", str(path), "--fused", "-o", str(out)]).exit_code == 0
    result = CliRunner().invoke(cli, ["verify", str(out)])  # Keras arrays: no architecture, no other framework
    assert result.exit_code == 2 and "verify compares with Keras" in result.output

"""`torch.nn.LSTMCell` / `GRUCell` / `RNNCell` state dicts (`weight_ih`, `weight_hh`, `bias_ih`, `bias_hh`, no `_l0`
suffix) are recognised, split into gates, run and verified like one-layer `torch.nn.LSTM` / `GRU` / `RNN` modules.

Every file is written by real `torch.save` / safetensors from real torch cells with random non-zero weights and
biases. Proven against torch itself: each block equals torch's own parameter cut in torch's gate order (i, f, g, o;
r, z, n), lstm-inspect's `forward` equals the cell stepped by torch over one step and over a sequence, and `verify`
(whose reference loop is checked against the test's own cell) passes — and fails when a gate is swapped.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import lstm_inspect
from conftest import run_cli
from lstm_inspect import export_arrays, forward, open_model
from lstm_inspect.run import native_forward, verify_native

CELLS = {
    "lstm_cell": (lambda: torch.nn.LSTMCell(3, 5), "LSTM", "ifco"),
    "gru_cell": (lambda: torch.nn.GRUCell(3, 4), "GRU", "rzh"),
    "rnn_cell_tanh": (lambda: torch.nn.RNNCell(3, 4), "RNN", ""),
    "rnn_cell_relu": (lambda: torch.nn.RNNCell(3, 4, nonlinearity="relu"), "RNN", ""),
    "lstm_cell_nobias": (lambda: torch.nn.LSTMCell(3, 5, bias=False), "LSTM", "ifco"),
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(sum(map(ord, name)))
    cell = CELLS[name][0]()
    with torch.no_grad():  # every parameter clearly non-zero, the biases included
        for p in cell.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return cell


def save(cell: torch.nn.Module, kind: str, path, prefix: str = "") -> None:
    state = {prefix + k: v.contiguous() for k, v in cell.state_dict().items()}
    if kind == "safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)


def torch_steps(cell: torch.nn.Module, x: np.ndarray) -> tuple[np.ndarray, ...]:
    """The cell stepped by torch over x (batch, time, in): outputs (batch, time, h), last h, last c (LSTM)."""
    cell = cell.double()
    state, outputs = None, []
    with torch.no_grad():
        for step in torch.from_numpy(x).unbind(1):
            state = cell(step, state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
    h, c = state if isinstance(state, tuple) else (state, None)
    return torch.stack(outputs, 1).numpy(), h.numpy(), None if c is None else c.numpy()


@pytest.mark.parametrize("kind", ["pt", "safetensors"])
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_gates_equal_torch_parameters(name, kind, tmp_path):
    cell = build(name)
    path = tmp_path / f"{name}.{kind}"
    save(cell, kind, path, prefix="encoder.cell.")
    _, family, order = CELLS[name]
    with open_model(path) as model:
        (module,) = [layer for layer in model.root.children if layer.name == "encoder.cell"]
        assert module.class_name == f"torch.nn.{family}Cell" and not model.warnings
        assert [leaf.class_name for leaf in module.children] == [f"Torch{family}"]
    arrays = export_arrays(path)
    units = cell.hidden_size
    params = {k: v.detach().numpy() for k, v in cell.state_dict().items()}
    expected = {}
    for g, gate in enumerate(order or [""]):
        rows = slice(g * units, (g + 1) * units)
        suffix = f"_{gate}" if gate else ""
        expected[f"W{suffix}"] = params["weight_ih"][rows].T
        expected[f"U{suffix}"] = params["weight_hh"][rows].T
        if "bias_ih" in params:
            expected[f"b{suffix}"] = params["bias_ih"][rows]
            expected[f"rb{suffix}"] = params["bias_hh"][rows]
    ours = {k.rsplit("/", 1)[1]: v for k, v in arrays.items() if k.startswith("encoder.cell/cell/")}
    assert ours.keys() == expected.keys()
    for key, value in expected.items():
        np.testing.assert_array_equal(ours[key], value, err_msg=key)


@pytest.mark.parametrize("steps", [1, 6], ids=["one-step", "sequence"])
@pytest.mark.parametrize("name", list(CELLS))
def test_cell_forward_equals_torch(name, steps, tmp_path):
    cell = build(name)
    path = tmp_path / f"{name}.pt"
    save(cell, "pt", path)
    x = np.random.default_rng(3).normal(size=(2, steps, 3))
    nonlinearity = "relu" if name.endswith("relu") else None
    with open_model(path) as model:
        (module,) = native_forward.modules(model)
        got = native_forward.run(model, x, dtype=np.float64, nonlinearity=nonlinearity)
    key = module.key
    output, h, c = torch_steps(cell, x)
    np.testing.assert_allclose(got[f"{key}/output"], output, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got[f"{key}/h_n"][0], h, rtol=1e-12, atol=1e-13)
    if c is not None:
        np.testing.assert_allclose(got[f"{key}/c_n"][0], c, rtol=1e-12, atol=1e-13)
    assert forward(path, x, nonlinearity=nonlinearity)[f"{key}/output"].shape == output.shape


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_verify_against_torch(name, tmp_path):
    cell = build(name)
    path = tmp_path / f"{name}.safetensors"
    save(cell, "safetensors", path, prefix="rnn.")
    nonlinearity = "relu" if name.endswith("relu") else "tanh"
    x = np.random.default_rng(4).normal(size=(2, 5, 3))
    with open_model(path) as model:
        (module,) = native_forward.modules(model)
        reference = verify_native.outputs(model, module, x, 1.0, nonlinearity)
    # verify's reference is torch's cell itself: the one the test built, on the same input
    np.testing.assert_array_equal(reference["rnn/output"], torch_steps(cell, x)[0])
    result = lstm_inspect.verify(path, nonlinearity=nonlinearity)
    assert result.ok and {d.key for d in result.diffs} >= {"rnn/output", "rnn/h_n"}


def test_a_swapped_cell_gate_fails_verify(tmp_path, capsys, input_and_forget_gates_swapped):
    path = tmp_path / "cell.safetensors"
    save(build("lstm_cell"), "safetensors", path)
    assert run_cli(["verify", str(path)]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_cell_named_params_with_other_shapes_stay_raw(tmp_path):
    """`weight_ih` / `weight_hh` that do not hold a cell's gates, or sit beside other parameters of the module,
    are listed raw."""
    path = tmp_path / "odd.safetensors"
    save_file({"a.weight_ih": torch.ones(7, 3), "a.weight_hh": torch.ones(7, 5),
               "b.weight_ih": torch.ones(8, 3), "b.weight_hh": torch.ones(8, 2), "b.scale": torch.ones(2)},
              str(path))
    with open_model(path) as model:
        assert [(layer.name, layer.class_name) for layer in model.root.children] == [
            ("a", "parameters"), ("b", "parameters")]
        assert any("a: parameters named like torch.nn.LSTMCell" in w for w in model.warnings)

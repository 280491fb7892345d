"""RNN(cell) layers exported to torch / ONNX: the RNN wrapper's go_backwards (stored on the wrapper, not the cell)
is honoured, proven against Keras 3 run live. (RNN(LSTMCell / GRUCell / SimpleRNNCell) forwards are proven on the
cell_wrappers fixtures by test_layout_export.py.)"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lstm_inspect import convert
from test_layout_export import onnx_run

import keras  # noqa: E402  (in the test extra: these proofs must run, not skip)
L = keras.layers


@pytest.mark.parametrize("cell,module", [(lambda: L.LSTMCell(4, name="c"), torch.nn.LSTM),
                                         (lambda: L.GRUCell(4, name="c"), torch.nn.GRU),
                                         (lambda: L.SimpleRNNCell(4, name="c"), torch.nn.RNN)])
def test_backwards_rnn_cell_to_torch_and_onnx(cell, module, tmp_path):
    model = keras.Sequential([keras.Input((5, 3)), L.RNN(cell(), go_backwards=True, return_sequences=True, name="r")])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.4, size=w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(tmp_path / "m.keras")
    x = rng.normal(size=(2, 5, 3)).astype(np.float32)
    expected = np.asarray(model(x))  # Keras: outputs in reversed time order
    converted = convert(tmp_path / "m.keras", "torch")
    (mod,) = converted.modules
    assert any("go_backwards=True" in n for n in mod.notes)
    net = module(**mod.args)
    net.load_state_dict({k[len(mod.key) + 1:]: torch.from_numpy(v) for k, v in converted.arrays.items()}, strict=True)
    with torch.no_grad():
        ours = net(torch.from_numpy(x).flip(1))[0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=1e-5)
    converted = convert(tmp_path / "m.keras", "onnx")
    (mod,) = converted.modules
    assert mod.args["direction"] == "reverse"
    y, _ = onnx_run(mod, converted.arrays, x)
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2)[:, ::-1], expected, atol=1e-5, rtol=1e-5)

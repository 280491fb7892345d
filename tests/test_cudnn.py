"""Legacy CuDNNLSTM / CuDNNGRU files, shown in the standard gate form and proven against Keras.

The files are written by tf-keras 2 itself (tests/cudnn_files.py): real LSTM / GRU fixtures rebuilt with the
cuDNN layers and filled with the fixtures' weights converted by Keras's own `_convert_rnn_weights`. Three proofs:

1. lstm-inspect's blocks equal, bit for bit, the LSTM / GRU weights Keras's conversion gives back from the file;
2. fed to the numpy cells of tests/reference.py they reproduce the source fixture's Keras oracle (the cuDNN layer
   computes what the LSTM / GRU computed: cuDNN cannot run on a CPU, so that is the oracle);
3. exported with `--layout torch|onnx` they reproduce that oracle in torch and onnxruntime.
Reading the kernels as plain Keras slices (ignoring the cuDNN memory order) misses the oracle.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import test_gate_proof
import test_layout_export
from conftest import FIXTURES, manifest
from lstm_inspect import export_arrays, open_model, split_gates

SOURCES = ["k2_stacked.h5", "k2_gru_ra.h5", "k2_backwards_state.h5", "k2_bidi_gru.h5"]
SCRIPT = Path(__file__).parent / "cudnn_files.py"


@pytest.fixture(scope="module")
def cudnn_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cudnn")
    subprocess.run([sys.executable, str(SCRIPT), str(out), *(str(FIXTURES / s) for s in SOURCES)], check=True,
                   capture_output=True, text=True, timeout=600)
    for source in SOURCES:  # the oracle the proofs look for next to the file
        shutil.copy(FIXTURES / manifest()["files"][source]["oracle"], out)
    return out


def cases():
    for source in SOURCES:
        stem = source[:-3].replace("k2_", "k2_cudnn_", 1)
        for file in (f"{stem}.h5", f"{stem}_weights.h5"):
            yield pytest.param(file, source, id=f"tf-keras-written:{file}")


@pytest.mark.parametrize("file,source", list(cases()))
def test_blocks_equal_keras_conversion_back(cudnn_dir, file, source):
    stem = file.replace("_weights.h5", "").replace(".h5", "")
    back = dict(np.load(cudnn_dir / f"{stem}.keras_back.npz"))
    layers = json.loads((cudnn_dir / "cudnn.json").read_text())[stem]["layers"]
    with open_model(cudnn_dir / file) as model:
        found = {layer.name: layer for layer in model.layers if layer.class_name in ("CuDNNLSTM", "CuDNNGRU")}
        assert sorted(found) == layers
        for name, layer in found.items():
            split = split_gates(layer)
            assert not split.warnings, split.warnings
            n = len(split.layout.gates)
            units = split.units
            kernel, recurrent, bias = (back[f"{name}/{role}"] for role in ("kernel", "recurrent_kernel", "bias"))
            for g, gate in enumerate(split.layout.gates):
                cols = slice(g * units, (g + 1) * units)
                np.testing.assert_array_equal(split.block(f"W_{gate}").read(), kernel[:, cols])
                np.testing.assert_array_equal(split.block(f"U_{gate}").read(), recurrent[:, cols])
                if n == 4:  # LSTM: Keras sums the two biases into one
                    np.testing.assert_array_equal(split.block(f"b_{gate}").read(), bias[cols])
                    assert split.block(f"rb_{gate}") is None
                else:  # CuDNNGRU is GRU(reset_after=True): bias rows 0 and 1
                    assert split.reset_after is True
                    np.testing.assert_array_equal(split.block(f"b_{gate}").read(), bias[0, cols])
                    np.testing.assert_array_equal(split.block(f"rb_{gate}").read(), bias[1, cols])


@pytest.mark.parametrize("file,source", list(cases()))
def test_blocks_reproduce_the_source_models_keras_outputs(cudnn_dir, file, source):
    test_gate_proof.prove(cudnn_dir, file, manifest()["files"][source]["model"], "k2")


def test_ignoring_the_cudnn_memory_order_misses_keras(cudnn_dir):
    """The proof discriminates: plain slices of the cuDNN kernel (as for an LSTM) do not reproduce the oracle."""
    import reference

    oracle = np.load(cudnn_dir / "k2_stacked.oracle.npz")
    blocks = test_gate_proof.blocks_for(export_arrays(cudnn_dir / "k2_cudnn_stacked.h5"), "lstm_a")
    with open_model(cudnn_dir / "k2_cudnn_stacked.h5") as model:
        kernel = model.find("lstm_a")[0].weight("kernel").read()
    units = blocks["U_i"].shape[0]
    plain = dict(blocks, **{f"W_{g}": kernel[:, k * units:(k + 1) * units] for k, g in enumerate("ifco")})
    right = reference.run("LSTM", oracle["input"], blocks)
    wrong = reference.run("LSTM", oracle["input"], plain)
    np.testing.assert_allclose(right, oracle["lstm_a"], rtol=1e-5, atol=1e-6)
    assert not np.allclose(wrong, oracle["lstm_a"], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("target", ["torch", "onnx"])
@pytest.mark.parametrize("source", SOURCES)
def test_layout_export_of_cudnn_layers_reproduces_keras(cudnn_dir, source, target, tmp_path, monkeypatch):
    entry = {**manifest()["files"][source]}
    file = source.replace("k2_", "k2_cudnn_", 1)
    monkeypatch.setattr(test_layout_export, "FIXTURES", cudnn_dir)
    test = (test_layout_export.test_torch_export_reproduces_keras if target == "torch"
            else test_layout_export.test_onnx_export_reproduces_keras)
    test(file, entry, tmp_path)

"""check's calibration on trained models (tests/fixtures/trained, trained by us with Keras 3 and tf-keras; the
real-world corpus, when present, is covered by test_realworld.py) and the failing cases the calibration keeps."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from lstm_inspect.analysis import check as checks

TRAINED = Path(__file__).parent / "fixtures" / "trained"
FACTS = json.loads((TRAINED / "facts.json").read_text())


def findings(path, rule=None):
    found = checks.check_path(str(path)).findings
    return [f for f in found if rule is None or f.rule == rule]


def test_the_trained_fixtures_show_what_the_calibration_is_about():
    """The facts the writers' own get_weights() gave when make_trained.py trained them."""
    gru = FACTS["files"]["k2_trained_gru_reset_after.h5"]["gru"]
    assert gru["bias_rows_equal_per_gate"] == [True, True, False]          # b_z == rb_z, b_r == rb_r, b_h != rb_h
    assert max(FACTS["files"]["k2_trained_char_lstm.h5"]["lstm"]["recurrent_spectral_norms"]) > 10
    assert max(FACTS["files"]["k3_trained_forecaster.keras"]["lstm"]["recurrent_spectral_norms"]) > 20
    assert FACTS["files"]["k2_trained_forecaster.h5"]["out"]["max_abs"] > 100


@pytest.mark.parametrize("name", sorted(FACTS["files"]))
def test_trained_models_pass_check_without_a_finding(name):
    assert findings(TRAINED / name) == []


def _edit_gru_bias(tmp_path, edit) -> Path:
    path = tmp_path / "gru.h5"
    shutil.copy(TRAINED / "k2_trained_gru_reset_after.h5", path)
    with h5py.File(path, "r+") as f:
        dataset = f["model_weights/gru/gru/gru_cell/bias:0"]
        data = dataset[...]
        edit(data, data.shape[1] // 3)
        dataset[...] = data
    return path


def test_duplicate_block_still_fires_on_a_copied_reset_after_h_bias(tmp_path):
    """rb_h is scaled by the reset gate, so training never makes it equal b_h: equal ones are a copy."""
    def copy_h(data, u):
        data[1, 2 * u:] = data[0, 2 * u:]
    found = findings(_edit_gru_bias(tmp_path, copy_h), "duplicate-block")
    assert [(f.layer, f.block, f.severity) for f in found] == [("gru", "rb_h", "error")]


def test_duplicate_block_still_fires_across_gates(tmp_path):
    """b_z copied into b_r: not a pair that training keeps equal."""
    def copy_z_to_r(data, u):
        data[0, u:2 * u] = data[0, :u]
    found = findings(_edit_gru_bias(tmp_path, copy_z_to_r), "duplicate-block")
    assert {(f.layer, f.block) for f in found} >= {("gru", "b_r")}


def _onnx(tmp_path, weight: np.ndarray, scale: float) -> Path:
    """Hand-built with onnx.helper (labelled: not a trained model): MatMul by a weight, then the arithmetic such
    graphs carry as single-value constants: Mul by a scale (Silero VAD multiplies by 2**20), Pow by 2, a -inf fill."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(weight.astype(np.float32), "dense.weight"),
             numpy_helper.from_array(np.array(scale, np.float32), "scale"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(-np.inf, np.float32), "masked")]
    nodes = [helper.make_node("MatMul", ["x", "dense.weight"], ["h"], name="MatMul_0"),
             helper.make_node("Mul", ["h", "scale"], ["s"], name="Mul_1"),
             helper.make_node("Pow", ["s", "two"], ["p"], name="Pow_2"),
             helper.make_node("Max", ["p", "masked"], ["y"], name="Max_3")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], inits)
    path = tmp_path / "constants.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_graph_constants_are_not_weights(tmp_path):
    weight = np.random.default_rng(0).normal(0, 0.3, (4, 3))
    assert findings(_onnx(tmp_path, weight, 2.0 ** 20)) == []


def test_a_blown_up_weight_beside_graph_constants_still_fails(tmp_path):
    weight = np.random.default_rng(0).normal(0, 0.3, (4, 3))
    weight[1, 2] = 5000.0
    found = findings(_onnx(tmp_path, weight, 2.0 ** 20))
    assert {(f.rule, f.layer, f.block) for f in found} == {("max-abs", "MatMul_0", "dense.weight"),
                                                           ("block-norm", "MatMul_0", "dense.weight")}

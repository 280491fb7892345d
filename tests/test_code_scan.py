"""The code scanner (analysis/code_scan.py) finds code in every place a Keras or torch loader would run it, in
files written by the real writers (tests/fixtures/make_code_fixtures.py: Keras 3, Keras 3 on torch, tf-keras,
torch, numpy), names each place by its JSON path (or pickle member and offset), and finds nothing in clean files —
the clean ones written there and every other fixture of the suite. Nothing named is ever imported (mypkg, the
package the custom objects come from, is not even on the path)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lstm_inspect.analysis import code_scan

CODE = Path(__file__).parent / "fixtures" / "code"
FIXTURES = Path(__file__).parent / "fixtures"

#: file -> every finding as (where, the start of what); exact, so a finding too many fails as well.
EXPECTED = {
    "k3_lambda_top.keras": [("config.json: config.layers[1].config.function", "a serialized Python lambda")],
    "k3_lambda_timedistributed.keras": [
        ("config.json: config.layers[1].config.layer.config.function", "a serialized Python lambda")],
    "k3_lambda_timedistributed.h5": [
        ("model_config: config.layers[1].config.layer.config.function", "a serialized Python lambda")],
    "k3_function_bidirectional.keras": [
        ("config.json: config.layers[1].config.layer.config.recurrent_activation",
         "the Python function 'mypkg>swishy' from module 'builtins'"),
        ("config.json: config.layers[1].config.backward_layer.config.recurrent_activation",
         "the Python function 'mypkg>swishy' from module 'builtins'")],
    "k3_lambda_nested_model.keras": [
        ("config.json: config.layers[1].config.layers[1].config.function", "a serialized Python lambda")],
    "k3_lambda_rnn_cell.keras": [
        ("config.json: config.layers[1].config.cell.config.cells[1].config.activation.value[0]",
         "marshalled Python bytecode")],
    "k3_compile_lambda.keras": [("config.json: compile_config.loss", "a serialized Python lambda"),
                                ("config.json: compile_config.metrics[0]", "a serialized Python lambda")],
    "k3_compile_lambda.h5": [("training_config: loss", "names the function '<lambda>'"),
                             ("training_config: metrics[0]", "names the function '<lambda>'")],
    "k3_custom_activation.keras": [("config.json: config.layers[2].config.activation",
                                    "the Python function 'mypkg>swishy'")],
    "k3_custom_regularizer.keras": [("config.json: config.layers[1].config.kernel_regularizer",
                                     "custom class 'MyReg': from module 'mypkg.regs'")],
    "k3torch_torchmodulewrapper.keras": [
        ("config.json: config.layers[1].config.module",
         "TorchModuleWrapper: a whole torch module, pickled (Keras loads it with torch.load(weights_only=False)): "
         "a torch.save zip that imports and would call torch.nn.modules.linear.Linear")],
    "k2_lambda_top.h5": [("model_config: config.layers[1].config.function[0]", "marshalled Python bytecode")],
    "k2_lambda_timedistributed.h5": [
        ("model_config: config.layers[1].config.layer.config.function[0]", "marshalled Python bytecode")],
    "k2_training_lambda.h5": [("training_config: loss", "names the function '<lambda>'"),
                              ("training_config: metrics[0][0].config.fn", "names the function '<lambda>'")],
    "k2_custom_class.h5": [("model_config: config.layers[1]", "custom class 'Scale': not a class Keras defines")],
    "k2_custom_activation.h5": [("model_config: config.layers[2].config.activation",
                                 "the Python function 'mypkg>swishy'")],
    "k2_custom_regularizer.h5": [("model_config: config.layers[1].config.kernel_regularizer",
                                  "custom class 'MyReg': from module 'mypkg.regs'")],
    "torch_os_system.pt": [("torch_os_system/data.pkl @ byte ", "posix.system")],
    "torch_os_system_legacy.pt": [("pickle 4 of 5 (at byte 137) @ byte ", "posix.system")],
    "torch_exec_p4.pt": [("pickle 1 @ byte ", "builtins.exec")],
    "torch_whole_module.pt": [("torch_whole_module/data.pkl @ byte ", "torch.nn.modules.rnn.GRU")],
    "npz_object_array.npz": [("weights.npy (object array pickle at byte 128) @ byte ", "builtins.exec")],
}
CLEAN = ["k3_clean.keras", "k3_clean.h5", "k2_clean.h5", "torch_clean.pt", "torch_clean_legacy.pt", "npz_clean.npz"]


def code_findings(path: Path) -> list[code_scan.CodeFinding]:
    return code_scan.scan_file(str(path))


def test_every_file_is_listed():
    assert sorted(p.name for p in CODE.iterdir()) == sorted([*EXPECTED, *CLEAN])


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_code_is_found_where_it_hides(name):
    found = code_findings(CODE / name)
    assert len(found) == len(EXPECTED[name]), [str(f) for f in found]
    for finding, (where, what) in zip(found, EXPECTED[name]):
        assert finding.where.startswith(where) and finding.what.startswith(what), str(finding)
        if "@ byte" in where:
            assert finding.where[len(where):].isdigit()
    assert "mypkg" not in sys.modules


@pytest.mark.parametrize("name", CLEAN)
def test_clean_files_have_no_findings(name):
    assert code_findings(CODE / name) == []


def every_fixture():
    models = FIXTURES / "models"
    files = [p for p in sorted(models.iterdir()) if not p.name.endswith((".npz", ".json"))]
    return files + sorted((FIXTURES / "sharded").glob("*.weights.json")) + sorted((FIXTURES / "exports").glob("*"))


def test_no_other_fixture_has_findings_but_the_lambda_ones():
    checked = 0
    for path in every_fixture():
        found = code_findings(path)
        if "lambda_custom" in path.name and not path.name.endswith("weights.h5"):
            assert {f.what.split(" ")[0] for f in found} <= {"marshalled", "a", "custom"} and len(found) == 2, path
        else:
            assert found == [], (path, [str(f) for f in found])
        checked += 1
    assert checked > 150


# Hand-built configs (labelled): what an attacker writes by hand to slip past a scanner that knows the usual places.
def config(layer_config):
    return {"module": "keras", "class_name": "Functional", "config": {"layers": [layer_config]}}


@pytest.mark.parametrize("entry, where, what", [
    ({"module": "keras_evil.layers", "class_name": "Dense", "config": {}}, "config.layers[0]", "from module 'keras_evil"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"kernel_initializer": {
        "module": "keras.src.utils.file_utils", "class_name": "function", "config": "get_file",
        "registered_name": "function"}}}, "config.layers[0].config.kernel_initializer", "the Python function 'get_file'"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"anything": {"deeper": [{
        "class_name": "__lambda__", "config": {"code": "4wEAAAAA"}}]}}}, 'config.layers[0].config.anything.deeper[0]',
     "a serialized Python lambda"),
    ({"module": "keras.layers", "class_name": "Dense", "config": {"name": "x", "odd key": {
        "module": "builtins", "class_name": "function", "config": "exec"}}}, 'config.layers[0].config["odd key"]',
     "the Python function 'exec' from module 'builtins'"),
    ({"class_name": "Custom>Backdoor", "config": {}}, "config.layers[0]", "custom class 'Custom>Backdoor'"),
    ({"class_name": "Lambda", "config": {"function": "system", "function_type": "function", "module": "os"}},
     "config.layers[0].config.function", "Lambda layer calls the Python function 'system' from module 'os'"),
])
def test_hand_built_hiding_places(entry, where, what):
    found = code_scan.scan_config(config(entry), "config.json")
    assert [f.where for f in found] == [f"config.json: {where}"] and what in found[0].what, [str(f) for f in found]


def test_a_pickle_in_any_string_is_scanned():
    import base64
    import os
    import pickle

    class System:
        def __reduce__(self):
            return os.system, ("true",)

    payload = base64.b64encode(pickle.dumps([System()], protocol=2)).decode()
    found = code_scan.scan_config({"config": {"blob": payload}}, "config.json")
    assert [(f.where, f.what) for f in found] == [("config.json: config.blob",
                                                   "a pickle that imports and would call posix.system")]


def test_keras_own_names_are_not_findings():
    document = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"activation": "relu", "kernel_regularizer": {
            "class_name": "L1L2", "config": {"l1": 0.0, "l2": 0.01}}}}]},
        "compile_config": {"loss": "categorical_crossentropy", "metrics": ["acc", "accuracy"],
                           "optimizer": {"class_name": "Custom>Adam", "config": {}}}}
    assert code_scan.scan_config(json.loads(json.dumps(document)), "config.json") == []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_check_fails_each_file_on_unsafe_code(name):
    from lstm_inspect.analysis import check

    result = check.check_path(str(CODE / name))
    assert result.status == "fail" and result.error is None
    code = [f for f in result.findings if f.rule == "unsafe-code"]
    assert [f.message for f in code] == [str(f) for f in code_scan.scan_file(str(CODE / name))]
    assert {f.severity for f in code} == {"error"}


@pytest.mark.parametrize("name", CLEAN)
def test_check_passes_the_clean_files(name):
    from lstm_inspect.analysis import check

    result = check.check_path(str(CODE / name))
    assert result.status == "pass" and result.findings == [], result


def test_keras1_raw_marshal_string_is_bytecode():
    """Keras 1 wrote a Lambda's function as marshal.dumps(code).decode("raw_unicode_escape") (hand-built here)."""
    import marshal

    raw = marshal.dumps((lambda x: x * 2).__code__).decode("raw_unicode_escape")
    found = code_scan.scan_config({"class_name": "Sequential", "config": [{"class_name": "Lambda", "config": {
        "name": "l", "function": [raw, None, None], "function_type": "lambda"}}]}, "model_config")
    assert [(f.where, f.what) for f in found] == [("model_config: config[0].config.function[0]",
                                                   "marshalled Python bytecode (Keras runs it when loading)")]


def test_object_arrays_in_a_keras_archive_npz_are_scanned(tmp_path):
    """A .keras archive whose model.weights.npz (Keras 3's npz weights format) holds a pickled object array
    (hand-assembled from a real clean archive and np.savez)."""
    import io
    import zipfile

    import numpy as np

    class Exec:
        def __reduce__(self):
            return exec, ("x = 1",)

    weights = io.BytesIO()
    np.savez(weights, **{"layers/dense/vars/0": np.array([Exec()], dtype=object)})
    path = tmp_path / "npz.keras"
    with zipfile.ZipFile(CODE / "k3_clean.keras") as source, zipfile.ZipFile(path, "w") as target:
        target.writestr("config.json", source.read("config.json"))
        target.writestr("model.weights.npz", weights.getvalue())
    found = code_scan.scan_file(str(path))
    assert [f.what for f in found] == ["builtins.exec"]
    assert found[0].where.startswith("model.weights.npz:layers/dense/vars/0.npy (object array pickle at byte ")

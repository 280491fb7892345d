"""`check`, `snapshot` and `diff` as a CI runs them: exit codes, the machine formats, config files, baselines."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import h5py
import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from lstm_inspect.analysis import check as checks
from lstm_inspect.analysis import discovery
from lstm_inspect.cli import cli
from test_check_rules import gate, hostile, set_block

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-2.1.0-subset.schema.json"


def run(*args: str, cwd: Path | None = None):
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(cli, [str(a) for a in args])
    finally:
        os.chdir(old)
    assert "Traceback" not in result.output, result.output
    return result


def _nan(a):
    a = a.copy()
    a[1, 2] = np.nan
    return a


@pytest.fixture
def mixed(tmp_path) -> Path:
    """A directory with a passing model, a model with a NaN, a model needing code, a non-model .h5, a nested
    directory with a saved-model directory, and an unrelated file that must be ignored."""
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    shutil.copy(FIXTURES / "k3_classic.keras", d / "good.keras")
    hostile(d, set_block("kernel", gate(1), _nan), name="nan.h5")
    shutil.copy(FIXTURES / "k3_lambda_custom.keras", d / "sub" / "lambda.keras")
    shutil.copytree(FIXTURES / "k3_nested_dir", d / "sub" / "saved_dir")
    with h5py.File(d / "data.h5", "w") as f:
        f["x"] = np.arange(3)
    (d / "notes.txt").write_text("not a model")
    return d


def test_discover_recurses_for_model_files_and_directories(mixed):
    files, notes = discovery.discover([str(mixed)])
    names = sorted(os.path.relpath(f, mixed) for f in files)
    assert names == ["data.h5", "good.keras", "nan.h5", os.path.join("sub", "lambda.keras"),
                     os.path.join("sub", "saved_dir")]
    assert notes == []
    globbed, _ = discovery.discover([str(mixed / "*.keras")])
    assert [os.path.basename(f) for f in globbed] == ["good.keras"]
    _, notes = discovery.discover([str(mixed / "*.nothing")])
    assert notes and "matches nothing" in notes[0]


def test_exit_codes_across_a_mixed_directory(mixed):
    assert run("check", mixed / "good.keras").exit_code == 0
    assert run("check", mixed / "good.keras", mixed / "sub").exit_code == 1  # unsafe-code (the Lambda) is an error
    assert run("check", "--severity", "unsafe-code=warning", mixed / "sub").exit_code == 0
    assert run("check", "--severity", "unsafe-code=warning", "--strict", mixed / "sub").exit_code == 1
    assert run("check", mixed / "good.keras", mixed / "nan.h5").exit_code == 1
    result = run("check", mixed)
    assert result.exit_code == 2  # data.h5 is unreadable; the others are still checked
    out = result.stdout
    assert "PASS" in out and "FAIL" in out and "ERROR" in out
    assert "non-finite" in out and "lstm/W_f" in out
    assert "good.keras" in out and "saved_dir" in out
    doc = json.loads(run("check", "--format", "json", mixed).stdout)
    status = {os.path.basename(f["file"]): f["status"] for f in doc["files"]}
    assert status == {"data.h5": "error", "good.keras": "pass", "nan.h5": "fail", "lambda.keras": "fail",
                      "saved_dir": "pass"}
    assert doc["summary"]["unreadable"] == 1 and doc["summary"]["failed"] == 2


def test_json_findings_name_rule_layer_and_block(mixed):
    result = run("check", "--format", "json", mixed / "nan.h5")
    assert result.exit_code == 1
    [file] = json.loads(result.stdout)["files"]
    [finding] = file["findings"]
    assert finding == {"rule": "non-finite", "severity": "error", "layer": "lstm", "block": "W_f",
                       "message": "1 NaN of 600 values"}


def test_junit_is_xml_with_one_case_per_file_and_rule(mixed):
    result = run("check", "--format", "junit", "--select", "non-finite,unsafe-code", mixed)
    assert result.exit_code == 2
    root = ET.fromstring(result.stdout)
    assert root.tag == "testsuites"
    suites = {os.path.basename(s.get("name")): s for s in root.findall("testsuite")}
    assert set(suites) == {"data.h5", "good.keras", "nan.h5", "lambda.keras", "saved_dir"}
    cases = {c.get("name"): c for c in suites["nan.h5"].findall("testcase")}
    assert set(cases) == {"non-finite", "unsafe-code"}
    failure = cases["non-finite"].find("failure")
    assert failure is not None and "lstm/W_f" in failure.get("message")
    assert cases["unsafe-code"].find("failure") is None
    lam = {c.get("name"): c for c in suites["lambda.keras"].findall("testcase")}
    failure = lam["unsafe-code"].find("failure")
    assert failure is not None and "config.json: config.layers[" in failure.get("message")
    [read] = suites["data.h5"].findall("testcase")
    assert read.get("name") == "read" and read.find("error") is not None
    assert int(root.get("failures")) == 2 and int(root.get("errors")) == 1
    assert int(root.get("tests")) == sum(int(s.get("tests")) for s in suites.values()) == 9


def test_github_annotations(mixed):
    result = run("check", "--format", "github", mixed)
    lines = result.stdout.splitlines()
    assert all(line.startswith(("::error file=", "::warning file=")) for line in lines), lines
    nan = [line for line in lines if "nan.h5" in line]
    assert nan == [f"::error file={mixed / 'nan.h5'},title=lstm-inspect non-finite::lstm/W_f: 1 NaN of 600 values"]
    assert any(line.startswith("::error ") and "unsafe-code" in line and "config.layers" in line for line in lines)
    assert any("title=read-error" in line and "data.h5" in line for line in lines)
    strict = run("check", "--format", "github", "--strict", mixed / "sub" / "lambda.keras").stdout.splitlines()
    assert strict and all(line.startswith("::error ") for line in strict)


def test_github_escapes_property_and_message_characters():
    from lstm_inspect.render.formats import to_github

    result = checks.FileResult(path="a,b:c%.h5", findings=[checks.Finding("non-finite", "error", "l", None,
                                                                             "line1\nline2 100%")])
    assert to_github([result], ["non-finite"], False) == (
        "::error file=a%2Cb%3Ac%25.h5,title=lstm-inspect non-finite::l: line1\\nline2 100%25\n")  # one line, shown


def test_sarif_validates_against_the_schema(mixed):
    result = run("check", "--format", "sarif", mixed, cwd=mixed)
    log = json.loads(result.stdout)
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator.check_schema(schema)
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
    run_ = log["runs"][0]
    rules = [r["id"] for r in run_["tool"]["driver"]["rules"]]
    assert rules == list(checks.RULES)
    for r in run_["results"]:
        assert rules[r["ruleIndex"]] == r["ruleId"]
    nan = [r for r in run_["results"] if r["ruleId"] == "non-finite"]
    assert len(nan) == 1 and nan[0]["level"] == "error"
    assert nan[0]["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "lstm/W_f"
    assert {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run_["results"]} == {
        "nan.h5", "sub/lambda.keras"}
    assert run_["invocations"][0]["executionSuccessful"] is False  # data.h5 could not be read
    # a broken log is rejected: the schema is not a rubber stamp
    run_["results"][0]["level"] = "fatal"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft4Validator(schema).validate(log)


def test_config_from_pyproject_and_flags_override(tmp_path, mixed):
    project = tmp_path / "proj"
    (project / "deep").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[tool.lstm-inspect]\nstrict = true\nexpect-units = { lstm = 64 }\n'
        '[tool.lstm-inspect.thresholds]\nmax-abs = 0.5\n')
    model = mixed / "good.keras"
    doc = json.loads(run("check", "--format", "json", model, cwd=project / "deep").stdout)
    rules = {f["rule"] for f in doc["files"][0]["findings"]}
    assert {"expect-units", "max-abs"} <= rules and doc["strict"] is True
    result = run("check", "--no-strict", "--expect-units", "lstm=120", "--threshold", "max_abs=off", model,
                 cwd=project / "deep")
    assert result.exit_code == 0, result.output
    other = tmp_path / "other.toml"
    other.write_text('ignore = ["needs-code"]\nstrict = true\n')
    assert run("check", "--config", other, mixed / "sub" / "lambda.keras", cwd=project).exit_code == 0
    (project / "pyproject.toml").write_text('[tool.lstm-inspect]\nno-such-setting = 1\n')
    bad = run("check", model, cwd=project)
    assert bad.exit_code == 2 and "no-such-setting" in bad.output and len(bad.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--select", "nope"], "unknown rule"),
    (["--severity", "needs-code=fatal"], "severity"),
    (["--threshold", "max_abs=big"], "--threshold"),
    (["--expect-units", "lstm"], "NAME=VALUE"),
    (["--baseline", "missing.json"], "cannot read baseline"),
])
def test_bad_options_are_one_line_exit_2(tmp_path, args, message):
    result = run("check", *args, FIXTURES / "k3_classic.keras", cwd=tmp_path)
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_no_model_files_is_exit_2(tmp_path):
    result = run("check", tmp_path)
    assert result.exit_code == 2 and "no model files" in result.output


# ---------------------------------------------------------------------------------------------------------------
# Baselines

KINDS = {"k3": ["k3_nested.keras", "k3_nested.h5", "k3_nested.weights.h5", "k3_nested_dir"],
         "k2": ["k2_nested.h5", "k2_nested.keras", "k2_nested_weights.h5"]}


@pytest.mark.parametrize("flavour", sorted(KINDS))
def test_snapshot_of_one_file_kind_passes_for_every_other(tmp_path, flavour):
    files = KINDS[flavour]
    for source in files:
        snap = tmp_path / f"{source}.snapshot.json"
        result = run("snapshot", FIXTURES / source, "-o", snap)
        assert result.exit_code == 0, result.output
        for other in files:
            checked = run("check", "--format", "json", "--baseline", snap, FIXTURES / other)
            doc = json.loads(checked.stdout)
            assert checked.exit_code == 0, (source, other, doc["files"][0]["findings"])


def test_baseline_catches_drift_and_structure_change(tmp_path):
    snap = tmp_path / "classic.snapshot.json"
    assert run("snapshot", FIXTURES / "k3_classic.keras", "-o", snap).exit_code == 0
    record = json.loads(snap.read_text())
    assert record["format"] == "lstm-inspect-snapshot" and record["layers"][0]["blocks"]["U_f"]["stats"]["l2"] > 0
    drifted = hostile(tmp_path, set_block("recurrent_kernel", gate(1), lambda a: a * 1.2), name="drift.h5")
    result = json.loads(run("check", "--format", "json", "--baseline", snap, drifted).stdout)
    found = [(f["rule"], f["layer"], f["block"]) for f in result["files"][0]["findings"]]
    assert found == [("baseline-drift", "lstm", "U_f")]
    slight = hostile(tmp_path, set_block("recurrent_kernel", gate(1), lambda a: a * 1.01), name="slight.h5")
    assert run("check", "--baseline", snap, slight).exit_code == 0  # within the default 5%
    assert run("check", "--baseline", snap, "--threshold", "baseline_rtol=1e-6", slight).exit_code == 1
    other = run("check", "--format", "json", "--baseline", snap, FIXTURES / "k3_stacked.keras")
    assert other.exit_code == 1
    rules = {f["rule"] for f in json.loads(other.stdout)["files"][0]["findings"]}
    assert rules == {"baseline-structure"}


def test_bad_baseline_is_exit_2(tmp_path):
    not_snap = tmp_path / "x.json"
    not_snap.write_text('{"format": "something-else"}')
    result = run("check", "--baseline", not_snap, FIXTURES / "k3_classic.keras")
    assert result.exit_code == 2 and "not an lstm-inspect snapshot" in result.output


# ---------------------------------------------------------------------------------------------------------------
# diff

@pytest.mark.parametrize("a,b", [("k3_classic.keras", "k3_classic.h5"), ("k3_nested.keras", "k3_nested.h5"),
                                 ("k3_bidi_gru.keras", "k3_bidi_gru.weights.h5"),
                                 ("k2_nested.h5", "k2_nested_weights.h5")])
def test_diff_same_weights_in_other_file_kinds_is_identical(a, b):
    result = run("diff", "--json", FIXTURES / a, FIXTURES / b)
    report = json.loads(result.stdout)
    assert result.exit_code == 0 and report["identical"], report
    assert report["summary"]["blocks_compared"] > 0 and report["summary"]["blocks_changed"] == 0
    blocks = [blk for layer in report["layers"] for blk in layer["blocks"]]
    assert all(blk["max_abs_diff"] == 0 and blk["cosine"] == pytest.approx(1.0) for blk in blocks)


def test_diff_changed_weights(tmp_path):
    base = tmp_path / "base.h5"
    shutil.copy(FIXTURES / "k3_classic.h5", base)
    changed = hostile(tmp_path, set_block("recurrent_kernel", gate(1), lambda a: a + 0.01), name="changed.h5")
    result = run("diff", "--json", base, changed)
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    moved = {(layer["b"], blk["key"]): blk for layer in report["layers"] for blk in layer["blocks"]
             if blk["status"] != "unchanged"}
    assert list(moved) == [("lstm", "U_f")]
    blk = moved[("lstm", "U_f")]
    with h5py.File(base) as fa, h5py.File(changed) as fb:
        from test_check_rules import sources
        src = sources(base)["lstm/recurrent_kernel"]
        a, b = fa[src][:, gate(1)].astype(np.float64), fb[src][:, gate(1)].astype(np.float64)
    assert blk["max_abs_diff"] == pytest.approx(np.abs(b - a).max())
    assert blk["rel_frobenius"] == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a))
    assert blk["cosine"] == pytest.approx(float(a.ravel() @ b.ravel() / np.linalg.norm(a) / np.linalg.norm(b)))
    assert run("diff", "--atol", "0.02", base, changed).exit_code == 0
    human = run("diff", base, changed)
    assert human.exit_code == 1 and "U_f" in human.stdout and "different" in human.stdout


def test_diff_reports_added_removed_renamed_and_shapes():
    # masked: LSTM(4) -> LSTM(3) -> Dense(1); stacked: LSTM(6) lstm_a -> LSTM(5) lstm_b -> TimeDistributed(Dense(2))
    result = run("diff", "--json", FIXTURES / "k3_masked.keras", FIXTURES / "k3_stacked.keras")
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert [e["layer"] for e in report["removed"]] == ["lstm", "lstm_1"]
    assert [e["layer"] for e in report["added"]] == ["lstm_a", "lstm_b"]
    assert report["renamed"] == [{"a": "dense", "b": "td/dense"}]
    assert report["shape_changes"] == [{"layer": "td/dense", "a": "kernel (3, 1), bias (1,)",
                                        "b": "kernel (5, 2), bias (2,)"}]
    assert not report["identical"]


def test_diff_unreadable_is_exit_2(tmp_path):
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    result = run("diff", FIXTURES / "k3_classic.keras", junk)
    assert result.exit_code == 2 and "junk.h5" in result.output


# ---------------------------------------------------------------------------------------------------------------
# --jobs

def test_jobs_gives_the_same_results_in_the_same_order(mixed):
    from lstm_inspect import cpus

    one = json.loads(run("check", "--format", "json", "--jobs", "1", mixed).stdout)
    two = json.loads(run("check", "--format", "json", "--jobs", "2", mixed).stdout)
    assert one == two
    assert cpus.thread_cap is None  # the children's cap on threads is not left on the process


def test_no_progress_bar_when_not_a_terminal(mixed):
    proc = subprocess.run([sys.executable, "-m", "lstm_inspect", "check", "--jobs", "2", str(mixed)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "checking" not in proc.stderr and "\r" not in proc.stderr
    assert "PASS" in proc.stdout

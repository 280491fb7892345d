"""The output boundary (lstm_inspect/text_safety.py): a hostile string from a file is shown as data in every output
format and never acts on a terminal, a parser or a CI runner.

Hostile files are hand-built: a Keras 3 `.keras` written by Keras 3 (tests/fixtures/models/k3_lstm_init.keras)
with its config.json edited (the LSTM renamed, a Lambda layer with hostile name / code added, a NaN config value),
and a tf-keras `.h5` whose weight dataset is replaced by a soft link with a hostile name (so the error message quotes
it). Each case is run through the CLI: inspect (human, --json), check (human, json, junit, github, sarif), diff and
the one-line error on stderr.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import h5py
import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from lstm_inspect.cli import cli
from lstm_inspect.text_safety import dumps, visible

FIXTURES = Path(__file__).parent / "fixtures" / "models"
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-2.1.0-subset.schema.json"

HOSTILE = {
    "clear-screen": "\x1b[2J\x1b[H",
    "osc-title": "\x1b]0;pwned\x07",
    "osc8-link": "\x1b]8;;file:///etc/passwd\x1b\\click me\x1b]8;;\x1b\\",
    "rich-link": "[link=file:///etc/passwd]x[/link][blink red]y",
    "rich-close": "[/oops]",
    "nul": "a\x00b",
    "workflow-command": "x\n::error title=FAKE::boom",
    "carriage-return": "x\r::warning title=FAKE::boom",
    "lone-surrogate": "lstm\ud800",
    "html": "<script>alert(1)</script>&amp;",
    "bidi-override": "abc\u202edef",
    "c1-csi": "a\x9b2Jb\x85::error::c",
    "line-separator": "a\u2028::error::b",
}

#: What must never reach an output: controls other than the newlines and tabs the format itself writes, C1
#: controls, bidi / zero-width / separator characters, noncharacters, lone surrogates.
_ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufffe\uffff"
                     "\ud800-\udfff]")


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_inert(text: str, what: str) -> None:
    found = _ACTIVE.search(text)
    assert found is None, f"{what}: {found.group()!r} reached the output"
    text.encode("utf-8")  # no lone surrogate: writable as UTF-8


def strict_json(text: str):
    def refuse(token):
        raise AssertionError(f"not RFC 8259 JSON: {token}")

    data = json.loads(text, parse_constant=refuse)
    json.dumps(data).encode("utf-8")
    return data


def hostile_keras(path: Path, name: str) -> Path:
    """Hand-built from a Keras 3 .keras: the LSTM named `name` with dropout NaN, and a Lambda whose name, code and
    argument carry `name`."""
    with zipfile.ZipFile(FIXTURES / "k3_lstm_init.keras") as archive:
        members = {member: archive.read(member) for member in archive.namelist()}
    config = json.loads(members["config.json"])
    layers = config["config"]["layers"]
    layers[1]["config"]["name"] = name
    layers[1]["config"]["dropout"] = float("nan")
    layers.append({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                   "config": {"name": name + "_fn", "arguments": {"x": name},
                              "function": {"class_name": "__lambda__", "config": {"code": name}}}})
    members["config.json"] = json.dumps(config).encode()  # NaN written as Python writes it: NaN
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    return path


def hostile_error_h5(path: Path, name: str) -> Path:
    """Hand-built from a tf-keras .h5: dense's kernel replaced by a soft link named with `name`, which the reader
    refuses with a message quoting the name. HDF5 names cannot hold NUL or '/'."""
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    name = name.replace("\x00", "").replace("/", "|")
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense"]
        names = [n if isinstance(n, bytes) else n.encode() for n in group.attrs["weight_names"]]
        bad = f"dense/kernel{name}".encode("utf-8", "surrogatepass")  # a lone surrogate: bytes that are not UTF-8
        del group["dense/kernel:0"]
        group[bad] = h5py.SoftLink("/model_weights")
        names[0] = bad
        group.attrs["weight_names"] = np.array(names)
    return path


@pytest.fixture(params=sorted(HOSTILE), ids=lambda case: f"hand-built-{case}")
def hostile(request, tmp_path):
    name = HOSTILE[request.param]
    return name, hostile_keras(tmp_path / "hostile.keras", name)


def test_inspect_human_output_shows_names_inert(hostile):
    name, path = hostile
    result = run("inspect", path)
    assert result.exit_code == 0, result.output
    assert_inert(result.output, "inspect")
    if "[link=" in name:
        assert "[link=file:///etc/passwd]" in result.output  # shown as text, not turned into a hyperlink


def test_inspect_json_is_strict_and_exact(hostile):
    name, path = hostile
    result = run("inspect", "--json", path)
    assert result.exit_code == 0, result.output
    report = strict_json(result.stdout)
    names = [layer["name"] for layer in report["layers"]]
    expected = name.replace("\ud800", "\\ud800")  # a lone surrogate is not text: written as its escape
    assert expected in names and expected + "_fn" in names
    lstm = next(layer for layer in report["layers"] if layer["class_name"] == "LSTM")
    assert lstm["config"]["dropout"] == "NaN"


@pytest.mark.parametrize("fmt", ["human", "json", "junit", "github", "sarif"])
def test_check_output_is_valid_and_inert(hostile, fmt):
    name, path = hostile
    result = run("check", path, "--format", fmt)
    assert result.exit_code == 1, result.output  # the renamed LSTM lost its weights; the Lambda is code
    out = result.stdout
    if fmt == "json":
        report = strict_json(out)
        layers = {f["layer"] for f in report["files"][0]["findings"]}
        assert name.replace("\ud800", "\\ud800") + "_fn" in layers
        return
    assert_inert(out, fmt)
    if fmt == "junit":
        ET.fromstring(out.encode("utf-8"))
    elif fmt == "github":
        lines = out.splitlines()
        assert lines and all(re.match(r"::(error|warning) file=[^:\n]*,title=[^:\n]*::", line) for line in lines)
        assert len(lines) == 3  # two config-mismatch findings and one unsafe-code: no injected command
    elif fmt == "sarif":
        log = strict_json(out)
        schema = json.loads(SARIF_SCHEMA.read_text())
        jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
        assert any(visible(name) in r["message"]["text"] for r in log["runs"][0]["results"])


def test_diff_output_is_inert(hostile):
    _, path = hostile
    result = run("diff", path, path)
    assert result.exit_code == 0, result.output
    assert_inert(result.output, "diff")
    assert strict_json(run("diff", "--json", path, path).stdout)["identical"] is True


@pytest.mark.parametrize("case", sorted(HOSTILE), ids=lambda case: f"hand-built-{case}")
def test_error_message_stays_one_line(tmp_path, case):
    path = hostile_error_h5(tmp_path / "hostile.h5", HOSTILE[case])
    result = run("inspect", path)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("lstm-inspect: error: ")
    # (the reader decodes a name list that is not UTF-8 with replacement characters, so that case is "missing")
    assert "is a soft link" in result.stderr or "missing" in result.stderr
    assert_inert(result.stderr, "stderr")
    for fmt in ("github", "junit", "sarif", "json", "human"):
        result = run("check", path, "--format", fmt)
        assert result.exit_code == 2, (fmt, result.output)
        assert_inert(result.stdout, fmt)
        assert len(result.stderr.splitlines()) <= 1
        if fmt == "github":
            assert len(result.stdout.splitlines()) == 1 and result.stdout.startswith("::error file=")
        elif fmt == "junit":
            ET.fromstring(result.stdout.encode("utf-8"))
        elif fmt in ("json", "sarif"):
            strict_json(result.stdout)


@pytest.mark.parametrize("fmt", ["human", "json", "junit", "github", "sarif"])
def test_non_utf8_file_name_in_a_directory(tmp_path, fmt):
    """A file name that is not UTF-8 (bytes 0xff, ESC) found by a directory walk: every format reports it."""
    root = tmp_path / "models"
    root.mkdir()
    shutil.copy(FIXTURES / "k3_lstm_init.keras", os.fsencode(root) + b"/m\xff\x1b[2J.keras")
    result = run("check", root, "--format", fmt)
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout, fmt)
    if fmt in ("human", "junit"):
        assert "m\\udcff\\x1b[2J.keras" in result.stdout
    if fmt == "junit":
        ET.fromstring(result.stdout.encode("utf-8"))
    if fmt == "json":
        assert strict_json(result.stdout)["files"][0]["file"].endswith("m\\udcff\x1b[2J.keras")
    if fmt == "sarif":
        strict_json(result.stdout)


def test_dumps_never_writes_nan_or_infinity():
    text = dumps({"a": float("nan"), "b": [float("inf"), -float("inf")], "c\ud800": 1.5})
    assert strict_json(text) == {"a": "NaN", "b": ["Infinity", "-Infinity"], "c\\ud800": 1.5}


def test_visible_escapes_every_active_character():
    for name in HOSTILE.values():
        shown = visible(name)
        assert_inert(shown, "visible")
        assert "\n" not in shown and "\r" not in shown
    assert visible("a\x1b[2J\n\t\ud800\u202e") == "a\\x1b[2J\\n\\t\\ud800\\u202e"


def test_html_report_is_inert(hostile, tmp_path):
    name, path = hostile
    out = tmp_path / "report.html"
    result = run("report", path, "-o", out)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert_inert(page.replace("\n", ""), "html")
    assert "<script" not in page

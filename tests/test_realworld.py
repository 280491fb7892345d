"""The real-world corpus: trained recurrent models from public repositories (tests/realworld/SOURCES.md), compared
with what their own frameworks said about them (tests/realworld/expected/, written by make_expected.py with Keras,
tf-keras, torch and onnxruntime — never by lstm-inspect).

The files are not in this repository. They are looked for in $LSTM_INSPECT_CORPUS, else in shared/realworld beside
the clone (<project root>/../shared/realworld, where CI finds shared/). Without them only the listing is checked
(test_corpus_listing_is_complete); with them, every listed file must be there, byte for byte (tests/realworld/README.md)."""
from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tests" / "realworld"
SOURCES = json.loads((HERE / "sources.json").read_text())["files"]


def corpus_dir() -> Path:
    if os.environ.get("LSTM_INSPECT_CORPUS"):
        return Path(os.environ["LSTM_INSPECT_CORPUS"])
    return ROOT.parent / "shared" / "realworld"


CORPUS = corpus_dir()
PRESENT = CORPUS.is_dir()
ENTRIES = SOURCES if PRESENT else []


def expected(entry: dict) -> dict:
    return json.loads((HERE / "expected" / f"{entry['id']}.json").read_text())


def array(record: dict) -> np.ndarray:
    """An array stored by make_expected.py (base64 bytes; only the first `kept` values of a long one)."""
    flat = np.frombuffer(base64.b64decode(record["b64"]), dtype=np.dtype(record["dtype"]).newbyteorder("<"))
    return flat.reshape(record["shape"]) if record["kept"] == int(np.prod(record["shape"])) else flat


def cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI of this checkout (not whatever lstm_inspect is installed), run in the corpus directory."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "lstm_inspect", *args], capture_output=True, text=True,
                          cwd=CORPUS, timeout=600, env=env)


def with_gaps(entries, what: str):
    """Parameters, one per file; a known gap (sources.json `gaps`) is a strict xfail: it must still fail, and the
    day it passes the test fails until the gap is removed from sources.json."""
    return [pytest.param(e, id=e["id"], marks=[pytest.mark.xfail(reason=e["gaps"][what], strict=True)])
            if what in e.get("gaps", {}) else pytest.param(e, id=e["id"]) for e in entries]


def corpus_only(test):
    """Defined only when the corpus is there: without it the module collects test_corpus_listing_is_complete alone."""
    return test if PRESENT else None


def test_corpus_listing_is_complete():
    """What CI checks with or without the files: every listed file has its source, a licence that permits
    redistribution, and the facts its own framework gave (expected/<id>.json); with the corpus present, every file is
    there byte for byte. The tests below are defined only when the corpus is there."""
    listed = (HERE / "SOURCES.md").read_text()
    for entry in SOURCES:
        assert entry["licence"] in ("MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "CC-BY-4.0"), entry["id"]
        assert entry["repo"] in listed and len(entry["commit"]) == 40 and len(entry["sha256"]) == 64, entry["id"]
        assert entry["expect"] in ("reads", "refused"), entry["id"]
        assert (HERE / "expected" / f"{entry['id']}.json").is_file(), entry["id"]
    if not PRESENT:
        return
    missing, changed = [], []
    for entry in SOURCES:
        path = CORPUS / entry["file"]
        if not path.is_file():
            missing.append(entry["file"])
        elif hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            changed.append(entry["file"])
    assert not missing and not changed, f"missing: {missing}; not the listed bytes: {changed}"


@corpus_only
@pytest.mark.parametrize("entry", with_gaps(ENTRIES, "reads"))
def test_every_file_reads(entry):
    result = cli("inspect", entry["file"], "--json", "--no-stats")
    if entry["expect"] == "refused":
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and entry["file"] in result.stderr
        return
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    record = expected(entry)
    if record.get("params") is not None and not entry["file"].endswith(".onnx"):
        # ONNX: the reference counts every initializer, lstm-inspect its layers' weights (docs/check.md)
        assert report["total_params"] == record["params"]


GATE_SUFFIXES = {f"{p}_{g}" for p in ("W", "U", "b", "rb") for g in "ifcozrh"} | {"W", "U", "b", "rb"}


@corpus_only
@pytest.mark.parametrize("entry", with_gaps([e for e in ENTRIES if e["expect"] == "reads"], "gates"))
def test_gates_equal_the_frameworks_slices(entry, tmp_path):
    """Every gate block the framework's documented layout cuts from its own arrays is exported bit for bit (in the
    framework's orientation or transposed, as lstm-inspect shows torch / ONNX blocks), and nothing else is."""
    record = expected(entry)
    blocks = record.get("blocks", [])
    out = tmp_path / "gates.npz"
    result = cli("export", entry["file"], "-o", str(out))
    assert result.returncode == 0, result.stderr
    with np.load(out) as exported:
        ours = {}
        for key in exported.files:
            suffix = key.rsplit("/", 1)[-1]
            if suffix in GATE_SUFFIXES:
                ours.setdefault(suffix, set()).add(hashlib.sha256(np.ascontiguousarray(exported[key]).tobytes()).hexdigest())
    unmatched = [f"{b['layer']}/{b['gate']}" for b in blocks
                 if not ({b["sha256"], b.get("sha256_T")} & ours.get(b["gate"], set()))]
    assert not unmatched, f"{len(unmatched)} of {len(blocks)} blocks not exported as the framework cuts them: {unmatched[:6]}"
    assert sum(len(v) for v in ours.values()) <= len(blocks) or not blocks


def keras_runs(entry) -> bool:
    """Keras files lstm-inspect can run: the file holds its own architecture (weights-only files cannot run)."""
    record = expected(entry)
    return bool(record.get("forward")) and not entry.get("architecture")


def worst(ours: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Largest absolute difference, and the reference's scale it is measured against."""
    ours = np.asarray(ours, np.float64).ravel()[: reference.size]
    reference = np.asarray(reference, np.float64).ravel()
    return float(np.abs(ours - reference).max()), float(max(1.0, np.abs(reference).max()))


# float32 noise: Keras computes in float32 (unit roundoff 6e-8); lstm-inspect's forward in float64. A recurrent
# layer compounds that rounding over its steps, so the bound is relative to the output's scale with room for it.
FLOAT32_NOISE = 1e-5


@corpus_only
@pytest.mark.parametrize("entry", with_gaps([e for e in ENTRIES if e["expect"] == "reads" and keras_runs(e)], "forward"))
def test_forward_matches_keras(entry, tmp_path):
    forward = expected(entry)["forward"]
    feeds = tmp_path / "x.npz"
    np.savez(feeds, **{item["name"]: array(item) for item in forward["inputs"]})
    out = tmp_path / "out.npz"
    result = cli("forward", entry["file"], "--input", str(feeds), "-o", str(out))
    assert result.returncode == 0, result.stderr
    with np.load(out) as got:
        keys = ["__output__"] if len(forward["outputs"]) == 1 else [f"__output__/{i}" for i in range(len(forward["outputs"]))]
        for key, reference in zip(keys, forward["outputs"]):
            diff, scale = worst(got[key], array(reference))
            assert diff <= FLOAT32_NOISE * scale, f"{key}: max |numpy - keras| = {diff:.3g} (scale {scale:.3g})"


TORCH_ENTRIES = [e for e in ENTRIES if e["expect"] == "reads" and expected(e).get("module_forward")
                 and not e["file"].endswith(".onnx")]


@corpus_only
@pytest.mark.parametrize("entry", with_gaps(TORCH_ENTRIES, "forward"))
def test_forward_matches_torch_modules(entry, tmp_path):
    for module, ref in expected(entry)["module_forward"].items():
        np.save(tmp_path / "x.npy", array(ref["input"]))
        out = tmp_path / "out.npz"
        result = cli("forward", entry["file"], "--input", str(tmp_path / "x.npy"), "-o", str(out), "--layer", module,
                     "--float64")
        assert result.returncode == 0, result.stderr
        with np.load(out) as got:
            for name in ("output", "h_n", "c_n"):
                if name in ref:
                    diff, scale = worst(got[f"{module}/{name}"], array(ref[name]))
                    # both sides float64 (torch .double()): only summation order differs
                    assert diff <= 1e-12 * scale, f"{module}/{name}: {diff:.3g}"


ONNX_NODES = [(e, node) for e in ENTRIES if e["expect"] == "reads" and e["file"].endswith(".onnx")
              for node in expected(e).get("module_forward", {})]


@corpus_only
@pytest.mark.parametrize("entry,node", [pytest.param(e, n, id=f"{e['id']}:{n}") for e, n in ONNX_NODES])
def test_forward_matches_onnxruntime_nodes(entry, node, tmp_path):
    """Each LSTM / GRU node run alone by onnxruntime on a seeded (time, batch, input) feed. A torch export regrouped
    into one multi-layer module runs as that module, so only nodes lstm-inspect names as their own module are fed."""
    ref = expected(entry)["module_forward"][node]
    name = node.strip("/").split("/")[-1]
    np.save(tmp_path / "x.npy", array(ref["input_tbf"]).transpose(1, 0, 2))
    out = tmp_path / "out.npz"
    result = cli("forward", entry["file"], "--input", str(tmp_path / "x.npy"), "-o", str(out), "--layer", name)
    if result.returncode == 2 and "matches no" in result.stderr:
        pytest.skip(f"{node} runs inside its regrouped torch module (covered by verify)")
    assert result.returncode == 0, result.stderr
    with np.load(out) as got:
        for output, reference in ref["outputs"].items():
            diff, scale = worst(got[f"{name}/{output}"], array(reference))
            assert diff <= FLOAT32_NOISE * scale, f"{name}/{output}: {diff:.3g}"


_CHECK: dict = {}


def check_report() -> dict:
    """`lstm-inspect check` over every corpus file at default settings, once: {file: report}."""
    if not _CHECK:
        files = [e["file"] for e in ENTRIES if e["expect"] == "reads"]
        result = cli("check", *files, "--format", "json", "--no-progress")
        assert result.returncode in (0, 1, 2), result.stderr
        for item in json.loads(result.stdout)["files"]:
            _CHECK[item["file"]] = item
    return _CHECK


@corpus_only
@pytest.mark.parametrize("entry", with_gaps([e for e in ENTRIES if e["expect"] == "reads"], "check"))
def test_check_raises_no_error(entry):
    report = check_report()[entry["file"]]
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    assert report["status"] != "unreadable" and not errors, report.get("error") or errors


def verifiable(entry) -> bool:
    """verify compares with the framework that can load the file: Keras files holding their architecture, torch
    state dicts and safetensors, ONNX files (each recurrent node against onnxruntime)."""
    record = expected(entry)
    if entry["file"].endswith(".onnx"):
        return bool(record.get("blocks"))
    # Keras 1 files: no installed Keras loads them with load_model (make_expected.py rebuilds them by hand)
    return record.get("loads") is True and not entry.get("architecture") and not entry["writer"].startswith("keras 1")


@corpus_only
@pytest.mark.parametrize("entry", with_gaps([e for e in ENTRIES if e["expect"] == "reads" and verifiable(e)], "verify"))
def test_verify_passes(entry):
    """In process (the reference frameworks import once, not once per file); the CLI's verify is the same call."""
    import lstm_inspect

    result = lstm_inspect.verify(CORPUS / entry["file"])
    assert result.ok, [(d.key, d.max_abs, d.bound) for d in result.diffs if not d.ok]
    assert result.noise_aware and result.largest_margin < 1

#!/usr/bin/env python
"""Run lstm-inspect's `unsafe-code` rule and modelscan over the same files and print a markdown table.

modelscan is not a dependency of lstm-inspect: install it in a separate venv (its pins are not ours), e.g.

    python -m venv --system-site-packages /tmp/ms && /tmp/ms/bin/pip install modelscan==0.8.8 "numpy<2.3" h5py
    python bench/compare_modelscan.py --modelscan /tmp/ms/bin/modelscan tests/fixtures/code/*

(`--system-site-packages` lets modelscan's Keras scanner find TensorFlow; numpy < 2.3 because modelscan 0.8.8 calls
`numpy.lib.format._check_version`, which numpy 2.3 removed.) A cell is what each tool reported for the file.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile


def ours(path: str) -> str:
    """What `check --select unsafe-code` reports (the same records as `code_scan.scan_file`, shown shorter)."""
    from lstm_inspect.analysis.code_scan import scan_file

    found = scan_file(path)
    return "<br>".join(f"`{f.where}`: {_short(f.what)}" for f in found) or "—"


def _short(what: str) -> str:
    """The first clause of a finding: 'a serialized Python lambda', "custom class 'MyReg'", 'posix.system'."""
    if what.startswith("TorchModuleWrapper"):
        return "TorchModuleWrapper pickle: " + what.rsplit("would call ", 1)[-1]
    return what.split(": ")[0].split(" (")[0].split(", which")[0]


def theirs(path: str, modelscan: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "report.json")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        subprocess.run([modelscan, "scan", "-p", path, "-r", "json", "-o", report], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        if not os.path.exists(report):
            return "no report"
        with open(report) as handle:
            data = json.load(handle)
    issues = [f"{i.get('severity')}: {i.get('description')}" for i in data.get("issues", [])]
    errors = [f"error: {e.get('description', '')[:80]}" for e in data.get("errors", [])]
    scanned = data.get("summary", {}).get("scanned", {}).get("total_scanned", 0)
    return "<br>".join(issues + errors) or ("—" if scanned else "— (nothing scanned)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modelscan", required=True, help="the modelscan executable (in its own venv)")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    print("| file | lstm-inspect `unsafe-code` | modelscan |")
    print("|---|---|---|")
    for path in sorted(args.files):
        print(f"| `{os.path.basename(path)}` | {ours(path)} | {theirs(path, args.modelscan)} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()

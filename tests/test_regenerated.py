"""Regenerate every fixture with the Keras versions installed now (tf-keras 2 and Keras 3, whatever CI installed)
and prove the reader and the gate split against them, so a new Keras release that changes a layout is caught."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_gate_proof import prove
from test_read import check_counts

GENERATOR = Path(__file__).parent / "fixtures" / "generate.py"


def test_fixtures_regenerated_by_installed_keras_read_and_split_correctly(tmp_path):
    out = tmp_path / "models"
    subprocess.run([sys.executable, str(GENERATOR), str(out), "--no-verify", "--no-layouts"], check=True,
                   capture_output=True, text=True, timeout=1200)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] and not manifest["skipped"]
    flavours = {entry["flavour"] for entry in manifest["files"].values()}
    assert flavours == {"k2", "k3"}
    failures = []
    for file, entry in sorted(manifest["files"].items()):
        try:
            check_counts(out, file, entry)
            prove(out, file, entry["model"], entry["flavour"])
        except AssertionError as exc:
            failures.append(f"{file}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)

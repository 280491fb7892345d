#!/usr/bin/env python
"""Coverage-guided fuzzing of the readers with atheris (libFuzzer), for long runs outside CI.

    pip install atheris
    python fuzz/atheris_inspect.py fuzz/corpus -max_total_time=600        # seeds: python fuzz/atheris_inspect.py --seed fuzz/corpus

Each input is written to a temporary file (its first byte picks the extension) and opened, inspected with
statistics, and exported, in-process: a segfault or hang in libhdf5 is reported by libFuzzer as a crash or timeout
with the input saved, and any exception other than `InspectError` is a bug and is raised as a crash.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["lstm_inspect"]):
    from lstm_inspect import InspectError, export_arrays, inspect
    from lstm_inspect.readers import (  # noqa: F401  (imported lazily by the package)
        archive, h5safe, infer, keras3, legacy_h5, safetensors_file, torch_state)
    from lstm_inspect import gates, report  # noqa: F401
    from lstm_inspect.analysis import notes, stats  # noqa: F401
    from lstm_inspect.readers import keras_config  # noqa: F401

SUFFIXES = (".h5", ".keras", ".weights.h5", ".safetensors")
WORK = Path(tempfile.mkdtemp(prefix="lstm-inspect-fuzz-"))


def one_input(data: bytes) -> None:
    if not data:
        return
    path = WORK / ("input" + SUFFIXES[data[0] % len(SUFFIXES)])
    path.write_bytes(data[1:])
    try:
        inspect(str(path))
        export_arrays(str(path))
    except InspectError:
        pass


def write_seeds(corpus: Path) -> None:
    """One seed per fixture file, prefixed with the byte that selects its extension."""
    fixtures = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "models"
    corpus.mkdir(parents=True, exist_ok=True)
    for source in sorted(fixtures.glob("*")):
        if source.is_file() and not source.name.endswith((".npz", ".json")) and source.stat().st_size < 64_000:
            suffix = next((i for i, s in reversed(list(enumerate(SUFFIXES))) if source.name.endswith(s)), 0)
            (corpus / source.name).write_bytes(bytes([suffix]) + source.read_bytes())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--seed":
        write_seeds(Path(sys.argv[2]))
        sys.exit(0)
    try:
        atheris.Setup(sys.argv, one_input)
        atheris.Fuzz()
    finally:
        shutil.rmtree(WORK, ignore_errors=True)

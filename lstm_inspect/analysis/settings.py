"""`check` settings from ``[tool.lstm-inspect]`` in the nearest pyproject.toml, or from a file given with --config.

Keys (``-`` and ``_`` are interchangeable)::

    [tool.lstm-inspect]
    select = ["non-finite", "dead-block"]     # rule ids to run (default: all)
    ignore = ["outlier-block"]
    strict = false
    severity = { spectral-norm = "error" }
    expect-layers = ["lstm", "dense"]
    expect-units = { lstm = 120 }
    min-params = 1000
    max-params = 200000
    baseline = "models/model.snapshot.json"   # relative to the file the setting is in
    jobs = 2
    format = "human"

    [tool.lstm-inspect.thresholds]
    max-abs = 100.0
    spectral-norm-max = 10.0

Python 3.11+ reads TOML with the standard library; 3.9/3.10 use ``tomli`` when it is installed and otherwise
skip pyproject.toml with a note (an explicit --config then is an error).
"""
from __future__ import annotations

import os
from typing import Any, Callable

from ..errors import InspectError

SECTION = "lstm-inspect"
KEYS = {"select", "ignore", "strict", "severity", "expect_layers", "expect_units", "min_params", "max_params",
        "baseline", "jobs", "format", "thresholds", "layer"}


def _toml_loader() -> Callable[[Any], dict[str, Any]] | None:
    try:
        import tomllib  # Python 3.11+

        return tomllib.load
    except ImportError:
        pass
    try:
        import tomli  # type: ignore[import-not-found]

        return tomli.load
    except ImportError:
        return None


def find_pyproject(start: str | None = None) -> str | None:
    """The nearest pyproject.toml in `start` (default: the current directory) or a directory above it."""
    directory = os.path.abspath(start or os.getcwd())
    while True:
        candidate = os.path.join(directory, "pyproject.toml")
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _normalise(table: dict[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        norm = key.replace("-", "_")
        if norm not in KEYS:
            raise InspectError(f"unknown setting {key!r} in [tool.{SECTION}] (known: "
                               f"{', '.join(sorted(k.replace('_', '-') for k in KEYS))})", source)
        if norm == "thresholds":
            if not isinstance(value, dict):
                raise InspectError("thresholds must be a table", source)
            value = {k.replace("-", "_"): v for k, v in value.items()}
        if norm in ("select", "ignore", "expect_layers", "layer"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise InspectError(f"{key} must be a list of strings", source)
        if norm in ("severity", "expect_units") and not isinstance(value, dict):
            raise InspectError(f"{key} must be a table", source)
        if norm == "expect_units" and not all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
            raise InspectError("expect-units values must be integers", source)
        if norm in ("min_params", "max_params", "jobs") and (not isinstance(value, int) or isinstance(value, bool)):
            raise InspectError(f"{key} must be an integer", source)
        if norm == "strict" and not isinstance(value, bool):
            raise InspectError("strict must be true or false", source)
        if norm in ("baseline", "format") and not isinstance(value, str):
            raise InspectError(f"{key} must be a string", source)
        if norm == "baseline":
            value = os.path.join(os.path.dirname(os.path.abspath(source)), value)
        out[norm] = value
    return out


def load(config_file: str | None = None, start: str | None = None) -> tuple[dict[str, Any], str | None, list[str]]:
    """(settings, the file they came from or None, notes). An explicit `config_file` that cannot be used is bad
    input; a pyproject.toml without the section gives no settings."""
    notes: list[str] = []
    loader = _toml_loader()
    if config_file is not None:
        if loader is None:
            raise InspectError("reading TOML needs Python 3.11+ or the 'tomli' package", config_file)
        data = _read(loader, config_file)
        table = data.get("tool", {}).get(SECTION) if isinstance(data.get("tool"), dict) else None
        return _normalise(table if isinstance(table, dict) else data, config_file), config_file, notes
    found = find_pyproject(start)
    if found is None:
        return {}, None, notes
    if loader is None:
        notes.append(f"{found}: not read (reading TOML needs Python 3.11+ or the 'tomli' package)")
        return {}, None, notes
    data = _read(loader, found)
    tool = data.get("tool")
    table = tool.get(SECTION) if isinstance(tool, dict) else None
    if not isinstance(table, dict):
        return {}, None, notes
    return _normalise(table, found), found, notes


def _read(loader: Callable[[Any], dict[str, Any]], path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return loader(handle)
    except OSError as exc:
        raise InspectError(f"cannot read config: {exc.strerror or exc}", path) from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise InspectError(f"invalid TOML: {exc}", path) from exc

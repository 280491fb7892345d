"""The package layering of docs/architecture.md, enforced by import-linter's contracts in pyproject.toml:
each layer imports only the layers below it, only `cli` imports click and only `render` imports rich."""
from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import lstm_inspect

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        import tomli as tomllib
    with open(ROOT / "pyproject.toml", "rb") as handle:
        return tomllib.load(handle)["tool"]["importlinter"]["contracts"]


def test_import_contracts_are_kept():
    # Run from the repository root (where pyproject.toml holds the contracts), on this checkout's package.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run(
        [sys.executable, "-c", "from importlinter.cli import lint_imports_command; lint_imports_command()",
         "--no-cache"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(_contracts())} kept, 0 broken" in result.stdout, result.stdout


def test_every_module_has_a_layer():
    """A new top-level module or package must be placed in the layers (and the click / rich contracts), or the
    contracts would say nothing about it."""
    contracts = {c["id"]: c for c in _contracts()}
    in_layers = {name.strip() for layer in contracts["layers"]["layers"] for name in layer.split("|")}
    children = {f"lstm_inspect.{m.name}" for m in pkgutil.iter_modules(lstm_inspect.__path__)}
    assert children == in_layers, (sorted(children - in_layers), sorted(in_layers - children))
    for name in ("click", "rich"):
        allowed = {"click": {"lstm_inspect.cli", "lstm_inspect.__main__"},
                   "rich": {"lstm_inspect.render", "lstm_inspect.__main__"}}[name]
        assert set(contracts[name]["source_modules"]) == children - allowed, name

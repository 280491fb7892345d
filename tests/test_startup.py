"""Start-up stays light: the CLI loads numpy, h5py and rich only when a command needs them, and a run over many
files loads everything its reading children need once, in the parent, so that no child imports anything again.
(Timings are in bench/bench_startup.py and bench/bench_check_jobs.py, not here.)"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lstm_inspect

FIXTURES = Path(__file__).parent / "fixtures"
HEAVY = ("numpy", "h5py", "rich", "lstm_inspect.model", "lstm_inspect.readers")


def _loaded_after(code: str) -> list[str]:
    """The HEAVY modules loaded in a fresh interpreter after running `code`."""
    probe = (f"import sys\n{code}\n"
             f"print(__import__('json').dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(Path(lstm_inspect.__file__).parent.parent)))
    return json.loads(done.stderr.strip().splitlines()[-1])


def _cli(*argv: str) -> str:
    return ("from lstm_inspect.cli import cli\n"
            f"try:\n    cli.main(args={list(argv)!r}, prog_name='lstm-inspect', standalone_mode=True)\n"
            "except SystemExit:\n    pass\n")


def test_importing_the_cli_loads_no_numpy_h5py_or_rich():
    assert _loaded_after("import lstm_inspect.cli") == []


def test_help_and_version_load_nothing_heavy():
    for argv in (["--help"], ["--version"], ["inspect", "--help"], ["check", "--help"]):
        assert _loaded_after(_cli(*argv)) == [], argv


def test_inspect_json_never_loads_rich_and_reads_only_in_the_child():
    # The reading child imports numpy and h5py; the parent only prints the JSON answer.
    assert _loaded_after(_cli("inspect", "--json", lstm_inspect.example_path())) == []
    assert _loaded_after(_cli("--no-isolation", "inspect", "--json", lstm_inspect.example_path())) == [
        "numpy", "h5py", "lstm_inspect.model", "lstm_inspect.readers"]


def test_a_child_of_a_many_file_run_imports_nothing():
    """After `preload_every_reader` a child checking a file of each kind read without a framework finds every
    module it uses loaded already (no repeated set-up per file)."""
    files = [FIXTURES / "models" / "k2_classic.h5", FIXTURES / "models" / "k2_classic.keras",
             FIXTURES / "models" / "k2_classic_weights.h5", FIXTURES / "models" / "k2_classic.oracle.npz",
             FIXTURES / "code" / "torch_clean.pt", FIXTURES / "code" / "torch_clean_legacy.pt",
             FIXTURES / "code" / "npz_clean.npz", FIXTURES / "exports" / "k3_bidi_gru.onnx.safetensors",
             FIXTURES / "tf_formats" / "k3_stack.keras"]
    code = (
        "import sys\n"
        "from lstm_inspect import isolation\n"
        "from lstm_inspect.analysis import check\n"
        "from lstm_inspect.cli.commands_check import _check_path_data\n"
        "options = check.CheckOptions(thresholds=dict(check.DEFAULT_THRESHOLDS))\n"
        "isolation.preload_every_reader()\n"
        "loaded = set(sys.modules)\n"
        "def new_imports(path):\n"
        "    _check_path_data(path, options)\n"
        "    return sorted(set(sys.modules) - loaded)\n"
        f"for path in {[str(f) for f in files]!r}:\n"
        "    print(path, isolation.run(new_imports, path, label=path))\n"
        "print('frameworks', [m for m in ('torch', 'onnx', 'tensorflow', 'keras') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=str(Path(lstm_inspect.__file__).parent.parent)))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(files) + 1
    for line in lines[:-1]:
        assert line.endswith(" []"), line
    assert lines[-1] == "frameworks []"  # preloading reads no framework in

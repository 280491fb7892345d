"""`check`'s progress bar: drawn on stderr when stderr is a terminal and the format is human, never otherwise
(machine formats, a pipe, a CI job)."""
from __future__ import annotations

import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import lstm_inspect
from conftest import FIXTURES


def _check_on_a_terminal(directory: Path, *options: str, **env: str) -> tuple[str, str]:
    """Run `check` with stderr on a pseudo-terminal 80 columns wide; its stdout and what the terminal showed."""
    master, slave = pty.openpty()
    os.set_inheritable(slave, True)
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(COLUMNS="80", TERM="xterm", PYTHONPATH=str(Path(lstm_inspect.__file__).parent.parent), **env)
    proc = subprocess.Popen([sys.executable, "-m", "lstm_inspect", "check", *options, str(directory)],
                            stdout=subprocess.PIPE, stderr=slave, env=environment)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # the terminal is closed once the command has ended
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read().decode()
    proc.wait(timeout=120)
    os.close(master)
    return stdout, shown.decode(errors="replace")


def _files(tmp_path: Path) -> Path:
    for name in ("k3_classic.keras", "k2_classic.h5", "k3_simplernn.keras"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def test_bar_on_a_terminal_in_the_human_format(tmp_path):
    stdout, shown = _check_on_a_terminal(_files(tmp_path))
    assert "checking" in shown and "3/3" in shown
    assert "checking" not in stdout and "3 files" in stdout  # the report itself is on stdout, without the bar


def test_no_bar_in_machine_formats_or_ci(tmp_path):
    directory = _files(tmp_path)
    for options, env in ((("--format", "json"), {}), (("--format", "junit"), {}), (("--format", "sarif"), {}),
                         (("--format", "github"), {}), ((), {"CI": "true"}), (("--no-progress",), {})):
        stdout, shown = _check_on_a_terminal(directory, *options, **env)
        assert "checking" not in shown and "\r" not in shown, (options, env)
        assert stdout or options == ("--format", "github"), (options, env)  # github: no annotation to give

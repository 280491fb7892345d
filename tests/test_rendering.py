"""Terminal output never lies: every command's output rendered at 80, 120 and 200 columns has no line wider than
the console, no value cut with "…", and every number of the data in the text, whole.

The commands run through click with COLUMNS set (output to no terminal honours it); `test_tmux_*` drives the real
console script in a real 80-column terminal (tmux) and reads the screen back.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from conftest import FIXTURES
from lstm_inspect.cli import cli
from lstm_inspect.render.check import _num as diff_num
from lstm_inspect.render.text import _DEFAULTS, _num as stat_num

WIDTHS = (80, 120, 200)
REPO = Path(__file__).resolve().parent.parent

INSPECTED = ["k2_classic.h5", "k3_bidi_concat.keras", "k2_bidi_gru.h5", "k3_gru_ra.keras", "k2_convlstm2d.h5",
             "k3_lambda_custom.keras", "k2_nested.h5", "k3_multi_io.keras", "k3_lstm_hardsig.keras"]


def render(width: int, *args: str) -> tuple[str, int]:
    result = CliRunner().invoke(cli, list(args), env={"COLUMNS": str(width), "NO_COLOR": None})
    assert "Traceback" not in result.output
    return result.stdout, result.exit_code


def assert_fits(text: str, width: int, ellipses: int = 0) -> None:
    """No line wider than `width`; no "…" but the `ellipses` the content itself has."""
    for line in text.splitlines():
        assert cell_len(line) <= width, f"{cell_len(line)} > {width}: {line!r}"
    assert text.count("…") == ellipses, f"a value was cut:\n{text}"


def words(text: str) -> set[str]:
    """Every whitespace-separated token of the text, also with the table rules and list commas stripped."""
    out = set()
    for token in text.split():
        out.add(token)
        out.add(token.strip("│┃,"))
    return out


NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:e[+-]?\d+)?%?")


def assert_numbers_shown(strings: list[str], text: str) -> None:
    """Every number inside `strings` (the data) appears whole in the rendered text."""
    joined = " ".join(text.split())
    for string in strings:
        for number in NUMBER.findall(string):
            assert number in joined, f"{number} (from {string!r}) is not in the output"


@pytest.mark.parametrize("name", INSPECTED)
@pytest.mark.parametrize("width", WIDTHS)
def test_inspect_fits_and_shows_every_value(name: str, width: int):
    path = str(FIXTURES / name)
    text, code = render(width, "inspect", path)
    assert code == 0
    assert_fits(text, width)
    report = json.loads(render(width, "inspect", path, "--json")[0])
    tokens = words(text)
    for layer in report["layers"]:
        assert f"{layer['params']:,}" in tokens
        for weight in layer["weights"]:
            assert_numbers_shown([str(weight["shape"])], text)
        for key, value in layer["config"].items():
            item = f"{key}={value}"
            if _DEFAULTS.get(key, object()) != value and " " not in item:  # shown, one word: never broken, so it is one token of the text
                assert item in tokens, f"{item} is missing or cut"
        rec = layer["recurrent"]
        for block in rec["blocks"] if rec else []:
            assert block["key"] in tokens and block["source"] in text
            stats = block["stats"]
            for name_ in ("mean", "std", "min", "max", "l2"):
                assert stat_num(stats[name_]) in tokens, f"{block['key']} {name_}={stats[name_]}"
            assert f"{stats['zero_fraction']:.0%}" in tokens


@pytest.mark.parametrize("width", WIDTHS)
def test_demo_fits_and_names_the_file_only(width: int):
    text, code = render(width, "demo")
    assert code == 0
    assert_fits(text, width)
    assert text.splitlines()[0] == "example_lstm.keras"
    for value in ("2.944e-04", "4.397e-04", "recurrent_activation=sigmoid", "10.9904"):
        assert value in words(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_check_and_list_rules_fit(width: int):
    files = [str(FIXTURES / n) for n in ("k2_classic.h5", "k3_lambda_custom.keras", "k2_lstm_init.h5")]
    text, _ = render(width, "check", *files, "--threshold", "spectral_norm_max=0.5", "--no-progress")
    assert_fits(text, width)
    data = json.loads(render(width, "check", *files, "--threshold", "spectral_norm_max=0.5", "--format", "json")[0])
    findings = [f for file in data["files"] for f in file["findings"]]
    assert findings
    assert_numbers_shown([f["message"] for f in findings], text)
    for finding in findings:
        assert finding["rule"] in words(text)
    rules, _ = render(width, "check", "--list-rules")
    assert "…" not in rules


@pytest.mark.parametrize("width", WIDTHS)
def test_diff_fits(width: int):
    a, b = str(FIXTURES / "k2_classic.h5"), str(FIXTURES / "k3_classic.keras")
    text, code = render(width, "diff", a, b, "--all")
    assert code in (0, 1)
    assert_fits(text, width)
    report = json.loads(render(width, "diff", a, b, "--json")[0])
    tokens = words(text)
    for entry in report["layers"]:
        for block in entry["blocks"]:
            assert block["key"] in tokens
            for field in ("max_abs_diff", "rel_frobenius", "cosine"):
                if block.get(field) is not None:
                    assert diff_num(block[field]) in tokens


@pytest.mark.parametrize("width", WIDTHS)
def test_explain_fits(width: int):
    for name in ("k3_bidi_concat.keras", "k2_gru_ra.h5"):
        text, code = render(width, "explain", str(FIXTURES / name))
        assert code == 0
        wide, _ = render(1000, "explain", str(FIXTURES / name))  # "(batch, …, 8)" is explain's own notation
        assert_fits(text, width, ellipses=wide.count("…"))


@pytest.fixture(scope="module")
def verify_result():
    from lstm_inspect.api import verify

    return verify(str(FIXTURES / "k3_bidi_concat.keras"))


@pytest.mark.parametrize("width", WIDTHS)
def test_verify_fits_with_a_header_on_every_column(verify_result, width: int):
    import io

    from lstm_inspect.render.forward_views import _sci, render_verify
    from lstm_inspect.render.text import make_console

    os.environ["COLUMNS"] = str(width)
    try:
        buffer = io.StringIO()
        render_verify(verify_result, make_console(file=buffer))
    finally:
        del os.environ["COLUMNS"]
    text = buffer.getvalue()
    assert_fits(text, width)
    header = next(line for line in text.splitlines() if line.startswith("layer "))
    assert [h.strip() for h in header.split("┃")] == ["layer", "shape", "max abs diff", "max rel diff", "status"]
    for d in verify_result.diffs:
        assert _sci(d.max_abs) in words(text) and _sci(d.max_rel) in words(text)


def test_piped_output_without_columns_uses_the_default_width(monkeypatch):
    from lstm_inspect.render import text as text_module

    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.setattr(sys, "__stderr__", None)
    monkeypatch.setattr(sys, "__stdin__", None)
    assert text_module.output_width(False) == text_module.DEFAULT_WIDTH
    monkeypatch.setenv("COLUMNS", "91")
    assert text_module.output_width(False) == 91


def test_color_never_always_and_no_color():
    always = CliRunner().invoke(cli, ["--color", "always", "demo"])
    assert "\x1b[" in always.stdout
    for args, env in ((["--color", "never", "demo"], {}), (["demo"], {"NO_COLOR": "1"}), (["demo"], {})):
        result = CliRunner().invoke(cli, args, env=env)
        assert result.exit_code == 0 and "\x1b[" not in result.stdout


def test_pager_only_when_asked(monkeypatch):
    """--pager sends the same text through click's pager (to stdout when that is no terminal); without it no pager
    is started."""
    import click

    calls = []
    monkeypatch.setattr(click, "echo_via_pager", lambda text, color=None: calls.append(text))
    plain = CliRunner().invoke(cli, ["demo"], env={"COLUMNS": "80"})
    assert calls == []
    paged = CliRunner().invoke(cli, ["--pager", "demo"], env={"COLUMNS": "80"})
    assert paged.exit_code == 0 and calls == [plain.stdout]


# --- a real terminal --------------------------------------------------------------------------------------------


def _tmux_session(command: str, width: int = 80, watch: str | None = None) -> tuple[list[str], str]:
    """Run `command` in a fresh tmux session `width` columns wide. Returns what matched the regex `watch` on the
    screen while it ran, and the final screen (with its scroll-back) from the command's first line of output to its
    last, lines the terminal wrapped joined back (-J) so that a line wider than the terminal shows as one."""
    if shutil.which("tmux") is None:
        pytest.fail("tmux is not installed (apt-get install -y tmux; .ci/run does it)")
    socket, session = f"lstm-inspect-test-{uuid.uuid4().hex[:8]}", "render"
    # The echoed words are typed split ("__DO""NE__") so that the command line itself never matches them.
    start_marker, marker = "__START__", "__DONE__"
    tmux = ["tmux", "-L", socket, "-f", "/dev/null"]
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TMUX")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    seen: list[str] = []
    subprocess.run(tmux + ["new-session", "-d", "-s", session, "-x", str(width), "-y", "50",
                           "bash --norc --noprofile"], check=True, env=env)
    try:
        subprocess.run(tmux + ["set-option", "-t", session, "history-limit", "5000"], check=True)
        subprocess.run(tmux + ["send-keys", "-t", session, f'clear; echo __ST""ART__; {command}; echo __DO""NE__$?',
                               "Enter"], check=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            screen = subprocess.run(tmux + ["capture-pane", "-p", "-J", "-S", "-5000", "-t", session],
                                    capture_output=True, text=True, check=True).stdout
            if watch:
                seen += [m.group(0) for m in re.finditer(watch, screen)]
            if re.search(rf"^{marker}\d+", screen, re.M):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"{command} did not finish in the terminal:\n{screen}")
    finally:
        subprocess.run(tmux + ["kill-server"], check=False)
    lines = screen.splitlines()
    start = next(i for i, line in enumerate(lines) if line == start_marker) + 1
    end = next(i for i, line in enumerate(lines) if line.startswith(marker))
    assert lines[end] == f"{marker}0", "\n".join(lines)
    return seen, "\n".join(lines[start:end])


def _tmux_screen(command: str, width: int = 80) -> str:
    return _tmux_session(command, width)[1]


def _cli(args: str) -> str:
    return f"{sys.executable} -m lstm_inspect {args}"


def test_tmux_demo_at_80_columns(tmp_path):
    screen = _tmux_screen(_cli("demo"))
    (Path(os.environ.get("LSTM_INSPECT_SCREENS", tmp_path)) / "demo-80.txt").write_text(screen + "\n")
    assert_fits(screen, 80)
    assert screen.splitlines()[0] == "example_lstm.keras"
    tokens = words(screen)
    report = json.loads(render(80, "demo", "--json")[0])
    for block in report["layers"][1]["recurrent"]["blocks"]:
        for name in ("mean", "std", "min", "max", "l2"):
            assert stat_num(block["stats"][name]) in tokens
    assert "recurrent_activation=sigmoid" in tokens


def test_tmux_bidirectional_at_80_columns(tmp_path):
    path = FIXTURES / "k2_bidi_concat.h5"
    screen = _tmux_screen(_cli(f"inspect {path}"))
    (Path(os.environ.get("LSTM_INSPECT_SCREENS", tmp_path)) / "bidi-80.txt").write_text(screen + "\n")
    assert_fits(screen, 80)
    report = json.loads(render(80, "inspect", str(path), "--json")[0])
    tokens = words(screen)
    recurrent = [layer for layer in report["layers"] if layer["recurrent"]]
    assert len(recurrent) == 2  # the two directions
    for layer in recurrent:
        assert layer["path"] in screen
        for block in layer["recurrent"]["blocks"]:
            for name in ("mean", "std", "min", "max", "l2"):
                assert stat_num(block["stats"][name]) in tokens

"""Shared helpers of the hostile-file tests: run the CLI in-process and assert its one-line refusal."""
from __future__ import annotations

from click.testing import CliRunner

from lstm_inspect.cli import cli


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line_error(result, *needles):
    """The refusal every bad file gets: exit 2 and exactly one line on stderr, holding each of `needles`."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm-inspect: error: "), result.stderr
    assert all(n in lines[0] for n in needles), lines[0]
    return lines[0]

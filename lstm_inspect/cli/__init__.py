"""The command line: a thin click layer over the library. Only this package imports click.

Each group of commands lives in its own module (`commands_*.py`) and registers itself on `cli` when imported
at the bottom of this file.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from .. import __version__
from ..errors import ExitCode, InspectError


class _DefaultToInspect(click.Group):
    """`lstm-inspect MODEL` means `lstm-inspect inspect MODEL`."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        first = next((i for i, a in enumerate(args) if not a.startswith("-")), None)
        if first is not None and args[first] not in self.commands:
            args = args[:first] + ["inspect"] + args[first:]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToInspect, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lstm-inspect")
@click.option("--traceback", is_flag=True, help="Show the Python traceback of an error (for debugging).")
def cli(traceback: bool) -> None:
    """Open saved Keras models without TensorFlow and show what is inside their recurrent layers.

    `lstm-inspect MODEL` is short for `lstm-inspect inspect MODEL`.
    """


def layer_option(func: Any) -> Any:
    return click.option("--layer", "layers", multiple=True, metavar="NAME",
                        help="Only layers whose path contains NAME (repeatable).")(func)


def main(argv: list[str] | None = None) -> int:
    """The console script: one error boundary mapping failures to a one-line message and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args
    try:
        cli.main(args=args, prog_name="lstm-inspect", standalone_mode=False)
    except InspectError as exc:
        if show_traceback:
            raise
        click.echo(f"lstm-inspect: error: {exc}", err=True)
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("lstm-inspect: aborted", err=True)
        return int(ExitCode.BAD_INPUT)
    except click.ClickException as exc:
        exc.show()
        return int(ExitCode.BAD_INPUT)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except BrokenPipeError:
        # Output piped into `head` and closed: not an error. Point stdout at devnull so exit does not complain.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return int(ExitCode.OK)
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        if show_traceback:
            raise
        click.echo(f"lstm-inspect: internal error: {type(exc).__name__}: {exc} (run with --traceback for details)",
                   err=True)
        return int(ExitCode.INTERNAL)
    return int(ExitCode.OK)


from . import commands_inspect  # noqa: E402,F401  (registers its commands)

if __name__ == "__main__":
    sys.exit(main())

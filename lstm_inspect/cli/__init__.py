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


class _Boundary(click.Group):
    """The one error boundary of the CLI, and the default command.

    Expected failures (`InspectError`) become one line on stderr and their exit code; anything else is a bug,
    reported in one line with exit code 3. ``--traceback`` re-raises instead.
    ``lstm-inspect MODEL`` means ``lstm-inspect inspect MODEL``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        group_options = {"--traceback", "--version", "-h", "--help"}
        first = next((i for i, a in enumerate(args) if a not in group_options), None)
        if first is not None and args[first] not in self.commands:
            args = args[:first] + ["inspect"] + args[first:]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except InspectError as exc:
            if ctx.params.get("traceback"):
                raise
            click.echo(f"lstm-inspect: error: {exc}", err=True)
            ctx.exit(int(exc.exit_code))
        except BrokenPipeError:
            # Output piped into `head` and closed: not an error. Point stdout at devnull so exit is quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            ctx.exit(int(ExitCode.OK))
        except Exception as exc:
            if ctx.params.get("traceback"):
                raise
            click.echo(f"lstm-inspect: internal error: {type(exc).__name__}: {exc} "
                       "(run with --traceback for details)", err=True)
            ctx.exit(int(ExitCode.INTERNAL))


@click.group(cls=_Boundary, context_settings={"help_option_names": ["-h", "--help"]})
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
    """The console script."""
    try:
        cli.main(args=argv, prog_name="lstm-inspect", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return int(ExitCode.OK)


from . import commands_inspect  # noqa: E402,F401  (registers its commands)
from . import commands_check  # noqa: E402,F401  (registers its commands)
from . import commands_forward  # noqa: E402,F401  (registers its commands)

if __name__ == "__main__":
    sys.exit(main())

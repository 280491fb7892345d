"""The command line: a thin click layer over the library. The only module that imports click."""
from __future__ import annotations

import json
import os
import sys
from typing import Any

import click

from . import __version__
from .errors import ExitCode, InspectError


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


def _layer_option(func: Any) -> Any:
    return click.option("--layer", "layers", multiple=True, metavar="NAME",
                        help="Only layers whose path contains NAME (repeatable).")(func)


@cli.command("inspect")
@click.argument("model", type=click.Path())
@_layer_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/json-schema.md).")
@click.option("--no-stats", is_flag=True, help="Shapes only: read no tensor data.")
def inspect_command(model: str, layers: tuple[str, ...], as_json: bool, no_stats: bool) -> None:
    """Show the layer tree, parameter counts and per-gate blocks of MODEL."""
    from .api import inspect

    report = inspect(model, layers=layers, stats=not no_stats)
    _emit_report(report, as_json)


@cli.command("export")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .npz file to write.")
@_layer_option
@click.option("--fused", is_flag=True, help="Write the original fused kernel/recurrent_kernel/bias arrays.")
def export_command(model: str, output: str, layers: tuple[str, ...], fused: bool) -> None:
    """Write every weight of MODEL to an .npz of plain arrays keyed <layer path>/<block>."""
    from .api import export

    keys = export(model, output, layers=layers, fused=fused)
    click.echo(f"wrote {len(keys)} arrays to {output}", err=True)


@cli.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo_command(as_json: bool) -> None:
    """Inspect the bundled example: LSTM(120, relu) -> Dense(100) -> Dense(50) -> Dense(1)."""
    from .api import example_path, inspect

    _emit_report(inspect(example_path()), as_json)


def _emit_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    from .render.text import make_console, render_inspect

    render_inspect(report, make_console())


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


if __name__ == "__main__":
    sys.exit(main())

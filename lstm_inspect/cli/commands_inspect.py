"""`inspect`, `export` and `demo`: reading a model and writing its gate blocks."""
from __future__ import annotations

import os
from typing import Any

import click

from . import MODEL, cli, isolated, layer_option, shown_path
from ..text_safety import dumps, visible


@cli.command("inspect")
@click.argument("model", type=MODEL)
@layer_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schema: docs/json-schema.md).")
@click.option("--no-stats", is_flag=True, help="Shapes only: read no tensor data.")
def inspect_command(model: str, layers: tuple[str, ...], as_json: bool, no_stats: bool) -> None:
    """Show the layer tree, parameter counts and per-gate blocks of MODEL."""
    report = isolated(_inspect_data, model, layers, not no_stats, label=model)
    report["file"] = shown_path(report["file"])
    _emit_report(report, as_json)


def _inspect_data(model: str, layers: tuple[str, ...], stats: bool) -> dict[str, Any]:
    """The report, read in the isolated child: the reading modules (numpy, h5py, the readers) are imported there,
    and this process, which only shows the answer, never loads them."""
    from ..api import inspect

    return inspect(model, layers, stats)


def _export_data(model: str, output: str, layers: tuple[str, ...]) -> list[str]:
    from ..api import export  # in the reading child (see _inspect_data)

    return export(model, output, layers)


@cli.command("export")
@click.argument("model", type=MODEL)
@click.option("-o", "--output", required=True, type=click.Path(),
              help="The file to write: .npz, or .safetensors (needs the safetensors package).")
@layer_option
@click.option("--fused", is_flag=True,
              help="With --layout keras: Keras's fused kernel/recurrent_kernel/bias per recurrent layer, ready for "
                   "layer.set_weights (the originals for Keras files; converted from torch / ONNX / TF1 files).")
@click.option("--layout", type=click.Choice(["keras", "torch", "onnx"]), default="keras", show_default=True,
              help="keras: gate blocks <layer path>/<block>; torch: torch.nn.LSTM/GRU/RNN state dicts; "
                   "onnx: W, R, B of the ONNX LSTM/GRU/RNN operators (docs/npz-keys.md).")
@click.option("--forget-bias", type=float, default=None, metavar="F",
              help="TF1 checkpoints: the forget_bias the LSTM cells added to f at run time (not stored; TF1's "
                   "default is 1.0). Required to convert them (torch, onnx, keras --fused); added to b_f.")
@click.option("--merge-stacked", is_flag=True,
              help="torch: consecutive compatible recurrent layers become one torch module with num_layers=N "
                   "(keys _l0, _l1, ...); stderr says why a neighbour was not merged.")
def export_command(model: str, output: str, layers: tuple[str, ...], fused: bool, layout: str,
                   forget_bias: float | None, merge_stacked: bool) -> None:
    """Write every weight of MODEL to an .npz of plain arrays keyed <layer path>/<block>, Keras's fused arrays
    (--fused, converted from torch / ONNX / TF1 files), or the recurrent layers converted to the torch or ONNX
    layout."""
    from ..output_paths import ARRAYS, checked_output

    checked_output(output, ARRAYS)  # refused before any reading
    if merge_stacked and layout != "torch":
        raise click.UsageError("--merge-stacked only applies to --layout torch (one torch module, several layers)")
    if layout == "keras" and not fused:
        keys = isolated(_export_data, model, output, layers, label=model)
        click.echo(f"wrote {len(keys)} arrays to {visible(output)}", err=True)
        return
    if fused and layout != "keras":
        raise click.UsageError(f"--fused only applies to --layout keras (the {layout} layout is fused already)")
    def convert() -> dict[str, Any]:
        from ..api import export_layout  # in the reading child (see _inspect_data)

        converted = export_layout(model, output, layout=layout, layers=layers, forget_bias=forget_bias,
                                  merge_stacked=merge_stacked, fused=fused)
        return {"messages": converted.messages(), "count": len(converted.arrays)}

    done = isolated(convert, label=model)
    for line in done["messages"]:
        click.echo(visible(line), err=True)
    click.echo(f"wrote {done['count']} arrays ({layout} layout) to {visible(output)}", err=True)


@cli.command("demo")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def demo_command(as_json: bool) -> None:
    """Inspect the bundled example: LSTM(120, relu) -> Dense(100) -> Dense(50) -> Dense(1)."""
    from ..api import example_path, inspect

    report = inspect(example_path())
    report["file"] = os.path.basename(report["file"])  # where pip put it says nothing about the model
    _emit_report(report, as_json)


def _emit_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(dumps(report))
        return
    from ..render.text import make_console, render_inspect

    render_inspect(report, make_console())



"""`report` and `plot`: the gates as pictures (an HTML page, image files)."""
from __future__ import annotations

import os

import click

from . import MODEL, cli, isolated, layer_option
from ..text_safety import visible


@cli.command("report")
@click.argument("model", type=MODEL)
@click.option("-o", "--output", required=True, type=click.Path(), help="The .html file to write.")
@click.option("--input", "input_path", type=click.Path(),
              help="X.npy, or X.npz keyed by input name, for the activations; a seeded random input otherwise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input.")
@layer_option
def report_command(model: str, output: str, input_path: str | None, seed: int, layers: tuple[str, ...]) -> None:
    """Write one self-contained HTML page about MODEL: layer tree, check findings, and per recurrent layer a
    heatmap of every gate block, histograms, bias profiles, norms, singular values and gate activations over
    time. Opens offline; loads nothing and runs no script."""
    from ..output_paths import HTML, checked_output
    from ..render.pictures import report
    from .commands_forward import _load_inputs

    checked_output(output, HTML)  # refused before any reading
    inputs = _load_inputs(input_path) if input_path else None
    label = os.path.basename(input_path) if input_path else None
    done = isolated(report, model, output, inputs, layers, seed, label, label=model)
    if not done["traces"]:  # e.g. an --input that does not fit: the page says why, and so does stderr
        click.echo(visible(done["input_note"]), err=True)
    click.echo(f"wrote {output} ({done['bytes'] / 1e6:.2f} MB: {len(done['layers'])} recurrent layers, "
               f"{len(done['blocks'])} gate blocks, {len(done['traces'])} activation maps)", err=True)


@cli.command("plot")
@click.argument("model", type=MODEL)
@click.option("-o", "--output", "directory", required=True, type=click.Path(file_okay=False),
              help="The directory to write into (made when missing): <layer path>/<block>.<format>.")
@click.option("--format", "image_format", type=click.Choice(["png", "svg"]), default="png", show_default=True)
@click.option("--input", "input_path", type=click.Path(),
              help="X.npy, or X.npz keyed by input name, for the activations; a seeded random input otherwise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input.")
@layer_option
def plot_command(model: str, directory: str, image_format: str, input_path: str | None, seed: int,
                 layers: tuple[str, ...]) -> None:
    """Write the report's figures of MODEL as image files, one per gate block (heatmap or bias profile) plus
    histograms, singular values, activations and saturation per recurrent layer. Needs matplotlib:
    pip install 'lstm-inspect[plot]'."""
    from ..render.pictures import plot
    from ..render.plots import require_matplotlib
    from .commands_forward import _load_inputs

    require_matplotlib()  # before any work: without the extra, one line and exit 2
    inputs = _load_inputs(input_path) if input_path else None
    written = isolated(plot, model, directory, image_format, inputs, layers, seed, label=model)
    click.echo(f"wrote {len(written)} {image_format} files under {directory}", err=True)

"""`report` and `plot`: the gates as pictures (an HTML page, image files)."""
from __future__ import annotations

import os

import click

from . import cli, isolated, layer_option


@cli.command("report")
@click.argument("model", type=click.Path())
@click.option("-o", "--output", required=True, type=click.Path(), help="The .html file to write.")
@click.option("--input", "input_path", type=click.Path(),
              help="X.npy, or X.npz keyed by input name, for the activations; a seeded random input otherwise.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random input.")
@layer_option
def report_command(model: str, output: str, input_path: str | None, seed: int, layers: tuple[str, ...]) -> None:
    """Write one self-contained HTML page about MODEL: layer tree, check findings, and per recurrent layer a
    heatmap of every gate block, histograms, bias profiles, norms, singular values and gate activations over
    time. Opens offline; loads nothing and runs no script."""
    from ..render.html_report import write_report
    from .commands_forward import _load_inputs

    inputs = _load_inputs(input_path) if input_path else None
    label = os.path.basename(input_path) if input_path else None
    done = isolated(write_report, model, output, inputs, layers, seed, label, label=model)
    click.echo(f"wrote {output} ({done['bytes'] / 1e6:.2f} MB: {len(done['layers'])} recurrent layers, "
               f"{len(done['blocks'])} gate blocks, {len(done['traces'])} activation maps)", err=True)

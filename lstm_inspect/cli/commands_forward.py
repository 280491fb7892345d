"""`forward`, `verify` and `explain`: running a model in numpy, checking it against Keras, writing its equations."""
from __future__ import annotations

import os
import sys
from typing import Any

import click

from . import MODEL, cli, isolated, layer_option, shown_path
from ..errors import InspectError
from ..text_safety import dumps, visible, visible_lines


def _load_inputs(path: str) -> Any:
    """An .npy array, or an .npz keyed by input name (``input`` / ``input/<name>`` also accepted)."""
    import numpy as np

    if not os.path.isfile(path):
        raise InspectError("no such input file", path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(6)
        if head.startswith(b"\x93NUMPY"):
            return np.load(path, allow_pickle=False)
        if head.startswith(b"PK"):
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
            inputs = {k: v for k, v in arrays.items() if k == "input" or k.startswith("input/")}
            return inputs or arrays
    except (ValueError, OSError) as exc:
        raise InspectError(f"cannot read input arrays: {exc}", path) from exc
    raise InspectError("input must be a .npy array or an .npz of arrays keyed by input name", path)


def _whole_number(text: str, option: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise click.BadParameter(f"{text!r} is neither 'auto' nor a whole number of at least 1", param_hint=option)
    return value


@cli.command("forward")
@click.argument("model", type=MODEL)
@click.option("--input", "input_path", required=True, type=click.Path(),
              help="X.npy, or X.npz with one array per model input keyed by input name.")
@click.option("-o", "--output", required=True, type=click.Path(), help="The .npz file to write.")
@layer_option
@click.option("--trace", is_flag=True,
              help="Also write per-step gates and states of recurrent layers (<layer>/i, /f, /c, /o, /cell, /hidden; "
                   "GRU /z, /r, /h, /hidden), each (batch, time, units).")
@click.option("--float64", "float64", is_flag=True,
              help="Compute in float64: a reference run (default: the file's precision, float32 for float32 weights "
                   "like Keras).")
@click.option("--float32", "float32", is_flag=True, help="Compute in float32 even when the weights are float64.")
@click.option("--forget-bias", type=float, default=None,
              help="TF1 checkpoints: the forget_bias of LSTMCell / BasicLSTMCell (not stored) [default: 1.0].")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), default=None,
              help="PyTorch files: torch.nn.RNN's nonlinearity (not stored in a state dict) [default: tanh].")
@click.option("--threads", default="auto", show_default=True, metavar="N|auto",
              help="Threads a recurrent layer's batch rows may run on (same results): auto splits a large batch "
                   "over the usable CPUs unless the machine is busy; 1 never splits.")
def forward_command(model: str, input_path: str, output: str, layers: tuple[str, ...], trace: bool,
                    float64: bool, float32: bool, forget_bias: float | None, nonlinearity: str | None,
                    threads: str) -> None:
    """Run MODEL on the inputs in numpy and write every layer's output to an .npz keyed by layer path
    (the model's output under __output__). --layer NAME stops once that layer has run.

    PyTorch, ONNX and TF1 files: each recurrent module (or the --layer ones) runs on X (batch, time, features)
    with its framework's semantics, writing its output sequence and final states (docs/forward.md)."""
    import numpy as np

    from ..api import forward
    from ..exporter import write_npz

    from ..output_paths import NPZ, checked_output

    if float64 and float32:
        raise click.UsageError("--float64 and --float32 exclude each other")
    row_threads = None if threads.strip().lower() == "auto" else _whole_number(threads, "--threads")
    checked_output(output, NPZ)  # refused before the run
    inputs = _load_inputs(input_path)

    def run_and_write() -> tuple[int, list[str]]:
        from ..run import native_forward
        from ..model import select_layers
        from ..readers import open_model

        with open_model(model) as opened:
            native = native_forward.handles(opened)
            notes = native_forward.stated_defaults(opened, layers, forget_bias, nonlinearity) if native else []
            if not native:
                select_layers(opened, layers)  # a --layer that matches nothing, before the inputs are checked
        dtype = np.float64 if float64 else np.float32 if float32 else None  # None: the file's precision
        result = forward(model, inputs, layers=layers, trace=trace, dtype=dtype, forget_bias=forget_bias,
                         nonlinearity=nonlinearity, threads=row_threads)
        write_npz(result, output)
        return len(result), notes

    count, notes = isolated(run_and_write, label=model)
    for note in notes:
        click.echo(visible(note), err=True)
    click.echo(f"wrote {count} arrays to {visible(output)}", err=True)


@cli.command("verify")
@click.argument("model", type=MODEL)
@click.option("--input", "input_path", type=click.Path(), help="Inputs (.npy / .npz); random ones otherwise.")
@click.option("--batch", default=2, show_default=True, type=click.IntRange(1), help="Batch size of random inputs.")
@click.option("--steps", default=8, show_default=True, type=click.IntRange(1),
              help="Time steps of random inputs where the model leaves the time axis free.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the random inputs.")
@click.option("--rtol", default=None, type=float,
              help="A fixed relative tolerance instead of the noise-aware default (--atol then 1e-06 unless given).")
@click.option("--atol", default=None, type=float,
              help="A fixed absolute tolerance instead of the noise-aware default (--rtol then 1e-05 unless given).")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@layer_option
@click.option("--forget-bias", type=float, default=None,
              help="TF1 checkpoints: the forget_bias of LSTMCell / BasicLSTMCell, given to both runs [default: 1.0].")
@click.option("--nonlinearity", type=click.Choice(["tanh", "relu"]), default=None,
              help="PyTorch files: torch.nn.RNN's nonlinearity, given to both runs [default: tanh].")
def verify_command(model: str, input_path: str | None, batch: int, steps: int, seed: int, rtol: float | None,
                   atol: float | None, as_json: bool, layers: tuple[str, ...], forget_bias: float | None,
                   nonlinearity: str | None) -> None:
    """Compare the numpy forward pass with Keras itself, layer by layer (needs the optional Keras extra).
    PyTorch, ONNX and TF1 files: each recurrent module against torch, onnxruntime or TensorFlow.

    Exit 0 when every output is within tolerance, 1 otherwise. By default each layer is held to its own float32
    rounding (|numpy - ref| <= 10*|numpy float32 - numpy float64| + a floor); --rtol / --atol ask for a fixed
    |numpy - ref| <= atol + rtol*|ref| instead."""
    from ..api import verify
    from ..run.verify_keras import to_dict

    from ..render.forward_views import verify_progress

    inputs = _load_inputs(input_path) if input_path else None
    with verify_progress(enabled=sys.stderr.isatty()) as progress:
        result = verify(model, inputs=inputs, batch=batch, steps=steps, seed=seed,
                        rtol=rtol, atol=atol, layers=layers, forget_bias=forget_bias,
                        nonlinearity=nonlinearity, progress=progress)
    result.path = shown_path(result.path)
    if as_json:
        click.echo(dumps(to_dict(result)))
    else:
        from ..render.forward_views import render_verify
        from ..render.text import make_console

        render_verify(result, make_console())
    if not result.ok:
        raise click.exceptions.Exit(1)


@cli.command("explain")
@click.argument("model", type=MODEL)
@layer_option
@click.option("--markdown", is_flag=True, help="Print Markdown (for an issue or a notebook) instead of panels.")
def explain_command(model: str, layers: tuple[str, ...], markdown: bool) -> None:
    """Write out the equations each layer computes, with this file's slices, shapes and pitfalls."""
    from ..api import explain
    from ..run.explain import to_markdown

    result = explain(model, layers=layers)
    result.path = shown_path(result.path)
    if markdown:
        click.echo(visible_lines(to_markdown(result)))
        return
    from ..render.forward_views import render_explain
    from ..render.text import make_console

    render_explain(result, make_console())

"""The picture-making operations as functions (the CLI's `report`, `plot`, `diff --html`; `lstm_inspect.report`,
`.plot`, `.block_figure`). They live here, not in `api.py`, because they draw: `render/` sits above the API."""
from __future__ import annotations

import os
from typing import Any

from ..errors import InspectError
from ..readers import open_model


def report(path: str | os.PathLike[str], output: str | os.PathLike[str], inputs: Any = None,
           layers: tuple[str, ...] | list[str] = (), seed: int = 0, input_label: str | None = None) -> dict[str, Any]:
    """Write the HTML report of `lstm-inspect report`: one self-contained page (no network, no script) with every
    recurrent layer's gate heatmaps, histograms, bias profiles, norms and spectra, the check findings, and gate
    activations over time from a traced forward pass on `inputs` (a seeded random input when None).
    Returns ``{"output", "bytes", "layers", "blocks", "traces", "input_note"}``."""
    from .figure_data import collect
    from .html_report import report_page

    figures = collect(os.fspath(path), layers, inputs, seed, input_label)
    page = report_page(figures).encode("utf-8")
    with open(output, "wb") as handle:
        handle.write(page)
    return {"output": os.fspath(output), "bytes": len(page), "layers": [f.path for f in figures.layers],
            "blocks": [b.key for f in figures.layers for b in f.blocks],
            "traces": [t.key for f in figures.layers for t in f.traces], "input_note": figures.input_note}


def plot(path: str | os.PathLike[str], directory: str | os.PathLike[str], image_format: str = "png",
         inputs: Any = None, layers: tuple[str, ...] | list[str] = (), seed: int = 0) -> list[str]:
    """`lstm-inspect plot`: the report's figures as image files under `directory` (``<layer path>/<block>.png``,
    histograms, singular values, activations); returns the files written. Needs matplotlib (the ``plot`` extra)."""
    from .figure_data import collect
    from .plots import require_matplotlib, write_plots

    require_matplotlib()
    figures = collect(os.fspath(path), layers, inputs, seed)
    os.makedirs(directory, exist_ok=True)
    return write_plots(figures, os.fspath(directory), image_format)


def block_figure(source: Any, key: str) -> Any:
    """A matplotlib figure of one gate block, by export key (``"lstm/U_f"``, ``"bidi/forward_lstm/b_f"``): the
    report's heatmap (on the layer's colour scale) or bias profile. `source` is a path or an opened model."""
    from ..gates import split as split_gates
    from .figure_data import layer_figures
    from .plots import block_figure as draw, require_matplotlib

    require_matplotlib()
    if isinstance(source, (str, os.PathLike)):
        with open_model(source) as model:
            return block_figure(model, key)
    layer_path, _, block_name = key.rpartition("/")
    layer = next((layer for layer in source.layers if layer.key == layer_path), None)
    split = split_gates(layer) if layer is not None else None
    if split is None or split.block(block_name) is None:
        raise InspectError(f"no gate block {key!r} (keys are <layer path>/<block>, as `export` writes them)",
                           source.path)
    figures = layer_figures(split)
    return draw(figures.block(block_name), figures)


def diff_html(a: str | os.PathLike[str], b: str | os.PathLike[str], output: str | os.PathLike[str],
              atol: float = 0.0, layers: tuple[str, ...] | list[str] = ()) -> dict[str, Any]:
    """`lstm-inspect diff A B --html OUT`: write the page and return the diff record."""
    from ..analysis.diff import diff_models
    from .html_diff import delta_figures, diff_page

    with open_model(a) as model_a, open_model(b) as model_b:
        record = diff_models(model_a, model_b, atol=atol, layers=layers)
    page = diff_page(record, delta_figures(os.fspath(a), os.fspath(b), record)).encode("utf-8")
    with open(output, "wb") as handle:
        handle.write(page)
    return record

"""The report's figures as matplotlib figures and image files (`lstm-inspect plot`, `lstm_inspect.block_figure`).

matplotlib is the optional ``plot`` extra: `require_matplotlib` turns its absence into one line saying how to
install it. The numbers are the report's (`figure_data`): the same pooling, colour scale, bins and traces.
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..errors import InspectError
from .figure_data import SATURATION_HIGH, SATURATION_LOW, BlockFigure, LayerFigures, ModelFigures, TraceFigure
from .png import DIVERGING, SEQUENTIAL
from .svg import GATE_COLOURS

INSTALL_HINT = "matplotlib is needed for this: pip install 'lstm-inspect[plot]'"


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), or one-line InspectError naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise InspectError(INSTALL_HINT) from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _cmap(anchors: tuple[str, ...]) -> Any:
    from matplotlib.colors import LinearSegmentedColormap

    cmap = LinearSegmentedColormap.from_list("lstm-inspect", list(anchors))
    cmap.set_bad("#ff00ff")
    return cmap


def _colour(layer: LayerFigures, gate: str) -> str:
    return GATE_COLOURS[layer.gates.index(gate) % len(GATE_COLOURS)] if gate in layer.gates else GATE_COLOURS[0]


def block_figure(block: BlockFigure, layer: LayerFigures) -> Any:
    """A heatmap of a W / U / proj block on the layer's colour scale, or a bias / peephole profile over units."""
    plt = require_matplotlib()
    if block.matrix is not None:
        rows, cols = block.matrix.shape
        fig, ax = plt.subplots(figsize=(5.2, max(1.6, min(6.5, 4.6 * rows / max(cols, 1)) + 1.0)))
        image = ax.imshow(np.ma.masked_invalid(block.matrix), cmap=_cmap(DIVERGING), vmin=-layer.scale,
                          vmax=layer.scale, aspect="auto", interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
        ax.set_xlabel("unit" + (f" (pooled ×{block.window[1]})" if block.window[1] > 1 else ""))
        ax.set_ylabel(("input" if block.kind == "W" else "previous h" if block.kind == "U" else "row")
                      + (f" (pooled ×{block.window[0]})" if block.window[0] > 1 else ""))
    else:
        fig, ax = plt.subplots(figsize=(5.2, 2.6))
        ax.plot(block.vector, color=_colour(layer, block.gate), linewidth=1.2)
        ax.axhline(0, color="#8a8f98", linewidth=0.6)
        ax.set_xlabel("unit")
        ax.set_ylabel("value")
    ax.set_title(f"{block.key}  {tuple(block.shape)}", fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def histogram_figure(layer: LayerFigures, kind: str) -> Any:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for block in layer.of_kind(kind):
        if block.histogram is not None:
            share = block.histogram / max(block.histogram.sum(), 1)
            ax.stairs(share, layer.bins, color=_colour(layer, block.gate), label=block.block, linewidth=1.3)
    return _finish_line_plot(fig, ax, f"value of {kind}", "share of values", f"{layer.path}: {kind} per gate")


def spectrum_figure(layer: LayerFigures) -> Any:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    for block in layer.of_kind("U"):
        if block.singular_values is not None:
            ax.semilogy(block.singular_values, color=_colour(layer, block.gate), label=block.block, linewidth=1.3)
    return _finish_line_plot(fig, ax, "index", "singular value", f"{layer.path}: singular values of U")


def _finish_line_plot(fig: Any, ax: Any, xlabel: str, ylabel: str, title: str) -> Any:
    """Axis labels, the per-gate legend and the title shared by the histogram and spectrum figures."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title(title, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def trace_figure(trace: TraceFigure) -> Any:
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    image = ax.imshow(np.ma.masked_invalid(trace.matrix), cmap=_cmap(SEQUENTIAL if trace.is_gate else DIVERGING),
                      vmin=trace.low, vmax=trace.high, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03)
    ax.set_xlabel("time step")
    ax.set_ylabel("unit" + (" (mean over positions)" if trace.spatial_mean else ""))
    ax.set_title(trace.key, fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def saturation_figure(layer: LayerFigures) -> Any:
    plt = require_matplotlib()
    gates = [t for t in layer.traces if t.is_gate]
    fig, ax = plt.subplots(figsize=(5.2, 0.6 + 0.45 * len(gates)))
    names = [t.name for t in gates]
    ax.barh(names, [t.saturated_low or 0 for t in gates], color="#8c959f", label=f"< {SATURATION_LOW}")
    ax.barh(names, [t.saturated_high or 0 for t in gates], left=[t.saturated_low or 0 for t in gates],
            color="#cf222e", label=f"> {SATURATION_HIGH}")
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of saturated values")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.set_title(f"{layer.path}: saturated gates", fontsize=10, loc="left")
    fig.tight_layout()
    return fig


def safe_part(part: str) -> str:
    """A layer name as a directory name: only letters, digits, '.', '_' and '-', never '.' or '..' or empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", part).lstrip(".")
    return cleaned or "_"


def write_plots(figures: ModelFigures, directory: str, image_format: str = "png") -> list[str]:
    """Every figure of the report as a file: ``DIR/<layer path>/<block>.<format>`` (W_f, U_f, b_f, ...),
    ``histogram_W``, ``histogram_U``, ``singular_values``, ``activation_<gate>`` and ``saturation``."""
    plt = require_matplotlib()
    written = []

    def save(fig: Any, folder: str, name: str) -> None:
        target = os.path.join(folder, f"{safe_part(name)}.{image_format}")
        fig.savefig(target, format=image_format, dpi=120)
        plt.close(fig)
        written.append(target)

    folders: set[str] = set()
    for layer in figures.layers:
        folder = base = os.path.join(directory, *(safe_part(p) for p in layer.path.split("/")))
        count = 1
        while folder in folders:  # two names that differ only in characters replaced by '_'
            count += 1
            folder = f"{base}_{count}"
        folders.add(folder)
        os.makedirs(folder, exist_ok=True)
        for block in layer.blocks:
            save(block_figure(block, layer), folder, block.block)
        for kind in ("W", "U"):
            if any(b.histogram is not None for b in layer.of_kind(kind)):
                save(histogram_figure(layer, kind), folder, f"histogram_{kind}")
        if any(b.singular_values is not None for b in layer.of_kind("U")):
            save(spectrum_figure(layer), folder, "singular_values")
        for trace in layer.traces:
            save(trace_figure(trace), folder, f"activation_{trace.name}")
        if any(t.is_gate for t in layer.traces):
            save(saturation_figure(layer), folder, "saturation")
    return written

"""What the figures of `report`, `plot` and the notebook views show, computed once as plain numbers.

One recurrent layer at a time: its gate blocks pooled for heatmaps (max-|w| pooling to at most 512 × 512), one
colour scale for the layer, histograms on shared bins, bias profiles, norms and singular values of the recurrent
blocks, the `check` findings that concern each block, and the gate activations of a traced forward pass. A
layer's arrays are released before the next is read, so memory stays bounded by the largest layer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from .. import gates
from .. import model as model_module
from ..analysis import stats as stats_module
from ..analysis.stats import Stats
from .png import MAX_SIDE, as_matrix, pool, pool_by, pool_factors

#: A block of at most this many values is read whole: its singular values are all of them, by a full SVD when its
#: shorter side is at most MAX_SVD_SIDE (a few seconds at 2048 × 2048 on one core). A larger 2-D block is streamed
#: in row chunks (memory stays at one chunk): its heatmap and histogram are built chunk by chunk and its spectrum
#: is its SPECTRUM_TOP largest singular values, by block Lanczos (`rules_gates.spectral_norms`, `count`).
STREAM_VALUES = 1 << 22
MAX_SVD_SIDE = 2048
#: The streamed spectrum: how many values, and the relative change of each σ² that stops the block Lanczos
#: iteration (SPECTRUM_TOP + 8 vectors a pass, at most 40 passes). Measured against numpy's SVD on Gaussian blocks
#: (the hardest case, no gaps): every one of the 16 within 1e-5 relative at 1024² to 4096², in 12-18 passes
#: (tests/test_report_spectrum.py asserts 0.1% on Gaussian and fixture blocks).
SPECTRUM_TOP = 16
SPECTRUM_TOL = 1e-4
SPECTRUM_MAX_STEPS = 24 * (SPECTRUM_TOP + 8)
#: Without --input, the report runs its traced forward pass only when the weights take at most this much memory
#: (the pass holds every weight): the rest of the page stays within about 300 MiB whatever the model's size.
FORWARD_MAX_BYTES = 256 << 20
#: A gate value counts as saturated below SATURATION_LOW or above SATURATION_HIGH.
SATURATION_LOW, SATURATION_HIGH = 0.05, 0.95
HISTOGRAM_BINS = 60
#: Heatmap pixels a whole page may hold (matrices; activation maps): about a byte each once compressed, so the
#: page stays under 10 MB however large the model. Past it, every heatmap is pooled to a smaller side than 512.
PAGE_PIXELS, TRACE_PIXELS = 5_000_000, 1_500_000
#: Trace names that are gates (values in [0, 1] after a sigmoid); the others are candidates and states.
GATE_TRACES = ("i", "f", "o", "z", "r")
#: Every name `forward --trace` records under a recurrent layer's path.
TRACE_NAMES = frozenset({"i", "f", "c", "o", "z", "r", "h", "cell", "hidden"})


@dataclass
class BlockFigure:
    key: str
    """The export key: ``bidi/forward_lstm/U_f``."""
    block: str
    kind: str
    gate: str
    shape: tuple[int, ...]
    source: str
    stats: Stats
    matrix: np.ndarray | None = None
    """The pooled 2-D matrix of a W / U / proj block (None for vectors)."""
    window: tuple[int, int] = (1, 1)
    vector: np.ndarray | None = None
    """A bias or peephole vector over units."""
    histogram: np.ndarray | None = None
    spectral_norm: float | None = None
    singular_values: np.ndarray | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pooled(self) -> bool:
        return self.window != (1, 1)


@dataclass
class TraceFigure:
    key: str
    """``<layer path>/<gate or state>``: ``lstm/f``, ``lstm/hidden``."""
    name: str
    matrix: np.ndarray
    """(units, time) of the first sequence of the batch, pooled to at most 512 × 512."""
    window: tuple[int, int]
    low: float
    high: float
    is_gate: bool
    saturated_low: float | None = None
    saturated_high: float | None = None
    spatial_mean: bool = False


@dataclass
class LayerFigures:
    path: str
    class_name: str
    family: str
    units: int
    input_dim: int
    gates: tuple[str, ...]
    gate_names: tuple[str, ...]
    framework: str
    blocks: list[BlockFigure]
    scale: float
    """The colour scale of every W / U / proj heatmap of the layer: ±scale (the 99.9th percentile of the drawn
    |w|: of the values, or of the window maxima of a pooled block)."""
    max_abs: float
    bins: np.ndarray
    findings: list[dict[str, Any]] = field(default_factory=list)
    """Findings about the layer that name no block."""
    traces: list[TraceFigure] = field(default_factory=list)
    trace_note: str | None = None
    notes: list[str] = field(default_factory=list)
    """What `inspect` notes about the layer: gate order, biases, activations, pitfalls, warnings."""

    def block(self, name: str) -> BlockFigure | None:
        return next((b for b in self.blocks if b.block == name), None)

    def of_kind(self, kind: str) -> list[BlockFigure]:
        return [b for b in self.blocks if b.kind == kind]


def heatmap_side(shapes: Iterable[tuple[int, int]], budget: int) -> int:
    """The largest side (at most 512) at which max-|w| pooling leaves the matrices of `shapes` at most `budget`
    pixels in all."""
    shapes = list(shapes)
    side = MAX_SIDE
    while side > 16 and sum(min(r, side) * min(c, side) for r, c in shapes) > budget:
        side = int(side * 0.9)
    return side


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The (rows, cols) a block of `shape` is drawn as, or None for a vector."""
    if len(shape) < 2:
        return None
    rows = 1
    for n in shape[:-1]:
        rows *= int(n)
    return rows, int(shape[-1])


def layer_figures(split: gates.GateSplit, findings: Iterable[dict[str, Any]] = (),
                  max_side: int = MAX_SIDE) -> LayerFigures:
    """The figures of one split recurrent layer, heatmaps pooled to at most `max_side`. Reads its blocks one at
    a time."""
    path = split.layer.key
    blocks: list[BlockFigure] = []
    magnitudes: list[float] = []
    maxima: list[float] = []
    kept: dict[str, np.ndarray] = {}
    _, block_stats = stats_module.layer_stats([], split.blocks)  # one chunked pass over each array
    streamed = [b for b in split.blocks if _streams(b)]
    spectra = _streamed_spectra([b for b in streamed if b.kind == "U" and not (block_stats[id(b)].nan
                                                                               or block_stats[id(b)].inf)])
    for block in split.blocks:
        key = f"{path}/{block.key}" if path else block.key
        figure = BlockFigure(key, block.key, block.kind, block.gate, tuple(block.shape), block.source,
                             block_stats[id(block)])
        values = None if block in streamed else block.read()
        if values is None or values.ndim >= 2:
            figure.matrix, figure.window = _pooled(block, max_side) if values is None else pool(as_matrix(values),
                                                                                              max_side)
            # the scale of what is drawn: a pooled heatmap shows each window's largest |w|, which would all sit
            # past a percentile of the raw values and draw as two flat colours
            finite = np.abs(figure.matrix[np.isfinite(figure.matrix)])
            if finite.size:
                magnitudes.append(float(np.percentile(finite, 99.9)))
                maxima.append(float(finite.max()))
            if values is not None:
                kept[block.key] = values  # for the histogram on the layer's bins, below
            if block.kind == "U":
                figure.spectral_norm, figure.singular_values = (
                    _spectrum(values) if values is not None else spectra.get(id(block), (None, None)))
        else:
            figure.vector = values.astype(np.float64).ravel()
        blocks.append(figure)
    scale = max(magnitudes, default=0.0) or max(maxima, default=0.0) or 1.0
    bins = np.linspace(-scale, scale, HISTOGRAM_BINS + 1)
    by_key = {b.key: b for b in split.blocks}
    for figure in blocks:
        if figure.matrix is None:
            continue
        values = kept.pop(figure.block, None)
        chunks = [(0, values)] if values is not None else by_key[figure.block].row_chunks()
        counts = np.zeros(HISTOGRAM_BINS, dtype=np.int64)
        for _, rows in chunks:
            for piece in _pieces(rows, window_rows=1):
                finite = piece[np.isfinite(piece)].astype(np.float64)
                # equal-width bins given as a count and range: numpy's fast path (edges as np.linspace), no sort
                counts += np.histogram(np.clip(finite, -scale, scale), bins=HISTOGRAM_BINS, range=(-scale, scale))[0]
            del rows
        figure.histogram = counts
    layer_findings = []
    by_block = {b.block: b for b in blocks}
    for finding in findings:
        target = by_block.get(finding.get("block") or "")
        (target.findings if target else layer_findings).append(finding)
    native = split.native
    return LayerFigures(path, split.layer.class_name, split.layout.family, split.units, split.input_dim,
                        split.layout.gates, native.gate_names if native else split.layout.gate_names,
                        native.framework if native else "Keras", blocks, scale, max(maxima, default=0.0), bins,
                        layer_findings)


def _streams(block: gates.Block) -> bool:
    """A 2-D block too large to read whole (STREAM_VALUES)."""
    return len(block.shape) == 2 and math.prod(block.shape) > STREAM_VALUES


#: Values a histogram or pooling step works on at once: its float64 temporaries stay near 20 MiB.
PIECE_VALUES = 1 << 20


def _pieces(rows: np.ndarray, window_rows: int) -> Iterable[np.ndarray]:
    """`rows` along its first axis in pieces of about PIECE_VALUES values, each a whole number of `window_rows`."""
    matrix = as_matrix(rows)
    step = window_rows * max(1, PIECE_VALUES // max(1, window_rows * matrix.shape[1]))
    for start in range(0, matrix.shape[0], step):
        yield matrix[start:start + step]


def _pooled(block: gates.Block, max_side: int) -> tuple[np.ndarray, tuple[int, int]]:
    """`pool` of a 2-D block, read in row chunks that are whole numbers of pooling windows."""
    window = pool_factors(tuple(block.shape), max_side)
    row_bytes = block.shape[1] * np.dtype(block.dtype).itemsize
    rows = window[0] * max(1, model_module.CHUNK_BYTES // max(1, window[0] * row_bytes))
    parts = [pool_by(piece, window)[0] for _, chunk in block.row_chunks(rows=rows)
             for piece in _pieces(chunk, window[0])]
    return np.concatenate(parts), window


def _streamed_spectra(blocks: list[gates.Block]) -> dict[int, tuple[float | None, np.ndarray | None]]:
    """σ₁ and the SPECTRUM_TOP largest singular values of large U blocks, streamed from their arrays (each pass
    serving every block of an array), by id. Blocks with non-finite values or that are not a plain box of their
    array get none."""
    from ..analysis import rules_gates

    plain = [b for b in blocks if stats_module._region(b, tuple(b.tensor.shape)) is not None
             and not getattr(b, "memory_order", False)]
    if not plain:
        return {}
    found = rules_gates.spectral_norms(plain, tol=SPECTRUM_TOL, max_steps=SPECTRUM_MAX_STEPS, count=SPECTRUM_TOP)
    spectra = {}
    for block, values in zip(plain, found):
        values = np.asarray(values, dtype=np.float64)
        if np.isfinite(values).all():
            spectra[id(block)] = (float(values[0]), values)
    return spectra


def _spectrum(values: np.ndarray) -> tuple[float | None, np.ndarray | None]:
    matrix = as_matrix(values).astype(np.float64)
    if not np.isfinite(matrix).all() or min(matrix.shape) > MAX_SVD_SIDE or matrix.size == 0:
        return None, None
    singular = np.linalg.svd(matrix, compute_uv=False)
    return float(singular[0]), singular


def release(split: gates.GateSplit) -> None:
    """Drop the values the split's tensors cached, so the next layer does not add to memory."""
    for tensor in {id(b.tensor): b.tensor for b in split.blocks}.values():
        tensor.release()


def trace_figures(path: str, gate_order: tuple[str, ...], traced: dict[str, np.ndarray],
                  max_side: int = MAX_SIDE) -> list[TraceFigure]:
    """Units × time heatmaps of a layer's traced gates and states, with the saturated share of each gate."""
    prefix = f"{path}/"
    names = [k[len(prefix):] for k in traced if k.startswith(prefix) and "/" not in k[len(prefix):]]
    order = {name: n for n, name in enumerate((*gate_order, "cell", "hidden"))}
    figures = []
    for name in sorted(names, key=lambda n: (order.get(n, len(order)), n)):
        values = np.asarray(traced[prefix + name], dtype=np.float64)
        if values.ndim < 3 or values.shape[0] == 0:
            continue
        spatial = values.ndim > 3  # ConvLSTM: (batch, time, *positions, filters), averaged over the positions
        first = values[0].reshape(values.shape[1], -1, values.shape[-1]).mean(axis=1) if spatial else values[0]
        matrix, window = pool(first.T, max_side)
        finite = values[np.isfinite(values)]
        bounded = finite.size > 0 and finite.min() >= 0.0 and finite.max() <= 1.0
        is_gate = name in GATE_TRACES and bounded
        if bounded and name in GATE_TRACES:
            low, high = 0.0, 1.0
        else:
            extent = float(np.abs(finite).max()) if finite.size else 1.0
            low, high = -(extent or 1.0), extent or 1.0
        figure = TraceFigure(f"{prefix}{name}", name, matrix, window, low, high, is_gate, spatial_mean=spatial)
        if is_gate:
            figure.saturated_low = float((finite < SATURATION_LOW).mean())
            figure.saturated_high = float((finite > SATURATION_HIGH).mean())
        figures.append(figure)
    return figures


#: Steps of the random input when the model leaves its time axis free.
RANDOM_STEPS = 40
RANDOM_BATCH = 4


@dataclass
class ModelFigures:
    overview: dict[str, Any]
    """`lstm-inspect inspect`'s record without statistics: file, kind, Keras version, layers, parameters."""
    findings: list[dict[str, Any]]
    check_error: str | None
    layers: list[LayerFigures]
    input_note: str


def collect(path: str, layers: tuple[str, ...] | list[str] = (), inputs: Any = None, seed: int = 0,
            input_label: str | None = None) -> ModelFigures:
    """Everything the report shows about the file at `path`: its checks, a traced forward pass on `inputs` (a
    seeded random input fitting the model when None), then each recurrent layer's figures, one layer at a time."""
    from ..report import inspect as inspect_model
    from ..errors import InspectError
    from ..readers import open_model

    findings, check_error = _findings(path, layers)
    traced, input_note = _trace(path, inputs, seed, input_label)
    figures = []
    with open_model(path) as model:
        overview = inspect_model(model, layers, with_stats=False)
        chosen = {entry["path"] for entry in overview["layers"]}
        if layers and not chosen:
            raise InspectError("no layer matched --layer", path)
        notes = {entry["path"]: entry["recurrent"]["warnings"] + entry["recurrent"]["notes"]
                 for entry in overview["layers"] if entry.get("recurrent")}
        splits = [split for split in (gates.split(layer) for layer in model.layers if layer.key in chosen)
                  if split is not None and split.blocks]
        side = heatmap_side([s for split in splits for b in split.blocks if (s := matrix_shape(b.shape))],
                            PAGE_PIXELS)
        trace_side = heatmap_side([(v.shape[-1], v.shape[1]) for v in traced.values()], TRACE_PIXELS)
        for split in splits:
            layer = split.layer
            figure = layer_figures(split, [f for f in findings if f["layer"] == layer.key], side)
            figure.notes = notes.get(layer.key, [])
            release(split)
            figure.traces = trace_figures(layer.key, split.layout.gates, traced, trace_side)
            if not figure.traces:
                figure.trace_note = input_note if not traced else "the forward pass recorded no gates for this layer"
            figures.append(figure)
    return ModelFigures(overview, findings, check_error, figures, input_note)


def _findings(path: str, layers: tuple[str, ...] | list[str]) -> tuple[list[dict[str, Any]], str | None]:
    from ..analysis.check import CheckOptions, check_path

    result = check_path(path, CheckOptions(layers=tuple(layers)))
    return [f.as_dict() for f in result.findings], result.error


def _trace(path: str, inputs: Any, seed: int, input_label: str | None) -> tuple[dict[str, np.ndarray], str]:
    """The traced gates and states of a forward pass, and the sentence saying what input it ran on."""
    from ..api import forward
    from ..errors import InspectError
    from ..model import KERAS_KINDS
    from ..readers import open_model
    from ..run import native_forward
    from ..run.verify_keras import make_inputs

    if inputs is None:
        with open_model(path) as model:
            weight_bytes = sum(tensor.nbytes for layer in model.layers for tensor in layer.weights)
            if weight_bytes > FORWARD_MAX_BYTES:
                return {}, (f"No activations: the forward pass holds every weight in memory "
                            f"({weight_bytes / 2**20:,.0f} MiB, more than the report's {FORWARD_MAX_BYTES >> 20} MiB "
                            "without --input); pass --input to run it anyway, or use `lstm-inspect forward --trace`.")
            if native_forward.handles(model):
                sizes = {native_forward.input_size(module) for module in native_forward.modules(model)}
                if len(sizes) != 1 or None in sizes:
                    return {}, "No activations: the recurrent modules do not share one input size; pass --input."
                shape = (RANDOM_BATCH, RANDOM_STEPS, sizes.pop())
                inputs = {"X": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}
            elif model.kind not in KERAS_KINDS:
                return {}, "No activations: the forward pass runs Keras, PyTorch, ONNX and TF1 models only."
            elif not model.has_config:
                return {}, "No activations: a weights-only file has no graph to run."
            else:
                try:
                    inputs = make_inputs(model, batch=RANDOM_BATCH, steps=RANDOM_STEPS, seed=seed)
                except InspectError as exc:
                    return {}, f"No activations: {exc.message}."
        shapes = ", ".join(f"{name} {tuple(v.shape)}" for name, v in inputs.items())
        note = (f"No --input given: the activations come from a seeded random input (standard normal, seed {seed}; "
                f"{shapes}); the first sequence is drawn, saturation counts the whole batch.")
    else:
        note = (f"Activations from the input {input_label or 'given'}; the first sequence is drawn, saturation "
                "counts the whole batch.")
    try:
        outputs = forward(path, inputs, trace=True, dtype=np.float32)
    except InspectError as exc:
        return {}, f"No activations: {exc.message}."
    return {k: v for k, v in outputs.items() if k.rpartition("/")[2] in TRACE_NAMES and np.ndim(v) >= 3}, note

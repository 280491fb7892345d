"""The HTML report: one self-contained page (inline CSS, PNG heatmaps as data: URIs, SVG charts, no script) with a
Content-Security-Policy that forbids every load from outside the page.

Everything that comes from the file (layer names, classes, messages, paths) passes through `_t` / `_a`
(html.escape), and the page runs no script at all, so a hostile name stays text. Fragments of the page are what
the notebook views (`_repr_html_`) show.
"""
from __future__ import annotations

import base64
import hashlib
from html import escape
from typing import Any, Iterable

import numpy as np

from .. import __version__
from ..text_safety import visible
from .figure_data import SATURATION_HIGH, SATURATION_LOW, BlockFigure, LayerFigures, ModelFigures, TraceFigure
from .png import DIVERGING, SEQUENTIAL, colour_bar, heatmap_png
from .svg import GATE_COLOURS, histogram_chart, line_chart, number, saturation_chart

HEAT_WIDTH, HEAT_MAX_HEIGHT, HEAT_MIN_HEIGHT = 232, 320, 20
TRACE_WIDTH = 232

CSS = """
.li-report{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;max-width:1240px;
margin:0 auto;padding:8px 20px 40px}
.li-report h1{font-size:22px;margin:18px 0 2px;word-break:break-all}
.li-report h2{font-size:18px;margin:0 0 4px;word-break:break-all}
.li-report h3{font-size:14px;margin:18px 0 8px;color:#4b5563;text-transform:uppercase;letter-spacing:.04em}
.li-meta{color:#57606a;margin:0 0 12px}
.li-meta b{color:#1f2328;font-weight:600}
.li-card{background:#fff;border:1px solid #d8dee4;border-radius:8px;padding:16px 18px;margin:18px 0;
box-shadow:0 1px 2px rgba(0,0,0,.04)}
.li-note{background:#f6f8fa;border-left:3px solid #8c959f;padding:8px 12px;margin:10px 0;color:#424a53}
.li-report table{border-collapse:collapse;font-size:13px;margin:4px 0}
.li-report th{text-align:left;font-weight:600;color:#57606a;border-bottom:1px solid #d8dee4;padding:4px 12px 4px 0}
.li-report td{padding:3px 12px 3px 0;border-bottom:1px solid #f0f2f4;vertical-align:top}
.li-report td.li-num{text-align:right;font-variant-numeric:tabular-nums}
.li-report code,.li-src{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
.li-src{color:#6e7781;word-break:break-all}
.li-d1{padding-left:16px!important}.li-d2{padding-left:32px!important}.li-d3{padding-left:48px!important}
.li-d4{padding-left:64px!important}
.li-grid{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.li-report figure{margin:0;padding:8px;border:1px solid #e5e8eb;border-radius:6px;background:#fff;
width:fit-content;max-width:100%}
.li-report figure.li-flag{border:2px solid #cf222e;padding:7px;background:#fff8f8}
.li-report figure.li-block,.li-report figure.li-trace{width:234px}
.li-report figcaption{font-size:12px;color:#424a53;margin-top:4px;max-width:248px}
.li-gate{color:#57606a}
.li-report figcaption b{font-size:13px;color:#1f2328}
.li-heat{display:block;image-rendering:pixelated;image-rendering:crisp-edges;border:1px solid #d0d7de}
.li-bar{display:block;image-rendering:pixelated;height:10px;width:232px;border:1px solid #d0d7de}
.li-scale{display:flex;justify-content:space-between;width:234px;font-size:11px;color:#57606a}
.li-kind{font-size:12px;color:#57606a;margin:10px 0 4px;font-weight:600}
.li-sev{display:inline-block;border-radius:10px;padding:0 7px;font-size:11px;font-weight:600;color:#fff}
.li-error{background:#cf222e}.li-warning{background:#bf8700}
.li-finds{margin:4px 0 0;padding:0;list-style:none;font-size:12px;max-width:248px;color:#82071e}
.li-nav a{margin-right:14px}
.li-notes{font-size:13px;color:#424a53;margin:4px 0 8px}.li-notes summary{cursor:pointer;color:#0969da}
.li-notes ul{margin:6px 0;padding-left:20px}
.li-report a{color:#0969da;text-decoration:none}
.li-legend{display:flex;gap:14px;align-items:center;flex-wrap:wrap;font-size:12px;color:#57606a;margin:6px 0}
"""


def _t(value: Any) -> str:
    """Text from anywhere (the file included), escaped for element content, its control characters and lone
    surrogates shown (`text_safety.visible`)."""
    return escape(visible(value), quote=False)


def _a(value: Any) -> str:
    """An attribute value, escaped for use between double quotes."""
    return escape(visible(value), quote=True)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def content_security_policy() -> str:
    """No default source; images only from data: URIs; the one inline style sheet by its hash; no script."""
    digest = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode("ascii")
    return (f"default-src 'none'; img-src data:; style-src 'sha256-{digest}'; script-src 'none'; "
            "base-uri 'none'; form-action 'none'")


def document(title: str, body: str) -> str:
    """A whole page around `body`."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta http-equiv=\"Content-Security-Policy\" content=\"{_a(content_security_policy())}\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<meta name=\"generator\" content=\"lstm-inspect {_a(__version__)}\">"
            f"<title>{_t(title)}</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def fragment(body: str) -> str:
    """A part of a page for a notebook cell: the style sheet and the content in one block."""
    return f"<div class=\"li-report\"><style>{CSS}</style>{body}</div>"


def report_page(figures: ModelFigures) -> str:
    name = figures.overview["file"].replace("\\", "/").rsplit("/", 1)[-1]
    return document(f"{name} · lstm-inspect report", f"<main class=\"li-report\">{model_body(figures)}</main>")


def model_body(figures: ModelFigures) -> str:
    o = figures.overview
    name = o["file"].replace("\\", "/").rsplit("/", 1)[-1]
    facts = [f"<b>{_t(o['kind_description'])}</b>"]
    if o.get("keras_version"):
        facts.append(f"Keras <b>{_t(o['keras_version'])}</b>")
    if o.get("backend"):
        facts.append(f"backend {_t(o['backend'])}")
    facts.append(f"<b>{o['total_params']:,}</b> parameters")
    facts.append(f"{len(figures.layers)} recurrent layer{'s' if len(figures.layers) != 1 else ''}")
    parts = [f"<h1>{_t(name)}</h1>", f"<p class=\"li-meta\">{' · '.join(facts)}</p>",
             f"<p class=\"li-meta li-src\">{_t(o['file'])}</p>"]
    if figures.layers:
        links = "".join(f"<a href=\"#li-layer-{n}\">{_t(layer.path)}</a>" for n, layer in enumerate(figures.layers))
        parts.append(f"<nav class=\"li-nav\">{links}</nav>")
    parts.append(_overview_card(figures))
    for n, layer in enumerate(figures.layers):
        parts.append(layer_section(layer, n))
    parts.append(f"<p class=\"li-meta\">Made by lstm-inspect {_t(__version__)} from the file alone "
                 "(no TensorFlow). Heatmaps: blue negative, red positive, white 0, one scale per layer; "
                 "magenta marks NaN / Inf.</p>")
    return "".join(parts)


def _overview_card(figures: ModelFigures) -> str:
    o = figures.overview
    recurrent = {layer.path: n for n, layer in enumerate(figures.layers)}
    rows = []
    for entry in o["layers"]:
        label = _t(entry["name"])
        if entry["path"] in recurrent:
            label = f"<a href=\"#li-layer-{recurrent[entry['path']]}\">{label}</a>"
        weights = ", ".join(f"{w['name']} {tuple(w['shape'])}" for w in entry["weights"])
        rows.append(f"<tr><td class=\"li-d{min(entry['depth'], 4)}\">{label}</td><td>{_t(entry['class_name'])}</td>"
                    f"<td class=\"li-num\">{entry['params']:,}</td><td class=\"li-src\">{_t(weights)}</td></tr>")
    table = ("<table><thead><tr><th>layer</th><th>class</th><th>params</th><th>weights</th></tr></thead>"
             f"<tbody>{''.join(rows)}</tbody></table>")
    parts = ["<section class=\"li-card\" id=\"li-overview\"><h2>Model</h2>", table, "<h3>Check findings</h3>"]
    if figures.check_error:
        parts.append(f"<p class=\"li-note\">check could not run: {_t(figures.check_error)}</p>")
    elif figures.findings:
        parts.append(_findings_table(figures.findings))
    else:
        parts.append("<p>No findings: every rule of <code>lstm-inspect check</code> passed.</p>")
    for warning in o.get("warnings", []):
        parts.append(f"<p class=\"li-note\">{_t(warning)}</p>")
    parts.append(f"<p class=\"li-note\">{_t(figures.input_note)}</p></section>")
    return "".join(parts)


def _findings_table(findings: Iterable[dict[str, Any]]) -> str:
    rows = []
    for f in findings:
        where = "/".join(p for p in (f["layer"], f.get("block") or "") if p) or "(model)"
        rows.append(f"<tr><td>{_severity(f['severity'])}</td><td><code>{_t(f['rule'])}</code></td>"
                    f"<td class=\"li-src\">{_t(where)}</td><td>{_t(f['message'])}</td></tr>")
    return ("<table><thead><tr><th></th><th>rule</th><th>where</th><th>finding</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _severity(level: str) -> str:
    css = "li-error" if level == "error" else "li-warning"
    return f"<span class=\"li-sev {css}\">{_t(level)}</span>"


def layer_section(layer: LayerFigures, index: int = 0) -> str:
    """One recurrent layer: gate-block heatmaps, bias profiles, distributions, norms, activations."""
    facts = [f"<b>{_t(layer.class_name)}</b>", f"{_t(layer.family)}", f"{layer.units:,} units",
             f"input {layer.input_dim:,}"]
    if layer.framework != "Keras":
        facts.append(f"{_t(layer.framework)} layout, shown in Keras's orientation (x @ W)")
    gate_list = ", ".join(f"{g or 'state'} = {name}" for g, name in zip(layer.gates, layer.gate_names))
    parts = [f"<section class=\"li-card\" id=\"li-layer-{index}\" data-layer=\"{_a(layer.path)}\">",
             f"<h2>{_t(layer.path)}</h2><p class=\"li-meta\">{' · '.join(facts)}<br>{_t(gate_list)}</p>"]
    if layer.findings:
        parts.append(f"<div class=\"li-note\">{_findings_table(layer.findings)}</div>")
    if layer.notes:
        items = "".join(f"<li>{_t(note)}</li>" for note in layer.notes)
        parts.append(f"<details class=\"li-notes\"><summary>Notes ({len(layer.notes)}): gate order, biases, "
                     f"activations, pitfalls</summary><ul>{items}</ul></details>")
    parts.append(gate_blocks(layer))
    parts.append(distributions(layer))
    parts.append(activations(layer))
    parts.append("</section>")
    return "".join(parts)


def gate_blocks(layer: LayerFigures) -> str:
    parts = ["<h3>Gate blocks</h3>", _scale_legend(-layer.scale, layer.scale, DIVERGING,
             f"one scale for every matrix of this layer (±99.9th percentile of the |w| drawn; max |w| "
             f"{number(layer.max_abs)})")]
    kinds = [k for k in ("W", "U", "proj") if layer.of_kind(k)]
    labels = {"W": "W — input kernel (rows: inputs, columns: units)",
              "U": "U — recurrent kernel (rows: previous hidden state, columns: units)", "proj": "projection"}
    for kind in kinds:
        parts.append(f"<div class=\"li-kind\">{_t(labels[kind])}</div><div class=\"li-grid\">")
        parts.extend(_heatmap_figure(block, layer) for block in layer.of_kind(kind))
        parts.append("</div>")
    vectors = [b for b in layer.blocks if b.vector is not None]
    if vectors:
        values = np.concatenate([b.vector[np.isfinite(b.vector)] for b in vectors])
        y_range = (min(float(values.min()), 0.0), max(float(values.max()), 0.0)) if values.size else (0.0, 1.0)
        if y_range[0] == y_range[1]:
            y_range = (y_range[0] - 1, y_range[1] + 1)
        parts.append("<div class=\"li-kind\">Biases over units (one y scale for the layer)</div>"
                     "<div class=\"li-grid\">")
        parts.extend(_profile_figure(block, layer, y_range) for block in vectors)
        parts.append("</div>")
    return "".join(parts)


def _gate_name(layer: LayerFigures, block: BlockFigure) -> str:
    names = dict(zip(layer.gates, layer.gate_names))
    return names.get(block.gate, "") if block.gate else ""


def _colour(layer: LayerFigures, gate: str) -> str:
    return GATE_COLOURS[layer.gates.index(gate) % len(GATE_COLOURS)] if gate in layer.gates else GATE_COLOURS[0]


def heatmap_img(matrix: np.ndarray, low: float, high: float, anchors: tuple[str, ...], width: int,
                height: int, alt: str) -> str:
    png = heatmap_png(matrix, low, high, anchors)
    return (f"<img class=\"li-heat\" src=\"{_data_uri(png)}\" width=\"{width}\" height=\"{height}\" "
            f"alt=\"{_a(alt)}\">")


def _display_size(rows: int, cols: int) -> tuple[int, int]:
    """Width and height on the page: 232 px wide, the block's aspect ratio within 14..320 px high."""
    aspect = rows / max(cols, 1)
    width, height = HEAT_WIDTH, HEAT_WIDTH * aspect
    if height > HEAT_MAX_HEIGHT:
        height, width = HEAT_MAX_HEIGHT, max(HEAT_MAX_HEIGHT / aspect, 40)
    return int(round(width)), int(round(max(height, HEAT_MIN_HEIGHT)))


def _block_caption(block: BlockFigure, gate_name: str) -> str:
    s = block.stats
    numbers = [] if s.mean is None else [f"mean {number(s.mean)}", f"std {number(s.std)}", f"‖·‖ {number(s.l2)}"]
    if block.spectral_norm is not None:
        numbers.append(f"σ₁ {number(block.spectral_norm)}")
    if s.nan or s.inf:
        numbers.append(f"{s.nan} NaN, {s.inf} Inf")
    pooled = (f"<br>shown pooled {block.window[0]}×{block.window[1]} (max |w| per window)"
              if block.pooled else "")
    finds = ""
    if block.findings:
        items = "".join(f"<li>{_severity(f['severity'])} <code>{_t(f['rule'])}</code> {_t(f['message'])}</li>"
                        for f in block.findings)
        finds = f"<ul class=\"li-finds\">{items}</ul>"
    gate = f" <span class=\"li-gate\">{_t(gate_name)}</span>" if gate_name else ""
    return (f"<figcaption><b>{_t(block.block)}</b>{gate} · {_t(tuple(block.shape))}<br>"
            f"<span class=\"li-src\">{_t(block.source)}</span><br>{_t(' · '.join(numbers))}{pooled}</figcaption>"
            f"{finds}")


def _figure_open(block: BlockFigure) -> str:
    flag = " li-flag" if block.findings else ""
    return f"<figure class=\"li-block{flag}\" data-block=\"{_a(block.key)}\">"


def _heatmap_figure(block: BlockFigure, layer: LayerFigures) -> str:
    assert block.matrix is not None
    width, height = _display_size(*block.matrix.shape)
    img = heatmap_img(block.matrix, -layer.scale, layer.scale, DIVERGING, width, height, f"heatmap of {block.key}")
    return f"{_figure_open(block)}{img}{_block_caption(block, _gate_name(layer, block))}</figure>"


def _profile_figure(block: BlockFigure, layer: LayerFigures, y_range: tuple[float, float]) -> str:
    assert block.vector is not None
    svg = line_chart([(block.block, _colour(layer, block.gate), block.vector)], "unit", "value", width=232,
                     height=130, y_range=y_range, legend=False)
    return f"{_figure_open(block)}{svg}{_block_caption(block, _gate_name(layer, block))}</figure>"


def distributions(layer: LayerFigures) -> str:
    charts = []
    for kind, title in (("W", "input kernels W"), ("U", "recurrent kernels U")):
        blocks = [b for b in layer.of_kind(kind) if b.histogram is not None]
        if blocks:
            series = [(b.block, _colour(layer, b.gate), b.histogram) for b in blocks]
            charts.append(f"<figure class=\"li-hist\" data-histogram=\"{_a(layer.path)}/{kind}\">"
                          f"{histogram_chart(layer.bins, series, f'value of {title}', width=360)}"
                          f"<figcaption>Distribution of {title} per gate (values past ±{number(layer.scale)} "
                          "counted in the end bins)</figcaption></figure>")
    spectra = [b for b in layer.of_kind("U") if b.singular_values is not None]
    if spectra:
        series = [(b.block, _colour(layer, b.gate), b.singular_values) for b in spectra]
        top = max(float(b.singular_values.max()) for b in spectra)
        floor = max(min(float(b.singular_values[b.singular_values > 0].min(initial=top)) for b in spectra), top * 1e-6)
        chart = line_chart(series, "index", "singular value", width=360, y_range=(floor, top) if top > 0 else None,
                           log_y=top > 0)
        charts.append(f"<figure class=\"li-svd\" data-spectrum=\"{_a(layer.path)}/U\">{chart}<figcaption>Singular "
                      "values of each U (log scale); σ₁ above 1 lets a recurrence grow</figcaption></figure>")
    table = _norms_table(layer)
    return ("<h3>Distributions, norms and spectra</h3>"
            f"<div class=\"li-grid\">{''.join(charts)}</div>{table}")


def _norms_table(layer: LayerFigures) -> str:
    rows = []
    for b in layer.blocks:
        s = b.stats
        cells = [number(v) if v is not None else "–" for v in (s.mean, s.std, s.min, s.max, s.l2, b.spectral_norm)]
        flag = " ".join(_severity(f["severity"]) for f in b.findings)
        rows.append(f"<tr><td><code>{_t(b.block)}</code> {flag}</td><td>{_t(tuple(b.shape))}</td>"
                    + "".join(f"<td class=\"li-num\">{_t(c)}</td>" for c in cells)
                    + f"<td class=\"li-num\">{s.zero_fraction:.0%}</td></tr>")
    head = "".join(f"<th>{h}</th>" for h in ("block", "shape", "mean", "std", "min", "max", "‖·‖ (Frobenius)",
                                             "σ₁ (spectral)", "zeros"))
    return f"<table class=\"li-norms\"><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def activations(layer: LayerFigures) -> str:
    parts = ["<h3>Activations over time</h3>"]
    if not layer.traces:
        parts.append(f"<p class=\"li-note\">{_t(layer.trace_note or 'no activations')}</p>")
        return "".join(parts)
    parts.append("<div class=\"li-grid\">")
    parts.extend(_trace_figure(trace, layer) for trace in layer.traces)
    gates = [t for t in layer.traces if t.is_gate]
    if gates:
        rows = [(t.name, _colour(layer, t.name), t.saturated_low or 0.0, t.saturated_high or 0.0) for t in gates]
        parts.append(f"<figure class=\"li-saturation\" data-saturation=\"{_a(layer.path)}\">"
                     f"{saturation_chart(rows, width=300)}<figcaption>Saturated gate values: below "
                     f"{SATURATION_LOW} | above {SATURATION_HIGH}</figcaption></figure>")
    parts.append("</div>")
    return "".join(parts)


def _trace_figure(trace: TraceFigure, layer: LayerFigures) -> str:
    anchors = SEQUENTIAL if trace.is_gate else DIVERGING
    rows, cols = trace.matrix.shape
    height = int(min(max(rows * 2, 90), 240))
    img = heatmap_img(trace.matrix, trace.low, trace.high, anchors, TRACE_WIDTH, height,
                      f"{trace.key}: units by time")
    what = {"cell": "cell state c", "hidden": "hidden state h", "c": "candidate c", "h": "candidate h"}.get(
        trace.name, f"gate {trace.name}")
    notes = [f"{rows if trace.window[0] == 1 else f'{rows} (pooled)'} units × {cols} steps"]
    if trace.spatial_mean:
        notes.append("mean over positions")
    if trace.is_gate:
        notes.append(f"saturated {trace.saturated_low or 0:.0%} near 0, {trace.saturated_high or 0:.0%} near 1")
    return (f"<figure class=\"li-trace\" data-trace=\"{_a(trace.key)}\">{img}"
            f"{_scale_bar(trace.low, trace.high, anchors)}<figcaption><b>{_t(what)}</b> · "
            f"{_t(' · '.join(notes))}</figcaption></figure>")


def _scale_bar(low: float, high: float, anchors: tuple[str, ...]) -> str:
    middle = (low + high) / 2
    return (f"<img class=\"li-bar\" src=\"{_data_uri(colour_bar(anchors))}\" width=\"232\" height=\"10\" alt=\"\">"
            f"<div class=\"li-scale\"><span>{number(low)}</span><span>{number(middle)}</span>"
            f"<span>{number(high)}</span></div>")


def _scale_legend(low: float, high: float, anchors: tuple[str, ...], text: str) -> str:
    return f"<div class=\"li-legend\"><div>{_scale_bar(low, high, anchors)}</div><div>{_t(text)}</div></div>"


"""`lstm-inspect diff A B --html OUT.html`: the diff record as a page, with per-gate heatmaps of the change B − A
(one diverging scale per layer pair) and a bar of each block's relative change ‖B − A‖ / ‖A‖.

Heatmaps need both arrays: layer pairs are looked up by the record's layer paths in each file and split into
gate blocks (the same keys and orientation for every framework); a pair that cannot be looked up that way (a torch
module matched to a Keras layer) keeps its numbers without heatmaps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import gates
from .figure_data import MAX_SIDE
from .html_report import _a, _t, document, fragment, heatmap_img, _display_size, _scale_legend
from .png import DIVERGING, as_matrix, pool
from .svg import number


@dataclass
class DeltaBlock:
    record: dict[str, Any]
    """The diff record's entry for the block (key, status, max_abs_diff, rel_frobenius, cosine, shapes)."""
    key: str = ""
    """``<layer path in B>/<block>``: the block's export key in B."""
    kind: str = ""
    """``W``, ``U``, ``b``, ``rb``... (the key before ``_``), or the weight name of a layer that has no gates."""
    matrix: np.ndarray | None = None
    window: tuple[int, int] = (1, 1)


@dataclass
class LayerDelta:
    entry: dict[str, Any]
    blocks: list[DeltaBlock] = field(default_factory=list)
    scales: dict[str, float] = field(default_factory=dict)
    """One colour scale per block kind: a bias moved by 0.5 does not wash out a recurrent kernel moved by 0.02."""

    @property
    def changed(self) -> bool:
        return self.entry.get("shape_change") is not None or any(
            d.record.get("status") != "unchanged" for d in self.blocks)


def _arrays(layer: Any, key: str) -> Any:
    """The block `key` of a layer: a gate block of its split, or a whole weight of a layer without gates."""
    if layer is None:
        return None
    split = gates.split(layer)
    if split is not None:
        return split.block(key)
    return layer.weight(key)


def delta_figures(path_a: str, path_b: str, record: dict[str, Any]) -> list[LayerDelta]:
    """B − A of every compared block of the record's layer pairs, pooled for heatmaps; one layer pair at a time."""
    from ..readers import open_model

    out = []
    with open_model(path_a) as model_a, open_model(path_b) as model_b:
        layers_a = {layer.key: layer for layer in model_a.layers}
        layers_b = {layer.key: layer for layer in model_b.layers}
        for entry in record["layers"]:
            layer_a, layer_b = layers_a.get(entry["a"]), layers_b.get(entry["b"])
            layer = LayerDelta(entry)
            peaks: dict[str, list[float]] = {}
            for block in entry["blocks"]:
                key_a, _, key_b = block["key"].partition("->")
                key_b = key_b or key_a
                delta = DeltaBlock(block, f"{entry['b']}/{key_b}", key_b.split("_")[0] if "_" in key_b else key_b)
                a, b = _arrays(layer_a, key_a), _arrays(layer_b, key_b)
                if a is not None and b is not None and tuple(a.shape) == tuple(b.shape) and len(a.shape) >= 1:
                    change = b.read().astype(np.float64) - a.read().astype(np.float64)
                    delta.matrix, delta.window = pool(as_matrix(change), MAX_SIDE)
                    finite = np.abs(change[np.isfinite(change)])
                    if finite.size:
                        peaks.setdefault(delta.kind, []).append(float(np.percentile(finite, 99.9)) or
                                                                float(finite.max()))
                layer.blocks.append(delta)
            layer.scales = {kind: max(values) or 1.0 for kind, values in peaks.items()}
            for side in (layer_a, layer_b):
                for tensor in side.weights if side is not None else ():
                    tensor.release()
            out.append(layer)
    return out


def diff_body(record: dict[str, Any], layers: list[LayerDelta]) -> str:
    a, b, summary = record["a"], record["b"], record["summary"]
    verdict = "identical" if record["identical"] else f"{summary['blocks_changed']} of {summary['blocks_compared']} " \
                                                        "blocks changed"
    parts = [f"<h1>diff: {_t(_name(a['file']))} → {_t(_name(b['file']))}</h1>",
             f"<p class=\"li-meta\"><b>{_t(verdict)}</b> · atol {_t(number(record.get('atol', 0.0)))}<br>"
             f"<span class=\"li-src\">A = {_t(a['file'])} ({_t(a['kind'])})<br>B = {_t(b['file'])} "
             f"({_t(b['kind'])})</span></p>"]
    lists = [("added in B", record.get("added", []), "layer"), ("removed from A", record.get("removed", []), "layer"),
             ("shape changed", record.get("shape_changes", []), "layer")]
    notes = [f"{title}: " + ", ".join(str(item[field]) for item in items) for title, items, field in lists if items]
    notes += [f"renamed: {r['a']} → {r['b']}" for r in record.get("renamed", [])]
    parts.extend(f"<p class=\"li-note\">{_t(note)}</p>" for note in notes)
    for n, layer in enumerate(layers):
        if layer.changed:
            parts.append(_layer_card(layer, n))
    same = [layer.entry["b"] for layer in layers if not layer.changed]
    if same:
        parts.append(f"<p class=\"li-note\">Unchanged ({len(same)} layer{'s' if len(same) != 1 else ''}): "
                     f"{_t(', '.join(same))}</p>")
    parts.append("<p class=\"li-meta\">Heatmaps show B − A: blue where B is lower, red where higher, white unchanged, "
                 "one scale per kind of block in a layer (±99.9th percentile of |B − A|). Relative change is "
                 "‖B − A‖ / ‖A‖.</p>")
    return "".join(parts)


def _name(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _layer_card(layer: LayerDelta, index: int) -> str:
    entry = layer.entry
    title = entry["b"] if entry["a"] == entry["b"] else f"{entry['a']} → {entry['b']}"
    parts = [f"<section class=\"li-card\" id=\"li-diff-{index}\" data-layer=\"{_a(entry['b'])}\">",
             f"<h2>{_t(title)}</h2><p class=\"li-meta\">{_t(entry['class_name'])}</p>", _change_table(layer)]
    kinds = [kind for kind in dict.fromkeys(d.kind for d in layer.blocks) if kind in layer.scales]
    if kinds:
        parts.append("<h3>Change B − A per block</h3>")
    for kind in kinds:
        scale = layer.scales[kind]
        parts.append(_scale_legend(-scale, scale, DIVERGING, f"{kind}: one scale for every {kind} block of this layer"))
        parts.append("<div class=\"li-grid\">")
        for delta in layer.blocks:
            if delta.kind != kind or delta.matrix is None:
                continue
            width, height = _display_size(*delta.matrix.shape)
            img = heatmap_img(delta.matrix, -scale, scale, DIVERGING, width, height, f"change of {delta.key}")
            rel = delta.record.get("rel_frobenius")
            pooled = f" · pooled {delta.window[0]}×{delta.window[1]}" if delta.window != (1, 1) else ""
            parts.append(f"<figure class=\"li-block\" data-block=\"{_a(delta.key)}\">{img}<figcaption><b>"
                         f"{_t(delta.record['key'])}</b> · relative change {_t(_percent(rel))}{_t(pooled)}"
                         "</figcaption></figure>")
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _percent(value: Any) -> str:
    if value is None:
        return "–"
    return "∞" if value == float("inf") else f"{value:.3g}" if value >= 0.01 or value == 0 else f"{value:.2e}"


def _change_table(layer: LayerDelta) -> str:
    records = [d.record for d in layer.blocks]
    top = max((r.get("rel_frobenius") or 0.0 for r in records if r.get("rel_frobenius") not in (None, float("inf"))),
              default=0.0) or 1.0
    rows = []
    for r in records:
        rel = r.get("rel_frobenius")
        share = 1.0 if rel == float("inf") else min((rel or 0.0) / top, 1.0)
        bar = (f"<svg width=\"160\" height=\"10\" role=\"img\" aria-label=\"relative change\"><rect width=\"160\" "
               f"height=\"10\" fill=\"#eef1f4\"/><rect width=\"{160 * share:.1f}\" height=\"10\" fill=\"#d6604d\"/></svg>")
        cells = [_t(r["key"]), _t(r.get("status", "")), _t(number(r["max_abs_diff"]) if r.get("max_abs_diff") is not None
                                                          else "–"),
                 _t(_percent(rel)), bar, _t(f"{r['cosine']:.4f}" if r.get("cosine") is not None else "–")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("block", "status", "max |B − A|", "‖B − A‖ / ‖A‖", "", "cosine"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def diff_page(record: dict[str, Any], layers: list[LayerDelta]) -> str:
    return document(f"diff {_name(record['a']['file'])} → {_name(record['b']['file'])}",
                    f"<main class=\"li-report\">{diff_body(record, layers)}</main>")


def diff_fragment(record: dict[str, Any], layers: list[LayerDelta]) -> str:
    return fragment(diff_body(record, layers))

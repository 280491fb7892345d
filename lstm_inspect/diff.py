"""`lstm-inspect diff A B` as data: which layers were added, removed or renamed, which shapes changed, and for each
block the two files share, how much its values moved.

Layers are matched as baselines match them (`snapshot.match_layers`): by path, then unique name, then the
sequence of weight shapes. A layer found under another path counts as renamed only when both files have a
config; weights-only files carry synthetic names, so a weights-only file and the full model it came from diff as
identical when their values are. Blocks are gate blocks for recurrent layers and whole weights elsewhere.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .model import ModelFile
from .snapshot import _shape_text, class_key, layer_entries, match_blocks, match_layers, signature

DIFF_VERSION = 1


def block_delta(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """max |b - a|, ||b - a|| / ||a|| (Frobenius), and the cosine between a and b, over float64 copies."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    both_finite = bool(np.isfinite(x).all() and np.isfinite(y).all())
    if not both_finite:
        same = bool(np.array_equal(x, y, equal_nan=True))
        return {"max_abs_diff": 0.0 if same else None, "rel_frobenius": 0.0 if same else None,
                "cosine": None, "non_finite": True}
    delta = y - x
    max_abs = float(np.abs(delta).max()) if delta.size else 0.0
    norm_a, norm_b, norm_d = (float(np.linalg.norm(v)) for v in (x, y, delta))
    rel = norm_d / norm_a if norm_a else (0.0 if norm_d == 0 else math.inf)
    cosine = float(x @ y / (norm_a * norm_b)) if norm_a and norm_b else (1.0 if norm_a == norm_b else 0.0)
    return {"max_abs_diff": max_abs, "rel_frobenius": rel, "cosine": max(-1.0, min(1.0, cosine)),
            "non_finite": False}


def diff_models(a: ModelFile, b: ModelFile, atol: float = 0.0, layers: Sequence[str] = ()) -> dict[str, Any]:
    """The documented diff record. ``identical`` is False when anything differs beyond `atol`."""
    old, new = layer_entries(a, layers, with_stats=False), layer_entries(b, layers, with_stats=False)
    pairs, removed, added = match_layers(old, new)
    both_named = a.has_config and b.has_config
    out_layers = []
    renamed = []
    shape_changes = []
    changed_blocks = 0
    compared_blocks = 0
    for ea, eb in pairs:
        entry: dict[str, Any] = {"a": ea["path"], "b": eb["path"], "class_name": eb["class_name"],
                                 "renamed": ea["path"] != eb["path"] and both_named, "shape_change": None,
                                 "blocks": []}
        if entry["renamed"]:
            renamed.append({"a": ea["path"], "b": eb["path"]})
        if (class_key(ea["class_name"]) != class_key(eb["class_name"]) and not ea["inferred_class"]
                and not eb["inferred_class"]):
            entry["class_change"] = {"a": ea["class_name"], "b": eb["class_name"]}
        if signature(ea) != signature(eb):
            entry["shape_change"] = {"a": _shape_text(ea), "b": _shape_text(eb)}
            shape_changes.append({"layer": eb["path"], **entry["shape_change"]})
        block_pairs, gone, extra = match_blocks(list(ea["blocks"]), list(eb["blocks"]))
        for ka, kb in block_pairs:
            va, vb = ea["blocks"][ka]["_piece"].read(), eb["blocks"][kb]["_piece"].read()
            block: dict[str, Any] = {"key": kb if ka == kb else f"{ka}->{kb}", "shape_a": list(va.shape),
                                     "shape_b": list(vb.shape), "dtype_a": str(va.dtype), "dtype_b": str(vb.dtype)}
            if va.shape != vb.shape:
                block.update(status="shape-changed", max_abs_diff=None, rel_frobenius=None, cosine=None)
            else:
                block.update(block_delta(va, vb))
                unchanged = block["max_abs_diff"] is not None and block["max_abs_diff"] <= atol
                block["status"] = "unchanged" if unchanged else "changed"
            compared_blocks += 1
            changed_blocks += block["status"] != "unchanged"
            entry["blocks"].append(block)
        for key in gone:
            entry["blocks"].append({"key": key, "status": "removed"})
        for key in extra:
            entry["blocks"].append({"key": key, "status": "added"})
        out_layers.append(entry)
    identical = not (removed or added or renamed or shape_changes or changed_blocks
                     or any(b["status"] in ("removed", "added") for e in out_layers for b in e["blocks"])
                     or any("class_change" in e for e in out_layers))
    return {
        "diff_version": DIFF_VERSION,
        "a": {"file": a.path, "kind": a.kind, "keras_version": a.keras_version, "total_params": a.total_params},
        "b": {"file": b.path, "kind": b.kind, "keras_version": b.keras_version, "total_params": b.total_params},
        "atol": atol,
        "identical": identical,
        "summary": {"layers_compared": len(pairs), "blocks_compared": compared_blocks,
                    "blocks_changed": changed_blocks, "layers_added": len(added), "layers_removed": len(removed),
                    "layers_renamed": len(renamed), "shape_changes": len(shape_changes)},
        "added": [{"layer": e["path"], "class_name": e["class_name"], "weights": _shape_text(e)} for e in added],
        "removed": [{"layer": e["path"], "class_name": e["class_name"], "weights": _shape_text(e)} for e in removed],
        "renamed": renamed,
        "shape_changes": shape_changes,
        "layers": out_layers,
    }

"""Baselines: a model's structure and per-block statistics as JSON, and the comparison of a model against one.

A snapshot lists every layer that stores weights, with its weights' roles, shapes and dtypes, and the statistics
of each block (gate blocks of recurrent layers, whole weights elsewhere). `compare` matches the layers of a model
to the snapshot's with `match_layers` (the same matching `diff` uses) and reports structure changes and
statistics that drifted beyond a relative tolerance.

Layer matching, in order: the same layer path; then the same layer name when it is unique on both sides; then
the same sequence of weight shapes, in file order. Weights-only files have no config, so their layer names are
what the file's groups are called (``encoder/enc_lstm_b`` where the full model says ``encoder/inner/enc_lstm_b``):
a layer matched under another path is a rename only when both sides come from files with a config.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Iterable, Sequence

import numpy as np

from .. import __version__
from ..errors import InspectError
from ..model import ModelFile
from . import stats
from .view import ModelView

SNAPSHOT_FORMAT = "lstm-inspect-snapshot"
SNAPSHOT_VERSION = 1
#: The statistics compared against a baseline (the Stats fields that describe values, not counts).
DRIFT_STATS = ("mean", "std", "min", "max", "l2")


def layer_entries(model: ModelFile, layers: Sequence[str] = (), with_stats: bool = True) -> list[dict[str, Any]]:
    """One entry per selected layer that stores weights: path, name, class, weights, and blocks with stats."""
    view = ModelView(model, layers)
    by_layer: dict[int, list[Any]] = {}
    for piece in view.pieces:
        by_layer.setdefault(id(piece.layer), []).append(piece)
    entries = []
    for layer in view.layers:
        if not layer.weights:
            continue
        entry: dict[str, Any] = {
            "path": layer.key, "name": layer.name, "class_name": layer.class_name, "inferred_class": layer.inferred,
            "weights": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in layer.weights],
            "blocks": {},
        }
        split = view.splits.get(id(layer))
        blocks = {b.key: b for b in split.blocks} if split is not None else {}
        pieces = by_layer.get(id(layer), [])
        sources = [blocks[p.name] if p.kind is not None and p.name in blocks else p.tensor for p in pieces]
        if with_stats:  # each stored array read once, in bounded chunks (no piece keeps its values)
            weight_stats, block_stats = stats.layer_stats(layer.weights, [s for s in sources if s not in layer.weights])
        for piece, source in zip(pieces, sources):
            # `_source` (a gate block or a weight) is dropped when written; `diff` reads the values from it
            block: dict[str, Any] = {"_source": source}
            if with_stats:
                found = weight_stats.get(id(source)) or block_stats.get(id(source))
                block["stats"] = found.as_dict()
            entry["blocks"][piece.name] = block
        entries.append(entry)
    return entries


def snapshot(model: ModelFile, layers: Sequence[str] = ()) -> dict[str, Any]:
    """The baseline record of an opened model (JSON-serialisable)."""
    entries = layer_entries(model, layers)
    for entry in entries:
        for block in entry["blocks"].values():
            block.pop("_source", None)
    return {
        "format": SNAPSHOT_FORMAT,
        "version": SNAPSHOT_VERSION,
        "created_by": f"lstm-inspect {__version__}",
        "file": os.path.basename(model.path.rstrip("/\\")),
        "kind": model.kind,
        "keras_version": model.keras_version,
        "has_config": model.has_config,
        "total_params": model.total_params,
        "layers": entries,
    }


def write(record: dict[str, Any], path: str) -> None:
    """The snapshot as JSON at exactly `path` (which must end in .json)."""
    from ..output_paths import JSON, checked_output

    path = checked_output(path, JSON)
    try:
        handle = open(path, "w")
    except OSError as exc:
        raise InspectError(f"cannot write: {exc.strerror or exc}", path) from exc
    with handle:
        json.dump(record, handle, indent=2, allow_nan=False, default=_json_default)
        handle.write("\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def load(path: str) -> dict[str, Any]:
    """Read a snapshot file; anything that is not one is bad input."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except OSError as exc:
        raise InspectError(f"cannot read baseline: {exc.strerror or exc}", path) from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise InspectError(f"baseline is not JSON: {exc}", path) from exc
    if not isinstance(record, dict) or record.get("format") != SNAPSHOT_FORMAT:
        raise InspectError("not an lstm-inspect snapshot (write one with `lstm-inspect snapshot`)", path)
    if record.get("version") != SNAPSHOT_VERSION:
        raise InspectError(f"snapshot version {record.get('version')!r} is not supported "
                           f"(this lstm-inspect writes version {SNAPSHOT_VERSION})", path)
    if not isinstance(record.get("layers"), list) or not all(
            isinstance(e, dict) and isinstance(e.get("path"), str) and isinstance(e.get("weights"), list)
            and isinstance(e.get("blocks"), dict) for e in record["layers"]):
        raise InspectError("snapshot has no valid layer list", path)
    return record


# ----------------------------------------------------------------------------------------------------------------

def signature(entry: dict[str, Any]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(w["shape"]) for w in entry["weights"])


def match_layers(old: Sequence[dict[str, Any]], new: Sequence[dict[str, Any]]
                 ) -> tuple[list[tuple[dict[str, Any], dict[str, Any]]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Pairs (old, new) of the same layer, then the old entries with no partner (removed) and the new (added)."""
    pairs: list[tuple[dict[str, Any], dict[str, Any]]] = []
    left, right = list(old), list(new)

    def take(key: Any) -> None:
        nonlocal left, right
        right_keys: dict[Any, list[int]] = {}
        for j, entry in enumerate(right):
            right_keys.setdefault(key(entry), []).append(j)
        left_keys: dict[Any, list[int]] = {}
        for i, entry in enumerate(left):
            left_keys.setdefault(key(entry), []).append(i)
        used_left, used_right = set(), set()
        for k, lefts in left_keys.items():
            rights = right_keys.get(k, [])
            for i, j in zip(lefts, rights):
                pairs.append((left[i], right[j]))
                used_left.add(i)
                used_right.add(j)
        left = [e for i, e in enumerate(left) if i not in used_left]
        right = [e for j, e in enumerate(right) if j not in used_right]

    take(lambda e: ("path", e["path"]))
    # Names: only where a name is unique on its side, so two "lstm" layers are not paired arbitrarily.
    names_left = _unique_names(left)
    names_right = _unique_names(right)
    take(lambda e: ("name", e["name"]) if e["name"] in names_left and e["name"] in names_right else ("x", id(e)))
    take(lambda e: ("sig", signature(e)))
    order = {id(e): i for i, e in enumerate(new)}
    pairs.sort(key=lambda p: order[id(p[1])])
    return pairs, left, right


def _unique_names(entries: Iterable[dict[str, Any]]) -> set[str]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["name"]] = counts.get(e["name"], 0) + 1
    return {n for n, c in counts.items() if c == 1}


def _shape_text(entry: dict[str, Any]) -> str:
    return ", ".join(f"{w['name']} {tuple(w['shape'])}" for w in entry["weights"])


def compare(model: ModelFile, baseline: dict[str, Any], rtol: float = 0.05, layers: Sequence[str] = ()
            ) -> list[tuple[str, str, str | None, str]]:
    """(rule id, layer path, block, message) for every structure change and drifted statistic."""
    current = layer_entries(model, layers)
    wanted = [e for e in baseline["layers"] if not layers or any(p in e["path"] for p in layers)]
    pairs, removed, added = match_layers(wanted, current)
    both_named = bool(baseline.get("has_config", True)) and model.has_config
    out: list[tuple[str, str, str | None, str]] = []
    for entry in removed:
        out.append(("baseline-structure", entry["path"], None,
                    f"layer in the baseline is missing ({entry['class_name']}: {_shape_text(entry)})"))
    for entry in added:
        out.append(("baseline-structure", entry["path"], None,
                    f"layer not in the baseline ({entry['class_name']}: {_shape_text(entry)})"))
    for base, cur in pairs:
        if cur["path"] != base["path"] and both_named:
            out.append(("baseline-structure", cur["path"], None, f"was {base['path']!r} in the baseline"))
        if (class_key(cur["class_name"]) != class_key(base["class_name"]) and not cur["inferred_class"]
                and not base.get("inferred_class", False)):
            out.append(("baseline-structure", cur["path"], None,
                        f"class {cur['class_name']}, the baseline has {base['class_name']}"))
        if signature(cur) != signature(base):
            out.append(("baseline-structure", cur["path"], None,
                        f"weights {_shape_text(cur)}; the baseline has {_shape_text(base)}"))
            continue
        block_pairs, gone, extra = match_blocks(list(base["blocks"]), list(cur["blocks"]))
        for key in gone:
            out.append(("baseline-structure", cur["path"], key, "block in the baseline is missing"))
        for key in extra:
            out.append(("baseline-structure", cur["path"], key, "block not in the baseline"))
        for old_key, key in block_pairs:
            message = _drift(base["blocks"][old_key].get("stats") or {}, cur["blocks"][key]["stats"], rtol)
            if message:
                out.append(("baseline-drift", cur["path"], key, message))
    return out


def class_key(class_name: str) -> str:
    """A class name without the ``package>`` prefix legacy HDF5 configs give registered classes."""
    return class_name.rsplit(">", 1)[-1]


def match_blocks(old: Sequence[str], new: Sequence[str]) -> tuple[list[tuple[str, str]], list[str], list[str]]:
    """Pairs of block keys naming the same block, then the old keys and the new keys left over.

    The same key matches; the keys left over are paired in order (a custom layer's weight is ``scale`` in one
    file kind and ``var0`` in another), and what remains of the longer side is reported as removed or added."""
    pairs = [(k, k) for k in old if k in new]
    left = [k for k in old if k not in new]
    right = [k for k in new if k not in old]
    pairs += list(zip(left, right))
    return pairs, left[len(right):], right[len(left):]


def _drift(old: dict[str, Any], new: dict[str, Any], rtol: float) -> str | None:
    for count in ("nan", "inf"):
        if old.get(count, 0) != new.get(count, 0):
            return f"{count} count {new.get(count, 0)}, baseline {old.get(count, 0)}"
    params = old.get("params") or 0
    rms = (old["l2"] / math.sqrt(params)) if old.get("l2") is not None and params else 0.0
    worst: tuple[float, str] | None = None
    for name in DRIFT_STATS:
        a, b = new.get(name), old.get(name)
        if a is None or b is None:
            if a != b:
                return f"{name} {a}, baseline {b}"
            continue
        scale = max(abs(b), rms)
        change = abs(a - b)
        if change > rtol * scale + 1e-12:
            relative = change / scale if scale else math.inf
            if worst is None or relative > worst[0]:
                worst = (relative, f"{name} {a:.6g}, baseline {b:.6g} (relative change {relative:.3g} > {rtol:g})")
    return worst[1] if worst else None

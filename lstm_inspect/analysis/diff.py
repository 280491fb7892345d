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

from .. import gates
from .. import model as model_module
from ..model import Layer, ModelFile, select_layers
from . import stats
from .view import ONNX_WEIGHTED_OPS, is_graph_constant
from .snapshot import _shape_text, class_key, layer_entries, match_blocks, match_layers, signature

DIFF_VERSION = 1


def block_delta(a: Any, b: Any, rows: int | None = None) -> dict[str, Any]:
    """max |b - a|, ||b - a|| / ||a|| (Frobenius), and the cosine between a and b, in float64, for two arrays or
    two sources of the same shape (gate blocks, weights) walked in step, `rows` rows at a time, so that neither is
    ever whole in memory."""
    max_abs = sum_aa = sum_bb = sum_dd = sum_ab = 0.0
    finite = same = True
    for (_, chunk_a), (_, chunk_b) in zip(_row_chunks(a, rows), _row_chunks(b, rows)):
        for piece_a, piece_b in zip(stats._pieces(chunk_a), stats._pieces(chunk_b)):
            # ravel first: a float64 copy of an empty array shaped (0, 10**6, 10**6, ...) fails numpy's size check
            x = np.asarray(piece_a).ravel().astype(np.float64)
            y = np.asarray(piece_b).ravel().astype(np.float64)
            if finite and not (np.isfinite(x).all() and np.isfinite(y).all()):
                finite = False
            if not finite:
                same = same and bool(np.array_equal(x, y, equal_nan=True))
                continue
            delta = y - x
            if delta.size:
                max_abs = max(max_abs, float(np.abs(delta).max()))
            sum_aa += float(np.dot(x, x))
            sum_bb += float(np.dot(y, y))
            sum_dd += float(np.dot(delta, delta))
            sum_ab += float(np.dot(x, y))
    if not finite:
        return {"max_abs_diff": 0.0 if same else None, "rel_frobenius": 0.0 if same else None,
                "cosine": None, "non_finite": True}
    norm_a, norm_b, norm_d = math.sqrt(sum_aa), math.sqrt(sum_bb), math.sqrt(sum_dd)
    rel = norm_d / norm_a if norm_a else (0.0 if norm_d == 0 else math.inf)
    cosine = sum_ab / (norm_a * norm_b) if norm_a and norm_b else (1.0 if norm_a == norm_b else 0.0)
    return {"max_abs_diff": max_abs, "rel_frobenius": rel, "cosine": max(-1.0, min(1.0, cosine)),
            "non_finite": False}


def _row_chunks(values: Any, rows: int | None):
    """Row pieces of an array, or of a source that reads them from its file (`Tensor`, gate `Block`)."""
    if hasattr(values, "row_chunks"):
        yield from values.row_chunks(rows=rows)
        return
    values = np.asarray(values)
    if values.ndim == 0 or rows is None:
        yield 0, values
        return
    for start in range(0, values.shape[0], rows):
        yield start, values[start:start + rows]


def _rows_per_chunk(shape: tuple[int, ...]) -> int:
    """Rows per step when two arrays of `shape` are walked together: half the chunk budget each, as float64 (so
    both sides step alike whatever their dtypes)."""
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    return max(1, model_module.CHUNK_BYTES // 2 // (8 * max(1, row)))


def compare_block(key_a: str, key_b: str, va: Any, vb: Any, atol: float) -> dict[str, Any]:
    """One block's record in a diff: shapes, dtypes, the deltas of `block_delta` and its status. `va` and `vb` are
    arrays, or sources read from their files in step (gate blocks, weights)."""
    va, vb = (v if hasattr(v, "row_chunks") else np.asarray(v.read() if hasattr(v, "read") else v) for v in (va, vb))
    shape_a, shape_b = tuple(va.shape), tuple(vb.shape)
    block: dict[str, Any] = {"key": key_b if key_a == key_b else f"{key_a}->{key_b}", "shape_a": list(shape_a),
                             "shape_b": list(shape_b), "dtype_a": str(va.dtype), "dtype_b": str(vb.dtype)}
    if shape_a != shape_b:
        block.update(status="shape-changed", max_abs_diff=None, rel_frobenius=None, cosine=None)
        return block
    block.update(block_delta(va, vb, _rows_per_chunk(shape_a) if shape_a else None))
    unchanged = block["max_abs_diff"] is not None and block["max_abs_diff"] <= atol
    block["status"] = "unchanged" if unchanged else "changed"
    return block


def diff_models(a: ModelFile, b: ModelFile, atol: float = 0.0, layers: Sequence[str] = ()) -> dict[str, Any]:
    """The documented diff record. ``identical`` is False when anything differs beyond `atol`. Files of different
    frameworks (a Keras file and its torch or ONNX conversion) are compared by `diff_across_frameworks`."""
    if framework(a) != framework(b):
        return diff_across_frameworks(a, b, atol, layers)
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
            block = compare_block(ka, kb, ea["blocks"][ka]["_source"], eb["blocks"][kb]["_source"], atol)
            compared_blocks += 1
            changed_blocks += block["status"] != "unchanged"
            entry["blocks"].append(block)
        for key in gone:
            entry["blocks"].append({"key": key, "status": "removed"})
        for key in extra:
            entry["blocks"].append({"key": key, "status": "added"})
        out_layers.append(entry)
    identical = not (removed or added or renamed or shape_changes or changed_blocks) and _layers_identical(out_layers)
    return {
        **_header(a, b, atol),
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


def _header(a: ModelFile, b: ModelFile, atol: float) -> dict[str, Any]:
    """The diff record's version, the two files and the tolerance."""
    return {"diff_version": DIFF_VERSION,
            "a": {"file": a.path, "kind": a.kind, "keras_version": a.keras_version, "total_params": a.total_params},
            "b": {"file": b.path, "kind": b.kind, "keras_version": b.keras_version, "total_params": b.total_params},
            "atol": atol}


def _layers_identical(out_layers: list[dict[str, Any]]) -> bool:
    """No block added or removed and no class change inside the paired layers."""
    return not (any(b["status"] in ("removed", "added") for e in out_layers for b in e["blocks"])
                or any("class_change" in e for e in out_layers))


# ---------------------------------------------------------------------------------------------- across frameworks

def framework(model: ModelFile) -> str:
    """``keras``, ``torch``, ``onnx`` or ``keras arrays``: whose layout the file's arrays follow. Exported Keras
    arrays (.npz / .safetensors, gate blocks or fused) differ from a Keras file in storage only, so they are
    compared block by block like another framework."""
    backend = model.backend or ""
    if model.kind.startswith("torch") or backend.startswith("torch"):
        return "torch"
    if model.kind == "onnx" or backend.startswith("onnx"):
        return "onnx"
    return "keras arrays" if backend == "keras layout" else "keras"


class _Array:
    """A block value computed from the file (a transposed torch Linear weight, a summed bias), read on demand."""

    def __init__(self, read: Any) -> None:
        self._read = read

    def read(self) -> np.ndarray:
        return self._read()


def _module_key(layer: Layer, parents: dict[int, Layer]) -> str:
    """The key a layer's conversion is found under: torch ``enc.lstm`` and ONNX node ``enc/lstm`` both give
    ``enc/lstm``; a Keras Bidirectional's directions share their wrapper's key."""
    parent = parents.get(id(layer))
    if layer.class_name in gates.NATIVE_LAYOUTS:  # a torch / ONNX leaf: (module, l0 | l0_reverse | forward ...)
        module = "/".join(layer.path[:-1]).replace(".", "/")
        layers = parent.config.get("num_layers", 1) if parent is not None else 1
        # a multi-layer torch module holds one Keras layer per torch layer (enc/l0, enc/l1 in a Keras export)
        return f"{module}/l{layer.config['layer']}" if layers > 1 and "layer" in layer.config else module
    if parent is not None and parent.class_name == "Bidirectional":
        return parent.key
    return layer.key.replace(".", "/")


def _canonical_units(model: ModelFile, layers: Sequence[str]) -> list[dict[str, Any]]:
    """Every layer with weights as comparable blocks in Keras's gate order and orientation, grouped by module.

    Recurrent layers: the gate blocks; where the layer only ever adds its two biases (LSTM, SimpleRNN, a GRU
    without the reset-after form) a second bias ``rb_*`` is folded into ``b_*``. Other layers: their arrays by
    name (a torch ``Linear``'s ``weight`` is transposed once its partner is known to be a Keras Dense)."""
    parents = {id(child): layer for layer in model.layers for child in layer.children}
    units: dict[str, dict[str, Any]] = {}
    for layer in select_layers(model, layers):
        if layer.children or not layer.weights or _graph_constants_only(layer):
            continue
        split = gates.split(layer)
        key = _module_key(layer, parents)
        unit = units.setdefault(key, {"key": key, "leaves": [], "recurrent": split is not None and bool(split.blocks)})
        leaf: dict[str, Any] = {"layer": layer, "path": layer.key, "blocks": {}}
        if split is not None and split.blocks:
            leaf["family"] = split.layout.family
            keeps_rb = split.layout.family == "GRU" and split.reset_after
            for block in split.blocks:
                if block.kind == "rb" and not keeps_rb:
                    continue
                partner = split.block("rb" + block.key[1:]) if block.kind == "b" and not keeps_rb else None
                if partner is not None:
                    leaf["blocks"][block.key] = _Array(lambda b=block, p=partner: b.read() + p.read())
                else:
                    leaf["blocks"][block.key] = block
        else:
            leaf["family"] = None
            leaf["blocks"] = {t.name: t for t in layer.weights}
        unit["leaves"].append(leaf)
    return list(units.values())


def _graph_constants_only(layer: Layer) -> bool:
    """An ONNX node without learned parameters whose stored inputs are all graph constants: single values, or one
    value repeated (the zeros torch.onnx.export expands into an initial state). Never a layer to pair or list."""
    op = layer.class_name[5:] if layer.class_name.startswith("onnx.") else None
    if op is None or op in ONNX_WEIGHTED_OPS:
        return False
    for tensor in layer.weights:
        if is_graph_constant(layer, tensor):
            continue
        if math.prod(tensor.shape) > (1 << 16):
            return False
        values = np.asarray(tensor.read())
        if values.size and values.min() != values.max():
            return False
    return True


def _compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two non-recurrent units hold like weights: per leaf the same multiset of shapes, a 2-D one possibly
    transposed (a Keras Dense kernel (in, out) is a torch / ONNX Linear weight (out, in))."""
    def shapes(unit: dict[str, Any]) -> list[list[tuple[int, ...]]]:
        return [sorted(tuple(b.shape if hasattr(b, "shape") else b.read().shape) for b in leaf["blocks"].values())
                for leaf in unit["leaves"]]
    def same(x: list[tuple[int, ...]], y: list[tuple[int, ...]]) -> bool:
        return sorted(x) == sorted(y) or sorted(x) == sorted(s[::-1] if len(s) == 2 else s for s in y)
    return all(same(x, y) for x, y in zip(shapes(a), shapes(b)))


def _shapes(unit: dict[str, Any]) -> list[tuple[tuple[int, ...], ...]]:
    return [tuple(tuple(b.shape if hasattr(b, "shape") else b.read().shape) for _, b in sorted(leaf["blocks"].items()))
            for leaf in unit["leaves"]]


def _pair_units(old: list[dict[str, Any]], new: list[dict[str, Any]]):
    """Units with the same key; then, in order, units of the same kind whose blocks have the same shapes."""
    by_key = {u["key"]: u for u in new}
    pairs = [(u, by_key[u["key"]]) for u in old if u["key"] in by_key]
    used_old = {id(a) for a, _ in pairs}
    used_new = {id(b) for _, b in pairs}
    left = [u for u in old if id(u) not in used_old]
    right = [u for u in new if id(u) not in used_new]
    for unit in list(left):
        # like with like: recurrent with recurrent of the same block shapes, weights with weights of the same shapes
        match = next((u for u in right if u["recurrent"] == unit["recurrent"]
                      and len(u["leaves"]) == len(unit["leaves"])
                      and (_shapes(u) == _shapes(unit) if unit["recurrent"] else _compatible(unit, u))), None)
        if match is not None:
            pairs.append((unit, match))
            left.remove(unit)
            right.remove(match)
    return pairs, left, right


def _other_blocks(ka: dict[str, Any], kb: dict[str, Any], class_a: str, class_b: str) -> None:
    """Keras Dense / Embedding against a torch Linear / Embedding: name and orient the torch arrays as Keras's."""
    for keras_side, torch_side, keras_class in ((ka, kb, class_a), (kb, ka, class_b)):
        weight = torch_side.get("weight")
        if weight is None or "weight" in keras_side:
            continue
        if "kernel" in keras_side and keras_class == "Dense" and len(weight.shape) == 2:
            torch_side["kernel"] = _Array(lambda w=weight: np.ascontiguousarray(w.read().T))
            del torch_side["weight"]
        elif "embeddings" in keras_side:
            torch_side["embeddings"] = torch_side.pop("weight")


def diff_across_frameworks(a: ModelFile, b: ModelFile, atol: float = 0.0, layers: Sequence[str] = ()) -> dict[str, Any]:
    """The diff record for a Keras file and its PyTorch / ONNX conversion (or any two files of different
    frameworks): both sides are split into gate blocks in Keras's order and orientation, and modules are matched by
    key (``bidi`` = torch ``bidi.weight_ih_l0`` = ONNX node ``bidi``), a Bidirectional's directions in order."""
    pairs, removed, added = _pair_units(_canonical_units(a, layers), _canonical_units(b, layers))
    out_layers: list[dict[str, Any]] = []
    compared = changed = 0
    unpaired_leaves: list[tuple[str, dict[str, Any]]] = []
    for ua, ub in pairs:
        for index in range(max(len(ua["leaves"]), len(ub["leaves"]))):
            if index >= len(ua["leaves"]) or index >= len(ub["leaves"]):
                side, leaf = ("added", ub["leaves"][index]) if index >= len(ua["leaves"]) else ("removed", ua["leaves"][index])
                unpaired_leaves.append((side, leaf))
                continue
            la, lb = ua["leaves"][index], ub["leaves"][index]
            class_a, class_b = la["layer"].class_name, lb["layer"].class_name
            entry: dict[str, Any] = {"a": la["path"], "b": lb["path"], "class_name": f"{class_a} / {class_b}",
                                     "renamed": False, "shape_change": None, "blocks": []}
            if la["family"] != lb["family"]:
                entry["class_change"] = {"a": class_a, "b": class_b}
            if la["family"] is None:
                _other_blocks(la["blocks"], lb["blocks"], class_a, class_b)
            block_pairs, gone, extra = match_blocks(list(la["blocks"]), list(lb["blocks"])) if la["family"] is None \
                else ([(k, k) for k in la["blocks"] if k in lb["blocks"]], [k for k in la["blocks"] if k not in lb["blocks"]],
                      [k for k in lb["blocks"] if k not in la["blocks"]])
            for ka, kb in block_pairs:
                block = compare_block(ka, kb, la["blocks"][ka], lb["blocks"][kb], atol)
                compared += 1
                changed += block["status"] != "unchanged"
                entry["blocks"].append(block)
            entry["blocks"] += [{"key": k, "status": "removed"} for k in gone]
            entry["blocks"] += [{"key": k, "status": "added"} for k in extra]
            out_layers.append(entry)

    def listed(leaf: dict[str, Any]) -> dict[str, Any]:
        layer = leaf["layer"]
        return {"layer": leaf["path"], "class_name": layer.class_name,
                "weights": ", ".join(f"{t.name} {t.shape}" for t in layer.weights)}

    # the summary counts what the table shows: a block whose shapes differ is a shape change of its layer
    shape_changes = [{"layer": e["b"], "a": ", ".join(f"{b['key']} {tuple(b['shape_a'])}" for b in e["blocks"]
                                                     if b.get("status") == "shape-changed"),
                      "b": ", ".join(f"{b['key']} {tuple(b['shape_b'])}" for b in e["blocks"]
                                     if b.get("status") == "shape-changed")}
                     for e in out_layers if any(b.get("status") == "shape-changed" for b in e["blocks"])]
    for entry, change in ((e, c) for e in out_layers for c in shape_changes if c["layer"] == e["b"]):
        entry["shape_change"] = {"a": change["a"], "b": change["b"]}
    gone_layers = [listed(leaf) for u in removed for leaf in u["leaves"]] + [listed(l) for s, l in unpaired_leaves if s == "removed"]
    new_layers = [listed(leaf) for u in added for leaf in u["leaves"]] + [listed(l) for s, l in unpaired_leaves if s == "added"]
    identical = not (gone_layers or new_layers or changed) and _layers_identical(out_layers)
    return {
        **_header(a, b, atol),
        "identical": identical,
        "across_frameworks": [framework(a), framework(b)],
        "summary": {"layers_compared": len(out_layers), "blocks_compared": compared, "blocks_changed": changed,
                    "layers_added": len(new_layers), "layers_removed": len(gone_layers), "layers_renamed": 0,
                    "shape_changes": len(shape_changes)},
        "added": new_layers,
        "removed": gone_layers,
        "renamed": [],
        "shape_changes": shape_changes,
        "layers": out_layers,
    }

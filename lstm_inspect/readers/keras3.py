"""Keras's native format: the ``.keras`` archive (``config.json``, ``metadata.json``, ``model.weights.h5``),
the same members in a directory, and Keras 3 weights-only ``.weights.h5`` files.

Inside the weights file each object keeps its arrays in ``<path>/vars/<i>``, where the path is built from
attribute names and snake-cased class names (``layers/lstm_1/cell``), not from layer names; Keras >= 3.6 also
writes the layer's own name as attribute ``name`` of each ``vars`` group. Layers are matched to groups by that
name first and by the class-name scheme otherwise.
"""
from __future__ import annotations

import os
import re
from typing import Any

import h5py

from .. import schema
from ..config import build_tree
from ..errors import CorruptFile, UnsupportedFile
from ..model import CONTAINER_CLASSES, Layer, ModelFile, Tensor
from . import h5safe
from .archive import Archive
from .infer import infer_class

WEIGHTS_MEMBER = "model.weights.h5"
#: Attribute paths at which wrappers and RNN layers keep their sub-objects.
_CELL, _FORWARD, _BACKWARD, _WRAPPED = "cell", "forward_layer", "backward_layer", "layer"


def looks_like_weights(f: h5py.File) -> bool:
    return h5safe.has(f, "layers") or h5safe.has(f, "vars") or h5safe.has(f, "_layer_checkpoint_dependencies")


def read_archive(path: str, label: str) -> ModelFile:
    archive = Archive(path, label)
    try:
        def read_text(name: str) -> bytes | None:
            return archive.read_bytes(name, limit=h5safe.MAX_ATTRIBUTE_BYTES) if archive.has(name) else None

        if not archive.has("config.json"):
            raise UnsupportedFile("zip archive has no config.json: not a .keras model", label)
        if not archive.has(WEIGHTS_MEMBER):
            other = "model.weights.npz" if archive.has("model.weights.npz") else None
            if other:
                raise UnsupportedFile(
                    "weights are stored as model.weights.npz (pickled arrays), which lstm-inspect refuses to unpickle",
                    label,
                )
            raise CorruptFile(f".keras archive has no {WEIGHTS_MEMBER}: the model's weights are missing", label)
        weights = h5safe.open_file(archive.open_member(WEIGHTS_MEMBER), label)
        with h5safe.library_errors_as_corrupt(label):
            model = _read(read_text("config.json"), read_text("metadata.json"), weights, "keras-zip", label)
    except BaseException:
        archive.close()
        raise
    model._closers += [archive.close, weights.close]
    model._closers.reverse()
    return model


def read_directory(path: str, label: str) -> ModelFile:
    def read_text(name: str) -> bytes | None:
        member = os.path.join(path, name)
        if not os.path.isfile(member):
            return None
        if os.path.getsize(member) > h5safe.MAX_ATTRIBUTE_BYTES:
            raise CorruptFile(f"{name} is larger than {h5safe.MAX_ATTRIBUTE_BYTES:,} bytes", label)
        with open(member, "rb") as handle:
            return handle.read()

    config = read_text("config.json")
    if config is None:
        raise UnsupportedFile("directory has no config.json: not a saved Keras model", label)
    weights_path = os.path.join(path, WEIGHTS_MEMBER)
    if os.path.islink(weights_path) or not os.path.isfile(weights_path):
        raise CorruptFile(f"model directory has no {WEIGHTS_MEMBER} (or it is a link)", label)
    weights = h5safe.open_file(weights_path, label)
    try:
        with h5safe.library_errors_as_corrupt(label):
            model = _read(config, read_text("metadata.json"), weights, "keras-dir", label)
    except BaseException:
        weights.close()
        raise
    model._closers.append(weights.close)
    return model


def read_weights(f: h5py.File, label: str) -> ModelFile:
    """A Keras 3 ``save_weights`` file: no config, so the tree is rebuilt from the group structure."""
    model = ModelFile(path=label, kind="keras3-weights-h5", root=Layer(name="model", class_name="Model", path=()),
                      has_config=False)
    with h5safe.library_errors_as_corrupt(label):
        model.root.children = [_layer_from_group(g, name, (), label) for name, g in _sub_layers(f, label)]
    model.warnings.append("weights-only file: no model config, so layer classes are inferred from the file's structure")
    return model


def _read(config_text: bytes | None, metadata_text: bytes | None, weights: h5py.File, kind: str, label: str) -> ModelFile:
    config = h5safe.parse_json(config_text or b"", "config.json", label)
    metadata = h5safe.parse_json(metadata_text, "metadata.json", label) if metadata_text else {}
    if not isinstance(metadata, dict):
        metadata = {}
    model = ModelFile(path=label, kind=kind, root=build_tree(config, label),
                      keras_version=_str(metadata.get("keras_version")), backend=_str(metadata.get("backend")))
    _attach(model.root, weights, model.warnings, label, is_root=True)
    return model


def _attach(layer: Layer, group: h5py.Group, warnings: list[str], label: str, is_root: bool = False) -> None:
    """Give `layer` (and its sub-layers) the arrays stored in `group`."""
    if layer.class_name == "RNN" and len(layer.children) == 1:  # RNN(cell): the cell's arrays are in <rnn>/cell
        if h5safe.has(group, _CELL):
            _attach(layer.children[0], h5safe.child(group, _CELL, label), warnings, label)
        elif _stores_weights(layer.children[0]):
            warnings.append(f"{layer.children[0].key}: no weights found for this cell in the file")
        return
    if layer.class_name == "StackedRNNCells" and layer.children:
        _attach_cells(layer, group, warnings, label)
        return
    if not is_root or not layer.children:
        layer.weights = _leaf_tensors(layer.class_name, layer.config, group, label)
    if layer.class_name == "Bidirectional" and len(layer.children) == 2:
        for child, attr_name in zip(layer.children, (_FORWARD, _BACKWARD)):
            if h5safe.has(group, attr_name):
                _attach(child, h5safe.child(group, attr_name, label), warnings, label)
        return
    if layer.class_name == "TimeDistributed" and layer.children:
        if h5safe.has(group, _WRAPPED):
            _attach(layer.children[0], h5safe.child(group, _WRAPPED, label), warnings, label)
        return
    if not layer.children:
        return
    groups = list(_sub_layers(group, label))
    by_name = {_vars_name(g, label): g for _, g in groups}
    by_name.pop(None, None)
    by_key = dict(groups)
    used: set[str] = set()
    counters: dict[str, int] = {}
    seen_input = any(key.startswith("input_layer") for key, _ in groups)
    for child in layer.children:
        if child.class_name == "InputLayer" and not seen_input:
            continue  # Sequential does not save its InputLayer
        target = _group_of(child, by_name, by_key, counters, label)
        if target is None:
            if _stores_weights(child):
                warnings.append(f"{child.key}: no weights found for this layer in the file")
            continue
        used.add(target.name)
        _attach(child, target, warnings, label)
    for key, g in groups:
        if g.name not in used and _has_arrays(g, label):
            warnings.append(f"{layer.key or 'model'}: weights group {key!r} matches no layer in the config")


def _attach_cells(layer: Layer, group: h5py.Group, warnings: list[str], label: str) -> None:
    """StackedRNNCells keeps its cells in ``cells/<snake class>[_<n>]``, each with its own ``vars``."""
    found = [(k, g) for k, g in h5safe.members(h5safe.child(group, "cells", label), label)
             if isinstance(g, h5py.Group)] if h5safe.has(group, "cells") else []
    by_name = {_vars_name(g, label): g for _, g in found}
    by_key = dict(found)
    counters: dict[str, int] = {}
    for child in layer.children:
        target = _group_of(child, by_name, by_key, counters, label)
        if target is None:
            if _stores_weights(child):
                warnings.append(f"{child.key}: no weights found for this cell in the file")
            continue
        _attach(child, target, warnings, label)


def _group_of(child: Layer, by_name: dict[Any, h5py.Group], by_key: dict[str, h5py.Group], counters: dict[str, int],
              label: str) -> h5py.Group | None:
    """The group holding `child`: the one whose ``vars`` carry its name (Keras >= 3.6), else the one Keras's naming
    scheme gives it (snake-cased class, ``_1``, ``_2`` in order) unless that group names another layer."""
    key = _unique(_snake(child.class_name), counters)
    target = by_name.get(child.name)
    if target is None and key in by_key and _vars_name(by_key[key], label) in (None, child.name):
        target = by_key[key]
    return target


def _leaf_tensors(class_name: str, config: dict[str, Any], group: h5py.Group, label: str) -> list[Tensor]:
    stored = _vars(group, label)
    if h5safe.has(group, _CELL):
        stored += _vars(h5safe.child(group, _CELL, label), label)
    if config:
        roles = schema.weight_roles(class_name, config)
        names = [r for r, _ in roles] if roles is not None and len(roles) == len(stored) else None
    else:
        names = schema.roles_for_count(class_name, len(stored))
    tensors = []
    for index, ds in enumerate(stored):
        shape, dtype = h5safe.dataset_info(ds, label)
        tensors.append(Tensor(name=names[index] if names else f"var{index}", shape=shape, dtype=dtype, source=ds.name,
                              _load=lambda ds=ds: h5safe.read_dataset(ds, label)))
    return tensors


def _vars(group: h5py.Group, label: str) -> list[h5py.Dataset]:
    if not h5safe.has(group, "vars"):
        return []
    vars_group = h5safe.child(group, "vars", label)
    items = [(name, obj) for name, obj in h5safe.members(vars_group, label) if isinstance(obj, h5py.Dataset)]
    if not all(name.isdigit() for name, _ in items):
        raise CorruptFile(f"{vars_group.name} holds arrays not named by their index", label)
    return [obj for _, obj in sorted(items, key=lambda item: int(item[0]))]


def _vars_name(group: h5py.Group, label: str) -> str | None:
    if not h5safe.has(group, "vars"):
        return None
    name = h5safe.attr(h5safe.child(group, "vars", label), "name", label)
    return name if isinstance(name, str) else None


def _sub_layers(group: h5py.Group, label: str) -> list[tuple[str, h5py.Group]]:
    for container in ("layers", "_layer_checkpoint_dependencies"):
        if h5safe.has(group, container):
            found = h5safe.child(group, container, label)
            return [(k, g) for k, g in h5safe.members(found, label) if isinstance(g, h5py.Group)]
    return []


def _has_arrays(group: h5py.Group, label: str) -> bool:
    found = False

    def visit(_name: str, obj: Any) -> None:
        nonlocal found
        found = found or isinstance(obj, h5py.Dataset)

    group.visititems(visit)
    return found


def _stores_weights(layer: Layer) -> bool:
    roles = schema.weight_roles(layer.class_name, layer.config)
    return bool(layer.children) or roles is None or bool(roles)


_KNOWN_CLASSES = {
    **{re.sub(r"\W+", "", c): c for c in list(schema.WEIGHT_ROLES) + list(schema.WEIGHTLESS)},
    "Bidirectional": "Bidirectional", "TimeDistributed": "TimeDistributed", "RNN": "RNN",
    "StackedRNNCells": "StackedRNNCells",
    "Sequential": "Sequential", "Functional": "Functional",
}


def _layer_from_group(group: h5py.Group, key: str, parent: tuple[str, ...], label: str) -> Layer:
    name = _vars_name(group, label) or key
    class_name = _class_from_key(key)
    layer = Layer(name=name, class_name=class_name, path=parent + (name,), inferred=True)
    if h5safe.has(group, _FORWARD) and h5safe.has(group, _BACKWARD):
        layer.class_name = "Bidirectional"
        layer.children = [_layer_from_group(h5safe.child(group, a, label), a, layer.path, label)
                          for a in (_FORWARD, _BACKWARD)]
    elif class_name == "RNN" and h5safe.has(group, _CELL):  # RNN(cell), keyed rnn[_n]: the arrays are the cell's
        layer.class_name = "RNN"
        layer.children = [_layer_from_group(h5safe.child(group, _CELL, label), _CELL, layer.path, label)]
    elif h5safe.has(group, "cells"):  # StackedRNNCells: cells/lstm_cell, cells/lstm_cell_1, ...
        layer.class_name = "StackedRNNCells"
        cells = h5safe.child(group, "cells", label)
        layer.children = [_layer_from_group(g, k, layer.path, label) for k, g in h5safe.members(cells, label)
                          if isinstance(g, h5py.Group)]
    elif h5safe.has(group, _WRAPPED) and not h5safe.has(group, "layers"):
        layer.class_name = "TimeDistributed" if class_name == "Unknown" else class_name
        layer.children = [_layer_from_group(h5safe.child(group, _WRAPPED, label), _WRAPPED, layer.path, label)]
    elif _sub_layers(group, label):
        if layer.class_name not in CONTAINER_CLASSES:
            layer.class_name = "Functional" if class_name == "Unknown" else class_name
        layer.children = [_layer_from_group(g, k, layer.path, label) for k, g in _sub_layers(group, label)]
    else:
        if layer.class_name == "Unknown":  # a wrapped layer is keyed by attribute; its own name may tell
            layer.class_name = _class_from_key(re.sub(r"^(forward|backward)_", "", name))
        layer.weights = _leaf_tensors(layer.class_name, {}, group, label)
        if layer.class_name == "Unknown":  # nothing tells: the arrays' shapes decide
            _name_recurrent_roles(layer.weights)
            layer.class_name = infer_class(layer, hint=name)
    return layer


def _name_recurrent_roles(tensors: list[Tensor]) -> None:
    """Name (kernel, recurrent_kernel[, bias]) when the arrays have the shapes of a recurrent cell."""
    if len(tensors) in (2, 3) and len(tensors[1].shape) == 2 and tensors[0].shape[-1:] == tensors[1].shape[-1:]:
        for tensor, role in zip(tensors, ("kernel", "recurrent_kernel", "bias")):
            tensor.name = role


def _class_from_key(key: str) -> str:
    base = re.sub(r"_\d+$", "", key)
    for known in _KNOWN_CLASSES.values():
        if _snake(known) == base:
            return known
    return "Unknown"


def _snake(class_name: str) -> str:
    """Keras's `to_snake_case`, which names the groups of the weights file."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique(name: str, counters: dict[str, int]) -> str:
    count = counters.get(name, 0)
    counters[name] = count + 1
    return name if count == 0 else f"{name}_{count}"


def _str(value: Any) -> str | None:
    return str(value) if value is not None else None

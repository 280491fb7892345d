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
from .keras_config import build_tree
from ..errors import CorruptFile, UnsafeFile, UnsupportedFile
from ..model import CONTAINER_CLASSES, Layer, ModelFile, Tensor
from . import h5safe
from .archive import Archive
from .infer import infer_class

WEIGHTS_MEMBER = "model.weights.h5"
#: Attribute paths at which wrappers and RNN layers keep their sub-objects.
_CELL, _FORWARD, _BACKWARD, _WRAPPED = "cell", "forward_layer", "backward_layer", "layer"


class Node:
    """One group path of the weights store: a group of the weights file, or of every shard of a sharded store
    (Keras 3 ``save_weights(..., max_shard_size=...)`` splits the same tree, even one ``vars`` group, across
    files). Every access goes through `h5safe`."""

    def __init__(self, groups: list[h5py.Group], label: str) -> None:
        self.groups = groups
        self.label = label

    @property
    def name(self) -> str:
        return self.groups[0].name

    def has(self, name: str) -> bool:
        return any(h5safe.has(g, name) for g in self.groups)

    def child(self, name: str) -> "Node":
        found = [h5safe.child(g, name, self.label) for g in self.groups if h5safe.has(g, name)]
        if not found:
            raise CorruptFile(f"missing {(self.name.rstrip('/') + '/' + name)!r}", self.label)
        if not all(isinstance(g, h5py.Group) for g in found):
            raise CorruptFile(f"{found[0].name} is not a group", self.label)
        return Node(found, self.label)

    def members(self) -> list[tuple[str, "Node"]]:
        """Sub-groups by name, in the order the first shard holding each lists them."""
        found: dict[str, list[h5py.Group]] = {}
        for g in self.groups:
            for key, obj in h5safe.members(g, self.label):
                if isinstance(obj, h5py.Group):
                    found.setdefault(key, []).append(obj)
        return [(key, Node(groups, self.label)) for key, groups in found.items()]

    def datasets(self) -> list[tuple[str, h5py.Dataset]]:
        found: dict[str, h5py.Dataset] = {}
        for g in self.groups:
            for key, obj in h5safe.members(g, self.label):
                if isinstance(obj, h5py.Dataset):
                    if key in found:
                        raise CorruptFile(f"{obj.name} is stored in two shards", self.label)
                    found[key] = obj
        return list(found.items())

    def attr(self, name: str) -> Any:
        return next((v for v in (h5safe.attr(g, name, self.label) for g in self.groups) if v is not None), None)

    def has_arrays(self) -> bool:
        found = False

        def visit(_name: str, obj: Any) -> None:
            nonlocal found
            found = found or isinstance(obj, h5py.Dataset)

        for g in self.groups:
            g.visititems(visit)
        return found


def looks_like_weights(f: h5py.File) -> bool:
    return any(h5safe.has(f, name) for name in ("layers", "vars", "_layer_checkpoint_dependencies"))


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
            model = _read(read_text("config.json"), read_text("metadata.json"), Node([weights], label),
                          "keras-zip", label)
    except BaseException:
        archive.close()
        raise
    model._closers += [archive.close, weights.close]
    model._closers.reverse()
    return model


def read_directory(path: str, label: str) -> ModelFile:
    """A Keras model saved as a directory. Its members are opened as regular files only, never through a symbolic
    link (a config.json linked to /etc/passwd or /dev/zero is refused), each checked and read through one handle."""
    from . import safe_open

    def read_text(name: str) -> bytes | None:
        member = os.path.join(path, name)
        if not os.path.lexists(member):
            return None
        return safe_open.read_bounded(member, label, h5safe.MAX_ATTRIBUTE_BYTES, follow=False)

    config = read_text("config.json")
    if config is None:
        raise UnsupportedFile("directory has no config.json: not a saved Keras model", label)
    metadata = read_text("metadata.json")
    weights_path = os.path.join(path, WEIGHTS_MEMBER)
    if not os.path.lexists(weights_path):
        raise CorruptFile(f"model directory has no {WEIGHTS_MEMBER}", label)
    fd = safe_open.open_regular(weights_path, label, follow=False)
    try:
        weights = h5safe.open_file(safe_open.handle_path(fd, weights_path), label)
    except BaseException:
        os.close(fd)
        raise
    try:
        with h5safe.library_errors_as_corrupt(label):
            model = _read(config, metadata, Node([weights], label), "keras-dir", label)
    except BaseException:
        weights.close()
        os.close(fd)
        raise
    model._closers.extend([lambda: os.close(fd), weights.close])  # closed in reverse: the handle last
    return model


def read_weights(f: h5py.File, label: str) -> ModelFile:
    """A Keras 3 ``save_weights`` file: no config, so the tree is rebuilt from the group structure."""
    return _weights_model(Node([f], label), "keras3-weights-h5", label)


#: How Keras names the shards of ``<base>.weights.json``: ``<base>_00000.weights.h5``, ``<base>_00001...``.
SHARD_NAME = re.compile(r"^(?P<base>.+)_\d{5}\.weights\.h5$")
MAX_SHARDS = 10_000


def is_shard_index(parsed: Any) -> bool:
    """A parsed ``.weights.json``: Keras's sharding config, ``{"metadata": ..., "weight_map": {path: shard(s)}}``."""
    return isinstance(parsed, dict) and isinstance(parsed.get("weight_map"), dict)


def shards_of(path: str, index: dict[str, Any], label: str) -> list[str]:
    """The shard files a ``.weights.json`` index names: plain file names beside it, never a path or a link."""
    names: set[str] = set()
    for key, value in index["weight_map"].items():
        for name in value if isinstance(value, list) else [value]:
            if not isinstance(name, str) or not SHARD_NAME.match(name) or os.path.basename(name) != name \
                    or name in (".", ".."):
                raise UnsafeFile(f"weight_map entry {str(key)[:80]!r} names {str(name)[:80]!r}, not a shard file "
                                 "beside the index (<name>_00000.weights.h5)", label)
            names.add(name)
    if not names:
        raise CorruptFile("the sharded-weights index names no shard", label)
    if len(names) > MAX_SHARDS:
        raise UnsafeFile(f"the index names {len(names):,} shards (more than {MAX_SHARDS:,})", label)
    found = []
    for name in sorted(names):
        shard = os.path.join(os.path.dirname(os.path.abspath(path)), name)
        if os.path.islink(shard):
            raise UnsafeFile(f"shard {name} is a link; refusing to follow it", label)
        if not os.path.isfile(shard):
            raise CorruptFile(f"shard {name}, named by the index, is missing", label)
        found.append(shard)
    return found


def read_sharded(path: str, index: dict[str, Any], label: str) -> ModelFile:
    """Keras 3 ``save_weights("x.weights.json", max_shard_size=...)``: the index names shards that each hold part
    of one ``.weights.h5`` tree; read as one weights file."""
    from . import safe_open

    files: list[h5py.File] = []
    handles: list[int] = []

    def close() -> None:
        for f in files:
            f.close()
        for fd in handles:
            os.close(fd)

    try:
        for shard in shards_of(path, index, label):
            # opened once without following a link, checked on the handle (a regular file), and read through it:
            # libhdf5 gets the handle's /proc/self/fd name, never the shard's name again
            handles.append(safe_open.open_regular(shard, label, follow=False))
            files.append(h5safe.open_file(safe_open.handle_path(handles[-1], shard),
                                          f"{label}: {os.path.basename(shard)}"))
        model = _weights_model(Node(files, label), "keras3-sharded-weights", label)
    except BaseException:
        close()
        raise
    model._closers.append(close)
    return model


def _weights_model(root: Node, kind: str, label: str) -> ModelFile:
    model = ModelFile(path=label, kind=kind, root=Layer(name="model", class_name="Model", path=()), has_config=False)
    with h5safe.library_errors_as_corrupt(label):
        walk = _Walk(label)
        model.root.children = [_layer_from_group(g, name, (), label, walk) for name, g in _sub_layers(root, label)]
    model.warnings.append("weights-only file: no model config, so layer classes are inferred from the file's structure")
    return model


def _read(config_text: bytes | None, metadata_text: bytes | None, weights: Node, kind: str, label: str) -> ModelFile:
    config = h5safe.parse_json(config_text or b"", "config.json", label)
    metadata = h5safe.parse_json(metadata_text, "metadata.json", label) if metadata_text else {}
    if not isinstance(metadata, dict):
        metadata = {}
    model = ModelFile(path=label, kind=kind, root=build_tree(config, label),
                      keras_version=_str(metadata.get("keras_version")), backend=_str(metadata.get("backend")))
    _attach(model.root, weights, model.warnings, label, is_root=True)
    return model


def _attach(layer: Layer, group: Node, warnings: list[str], label: str, is_root: bool = False) -> None:
    """Give `layer` (and its sub-layers) the arrays stored in `group`."""
    if layer.class_name == "RNN" and len(layer.children) == 1:  # RNN(cell): the cell's arrays are in <rnn>/cell
        if group.has(_CELL):
            _attach(layer.children[0], group.child(_CELL), warnings, label)
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
            if group.has(attr_name):
                _attach(child, group.child(attr_name), warnings, label)
        return
    if layer.class_name == "TimeDistributed" and layer.children:
        if group.has(_WRAPPED):
            _attach(layer.children[0], group.child(_WRAPPED), warnings, label)
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
        if g.name not in used and g.has_arrays():
            warnings.append(f"{layer.key or 'model'}: weights group {key!r} matches no layer in the config")


def _attach_cells(layer: Layer, group: Node, warnings: list[str], label: str) -> None:
    """StackedRNNCells keeps its cells in ``cells/<snake class>[_<n>]``, each with its own ``vars``."""
    found = group.child("cells").members() if group.has("cells") else []
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


def _group_of(child: Layer, by_name: dict[Any, Node], by_key: dict[str, Node], counters: dict[str, int],
              label: str) -> Node | None:
    """The group holding `child`: the one whose ``vars`` carry its name (Keras >= 3.6), else the one Keras's naming
    scheme gives it (snake-cased class, ``_1``, ``_2`` in order) unless that group names another layer."""
    key = _unique(_snake(child.class_name), counters)
    target = by_name.get(child.name)
    if target is None and key in by_key and _vars_name(by_key[key], label) in (None, child.name):
        target = by_key[key]
    return target


def _leaf_tensors(class_name: str, config: dict[str, Any], group: Node, label: str) -> list[Tensor]:
    stored = _vars(group, label)
    if group.has(_CELL):
        stored += _vars(group.child(_CELL), label)
    names: list[str] | None
    if class_name in schema.SUB_OBJECTS and not stored:
        stored, names = _sub_object_vars(class_name, group, label)
    elif config:
        roles = schema.weight_roles(class_name, config)
        names = [r for r, _ in roles] if roles is not None and len(roles) == len(stored) else None
    else:
        names = schema.roles_for_count(class_name, len(stored))
    tensors = []
    for index, ds in enumerate(stored):
        shape, dtype = h5safe.dataset_info(ds, label)
        tensors.append(Tensor(name=names[index] if names else f"var{index}", shape=shape, dtype=dtype, source=ds.name,
                              _load=lambda ds=ds: h5safe.read_dataset(ds, label),
                              _read_part=lambda index, out, ds=ds: h5safe.read_part(ds, index, out, label),
                              _mapped=lambda ds=ds: h5safe.mapped_place(ds)))
    return tensors


def _sub_object_vars(class_name: str, group: Node, label: str) -> tuple[list[h5py.Dataset], list[str] | None]:
    """The arrays of a layer built from sub-layers (MultiHeadAttention's query / key / value / output projections),
    named ``query_kernel``, ``query_bias``, ... by the sub-object that holds them."""
    stored: list[h5py.Dataset] = []
    names: list[str] = []
    for attr, role in schema.SUB_OBJECTS[class_name]:
        for key in (attr, "_" + attr):  # Keras 3 names the attribute query_dense, tf-keras _query_dense
            if group.has(key):
                found = _vars(group.child(key), label)
                stored += found
                names += [f"{role}_{kind}" for kind in ("kernel", "bias")[:len(found)]]
                break
    return stored, (names if len(names) == len(stored) else None)


def _vars(group: Node, label: str) -> list[h5py.Dataset]:
    if not group.has("vars"):
        return []
    vars_group = group.child("vars")
    items = vars_group.datasets()
    if not all(name.isdigit() for name, _ in items):
        raise CorruptFile(f"{vars_group.name} holds arrays not named by their index", label)
    if sorted(int(name) for name, _ in items) != list(range(len(items))):  # e.g. a shard left out
        raise CorruptFile(f"{vars_group.name} holds arrays {sorted(int(n) for n, _ in items)}: some are missing",
                          label)
    return [obj for _, obj in sorted(items, key=lambda item: int(item[0]))]


def _vars_name(group: Node, label: str) -> str | None:
    if not group.has("vars"):
        return None
    name = group.child("vars").attr("name")
    return name if isinstance(name, str) else None


def _sub_layers(group: Node, label: str) -> list[tuple[str, Node]]:
    for container in ("layers", "_layer_checkpoint_dependencies"):
        if group.has(container):
            found = group.child(container)
            return found.members()
    return []


def _stores_weights(layer: Layer) -> bool:
    if str(layer.entry.get("module", "")).startswith("keras.src.ops."):
        return False  # a Keras 3 operation in a functional graph (x[:, -1] is GetItem): never holds weights
    roles = schema.weight_roles(layer.class_name, layer.config)
    return bool(layer.children) or roles is None or bool(roles)


_KNOWN_CLASSES = {
    **{re.sub(r"\W+", "", c): c for c in list(schema.WEIGHT_ROLES) + list(schema.WEIGHTLESS)},
    "Bidirectional": "Bidirectional", "TimeDistributed": "TimeDistributed", "RNN": "RNN",
    "StackedRNNCells": "StackedRNNCells",
    "Sequential": "Sequential", "Functional": "Functional",
}


#: A weights file without config is walked group by group; no real model has anywhere near this many layers.
MAX_WALKED_GROUPS = 100_000


class _Walk:
    """The groups a structure walk entered, by HDF5 object identity (file and object address): each is entered at
    most once, so a hard link back to an ancestor (a cycle) or a lattice of links (2**40 paths through 40 groups)
    is refused in one line instead of recursing without end, and at most MAX_WALKED_GROUPS are entered in all."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.seen: set[tuple[Any, ...]] = set()

    def enter(self, group: Node) -> None:
        identity = tuple(g.id for g in group.groups)
        if identity in self.seen:
            raise CorruptFile(f"{group.name} is linked from two places (a hard-link cycle or shared group); a Keras "
                              "weights file is a tree", self.label)
        self.seen.add(identity)
        if len(self.seen) > MAX_WALKED_GROUPS:
            raise UnsafeFile(f"more than {MAX_WALKED_GROUPS:,} layer groups; refusing to walk further", self.label)


def _layer_from_group(group: Node, key: str, parent: tuple[str, ...], label: str, walk: _Walk | None = None) -> Layer:
    walk = walk or _Walk(label)
    walk.enter(group)
    name = _vars_name(group, label) or key
    class_name = _class_from_key(key)
    layer = Layer(name=name, class_name=class_name, path=parent + (name,), inferred=True)
    if group.has(_FORWARD) and group.has(_BACKWARD):
        layer.class_name = "Bidirectional"
        layer.children = [_layer_from_group(group.child(a), a, layer.path, label, walk)
                          for a in (_FORWARD, _BACKWARD)]
    elif class_name == "RNN" and group.has(_CELL):  # RNN(cell), keyed rnn[_n]: the arrays are the cell's
        layer.class_name = "RNN"
        layer.children = [_layer_from_group(group.child(_CELL), _CELL, layer.path, label, walk)]
    elif group.has("cells"):  # StackedRNNCells: cells/lstm_cell, cells/lstm_cell_1, ...
        layer.class_name = "StackedRNNCells"
        cells = group.child("cells")
        layer.children = [_layer_from_group(g, k, layer.path, label, walk) for k, g in cells.members()]
    elif group.has(_WRAPPED) and not group.has("layers"):
        layer.class_name = "TimeDistributed" if class_name == "Unknown" else class_name
        layer.children = [_layer_from_group(group.child(_WRAPPED), _WRAPPED, layer.path, label, walk)]
    elif _sub_layers(group, label):
        if layer.class_name not in CONTAINER_CLASSES:
            layer.class_name = "Functional" if class_name == "Unknown" else class_name
        layer.children = [_layer_from_group(g, k, layer.path, label, walk) for k, g in _sub_layers(group, label)]
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

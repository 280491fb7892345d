"""TF2 object-based checkpoints (``model.save_weights("ckpt")`` in tf-keras 2.x, ``tf.train.Checkpoint``) and the
variables of SavedModel directories, as the neutral model.

The bundle's ``_CHECKPOINTABLE_OBJECT_GRAPH`` string tensor is a serialized ``TrackableObjectGraph``: nodes with
children (node id, local name), attributes (``VARIABLE_VALUE`` with the tensor's ``checkpoint_key`` and its
``full_name``) and slot-variable references. ``full_name`` is the Keras variable path (``lstm/lstm_cell/kernel``,
``bidi/forward_lstm/lstm_cell/bias``): the only place layer names survive, so layers are rebuilt from it as for a
weights-only ``.h5`` (classes inferred from names and shapes, `infer.layers_from_weights`). Optimizer slots (the
variables the graph names as slots, and everything under the root's ``optimizer``), the optimizer's own counters,
``save_counter`` and Keras's metric accumulators are listed apart in a warning, never taken for weights.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import CorruptFile, UnsupportedFile
from ..model import Layer, ModelFile, Tensor
from . import tf_bundle
from .infer import layers_from_weights
from .protowire import Message, ProtoError

OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
MAX_NODES = 1_000_000
#: Path components under which a checkpoint holds training state, not weights.
_STATE_PARTS = frozenset({"optimizer", "_optimizer", "save_counter", "keras_api"})
#: Path components only Keras 3 objects have (tf-keras tracks layers as ``layer_with_weights-N``).
_KERAS3_PARTS = frozenset({"_operations", "_functional", "_layers", "_all_variables", "_tracked"})


@dataclass
class Variable:
    key: str
    """The bundle entry's name (``layer_with_weights-0/cell/kernel/.ATTRIBUTES/VARIABLE_VALUE``)."""
    full_name: str
    """The variable's own name (``lstm/lstm_cell/kernel``), or '' when the graph gives none."""
    path: str
    """The first path to the variable's node from the root (``layer_with_weights-0/cell/kernel``)."""
    slot: bool


def has_object_graph(bundle: tf_bundle.Bundle) -> bool:
    return OBJECT_GRAPH_KEY in bundle.entries


def variables(bundle: tf_bundle.Bundle, label: str) -> list[Variable]:
    """Every variable the object graph names, in the order of a breadth-first walk from the root."""
    entry = bundle.entries[OBJECT_GRAPH_KEY]
    if entry.dtype != "string" or entry.shape != ():
        raise CorruptFile(f"{OBJECT_GRAPH_KEY} is not a scalar string", label)
    (raw,) = bundle.read_strings(OBJECT_GRAPH_KEY)
    try:
        nodes = Message(raw).messages(1)
        if len(nodes) > MAX_NODES:
            raise ProtoError(f"more than {MAX_NODES:,} nodes")
        children = [[(ref.signed(1), ref.text(2)) for ref in node.messages(1)] for node in nodes]
        attributes = [[(a.text(1), a.text(2), a.text(3)) for a in node.messages(2)] for node in nodes]
        slots = {ref.signed(3) for node in nodes for ref in node.messages(3)}
    except ProtoError as exc:
        raise CorruptFile(f"{OBJECT_GRAPH_KEY} is not a valid TrackableObjectGraph: {exc}", label) from exc
    if not nodes:
        raise CorruptFile(f"{OBJECT_GRAPH_KEY} holds no nodes", label)
    paths: dict[int, str] = {0: ""}
    order = [0]
    for node_id in order:  # breadth first, as TensorFlow names checkpoint keys; each node once
        for child, name in children[node_id]:
            if not 0 <= child < len(nodes):
                raise CorruptFile(f"{OBJECT_GRAPH_KEY}: node {node_id} names child {child} of {len(nodes)}", label)
            if child not in paths:
                paths[child] = f"{paths[node_id]}/{name}" if paths[node_id] else name
                order.append(child)
    out = []
    for node_id in order:
        for name, full_name, key in attributes[node_id]:
            if name != "VARIABLE_VALUE" or key not in bundle.entries:
                continue
            parts = set(paths[node_id].split("/"))
            state = bool(parts & _STATE_PARTS) or ".OPTIMIZER_SLOT" in key or full_name.endswith("seed_generator_state")
            out.append(Variable(key=key, full_name=full_name, path=paths[node_id], slot=node_id in slots or state))
    return out


def read(prefix: str, label: str, bundle: tf_bundle.Bundle) -> ModelFile:
    """A TF2 checkpoint: layers rebuilt from the variables' full names, classes inferred."""
    model = ModelFile(path=label, kind="tf2-checkpoint", root=Layer(name="model", class_name="Model", path=()),
                      has_config=False)
    model.backend = "tensorflow"
    model.root.children = layers_of(bundle, variables(bundle, label), model, label)
    if not model.root.children:
        raise UnsupportedFile("the TF2 checkpoint holds no weights (only training state)", label)
    model.warnings.append("weights-only file: a TF2 checkpoint holds no model config, so layer classes are inferred "
                          "from the variables' names and shapes")
    return model


def weight_groups(bundle: tf_bundle.Bundle, found: list[Variable],
                  model: ModelFile) -> dict[str, list[tuple[str, Tensor]]]:
    """The weights by top-level layer name, as ``(full name, tensor)`` in the graph's order: the shape of a legacy
    ``.h5`` file's weight groups. Training state is listed apart in a warning; Keras 3's model-name prefix
    (``stack/lstm/lstm_cell/kernel``) is dropped; a variable stored twice (Keras 3 export's ``_all_variables``)
    is taken once."""
    keras3 = any(set(var.path.split("/")) & _KERAS3_PARTS for var in found)
    state: list[Variable] = []
    skipped: list[str] = []
    kept: list[tuple[str, Variable]] = []
    seen: set[str] = set()
    for var in found:
        if var.slot:
            state.append(var)
            continue
        if not bundle.entries[var.key].readable:
            skipped.append(var.key)
            continue
        name = var.full_name.split(":", 1)[0] if "/" in var.full_name else var.path
        if name in seen and var.path.startswith("_all_variables/"):
            continue
        seen.add(name)
        kept.append((name, var))
    if keras3 and kept and len({name.split("/", 1)[0] for name, _ in kept}) == 1 and all("/" in n for n, _ in kept):
        kept = [(name.split("/", 1)[1], var) for name, var in kept]
    kept.sort(key=lambda item: _layer_index(item[1].path))  # stable: the graph's order within a layer
    groups: dict[str, list[tuple[str, Tensor]]] = {}
    for name, var in kept:
        entry = bundle.entries[var.key]
        tensor = Tensor(name=name.rsplit("/", 1)[-1], shape=entry.shape, dtype=entry.dtype, source=var.key,
                        _load=lambda k=var.key: bundle.read(k))
        groups.setdefault(name.split("/", 1)[0], []).append((name, tensor))
    if state:
        shown = ", ".join(v.full_name or v.path for v in state[:3])
        model.warnings.append(f"training state listed apart, not as weights: {len(state)} variable(s) (optimizer "
                              f"slots and counters, save_counter, metrics, seed generators): {shown}"
                              + (", ..." if len(state) > 3 else ""))
    if skipped:
        model.warnings.append(f"{len(skipped)} variable(s) not read as arrays: {', '.join(skipped[:3])}"
                              + (", ..." if len(skipped) > 3 else ""))
    return groups


_INDEXED = re.compile(r"(?:^|/)(?:layer_with_weights-|layer-|_operations/|_layers/|variables/)(\d+)(?:/|$)")


def _layer_index(path: str) -> int:
    """The position a tracking path gives its layer (``layer_with_weights-3``, ``_operations/3``, ``variables/3``):
    a breadth-first walk would put a Dense kernel before the deeper cell variables of earlier layers."""
    found = _INDEXED.search(path)
    return int(found.group(1)) if found else 1 << 30


def layers_of(bundle: tf_bundle.Bundle, found: list[Variable], model: ModelFile, label: str) -> list[Layer]:
    """Layers rebuilt from the weights alone, classes inferred from names and shapes."""
    return [layers_from_weights(name, named) for name, named in weight_groups(bundle, found, model).items()]

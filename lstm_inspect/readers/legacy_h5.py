"""Keras's legacy HDF5 files: ``model.save("m.h5")`` and ``save_weights("w.h5")`` from Keras 1/2, tf.keras,
tf-keras and Keras 3 (which still writes this layout for ``.h5``).

Layer order comes from the ``layer_names`` attribute and weight order from each group's ``weight_names``
(the order Keras created the variables: trainable first, then non-trainable), never from h5py's alphabetical
iteration. Variable names drifted across versions, so they are only used to check, not to find, weights.
"""
from __future__ import annotations

from typing import Any

import h5py

from .. import schema
from .keras_config import build_tree
from ..errors import CorruptFile, UnsupportedFile
from ..model import Layer, ModelFile, Tensor
from . import h5safe
from .infer import keras1_layer, keras1_parts, keras1_roles, layers_from_weights, owner_of, role_of


def looks_like(f: h5py.File) -> bool:
    return "model_config" in f.attrs or "layer_names" in f.attrs or "layer_names0" in f.attrs


def read(f: h5py.File, label: str) -> ModelFile:
    version = h5safe.attr(f, "keras_version", label)
    backend = h5safe.attr(f, "backend", label)
    model_config = h5safe.json_attr(f, "model_config", label)
    if model_config is not None:
        if not h5safe.has(f, "model_weights"):
            raise CorruptFile("full-model HDF5 file has a model_config but no model_weights group", label)
        weights_root = h5safe.child(f, "model_weights", label)
    else:
        weights_root = f
    layer_names = h5safe.chunked_attr(weights_root, "layer_names", label)
    if layer_names is None:
        raise UnsupportedFile("HDF5 file has no layer_names: not a Keras model or weights file", label)
    groups = {name: _weight_group(weights_root, name, label) for name in layer_names}
    kind = _kind(version, model_config is not None, groups)

    model = ModelFile(path=label, kind=kind, root=Layer(name="model", class_name="Model", path=()),
                      keras_version=version, backend=backend, has_config=model_config is not None)
    if model_config is not None:
        model.root = build_tree(model_config, label)
        _attach(model, groups)
    else:
        model.root.children = [keras1_layer(name, named) or layers_from_weights(name, named)
                               for name, named in groups.items()]
        model.warnings.append("weights-only file: no model config, so layer classes are inferred from weight names and shapes")
        if kind == "keras1-weights-h5":
            model.warnings.extend(_theano_kernels(model))
    return model


#: How the note on a Theano-saved Keras 1 kernel starts (`check`'s config-mismatch rule passes over it).
THEANO_NOTE = "saved by Keras 1 under Theano"


def _theano_kernels(model: ModelFile) -> list[str]:
    """Keras 1's Theano backend convolved (flipping the kernel, where TensorFlow correlates) and named its arrays
    without ``:0``. Their kernels are kept as stored, as tf-keras's Keras 1 converter loads them."""
    return [f"{THEANO_NOTE}: {layer.key}: Theano flipped the kernel as it convolved, so Keras 2 computes the same "
            "only with the kernel flipped along its spatial axes (Keras's convert_kernel); shown as stored"
            for layer in model.layers if layer.class_name in ("Conv1D", "Conv2D") and layer.inferred
            and layer.weights and not layer.weights[0].source.endswith(":0")]


def _kind(version: str | None, full: bool, groups: dict[str, list[tuple[str, Tensor]]]) -> str:
    """Keras 1.2's full models record ``keras_version`` 1.x; Keras 1's weights files record none (tf-keras's loader then
    assumes Keras 1), and Keras 1 never scoped an array name (``lstm_1_W_i``, not ``lstm_1/kernel:0``). A file
    without a version counts as Keras 1 only when its names say so too (every stored name unscoped)."""
    major = str(version or "").split(".", 1)[0]
    if major == "3" and full:
        return "keras3-h5"
    names = [stored for named in groups.values() for stored, _ in named]
    keras1 = major == "1" or (not version and names and not any("/" in stored for stored in names))
    return ("keras1" if keras1 else "keras2") + ("-h5" if full else "-weights-h5")


def _weight_group(root: h5py.Group, name: str, label: str) -> list[tuple[str, Tensor]]:
    group = h5safe.child(root, name, label)
    names = h5safe.chunked_attr(group, "weight_names", label) or []
    return [(weight_name, _tensor(group, weight_name, label)) for weight_name in names]


def _tensor(group: h5py.Group, weight_name: str, label: str) -> Tensor:
    ds = h5safe.child(group, weight_name, label)
    if not isinstance(ds, h5py.Dataset):
        raise CorruptFile(f"{ds.name} should be a weight array but is a group", label)
    shape, dtype = h5safe.dataset_info(ds, label)
    return Tensor(name=role_of(weight_name), shape=shape, dtype=dtype, source=ds.name,
                  _load=lambda: h5safe.read_dataset(ds, label),
                  _read_part=lambda index, out: h5safe.read_part(ds, index, out, label),
                  _mapped=lambda: h5safe.mapped_place(ds))


def _attach(model: ModelFile, groups: dict[str, list[tuple[str, Tensor]]]) -> None:
    by_name = {layer.name: layer for layer in model.root.children}
    for name, named in groups.items():
        layer = by_name.get(name)
        if layer is None:
            if named:
                model.warnings.append(f"{name}: weights stored for a layer the config does not have; listed raw")
                orphan = layers_from_weights(name, named)
                model.root.children.append(orphan)
            continue
        if _keras1_recurrent(layer, named) or _keras1_arrays(layer, named):
            continue
        problem = assign_in_order(layer, [t for _, t in named])
        if problem:
            model.warnings.append(f"{name}: {problem}; weights placed by their stored names")
            _assign_by_name(layer, named)


def slots(layer: Layer, trainable: bool = True) -> list[tuple[Layer, str, bool]] | None:
    """(leaf layer, role, trainable) for every array Keras stores below `layer`, in creation order;
    None when a class in the subtree is unknown, so the count cannot be known."""
    trainable = trainable and layer.config.get("trainable", True) is not False
    if layer.children:
        out: list[tuple[Layer, str, bool]] = []
        for child in layer.children:
            sub = slots(child, trainable)
            if sub is None:
                return None
            out.extend(sub)
        return out
    roles = schema.weight_roles(layer.class_name, layer.config)
    if roles is None:
        return None
    return [(layer, role, trainable and role_trainable) for role, role_trainable in roles]


def assign_in_order(layer: Layer, tensors: list[Tensor]) -> str | None:
    """Hand a container's flat array list to its leaves the way Keras wrote it (all trainable arrays first,
    then the non-trainable ones). Returns why it could not, or None when it did."""
    expected = slots(layer)
    if expected is None:
        if layer.children:
            return "a sub-layer of unknown class stores an unknown number of arrays"
        layer.weights = list(tensors)  # an unknown leaf: keep its arrays under their stored names
        return None
    ordered = [s for s in expected if s[2]] + [s for s in expected if not s[2]]
    if len(ordered) != len(tensors):
        return f"config implies {len(ordered)} arrays but the file stores {len(tensors)}"
    if any(role != _stored_role(leaf, tensor) for (leaf, role, _), tensor in zip(ordered, tensors)):
        return "stored array names do not follow the order the config implies"
    for (leaf, role, _), tensor in zip(ordered, tensors):
        tensor.name = role
        leaf.weights.append(tensor)
    return None


def _stored_role(leaf: Layer, tensor: Tensor) -> str:
    """The role a stored array plays; a sub-layer's arrays (MultiHeadAttention's ``mha/query/kernel:0``) are
    ``query_kernel``, as `schema.SUB_OBJECTS` names them."""
    if leaf.class_name in schema.SUB_OBJECTS and tensor.source.count("/") >= 2:
        return f"{tensor.source.rsplit('/', 2)[-2]}_{tensor.name}"
    return tensor.name


def _assign_by_name(layer: Layer, named: list[tuple[str, Any]]) -> None:
    for leaf in layer.walk():
        leaf.weights = []
    for stored_name, tensor in named:
        owner = owner_of(stored_name)
        target = layer
        for candidate in layer.walk():
            if candidate.name in owner and len(candidate.path) >= len(target.path):
                target = candidate
        target.weights.append(tensor)


#: Keras 1 stored each gate's arrays apart, named ``<layer>_W_i``, ``<layer>_U_i``, ``<layer>_b_i``, ... in this order.
KERAS1_ORDER = {"LSTM": "icfo", "GRU": "zrh"}


def _keras1_recurrent(layer: Layer, named: list[tuple[str, Tensor]]) -> bool:
    """A Keras 1 LSTM (12 arrays) or GRU (9 arrays): keep them as the blocks ``W_i``, ``U_i``, ``b_i``, ... they are."""
    order = KERAS1_ORDER.get(layer.class_name)
    if order is None or layer.children or len(named) != 3 * len(order):
        return False
    expected = [f"{kind}_{gate}" for gate in order for kind in "WUb"]
    roles = [stored.rsplit("/", 1)[-1].split(":", 1)[0] for stored, _ in named]
    if not all(role == f"{layer.name}_{want}" or role == want for role, want in zip(roles, expected)):
        return False
    for (_, tensor), want in zip(named, expected):
        tensor.name = want
    layer.weights = [t for _, t in named]
    return True


def _keras1_arrays(layer: Layer, named: list[tuple[str, Tensor]]) -> bool:
    """Keras 1 arrays (``dense_1_W``, ``simplernn_1_U``, a GRU's ``gru_1_W_z``) placed on the layer whose name they
    carry, under their Keras 2 roles (gate blocks keep their names): in a wrapper too — a ``TimeDistributed``
    (``timedistributed_1`` holds ``dense_1_W``, ``dense_1_b``) or a ``Bidirectional`` (``forward_lstm_1_W_i`` ...).
    The stored name stays visible as the tensor's source. True when every array found its layer."""
    leaves = {leaf.name: leaf for leaf in layer.walk() if not leaf.children}
    parts = keras1_parts([stored for stored, _ in named], owners=list(leaves))
    if parts is None:
        return False
    owned: dict[str, list[tuple[str, Tensor]]] = {}
    for (owner, short), (_, tensor) in zip(parts, named):
        owned.setdefault(owner, []).append((short, tensor))
    roles = {owner: keras1_roles(leaves[owner].class_name, [short for short, _ in arrays])
             for owner, arrays in owned.items()}
    if any(found is None for found in roles.values()):
        return False
    for owner, arrays in owned.items():
        leaf = leaves[owner]
        for role, (_, tensor) in zip(roles[owner], arrays):
            tensor.name = role
        leaf.weights = [tensor for _, tensor in arrays]
    return True

"""Files of flat named arrays — ``.safetensors`` and ``.npz``, as ``lstm-inspect export`` writes them in each
layout, or as anyone writes them with ``np.savez`` / ``save_file`` — as the neutral model.

The key scheme decides how the arrays are read, so that an export reads back as what it was exported as and
``lstm-inspect diff model.keras export.npz`` compares gate blocks:

- **torch** (``lstm.weight_ih_l0``, ``fc.weight``: ``.``-separated, no ``/``): a PyTorch state dict, read by
  `torch_state.build_model` (``torch.nn.LSTM`` / ``GRU`` / ``RNN`` recognised by parameter names and shapes).
- **onnx** (``<layer path>/W``, ``/R``, ``/B``, ``/P``, or a file whose metadata says ``layout: onnx``): the inputs
  of one ONNX ``LSTM`` / ``GRU`` / ``RNN`` node per layer path, one leaf per direction, as an ``.onnx`` file reads.
  The node attributes the arrays need (direction, activations, ``linear_before_reset``) come from the metadata
  ``modules`` that ``export --layout onnx`` writes; without it the direction follows W's first axis (1: forward,
  2: bidirectional) and the operators' defaults are assumed, with a warning.
- **keras** (``<layer path>/<array>``: ``lstm/W_i``, ``bidi/forward_lstm/kernel``, ``dense/bias``): one layer per
  path, its class inferred from the array names and shapes (fused ``kernel`` / ``recurrent_kernel`` / ``bias``
  like a weights-only file, or the gate blocks of ``export --layout keras``).
"""
from __future__ import annotations

import json
import re
from typing import Mapping

from ..model import Layer, ModelFile, Tensor
from ..schema import WEIGHT_ROLES
from . import infer
from .torch_state import build_model as build_torch_model

#: The file metadata key holding how each exported module is built (`gates.conversion.Converted.metadata`).
MODULES_KEY = "modules"
#: ONNX operator inputs, in the operator's input order; the gates per direction of each operator.
ONNX_ROLES = ("W", "R", "B", "P")
ONNX_GATES = {4: ("LSTM", "OnnxLSTM", 3), 3: ("GRU", "OnnxGRU", 2), 1: ("RNN", "OnnxRNN", 1)}
#: Gate letters of the blocks ``export --layout keras`` writes, which give a block-named layer its family.
BLOCK_FAMILIES = (({"W_i", "U_i"}, "LSTM"), ({"W_z", "U_z"}, "GRU"), ({"W", "U"}, "SimpleRNN"))
_BLOCK_NAME = re.compile(r"^(W|U|b|rb|p)(_[a-z])?$|^proj$")


def scheme_of(names: list[str], metadata: Mapping[str, str]) -> str:
    """``torch``, ``onnx``, ``keras`` or ``arrays``: which key scheme the array names follow. ``arrays`` when they
    follow none (the outputs ``forward -o`` writes, anyone's np.savez): listed as they are, no framework claimed."""
    if metadata.get("layout") in ("torch", "onnx", "keras"):
        return metadata["layout"]
    if not any("/" in n for n in names):
        return "torch" if any(_TORCH_PARAMETER.search(n) for n in names) else "arrays"
    leaves = {n.rsplit("/", 1)[-1] for n in names if "/" in n}
    if {"W", "R"} <= leaves and leaves <= set(ONNX_ROLES) | {"weight", "bias"}:
        return "onnx"
    if any(leaf in KERAS_WEIGHT_NAMES or _BLOCK_NAME.match(leaf) for leaf in leaves):
        return "keras"
    return "arrays"


#: The last part of a PyTorch state-dict key: a module's parameter or buffer (``lstm.weight_ih_l0``, ``fc.bias``).
_TORCH_PARAMETER = re.compile(r"(^|\.)(weight|bias)\w*$|(^|\.)(running_mean|running_var|num_batches_tracked)$")
#: The names Keras gives layer weights (schema.WEIGHT_ROLES and the other common ones).
KERAS_WEIGHT_NAMES = frozenset({role for roles in WEIGHT_ROLES.values() for role, _, _ in roles} | {
    "depthwise_kernel", "pointwise_kernel", "query", "key", "value", "attention_output", "kernel_0", "bias_0"})


def build(path: str, kind: str, tensors: list[Tensor], metadata: Mapping[str, str]) -> ModelFile:
    """The neutral model of a file of flat named arrays, by its key scheme."""
    scheme = scheme_of([t.name for t in tensors], metadata)
    if scheme == "arrays":
        return _plain_arrays(path, kind, tensors)
    if scheme == "torch":
        model = build_torch_model(path, kind, tensors, metadata)
        if kind != "torch-safetensors":
            model.backend = "torch layout"
        return model
    root = Layer(name="model", class_name="Arrays", path=())
    model = ModelFile(path=path, kind=kind, root=root, has_config=False, backend=f"{scheme} layout")
    groups: dict[tuple[str, ...], list[Tensor]] = {}
    for tensor in tensors:
        owner, _, leaf = tensor.name.rpartition("/")
        groups.setdefault(tuple(owner.split("/")) if owner else (), []).append(tensor)
        tensor.name = leaf
    modules = _modules(metadata, model.warnings)
    for owner, owned in groups.items():
        if scheme == "onnx":
            layer = _onnx_node(owner, owned, modules.get("/".join(owner)), model.warnings)
        else:
            layer = _keras_layer(owner, owned)
        _attach(root, owner, layer)
    for layer in root.walk():
        if layer.class_name == "" and layer.children:
            _class_container(layer)
    return model


def _plain_arrays(path: str, kind: str, tensors: list[Tensor]) -> ModelFile:
    """Arrays whose keys follow no known layout: one entry per key prefix (``lstm/i`` under ``lstm``), class
    ``arrays``, no layer class inferred and no backend named."""
    root = Layer(name="model", class_name="Arrays", path=())
    model = ModelFile(path=path, kind=kind, root=root, has_config=False, backend=None)
    groups: dict[tuple[str, ...], list[Tensor]] = {}
    for tensor in tensors:
        owner, _, leaf = tensor.name.rpartition("/")
        groups.setdefault(tuple(owner.split("/")) if owner else (), []).append(tensor)
        tensor.name = leaf
    for owner, owned in groups.items():
        name = owner[-1] if owner else "(top level)"
        _attach(root, owner, Layer(name=name, class_name="arrays", path=owner or (name,), weights=owned))
    for layer in root.walk():
        if layer.class_name == "" and layer.children:
            layer.class_name = "arrays"
    return model


def _class_container(layer: Layer) -> None:
    """A Bidirectional when its two children are a forward and a backward layer (in either stored order: a
    .safetensors header sorts its keys), else a plain container."""
    pair = sorted(layer.children, key=lambda c: not c.name.startswith("forward"))
    names = [c.name for c in pair]
    bidirectional = names == ["forward", "backward"] or (
        len(names) == 2 and names[0].startswith("forward_") and names[1].startswith("backward_"))
    if bidirectional:
        layer.children = pair
    layer.class_name = "Bidirectional" if bidirectional else "Container"


def _attach(root: Layer, owner: tuple[str, ...], layer: Layer) -> None:
    """Put `layer` at its path below `root`, creating the containers above it (classed once all are in)."""
    parent = root
    for depth, name in enumerate(owner[:-1]):
        child = next((c for c in parent.children if c.name == name), None)
        if child is None:
            child = Layer(name=name, class_name="", path=owner[: depth + 1], inferred=True)
            parent.children.append(child)
        parent = child
    parent.children.append(layer)


def _modules(metadata: Mapping[str, str], warnings: list[str]) -> dict[str, dict]:
    """The exported modules' build arguments by key, from the ``modules`` metadata (absent: none)."""
    text = metadata.get(MODULES_KEY)
    if not text:
        return {}
    try:
        listed = json.loads(text)
        return {m["key"]: m for m in listed if isinstance(m, dict) and isinstance(m.get("key"), str)}
    except (ValueError, TypeError, KeyError):
        warnings.append("the file's 'modules' metadata is not the JSON list lstm-inspect writes; ignored")
        return {}


def _keras_layer(owner: tuple[str, ...], owned: list[Tensor]) -> Layer:
    name = owner[-1] if owner else "(top level)"
    layer = Layer(name=name, class_name="", path=owner or (name,), weights=owned, inferred=True)
    names = {t.name for t in owned}
    family = next((fam for needed, fam in BLOCK_FAMILIES if needed <= names), None)
    if family is not None and all(_BLOCK_NAME.match(n) for n in names):
        layer.class_name = family  # gate blocks, split as stored (gates.split reads block-named arrays)
    else:
        layer.class_name = infer.infer_class(layer, hint=name)
    return layer


def _onnx_node(owner: tuple[str, ...], owned: list[Tensor], module: dict | None, warnings: list[str]) -> Layer:
    """One ONNX recurrent node's W, R, B, P as a container with one leaf per direction; other arrays listed raw."""
    name = owner[-1] if owner else "(top level)"
    path = owner or (name,)
    roles = {t.name: t for t in owned}
    w, r = roles.get("W"), roles.get("R")
    if w is None or r is None or len(w.shape) != 3 or len(r.shape) != 3 or not r.shape[2] \
            or r.shape[1] % r.shape[2] or r.shape[1] // r.shape[2] not in ONNX_GATES:
        return Layer(name=name, class_name="parameters", path=path, weights=owned)
    op, leaf_class, per_direction = ONNX_GATES[r.shape[1] // r.shape[2]]
    attrs = dict((module or {}).get("args") or {})
    if module is None:
        direction = "bidirectional" if w.shape[0] == 2 else "forward"
        warnings.append(f"{'/'.join(path)}: no 'modules' metadata: assumed direction={direction} and the "
                        f"{op} operator's default attributes")
        attrs = {"hidden_size": r.shape[2], "direction": direction}
    directions = ["forward", "reverse"] if attrs.get("direction") == "bidirectional" \
        else [attrs.get("direction", "forward")]
    container = Layer(name=name, class_name=f"onnx.{op}", path=path, config=attrs)
    activations = attrs.get("activations")
    for d, direction in enumerate(directions):
        weights = [Tensor(name=role, shape=roles[role].shape[1:], dtype=roles[role].dtype,
                          source=f"{roles[role].source}[{d}]", _load=_row(roles[role], d))
                   for role in ONNX_ROLES if role in roles and roles[role].shape[:1] == (len(directions),)]
        config = {"units": attrs.get("hidden_size", r.shape[2]), "direction": direction,
                  "linear_before_reset": attrs.get("linear_before_reset", 0), "input_forget": 0}
        if activations:
            config["activations"] = activations[d * per_direction:(d + 1) * per_direction]
        container.children.append(Layer(name=direction, class_name=leaf_class, path=path + (direction,),
                                        weights=weights, config=config))
    return container


def _row(tensor: Tensor, d: int):
    return lambda: tensor.read()[d]

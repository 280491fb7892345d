"""Other frameworks' recurrent weight layouts as data, and the conversion of Keras layers into them.

A Keras recurrent layer is first split into its gate blocks (`split_gates`, proven against Keras); the blocks are
then re-assembled in the target's gate order and orientation. This module finds the units to convert (a layer, a
bidirectional pair, torch layers stacked with ``merge_stacked``) and checks what they need; `targets.py` holds each
target's tables and writes its arrays. Where the target has no equivalent (an LSTM with relu for torch, GRU
``reset_after=False`` for torch, ConvLSTM anywhere), `convert` raises `InspectError` naming the layer and the reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InspectError
from ..model import Layer, ModelFile
from .activations import activation_name
from .split import NATIVE_LAYOUTS, TF1_LAYOUTS, GateSplit, family as gate_family, split as split_gates
from .targets import (
    NO_EQUIVALENT,
    ONNX_TO_KERAS,
    TARGETS,
    Converted,
    Module,
    convert_other,
    gate_suffix,
    refuse,
    to_keras,
    to_onnx,
    to_torch,
)


def convert(model: ModelFile, target: str, layers: list[Layer], forget_bias: float | None = None,
            merge_stacked: bool = False) -> Converted:
    """The arrays of `layers` (a selection from `model`, in model order) in the `target` layout.

    `forget_bias`: what a TF1 LSTMCell / BasicLSTMCell adds to f at run time (stored nowhere); required to convert
    one, and added to b_f in the converted arrays. `merge_stacked` (torch): consecutive recurrent layers that one
    multi-layer torch module computes become that module (``_l1``, ``_l2`` keys, ``num_layers``)."""
    if target not in TARGETS:
        raise InspectError(f"unknown layout {target!r}; choose one of {', '.join(TARGETS)}")
    if merge_stacked and target != "torch":
        raise InspectError(f"merge_stacked applies to the torch layout only (an ONNX {target} node is one layer)")
    out = Converted(target, {}, [], [])
    recurrent: list[_Unit] = []
    parents = _parents(model)
    chosen = {id(layer) for layer in layers}
    done: set[int] = set()
    for layer in layers:
        if id(layer) in done:
            continue
        directions = _directions(layer, chosen)
        owner = layer
        if target != "keras" and directions == [layer]:  # torch / ONNX: a native bidirectional pair stays a pair
            directions, owner = _native_unit(layer, parents, chosen) or (directions, layer)
        if target == "keras" and (directions is None or NATIVE_LAYOUTS.get(directions[0].class_name) is None
                                  and directions[0].class_name not in TF1_LAYOUTS):
            continue  # Keras's own layers (and non-recurrent ones) already hold Keras's arrays
        if directions is not None:
            done.update(id(d) for d in directions)
            own: dict[str, np.ndarray] = {}
            run = _run_config(_sequence_layer(layer, parents))
            parent = parents.get(id(layer))
            paired = parent is not None and bool(parent.config.get("bidirectional")
                                                 or parent.config.get("direction") == "bidirectional")
            module = _convert_recurrent(model, target, owner, directions, own, forget_bias, run, paired)
            out.modules.append(module)
            recurrent.append(_Unit(layer, module, own))
        elif gate_family(layer) is not None or layer.class_name in NO_EQUIVALENT:
            raise InspectError(f"layer {layer.key!r} ({layer.class_name}): "
                               f"{NO_EQUIVALENT.get(layer.class_name, 'its weights do not split into gates')}; "
                               f"no {target} export")
        elif layer.weights and not layer.children:
            module = convert_other(target, layer, out.arrays) if target == "torch" else None
            if module is None:
                out.skipped.append(f"{layer.key} ({layer.class_name})")
            else:
                out.modules.append(module)
    for group in _stacks(model, recurrent) if merge_stacked else [[unit] for unit in recurrent]:
        _place(out, group)
    if not out.arrays and target != "keras":
        raise InspectError(f"no layer converts to the {target} layout (no LSTM, GRU or SimpleRNN selected)")
    return out


@dataclass
class _Unit:
    """One converted recurrent layer (or Bidirectional pair) before stacks are merged."""

    owner: Layer
    module: Module
    arrays: dict[str, np.ndarray]


def _place(out: Converted, group: list[_Unit]) -> None:
    """Add a group's arrays to `out`; a group of several becomes its first module with ``_l1``, ``_l2``... keys."""
    first = group[0].module
    if len(group) == 1:
        out.arrays.update(group[0].arrays)
        return
    for n, unit in enumerate(group):
        for key, value in unit.arrays.items():
            parameter = key[len(unit.module.key) + 1:]
            out.arrays[f"{first.key}.{parameter.replace('_l0', f'_l{n}')}"] = value
        if n:
            out.modules.remove(unit.module)
    args = dict(first.args)
    first.args.clear()
    for name, value in args.items():
        first.args[name] = value
        if name == "hidden_size":
            first.args["num_layers"] = len(group)
    first.stacked = [unit.owner.key for unit in group]
    first.notes.append(f"num_layers={len(group)}: torch layer n holds Keras layer "
                       + ", ".join(f"{n}={unit.owner.key}" for n, unit in enumerate(group)))


def _stacks(model: ModelFile, units: list[_Unit]) -> list[list[_Unit]]:
    """`units` grouped into runs that one multi-layer torch module computes; why a neighbour was not merged is
    added to its notes."""
    parents = _parents(model)
    groups: list[list[_Unit]] = []
    for unit in units:
        if groups:
            reason = _why_not_stacked(model, parents, groups[-1][-1], unit)
            if reason is None:
                groups[-1].append(unit)
                continue
            unit.module.notes.append(f"not merged with {groups[-1][-1].owner.key} below it: {reason}")
        groups.append([unit])
    return groups


def _why_not_stacked(model: ModelFile, parents: dict[int, Layer], below: _Unit, unit: _Unit) -> str | None:
    """None when `unit` can be torch layer n+1 on top of `below`, else the reason it cannot."""
    low, high = below.module, unit.module
    native = NATIVE_LAYOUTS.get(unit.owner.class_name) or TF1_LAYOUTS.get(unit.owner.class_name)
    if native is not None:
        return f"only Keras layers are merged; a {native.framework} file's layers stay as read"
    if low.target != high.target:
        return f"{low.target} and {high.target} are different modules"
    for arg in ("hidden_size", "bias", "bidirectional", "nonlinearity"):
        if low.args.get(arg) != high.args.get(arg):
            return f"{arg} differs ({low.args.get(arg, 'default')} vs {high.args.get(arg, 'default')})"
    if "proj_size" in low.args or "proj_size" in high.args:
        return "a projection (proj_size) is not merged"
    for owner in (below.owner, unit.owner):
        wrapper = _sequence_layer(owner, parents)
        if _run_config(wrapper).get("go_backwards") or _run_config(wrapper).get("stateful"):
            return f"{wrapper.key} has go_backwards or stateful"
        if owner.class_name == "Bidirectional" and (owner.config or {}).get("merge_mode", "concat") != "concat":
            return f"{owner.key} merges its directions with {owner.config.get('merge_mode')}, not concat"
    width = low.args["hidden_size"] * (2 if low.args.get("bidirectional") else 1)
    if high.args["input_size"] != width:
        return f"its input size {high.args['input_size']} is not the output size {width} below"
    if any(not layer.config for layer in (below.owner, unit.owner)):
        return "the file records no config to show the two are connected"
    return _why_not_connected(model, parents, below.owner, unit.owner)


def _parents(model: ModelFile) -> dict[int, Layer]:
    return {id(child): layer for layer in model.layers for child in layer.children}


def _sequence_layer(layer: Layer, parents: dict[int, Layer]) -> Layer:
    """The layer that runs `layer` over time: the RNN above a cell (through StackedRNNCells), else itself."""
    parent = parents.get(id(layer))
    if parent is not None and parent.class_name == "StackedRNNCells":
        parent = parents.get(id(parent))
    return parent if parent is not None and parent.class_name == "RNN" else layer


def _run_config(layer: Layer) -> dict[str, Any]:
    """return_sequences / go_backwards / stateful of a sequence layer (a Bidirectional's: its forward layer's)."""
    if layer.class_name == "Bidirectional" and layer.children:
        return layer.children[0].config or {}
    return layer.config or {}


def _why_not_connected(model: ModelFile, parents: dict[int, Layer], low: Layer, high: Layer) -> str | None:
    low_cells, high_cells = parents.get(id(low)), parents.get(id(high))
    if low_cells is not None and low_cells is high_cells and low_cells.class_name == "StackedRNNCells":
        cells = low_cells.children
        return None if cells.index(high) == cells.index(low) + 1 else "not consecutive cells"
    for cell, stack in ((low, low_cells), (high, high_cells)):
        if stack is not None and stack.class_name == "StackedRNNCells":
            return f"{cell.key} is one cell of {stack.key}, whose other cells sit between"
    below, above = _sequence_layer(low, parents), _sequence_layer(high, parents)
    if not _run_config(below).get("return_sequences"):
        return f"{below.key} does not return sequences"
    inbound = above.entry.get("inbound_nodes")
    if inbound:
        return None if _inbound_names(inbound) == [below.name] else f"{above.key}'s input is not {below.key}'s output"
    container = parents.get(id(above))
    siblings = container.children if container is not None else model.root.children
    if above in siblings and below in siblings and siblings.index(above) == siblings.index(below) + 1:
        return None
    return f"{above.key} does not directly follow {below.key}"


def _inbound_names(inbound: Any) -> list[str] | None:
    """The layer names feeding a functional layer's single call, or None when it has several calls, extra
    tensor arguments (initial_state, constants) or an output other than the first."""
    if len(inbound) != 1:
        return None
    node = inbound[0]
    if isinstance(node, dict):  # Keras 3: {"args": [keras tensors], "kwargs": {...}}
        if any(v is not None for k, v in (node.get("kwargs") or {}).items() if k not in ("mask", "training")):
            return None
        history = [a.get("config", {}).get("keras_history") for a in node.get("args", []) if isinstance(a, dict)]
        if len(history) != 1 or not history[0] or list(history[0][1:]) != [0, 0]:
            return None
        return [history[0][0]]
    if len(node) != 1 or list(node[0][1:3]) != [0, 0] or (len(node[0]) > 3 and node[0][3]):
        return None  # Keras 2: [[name, node index, tensor index, kwargs]]
    return [node[0][0]]


def _directions(layer: Layer, chosen: set[int]) -> list[Layer] | None:
    """The recurrent layers that make one target module: [layer], or a Bidirectional's [forward, backward]."""
    if layer.class_name == "Bidirectional":
        inner = [c for c in layer.children if id(c) in chosen]
        if len(layer.children) == 2 and len(inner) == 2 and all(_is_plain_recurrent(c) for c in inner):
            return inner
        return None
    return [layer] if _is_plain_recurrent(layer) else None


def _native_unit(layer: Layer, parents: dict[int, Layer], chosen: set[int]) -> tuple[list[Layer], Layer] | None:
    """A torch / ONNX leaf with its reverse sibling when both are selected (``l0`` + ``l0_reverse``, ``forward`` +
    ``reverse``: one bidirectional unit), and the layer naming the unit: the module / node itself when it holds one
    layer (``enc``), else the leaf (``enc/l1``)."""
    container = parents.get(id(layer))
    if NATIVE_LAYOUTS.get(layer.class_name) is None or container is None:
        return None
    partner_name = "reverse" if layer.name == "forward" else layer.name + "_reverse"
    partner = next((c for c in container.children if c.name == partner_name and id(c) in chosen), None)
    owner = container if container.config.get("num_layers", 1) == 1 else layer
    return ([layer, partner] if partner is not None else [layer]), owner


def _is_plain_recurrent(layer: Layer) -> bool:
    return gate_family(layer) is not None and layer.class_name not in NO_EQUIVALENT


def _split(layer: Layer, target: str) -> GateSplit:
    split = split_gates(layer)
    if split is None or not split.blocks or split.warnings and any("not split" in w for w in split.warnings):
        reason = "; ".join(split.warnings) if split is not None and split.warnings else "its weights do not split into gates"
        raise refuse(layer, target, reason)
    if layer.weight("bias") is not None and split.block("b" + gate_suffix(split.layout.gates[0])) is None:
        raise refuse(layer, target, f"bias {layer.weight('bias').shape} does not fit {split.units} units")
    return split


def _activations(layer: Layer, family: str) -> tuple[str | None, str | None]:
    """(activation, recurrent_activation) from the config; None when the file does not record them."""
    native = NATIVE_LAYOUTS.get(layer.class_name)
    if native is not None and native.framework == "PyTorch":
        # torch.nn.LSTM / GRU hard-wire tanh and sigmoid; torch.nn.RNN's nonlinearity is not in the state dict
        return (None, None) if family == "SimpleRNN" else ("tanh", "sigmoid")
    if native is not None:  # ONNX: the node's activations attribute, f (gates) then g (candidate)
        names = [ONNX_TO_KERAS.get(str(a).lower(), f"onnx {a}") for a in layer.config.get("activations") or []]
        if not names:
            return ("tanh", "sigmoid") if family != "SimpleRNN" else ("tanh", None)
        return (names[0], None) if family == "SimpleRNN" else (names[1], names[0])
    if not layer.config:
        return None, None
    act = activation_name(layer.config.get("activation", "tanh"))
    rec = activation_name(layer.config.get("recurrent_activation", "sigmoid")) if family != "SimpleRNN" else None
    return act, rec


def _convert_recurrent(model: ModelFile, target: str, owner: Layer, directions: list[Layer],
                       arrays: dict[str, np.ndarray], forget_bias: float | None = None,
                       run: dict[str, Any] | None = None, paired: bool = False) -> Module:
    """`run`: the config of the layer that runs `owner` over time (the RNN around a cell), for go_backwards;
    `paired`: `owner` is one direction of a bidirectional torch module / ONNX node (for the keras target)."""
    splits = [_split(layer, target) for layer in directions]
    family = splits[0].layout.family
    notes: list[str] = []
    tf1 = splits[0].native is not None and splits[0].native.framework == "TF1"
    if tf1 and family == "LSTM":
        if forget_bias is None:
            raise refuse(owner, target, "a TF1 LSTM cell adds forget_bias to f at run time and the checkpoint does "
                          "not store it; pass --forget-bias F (TF1's default is 1.0)")
        notes.append(f"forget_bias={forget_bias:g} (given, not stored in the checkpoint) is added to b_f")
    if tf1:
        notes.append("a TF1 checkpoint records no activations (nor cell_clip / proj_clip): the conversion assumes "
                     "tanh and sigmoid, the TF1 defaults; check them against the graph that wrote it")
    blocks = [_read_blocks(split, forget_bias if tf1 and family == "LSTM" else None) for split in splits]
    first = splits[0]
    for split in splits[1:]:
        if (split.layout.family, split.units, split.input_dim, split.reset_after, bool(split.block(f"b{gate_suffix(split.layout.gates[0])}"))) != \
                (family, first.units, first.input_dim, first.reset_after, bool(first.block(f"b{gate_suffix(first.layout.gates[0])}"))):
            raise refuse(owner, target, "its two directions differ in class, units, input size, bias or reset_after")
    if target == "onnx" and first.block("proj") is not None:
        raise refuse(owner, target, "an LSTM with proj_size (weight_hr) has no ONNX operator equivalent")
    if target == "torch" and any(b.kind == "p" for b in first.blocks):
        raise refuse(owner, target, "torch.nn.LSTM has no peepholes")
    acts = [_activations(layer, family) for layer in directions]
    if len(set(acts)) > 1:
        raise refuse(owner, target, "its two directions use different activations")
    act, rec = acts[0]
    if act is None and not tf1:
        notes.append("this file records no activations: the conversion assumes Keras's defaults "
                     "(tanh, sigmoid); check them against the original model")
    for layer in directions:
        for attribute in ("clip", "input_forget"):
            if layer.config.get(attribute):
                raise refuse(owner, target, f"ONNX attribute {attribute}={layer.config[attribute]} is not converted")
    bidirectional = len(directions) == 2
    backwards = not bidirectional and bool((run or directions[0].config).get("go_backwards")
                                           or directions[0].config.get("direction") == "reverse")
    if target == "keras":
        return to_keras(owner, splits[0], blocks[0], act, rec, backwards and not paired, paired, notes, arrays)
    if target == "torch":
        return to_torch(model, owner, splits, blocks, act, rec, bidirectional, backwards, notes, arrays)
    return to_onnx(model, owner, splits, blocks, act, rec, bidirectional, backwards, notes, arrays)


def _read_blocks(split: GateSplit, forget_bias: float | None) -> dict[str, np.ndarray]:
    """Every block's array by name; with `forget_bias` (TF1 LSTM cells) added to b_f, as the cell does at run time."""
    blocks = {block.key: block.read() for block in split.blocks}
    if forget_bias is not None and "b_f" in blocks:
        blocks["b_f"] = blocks["b_f"] + np.asarray(forget_bias, dtype=blocks["b_f"].dtype)
    return blocks

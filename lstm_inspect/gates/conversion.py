"""Other frameworks' recurrent weight layouts as data, and the conversion of Keras layers into them.

A Keras recurrent layer is first split into its gate blocks (`split_gates`, proven against Keras); the blocks are
then re-assembled in the target's gate order and orientation. Everything a conversion needs is in the tables
below; the functions only follow them. Where the target has no equivalent (an LSTM with relu for torch, GRU
``reset_after=False`` for torch, ConvLSTM anywhere), `convert` raises `InspectError` naming the layer and the reason.

- ``torch``: the state dict of ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` per recurrent layer, keys
  ``<layer path with '.'>.<parameter>`` (``bidi.weight_ih_l0_reverse``); weights (gates·H, in), gate order
  i, f, g, o (LSTM) and r, z, n (GRU); Keras's single bias in ``bias_ih``, zeros in ``bias_hh``. Dense and
  Embedding layers become ``torch.nn.Linear`` / ``torch.nn.Embedding`` (``dense.weight`` = kernel.T).
- ``onnx``: the inputs W [D, gates·H, in], R [D, gates·H, H], B [D, 2·gates·H] of the ONNX LSTM / GRU / RNN
  operator per recurrent layer, keys ``<layer path>/W``; gate order i, o, f, c (LSTM) and z, r, h (GRU); the node
  attributes the weights need (direction, activations, linear_before_reset) are in `Converted.modules`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InspectError
from ..model import Layer, ModelFile
from .activations import activation_name
from .split import NATIVE_LAYOUTS, TF1_LAYOUTS, GateSplit, family as gate_family, split as split_gates

TARGETS = ("keras", "torch", "onnx")

#: Gate order of each target along its fused axis, in Keras's gate letters (c = PyTorch g, h = PyTorch n).
GATE_ORDER = {
    "keras": {"LSTM": ("i", "f", "c", "o"), "GRU": ("z", "r", "h"), "SimpleRNN": ("",)},
    "torch": {"LSTM": ("i", "f", "c", "o"), "GRU": ("r", "z", "h"), "SimpleRNN": ("",)},
    "onnx": {"LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h"), "SimpleRNN": ("",)},
}
#: The target's own letters for those gates, where they differ from Keras's.
NATIVE_GATE_NAMES = {
    "torch": {"LSTM": {"c": "g"}, "GRU": {"h": "n"}},
    "onnx": {},
}
#: ONNX LSTM's peephole input P [D, 3·H] holds the i, o, f peepholes in that order.
PEEPHOLE_ORDER = ("i", "o", "f")
TORCH_MODULE = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}
ONNX_OPERATOR = {"LSTM": "LSTM", "GRU": "GRU", "SimpleRNN": "RNN"}

#: What torch's modules compute: (activation, recurrent_activation) they hard-wire; SimpleRNN: its `nonlinearity`.
TORCH_ACTIVATIONS = {"LSTM": ("tanh", "sigmoid"), "GRU": ("tanh", "sigmoid")}
TORCH_RNN_NONLINEARITIES = ("tanh", "relu")

#: Keras activation -> ONNX RNN activation (name, alpha, beta); alpha/beta None = the operator takes none.
#: hard_sigmoid's slope depends on the Keras version that wrote the file (0.2 in Keras 1/2, 1/6 in Keras 3).
ONNX_ACTIVATIONS: dict[str, tuple[str, float | None, float | None]] = {
    "sigmoid": ("Sigmoid", None, None),
    "tanh": ("Tanh", None, None),
    "relu": ("Relu", None, None),
    "linear": ("Affine", 1.0, 0.0),
    "softsign": ("Softsign", None, None),
    "softplus": ("Softplus", None, None),
    "elu": ("Elu", 1.0, None),
    "hard_sigmoid": ("HardSigmoid", 0.2, 0.5),
}
HARD_SIGMOID_ALPHA = {2: 0.2, 3: 1.0 / 6.0}
#: ONNX activations read back (from .onnx files) whose meaning does not depend on alpha / beta.
ONNX_TO_KERAS = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "softsign": "softsign", "softplus": "softplus"}

#: Keras classes that split like LSTM but have no torch / ONNX operator equivalent.
NO_EQUIVALENT = {
    "ConvLSTM1D": "a convolutional LSTM has no torch.nn / ONNX recurrent equivalent",
    "ConvLSTM2D": "a convolutional LSTM has no torch.nn / ONNX recurrent equivalent",
    "ConvLSTM3D": "a convolutional LSTM has no torch.nn / ONNX recurrent equivalent",
}


@dataclass
class Module:
    """One converted unit: the torch module or ONNX node its arrays belong to, and how to build it."""

    key: str
    """The key prefix of its arrays: ``bidi`` (torch: ``bidi.weight_ih_l0``; ONNX: ``bidi/W``)."""
    layer: str
    """The Keras layer path it came from."""
    target: str
    """``torch.nn.LSTM``, ``torch.nn.Linear``, ``onnx:LSTM``..."""
    args: dict[str, Any]
    """torch: constructor arguments; ONNX: node attributes (hidden_size, direction, activations, ...)."""
    notes: list[str] = field(default_factory=list)
    stacked: list[str] = field(default_factory=list)
    """With ``merge_stacked``: the Keras layer paths this multi-layer module holds, torch layer 0 first."""

    def as_dict(self) -> dict[str, Any]:
        out = {"key": self.key, "layer": self.layer, "target": self.target, "args": self.args, "notes": self.notes}
        if self.stacked:
            out["stacked"] = self.stacked
        return out


@dataclass
class Converted:
    target: str
    arrays: dict[str, np.ndarray]
    modules: list[Module]
    skipped: list[str]
    """Layers with weights that the target layout does not hold (``dense (Dense)`` for ONNX)."""

    def metadata(self) -> dict[str, str]:
        """String metadata for a .safetensors header: the layout and how to build each module."""
        meta = {"layout": self.target, "modules": json.dumps([m.as_dict() for m in self.modules])}
        if self.target == "torch":
            meta["format"] = "pt"
        return meta

    def messages(self) -> list[str]:
        lines = []
        for module in self.modules:
            args = ", ".join(f"{k}={v}" for k, v in module.args.items())
            lines.append(f"{module.key}: {module.target}({args})")
            lines.extend(f"  {note}" for note in module.notes)
        if self.skipped:
            lines.append(f"not in the {self.target} layout (no equivalent exported): " + ", ".join(self.skipped))
        return lines


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
            module = _convert_other(target, layer, out.arrays) if target == "torch" else None
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


def _refuse(layer: Layer, target: str, reason: str) -> InspectError:
    return InspectError(f"layer {layer.key!r} ({layer.class_name}) has no {target} equivalent: {reason}")


def _split(layer: Layer, target: str) -> GateSplit:
    split = split_gates(layer)
    if split is None or not split.blocks or split.warnings and any("not split" in w for w in split.warnings):
        reason = "; ".join(split.warnings) if split is not None and split.warnings else "its weights do not split into gates"
        raise _refuse(layer, target, reason)
    if layer.weight("bias") is not None and split.block("b" + _suffix(split.layout.gates[0])) is None:
        raise _refuse(layer, target, f"bias {layer.weight('bias').shape} does not fit {split.units} units")
    return split


def _suffix(gate: str) -> str:
    return f"_{gate}" if gate else ""


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
            raise _refuse(owner, target, "a TF1 LSTM cell adds forget_bias to f at run time and the checkpoint does "
                          "not store it; pass --forget-bias F (TF1's default is 1.0)")
        notes.append(f"forget_bias={forget_bias:g} (given, not stored in the checkpoint) is added to b_f")
    if tf1:
        notes.append("a TF1 checkpoint records no activations (nor cell_clip / proj_clip): the conversion assumes "
                     "tanh and sigmoid, the TF1 defaults; check them against the graph that wrote it")
    blocks = [_read_blocks(split, forget_bias if tf1 and family == "LSTM" else None) for split in splits]
    first = splits[0]
    for split in splits[1:]:
        if (split.layout.family, split.units, split.input_dim, split.reset_after, bool(split.block(f"b{_suffix(split.layout.gates[0])}"))) != \
                (family, first.units, first.input_dim, first.reset_after, bool(first.block(f"b{_suffix(first.layout.gates[0])}"))):
            raise _refuse(owner, target, "its two directions differ in class, units, input size, bias or reset_after")
    if target == "onnx" and first.block("proj") is not None:
        raise _refuse(owner, target, "an LSTM with proj_size (weight_hr) has no ONNX operator equivalent")
    if target == "torch" and any(b.kind == "p" for b in first.blocks):
        raise _refuse(owner, target, "torch.nn.LSTM has no peepholes")
    acts = [_activations(layer, family) for layer in directions]
    if len(set(acts)) > 1:
        raise _refuse(owner, target, "its two directions use different activations")
    act, rec = acts[0]
    if act is None and not tf1:
        notes.append("this file records no activations: the conversion assumes Keras's defaults "
                     "(tanh, sigmoid); check them against the original model")
    for layer in directions:
        for attribute in ("clip", "input_forget"):
            if layer.config.get(attribute):
                raise _refuse(owner, target, f"ONNX attribute {attribute}={layer.config[attribute]} is not converted")
    bidirectional = len(directions) == 2
    backwards = not bidirectional and bool((run or directions[0].config).get("go_backwards")
                                           or directions[0].config.get("direction") == "reverse")
    if target == "keras":
        return _to_keras(owner, splits[0], blocks[0], act, rec, backwards and not paired, paired, notes, arrays)
    if target == "torch":
        return _to_torch(model, owner, splits, blocks, act, rec, bidirectional, backwards, notes, arrays)
    return _to_onnx(model, owner, splits, blocks, act, rec, bidirectional, backwards, notes, arrays)


def _read_blocks(split: GateSplit, forget_bias: float | None) -> dict[str, np.ndarray]:
    """Every block's array by name; with `forget_bias` (TF1 LSTM cells) added to b_f, as the cell does at run time."""
    blocks = {block.key: block.read() for block in split.blocks}
    if forget_bias is not None and "b_f" in blocks:
        blocks["b_f"] = blocks["b_f"] + np.asarray(forget_bias, dtype=blocks["b_f"].dtype)
    return blocks


def _recurrent_bias(blocks: dict[str, np.ndarray], order: tuple[str, ...], b: np.ndarray) -> np.ndarray:
    """The second bias: Keras GRU reset_after's row 1, a torch / ONNX file's own; zeros for Keras's single bias."""
    return _stack(blocks, "rb", order) if "rb" + _suffix(order[0]) in blocks else np.zeros_like(b)


def _stack(blocks: dict[str, np.ndarray], kind: str, order: tuple[str, ...]) -> np.ndarray:
    """One kind of block in the target's gate order, concatenated along the units axis of Keras's orientation."""
    return np.concatenate([blocks[kind + _suffix(g)] for g in order], axis=-1)


def _to_torch(model: ModelFile, owner: Layer, splits: list[GateSplit], blocks: list[dict[str, np.ndarray]],
              act: str | None, rec: str | None,
              bidirectional: bool, backwards: bool, notes: list[str], arrays: dict[str, np.ndarray]) -> Module:
    family = splits[0].layout.family
    order = GATE_ORDER["torch"][family]
    args: dict[str, Any] = {"input_size": splits[0].input_dim, "hidden_size": splits[0].units}
    if family == "SimpleRNN":
        nonlinearity = act or "tanh"
        if nonlinearity not in TORCH_RNN_NONLINEARITIES:
            raise _refuse(owner, "torch", f"activation={nonlinearity}; torch.nn.RNN only has nonlinearity tanh or relu")
        if nonlinearity != "tanh":
            args["nonlinearity"] = nonlinearity
    elif act is not None and (act, rec) != TORCH_ACTIVATIONS[family]:
        wanted = TORCH_ACTIVATIONS[family]
        raise _refuse(owner, "torch", f"activation={act}, recurrent_activation={rec}; torch.nn.{TORCH_MODULE[family]} "
                                      f"always uses activation={wanted[0]}, recurrent_activation={wanted[1]}")
    if family == "GRU" and splits[0].reset_after is False:
        raise _refuse(owner, "torch", "reset_after=False applies the reset gate before U_h; torch.nn.GRU only "
                                      "computes the reset_after=True form")
    has_bias = splits[0].block("b" + _suffix(order[0])) is not None
    if not has_bias:
        args["bias"] = False
    args["batch_first"] = True
    if bidirectional:
        args["bidirectional"] = True
    prefix = owner.key.replace("/", ".")
    for split, own, suffix in zip(splits, blocks, ("", "_reverse")):
        # Keras blocks are (in, H) so that x @ W; torch stores the transpose, (gates*H, in), for W @ x.
        arrays[f"{prefix}.weight_ih_l0{suffix}"] = np.ascontiguousarray(_stack(own, "W", order).T)
        arrays[f"{prefix}.weight_hh_l0{suffix}"] = np.ascontiguousarray(_stack(own, "U", order).T)
        if has_bias:
            b = _stack(own, "b", order)
            arrays[f"{prefix}.bias_ih_l0{suffix}"] = b
            arrays[f"{prefix}.bias_hh_l0{suffix}"] = _recurrent_bias(own, order, b)
        if split.block("proj") is not None:
            arrays[f"{prefix}.weight_hr_l0{suffix}"] = np.ascontiguousarray(split.block("proj").read().T)
            args["proj_size"] = split.block("proj").shape[1]
    if backwards:
        notes.append("go_backwards=True: torch has no such flag; feed the input reversed in time (x.flip(1)) and the "
                     "outputs come in Keras's (reversed) order")
    if bidirectional:
        mode = owner.config.get("merge_mode", "concat") if owner.config else "concat"
        if mode != "concat":
            notes.append(f"merge_mode={mode}: torch returns both directions concatenated on the last axis; apply the "
                         f"merge ({mode}) to output[..., :H] and output[..., H:] yourself")
    return Module(prefix, owner.key, f"torch.nn.{TORCH_MODULE[family]}", args, notes)


def _convert_other(target: str, layer: Layer, arrays: dict[str, np.ndarray]) -> Module | None:
    """Dense -> torch.nn.Linear, Embedding -> torch.nn.Embedding; None for layers torch has no plain match for."""
    prefix = layer.key.replace("/", ".")
    kernel, bias = layer.weight("kernel"), layer.weight("bias")
    if layer.class_name == "Dense" and kernel is not None and len(kernel.shape) == 2 \
            and {t.name for t in layer.weights} <= {"kernel", "bias"}:
        arrays[f"{prefix}.weight"] = np.ascontiguousarray(kernel.read().T)
        args: dict[str, Any] = {"in_features": kernel.shape[0], "out_features": kernel.shape[1]}
        if bias is not None:
            arrays[f"{prefix}.bias"] = np.ascontiguousarray(bias.read())
        else:
            args["bias"] = False
        notes = []
        act = activation_name(layer.config.get("activation", "linear")) if layer.config else None
        if act not in (None, "linear"):
            notes.append(f"activation={act} is not part of torch.nn.Linear: apply it after the module")
        return Module(prefix, layer.key, "torch.nn.Linear", args, notes)
    embeddings = layer.weight("embeddings")
    if layer.class_name == "Embedding" and embeddings is not None and len(layer.weights) == 1:
        arrays[f"{prefix}.weight"] = np.ascontiguousarray(embeddings.read())
        return Module(prefix, layer.key, "torch.nn.Embedding",
                      {"num_embeddings": embeddings.shape[0], "embedding_dim": embeddings.shape[1]})
    return None


def onnx_activation(name: str, keras_major: int | None) -> tuple[str, float | None, float | None]:
    if name not in ONNX_ACTIVATIONS:
        raise KeyError(name)
    op, alpha, beta = ONNX_ACTIVATIONS[name]
    if name == "hard_sigmoid":
        alpha = HARD_SIGMOID_ALPHA[3 if keras_major == 3 else 2]
    return op, alpha, beta


def _to_onnx(model: ModelFile, owner: Layer, splits: list[GateSplit], blocks: list[dict[str, np.ndarray]],
             act: str | None, rec: str | None,
             bidirectional: bool, backwards: bool, notes: list[str], arrays: dict[str, np.ndarray]) -> Module:
    family = splits[0].layout.family
    order = GATE_ORDER["onnx"][family]
    wanted = [rec or "sigmoid", act or "tanh", act or "tanh"] if family == "LSTM" else \
        [rec or "sigmoid", act or "tanh"] if family == "GRU" else [act or "tanh"]
    functions, alphas, betas = [], [], []
    for name in wanted:
        try:
            op, alpha, beta = onnx_activation(name, model.keras_major)
        except KeyError:
            raise _refuse(owner, "onnx", f"activation {name} has no ONNX recurrent activation "
                                         f"(supported: {', '.join(ONNX_ACTIVATIONS)})") from None
        functions.append(op)
        if alpha is not None:
            alphas.append(alpha)
        if beta is not None:
            betas.append(beta)
    args: dict[str, Any] = {"hidden_size": splits[0].units,
                            "direction": "bidirectional" if bidirectional else "reverse" if backwards else "forward"}
    defaults = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "SimpleRNN": ["Tanh"]}[family]
    if functions != defaults:
        args["activations"] = functions * (2 if bidirectional else 1)
        if alphas:
            args["activation_alpha"] = alphas * (2 if bidirectional else 1)
        if betas:
            args["activation_beta"] = betas * (2 if bidirectional else 1)
        notes.append("non-default activations: build the node with the activations above; the operator's defaults "
                     f"({', '.join(defaults)}) would compute different numbers")
    if family == "GRU":
        args["linear_before_reset"] = 1 if splits[0].reset_after else 0
    has_bias = splits[0].block("b" + _suffix(order[0])) is not None
    w, r, b, p = [], [], [], []
    for own in blocks:
        w.append(_stack(own, "W", order).T)
        r.append(_stack(own, "U", order).T)
        if has_bias:
            wb = _stack(own, "b", order)
            b.append(np.concatenate([wb, _recurrent_bias(own, order, wb)]))
        if "p_i" in own:
            p.append(_stack(own, "p", PEEPHOLE_ORDER))
    key = owner.key
    arrays[f"{key}/W"] = np.ascontiguousarray(np.stack(w))
    arrays[f"{key}/R"] = np.ascontiguousarray(np.stack(r))
    if has_bias:
        arrays[f"{key}/B"] = np.ascontiguousarray(np.stack(b))
    else:
        notes.append("no bias (use_bias=False): leave the node's B input empty")
    if p:
        arrays[f"{key}/P"] = np.ascontiguousarray(np.stack(p))
        if not has_bias:
            notes.append("peepholes P is the node's 8th input: give B as zeros [D, 8·H] (an empty B would shift it)")
    if backwards:
        notes.append("go_backwards=True -> direction=reverse: ONNX returns Y in input time order, Keras in reversed "
                     "order (Y_h is the same)")
    if bidirectional:
        mode = owner.config.get("merge_mode", "concat") if owner.config else "concat"
        notes.append(f"Y has both directions on axis 1 [seq, 2, batch, H]; Keras's merge_mode={mode} combines them")
    return Module(key, owner.key, f"onnx:{ONNX_OPERATOR[family]}", args, notes)


def _to_keras(layer: Layer, split: GateSplit, blocks: dict[str, np.ndarray], act: str | None, rec: str | None,
              backwards: bool, paired: bool, notes: list[str], arrays: dict[str, np.ndarray]) -> Module:
    """A torch / ONNX / TF1 recurrent leaf as the arrays of a Keras layer's `set_weights`: kernel (in, gates·u),
    recurrent_kernel (u, gates·u), bias, in Keras's gate order."""
    family = split.layout.family
    if "proj" in blocks:
        raise _refuse(layer, "keras", "an LSTM with a projection (proj_size / weight_hr) has no Keras layer")
    if "p_i" in blocks:
        raise _refuse(layer, "keras", "Keras's LSTM has no peepholes")
    for name in (act, rec):
        if name is not None and name.startswith("onnx "):
            raise _refuse(layer, "keras", f"activation {name} has no Keras name")
    order = GATE_ORDER["keras"][family]
    key, direction = _keras_key(layer, paired)
    arrays[f"{key}/kernel"] = _stack(blocks, "W", order)
    arrays[f"{key}/recurrent_kernel"] = _stack(blocks, "U", order)
    args: dict[str, Any] = {"units": split.units}
    if act not in (None, "tanh"):
        args["activation"] = act
    if rec not in (None, "sigmoid") and family != "SimpleRNN":
        args["recurrent_activation"] = rec
    if act is None and family == "SimpleRNN":
        notes.append("torch.nn.RNN's nonlinearity is not in the state dict: assumed tanh (use activation='relu' "
                     "if the module was built with nonlinearity='relu')")
    if "b" + _suffix(order[0]) in blocks:
        b = _stack(blocks, "b", order)
        second = "rb" + _suffix(order[0]) in blocks
        if family == "GRU" and split.reset_after:
            # torch GRU / ONNX linear_before_reset=1 apply r to (U h + b_hh): Keras's reset_after=True, bias rows
            # [input; recurrent]
            arrays[f"{key}/bias"] = np.stack([b, _recurrent_bias(blocks, order, b)])
        else:
            # the recurrent bias is added outside every nonlinearity's argument split, so the sum is exact
            arrays[f"{key}/bias"] = b + _stack(blocks, "rb", order) if second else b
    else:
        args["use_bias"] = False
    if family == "GRU":
        args["reset_after"] = bool(split.reset_after)
    args["return_sequences"] = True
    if direction == "backward":
        notes.append("the backward direction: Bidirectional(...).set_weights takes the forward layer's kernel, "
                     "recurrent_kernel, bias, then the backward layer's")
    elif backwards:
        args["go_backwards"] = True
        notes.append("direction=reverse alone: Keras's go_backwards returns the outputs in reversed time order")
    return Module(key, layer.key, f"keras.layers.{family}", args, notes)


def _keras_key(layer: Layer, paired: bool) -> tuple[str, str | None]:
    """Where a leaf's Keras arrays go: an ONNX node's path (its leaves are named by direction); for the two
    directions of a bidirectional torch layer (``l0``, ``l0_reverse``) or ONNX node, ``<path>/forward`` and
    ``<path>/backward``; else the leaf's path."""
    direction = layer.config.get("direction")
    path = list(layer.path)
    if layer.class_name in NATIVE_LAYOUTS and NATIVE_LAYOUTS[layer.class_name].framework == "ONNX" \
            and path[-1] in ("forward", "reverse"):
        path = path[:-1]
    elif paired and path[-1].endswith("_reverse"):
        path[-1] = path[-1][:-len("_reverse")]
    if not paired:
        return "/".join(path), None
    side = "backward" if direction == "reverse" else "forward"
    return "/".join([*path, side]), side

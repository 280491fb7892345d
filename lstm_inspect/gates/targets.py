"""The conversion targets as data, and the writers that follow the tables: each target's gate order, operator
names and activations, the `Module` / `Converted` records a conversion returns, and the arrays of one unit in the
torch, ONNX or Keras layout (`conversion.convert` chooses the units and calls these).

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
from .split import NATIVE_LAYOUTS, GateSplit

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


def refuse(layer: Layer, target: str, reason: str) -> InspectError:
    return InspectError(f"layer {layer.key!r} ({layer.class_name}) has no {target} equivalent: {reason}")


def gate_suffix(gate: str) -> str:
    return f"_{gate}" if gate else ""


def recurrent_bias(blocks: dict[str, np.ndarray], order: tuple[str, ...], b: np.ndarray) -> np.ndarray:
    """The second bias: Keras GRU reset_after's row 1, a torch / ONNX file's own; zeros for Keras's single bias."""
    return stack_blocks(blocks, "rb", order) if "rb" + gate_suffix(order[0]) in blocks else np.zeros_like(b)


def stack_blocks(blocks: dict[str, np.ndarray], kind: str, order: tuple[str, ...]) -> np.ndarray:
    """One kind of block in the target's gate order, concatenated along the units axis of Keras's orientation."""
    return np.concatenate([blocks[kind + gate_suffix(g)] for g in order], axis=-1)


def to_torch(model: ModelFile, owner: Layer, splits: list[GateSplit], blocks: list[dict[str, np.ndarray]],
              act: str | None, rec: str | None,
              bidirectional: bool, backwards: bool, notes: list[str], arrays: dict[str, np.ndarray]) -> Module:
    family = splits[0].layout.family
    order = GATE_ORDER["torch"][family]
    args: dict[str, Any] = {"input_size": splits[0].input_dim, "hidden_size": splits[0].units}
    if family == "SimpleRNN":
        nonlinearity = act or "tanh"
        if nonlinearity not in TORCH_RNN_NONLINEARITIES:
            raise refuse(owner, "torch", f"activation={nonlinearity}; torch.nn.RNN only has nonlinearity tanh or relu")
        if nonlinearity != "tanh":
            args["nonlinearity"] = nonlinearity
    elif act is not None and (act, rec) != TORCH_ACTIVATIONS[family]:
        wanted = TORCH_ACTIVATIONS[family]
        raise refuse(owner, "torch", f"activation={act}, recurrent_activation={rec}; torch.nn.{TORCH_MODULE[family]} "
                                      f"always uses activation={wanted[0]}, recurrent_activation={wanted[1]}")
    if family == "GRU" and splits[0].reset_after is False:
        raise refuse(owner, "torch", "reset_after=False applies the reset gate before U_h; torch.nn.GRU only "
                                      "computes the reset_after=True form")
    has_bias = splits[0].block("b" + gate_suffix(order[0])) is not None
    if not has_bias:
        args["bias"] = False
    args["batch_first"] = True
    if bidirectional:
        args["bidirectional"] = True
    prefix = owner.key.replace("/", ".")
    for split, own, suffix in zip(splits, blocks, ("", "_reverse")):
        # Keras blocks are (in, H) so that x @ W; torch stores the transpose, (gates*H, in), for W @ x.
        arrays[f"{prefix}.weight_ih_l0{suffix}"] = np.ascontiguousarray(stack_blocks(own, "W", order).T)
        arrays[f"{prefix}.weight_hh_l0{suffix}"] = np.ascontiguousarray(stack_blocks(own, "U", order).T)
        if has_bias:
            b = stack_blocks(own, "b", order)
            arrays[f"{prefix}.bias_ih_l0{suffix}"] = b
            arrays[f"{prefix}.bias_hh_l0{suffix}"] = recurrent_bias(own, order, b)
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


def convert_other(target: str, layer: Layer, arrays: dict[str, np.ndarray]) -> Module | None:
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


def to_onnx(model: ModelFile, owner: Layer, splits: list[GateSplit], blocks: list[dict[str, np.ndarray]],
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
            raise refuse(owner, "onnx", f"activation {name} has no ONNX recurrent activation "
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
    has_bias = splits[0].block("b" + gate_suffix(order[0])) is not None
    w, r, b, p = [], [], [], []
    for own in blocks:
        w.append(stack_blocks(own, "W", order).T)
        r.append(stack_blocks(own, "U", order).T)
        if has_bias:
            wb = stack_blocks(own, "b", order)
            b.append(np.concatenate([wb, recurrent_bias(own, order, wb)]))
        if "p_i" in own:
            p.append(stack_blocks(own, "p", PEEPHOLE_ORDER))
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


def to_keras(layer: Layer, split: GateSplit, blocks: dict[str, np.ndarray], act: str | None, rec: str | None,
              backwards: bool, paired: bool, notes: list[str], arrays: dict[str, np.ndarray]) -> Module:
    """A torch / ONNX / TF1 recurrent leaf as the arrays of a Keras layer's `set_weights`: kernel (in, gates·u),
    recurrent_kernel (u, gates·u), bias, in Keras's gate order."""
    family = split.layout.family
    if "proj" in blocks:
        raise refuse(layer, "keras", "an LSTM with a projection (proj_size / weight_hr) has no Keras layer")
    if "p_i" in blocks:
        raise refuse(layer, "keras", "Keras's LSTM has no peepholes")
    for name in (act, rec):
        if name is not None and name.startswith("onnx "):
            raise refuse(layer, "keras", f"activation {name} has no Keras name")
    order = GATE_ORDER["keras"][family]
    key, direction = _keras_key(layer, paired)
    arrays[f"{key}/kernel"] = stack_blocks(blocks, "W", order)
    arrays[f"{key}/recurrent_kernel"] = stack_blocks(blocks, "U", order)
    args: dict[str, Any] = {"units": split.units}
    if act not in (None, "tanh"):
        args["activation"] = act
    if rec not in (None, "sigmoid") and family != "SimpleRNN":
        args["recurrent_activation"] = rec
    if act is None and family == "SimpleRNN":
        notes.append("torch.nn.RNN's nonlinearity is not in the state dict: assumed tanh (use activation='relu' "
                     "if the module was built with nonlinearity='relu')")
    if "b" + gate_suffix(order[0]) in blocks:
        b = stack_blocks(blocks, "b", order)
        second = "rb" + gate_suffix(order[0]) in blocks
        if family == "GRU" and split.reset_after:
            # torch GRU / ONNX linear_before_reset=1 apply r to (U h + b_hh): Keras's reset_after=True, bias rows
            # [input; recurrent]
            arrays[f"{key}/bias"] = np.stack([b, recurrent_bias(blocks, order, b)])
        else:
            # the recurrent bias is added outside every nonlinearity's argument split, so the sum is exact
            arrays[f"{key}/bias"] = b + stack_blocks(blocks, "rb", order) if second else b
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

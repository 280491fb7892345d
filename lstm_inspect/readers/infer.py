"""Guess a layer's class from its stored weights, for files that carry no model config (weights-only files)."""
from __future__ import annotations

import re

from ..model import Layer, Tensor

#: Keras 2 scopes a recurrent layer's variables under its cell ("lstm_cell", "gru_cell_3"): not a layer of its own.
CELL_SCOPE = re.compile(r"^(lstm|gru|simple_rnn|peephole_lstm|conv_lstm\d?d?)_cell(_\d+)?$")

_HINTS = (("conv_lstm", "ConvLSTM"), ("lstm", "LSTM"), ("gru", "GRU"), ("simple_rnn", "SimpleRNN"))


def infer_class(layer: Layer, hint: str = "") -> str:
    """The most likely Keras class for the layer's weights; ``hint`` is a name that may mention the class."""
    roles = {t.name: t for t in layer.weights}
    kernel, recurrent = roles.get("kernel"), roles.get("recurrent_kernel")
    if kernel is not None and recurrent is not None and len(recurrent.shape) >= 2:
        units = recurrent.shape[-2]
        multiple = recurrent.shape[-1] // units if units else 0
        if len(kernel.shape) > 2:
            return f"ConvLSTM{len(kernel.shape) - 2}D"
        bias = roles.get("bias")
        if multiple in (4, 3) and bias is not None and bias.shape == (2 * multiple * units,):
            return "CuDNNLSTM" if multiple == 4 else "CuDNNGRU"  # input biases, then recurrent biases
        by_shape = {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}.get(multiple)
        hinted = next((cls for key, cls in _HINTS if key in hint.lower()), None)
        return by_shape or hinted or "Recurrent"
    if set(roles) >= {"moving_mean", "moving_variance"}:
        return "BatchNormalization"
    if set(roles) <= {"gamma", "beta"} and roles:
        return "LayerNormalization"
    if "embeddings" in roles:
        return "Embedding"
    if kernel is not None and set(roles) <= {"kernel", "bias"}:
        return "Dense" if len(kernel.shape) == 2 else f"Conv{len(kernel.shape) - 2}D"
    return "Unknown"


def role_of(stored_name: str) -> str:
    """``lstm/lstm_cell/kernel:0`` -> ``kernel``."""
    return stored_name.rsplit("/", 1)[-1].split(":", 1)[0]


def owner_of(stored_name: str) -> tuple[str, ...]:
    """The scope a stored weight belongs to, cell scopes dropped: ``bidi/forward_lstm/lstm_cell/kernel:0`` ->
    ``("bidi", "forward_lstm")``."""
    parts = stored_name.split("/")[:-1]
    return tuple(p for p in parts if not CELL_SCOPE.match(p))


def layers_from_weights(name: str, named: list[tuple[str, Tensor]]) -> Layer:
    """A layer (or a container of layers) rebuilt from one weight group's (stored name, tensor) pairs alone."""
    owners: dict[tuple[str, ...], list[Tensor]] = {}
    for stored_name, tensor in named:
        owners.setdefault(owner_of(stored_name), []).append(tensor)
    wrapped = _cell_wrapper(name, owners)
    if wrapped is not None:
        return wrapped
    if len(owners) <= 1:
        layer = Layer(name=name, class_name="", path=(name,), weights=[t for _, t in named], inferred=True)
        layer.class_name = infer_class(layer, hint=" ".join(next(iter(owners), ())) + " " + name)
        return layer
    parent = Layer(name=name, class_name="", path=(name,), inferred=True)
    for owner, owned in owners.items():
        child_name = owner[-1] if owner else name
        child = Layer(name=child_name, class_name="", path=(name, child_name), weights=owned, inferred=True)
        child.class_name = infer_class(child, hint=" ".join(owner))
        parent.children.append(child)
    names = [c.name for c in parent.children]
    is_bidi = len(names) == 2 and names[0].startswith("forward_") and names[1].startswith("backward_")
    parent.class_name = "Bidirectional" if is_bidi else "Container"
    return parent


def _cell_wrapper(name: str, owners: dict[tuple[str, ...], list[Tensor]]) -> Layer | None:
    """tf-keras scopes an RNN(cell) wrapper's arrays as ``rnn/<cell name>/kernel:0`` and an
    RNN(StackedRNNCells) wrapper's as ``rnn/<stack name>/<cell name>/kernel:0``: rebuild RNN -> (stack ->) cells
    when every array sits in such a scope and every cell holds recurrent arrays."""
    if not owners or any(len(owner) not in (2, 3) or owner[0] != name for owner in owners):
        return None
    depths = {len(owner) for owner in owners}
    middles = {owner[1] for owner in owners}
    if depths == {2} and len(owners) == 1:
        holder = Layer(name=name, class_name="RNN", path=(name,), inferred=True)
        parent_path = (name,)
    elif depths == {3} and len(middles) == 1:
        middle = middles.pop()
        holder = Layer(name=middle, class_name="StackedRNNCells", path=(name, middle), inferred=True)
        parent_path = holder.path
    else:
        return None
    for owner, owned in owners.items():
        cell = Layer(name=owner[-1], class_name="", path=parent_path + (owner[-1],), weights=owned, inferred=True)
        cell.class_name = infer_class(cell, hint=owner[-1])
        if cell.class_name not in ("LSTM", "GRU", "SimpleRNN"):
            return None
        cell.class_name += "Cell"
        holder.children.append(cell)
    if holder.class_name == "RNN":
        return holder
    return Layer(name=name, class_name="RNN", path=(name,), children=[holder], inferred=True)

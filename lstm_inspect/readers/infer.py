"""Guess a layer's class from its stored weights, for files that carry no model config (weights-only files)."""
from __future__ import annotations

import re

import numpy as np

from .. import schema
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
    wrapped = _cell_wrapper(name, owners) or _projections(name, owners)
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


def _projections(name: str, owners: dict[tuple[str, ...], list[Tensor]]) -> Layer | None:
    """tf-keras stores a MultiHeadAttention's arrays as ``mha/query/kernel:0``, ``mha/key/...``, ``mha/value/...``,
    ``mha/attention_output/...``: one layer whose arrays are named ``query_kernel``, ... as with a config."""
    subs = dict(schema.SUB_OBJECTS["MultiHeadAttention"])
    prefixes = set(subs.values())
    if not owners or any(len(owner) != 2 or owner[0] != name or owner[1] not in prefixes for owner in owners):
        return None
    if not {"query", "key", "value", "attention_output"} <= {owner[1] for owner in owners}:
        return None
    weights = []
    for prefix in subs.values():  # creation order
        for tensor in owners.get((name, prefix), []):
            tensor.name = f"{prefix}_{tensor.name}"
            weights.append(tensor)
    return Layer(name=name, class_name="MultiHeadAttention", path=(name,), weights=weights, inferred=True)


# ------------------------------------------------------------------------------------------- Keras 1 array names

#: Keras 1 named every array ``<layer>_<W|U|b>`` (``dense_1_W``, ``simplernn_1_U``; ``:0`` under TensorFlow) and
#: stored an LSTM's / GRU's gates apart, ``<layer>_W_i``: LSTM gates i, c, f, o, GRU z, r, h (reset_after=False).
#: With ``consume_less='gpu'`` its LSTM / GRU were fused as ``<layer>_W``, ``_U``, ``_b`` in Keras 2's gate order.
KERAS1_SHORT = re.compile(r"[WUb](_[icfozrh])?|gamma|beta|running_mean|running_std")
KERAS1_GATES = {"LSTM": "icfo", "GRU": "zrh"}
_RECURRENT_ROLES = {"W": "kernel", "U": "recurrent_kernel", "b": "bias"}
#: Keras 1's BatchNormalization stored ``<layer>_gamma``, ``_beta``, ``_running_mean``, ``_running_std`` in this
#: order; ``running_std`` held the running variance (Keras 1.2 ``normalization.py`` passes it to
#: ``K.batch_normalization`` as the variance) and tf-keras's Keras 1 converter loads it into ``moving_variance``.
_BATCHNORM_ROLES = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_std": "moving_variance"}
#: The Keras 2 role of each ungated Keras 1 array, for the classes whose Keras 1 arrays are known (a Keras 1 conv
#: kernel may be in Theano's ordering: only `keras1_conv` names one, where the shapes settle its layout).
KERAS1_ROLES = {"Dense": {"W": "kernel", "b": "bias"}, "Embedding": {"W": "embeddings"},
                "SimpleRNN": _RECURRENT_ROLES, "LSTM": _RECURRENT_ROLES, "GRU": _RECURRENT_ROLES,
                "BatchNormalization": _BATCHNORM_ROLES}


def keras1_parts(stored_names: list[str], owners: list[str] | None = None) -> list[tuple[str, str]] | None:
    """(owner layer, short name) of each Keras 1 array name: ``lstm_1_W_i:0`` -> ``("lstm_1", "W_i")``. The owner is
    the longest of `owners` that prefixes the name when they are known (a config's layer names), else what precedes
    the short name. None unless every name is a Keras 1 one."""
    parts = []
    for stored in stored_names:
        if "/" in stored:  # Keras 2 and later scope their names; Keras 1 never did
            return None
        role = role_of(stored)
        if owners is not None:
            candidates = [owner for owner in owners if role.startswith(owner + "_")]
        else:
            candidates = [role[:cut] for cut, char in enumerate(role) if char == "_" and KERAS1_SHORT.fullmatch(role[cut + 1:])]
        owner = max(candidates, key=len, default="")
        short = role[len(owner) + 1:]
        if not owner or not KERAS1_SHORT.fullmatch(short):
            return None
        parts.append((owner, short))
    return parts or None


def keras1_roles(class_name: str, shorts: list[str]) -> list[str] | None:
    """The names one layer's Keras 1 arrays take in the neutral model: a gate's block keeps its name (``W_i``, which
    `gates.split` reads as stored blocks), the others take their Keras 2 role. None when they do not make up a
    complete layer of that class (every gate's W, U and b; no array twice)."""
    if len(set(shorts)) != len(shorts) or not shorts:
        return None
    if class_name == "BatchNormalization":
        return [_BATCHNORM_ROLES[short] for short in shorts] if shorts == list(_BATCHNORM_ROLES) else None
    if any("_" in short for short in shorts):
        gates = KERAS1_GATES.get(class_name, "")
        return shorts if set(shorts) == {f"{kind}_{gate}" for kind in "WUb" for gate in gates} else None
    roles = KERAS1_ROLES.get(class_name, {})
    if not set(shorts) <= set(roles) or "W" not in shorts:
        return None
    return [roles[short] for short in shorts]


def keras1_class(owner: str, named: list[tuple[str, Tensor]]) -> str | None:
    """The class of one weights-only Keras 1 layer from its short array names and shapes, None when unclear."""
    shorts = {short: tensor for short, tensor in named}
    if set(shorts) == set(_BATCHNORM_ROLES):
        return "BatchNormalization"
    gated = {short[2:] for short in shorts if "_" in short}
    if gated:
        return next((cls for cls, gates in KERAS1_GATES.items() if gated == set(gates)), None)
    kernel, recurrent = shorts.get("W"), shorts.get("U")
    if kernel is None or len(kernel.shape) != 2:
        return None
    if recurrent is not None:  # fused (consume_less='gpu'): (u, gates·u), as Keras 2 stores it
        units = recurrent.shape[0] if len(recurrent.shape) == 2 else 0
        multiple = recurrent.shape[1] // units if units and recurrent.shape[1] % units == 0 else 0
        return {4: "LSTM", 3: "GRU", 1: "SimpleRNN"}.get(multiple)
    return "Embedding" if "b" not in shorts and "embed" in owner.lower() else "Dense"


#: Keras 1's own names for its convolution layers: only they tell a Convolution1D's (k, 1, in, f) kernel from a
#: one-column Convolution2D's.
_KERAS1_CONV = re.compile(r"convolution([12])d_\d+")


def keras1_conv(owner: str, owned: list[tuple[str, Tensor]]) -> tuple[str, list[str], list[Tensor]] | None:
    """A Keras 1 ``convolution1d_<n>`` / ``convolution2d_<n>`` holding ``W`` and ``b``: (Conv1D / Conv2D, [kernel,
    bias], the arrays) with the kernel in Keras 2's layout, as tf-keras's Keras 1 converter lays it out:
    Convolution1D (k, 1, in, f) -> ``W[:, 0]``, Keras 1.0's (f, in, k, 1) transposed (2, 3, 1, 0) first;
    Convolution2D ``dim_ordering='th'`` (f, in, rows, cols) transposed (2, 3, 1, 0), ``'tf'`` (rows, cols, in, f) as
    stored. None when the shapes leave the layout open (the filter count f, from ``b``, at both ends of ``W``)."""
    match = _KERAS1_CONV.fullmatch(owner)
    if match is None or [short for short, _ in owned] != ["W", "b"]:
        return None
    (_, kernel), (_, bias) = owned
    shape, one_d = kernel.shape, match.group(1) == "1"
    if len(shape) != 4 or len(bias.shape) != 1:
        return None
    filters = bias.shape[0]
    th_order = shape[0] == filters and (not one_d or shape[3] == 1)
    tf_order = shape[3] == filters and (not one_d or shape[1] == 1)
    if th_order == tf_order:
        return None
    axes = (2, 3, 1, 0) if th_order else (0, 1, 2, 3)
    laid_out = tuple(shape[axis] for axis in axes)

    def load() -> np.ndarray:
        value = np.transpose(kernel.read(), axes)
        return np.ascontiguousarray(value[:, 0] if one_d else value)

    arranged = Tensor(name="kernel", shape=laid_out[:1] + laid_out[2:] if one_d else laid_out, dtype=kernel.dtype,
                      source=kernel.source, _load=load)
    return f"Conv{match.group(1)}D", ["kernel", "bias"], [arranged, bias]


def keras1_layer(name: str, named: list[tuple[str, Tensor]]) -> Layer | None:
    """A weights-only Keras 1 layer group (``lstm_1`` holding ``lstm_1_W_i`` ...; a ``bidirectional_1`` holding
    ``forward_lstm_1_*`` and ``backward_lstm_1_*``; a ``timedistributed_1`` holding ``dense_1_W``), its arrays under
    the names a config would give them; None when any array is not named the Keras 1 way or its layer is unclear."""
    parts = keras1_parts([stored for stored, _ in named])
    if parts is None:
        return None
    owners: dict[str, list[tuple[str, Tensor]]] = {}
    for (owner, short), (_, tensor) in zip(parts, named):
        owners.setdefault(owner, []).append((short, tensor))
    found = {}
    for owner, owned in owners.items():
        conv = keras1_conv(owner, owned)
        if conv is not None:
            found[owner] = conv
            continue
        cls = keras1_class(owner, owned)
        roles = keras1_roles(cls, [short for short, _ in owned]) if cls else None
        if roles is None:
            return None
        found[owner] = (cls, roles, [tensor for _, tensor in owned])
    leaves = []
    for owner, (cls, roles, tensors) in found.items():  # every layer is clear: only now rename the arrays
        for role, tensor in zip(roles, tensors):
            tensor.name = role
        leaves.append(Layer(name=owner, class_name=cls, path=(name, owner), weights=tensors, inferred=True))
    if len(leaves) == 1:
        leaf = leaves[0]
        leaf.name, leaf.path = name, (name,)
        return leaf
    names = [leaf.name for leaf in leaves]
    is_bidi = len(names) == 2 and names[0].startswith("forward_") and names[1] == "backward_" + names[0][8:]
    return Layer(name=name, class_name="Bidirectional" if is_bidi else "Container", path=(name,), children=leaves,
                 inferred=True)

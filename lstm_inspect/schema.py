"""What Keras stores for each layer class: its weights in creation order, and how wrappers hold sub-layers.

This is data about Keras, used to hand a container's flat list of stored arrays to the right sub-layers.
A class missing here is 'unknown': its arrays are listed raw, under the names the file gives them.
"""
from __future__ import annotations

from typing import Any, Callable

#: Classes whose whole state is a list of weights created in this order; (role, trainable, condition). The
#: condition is a config key that must be true (absent counts as true), or a test of the whole config.
_RECURRENT = [("kernel", True, None), ("recurrent_kernel", True, None), ("bias", True, "use_bias")]
_DENSE = [("kernel", True, None), ("bias", True, "use_bias")]

def _projections(*names: str) -> list[tuple[str, bool, Any]]:
    """MultiHeadAttention's EinsumDense sub-layers, each a kernel and (with use_bias) a bias, as ``query_kernel``
    (Keras stores ``mha/query/kernel:0``; one name without a slash keeps exported keys one level deep)."""
    gate = [("gate_kernel", True, _use_gate), ("gate_bias", True, lambda c: _use_gate(c) and c.get("use_bias", True))]
    out: list[tuple[str, bool, Any]] = []
    for name in names:
        out += gate if name == "gate" else [(f"{name}_kernel", True, None), (f"{name}_bias", True, "use_bias")]
    return out


def _use_gate(config: dict[str, Any]) -> bool:
    return bool(config.get("use_gate", False))  # Keras >= 3.12 only; absent means no gate


WEIGHT_ROLES: dict[str, list[tuple[str, bool, str | Callable[[dict[str, Any]], bool] | None]]] = {
    "LSTM": _RECURRENT,
    "GRU": _RECURRENT,
    "SimpleRNN": _RECURRENT,
    # cells held by RNN(cell) / RNN(StackedRNNCells([...])): the same arrays as the layers they build
    "LSTMCell": _RECURRENT,
    "GRUCell": _RECURRENT,
    "SimpleRNNCell": _RECURRENT,
    # tf.keras 2.x `tf.keras.experimental.PeepholeLSTMCell`: an LSTMCell, then one diagonal peephole vector per gate
    "PeepholeLSTMCell": _RECURRENT + [("input_gate_peephole_weights", True, None),
                                      ("forget_gate_peephole_weights", True, None),
                                      ("output_gate_peephole_weights", True, None)],
    # legacy Keras 2 / tf.keras cuDNN layers: always a bias, (8u,) / (6u,), input biases then recurrent biases
    "CuDNNLSTM": [("kernel", True, None), ("recurrent_kernel", True, None), ("bias", True, None)],
    "CuDNNGRU": [("kernel", True, None), ("recurrent_kernel", True, None), ("bias", True, None)],
    "ConvLSTM1D": _RECURRENT,
    "ConvLSTM2D": _RECURRENT,
    "ConvLSTM3D": _RECURRENT,
    "Dense": _DENSE,
    "Conv1D": _DENSE,
    "Conv2D": _DENSE,
    "Conv3D": _DENSE,
    "Conv1DTranspose": _DENSE,
    "Conv2DTranspose": _DENSE,
    "Embedding": [("embeddings", True, None)],
    "BatchNormalization": [
        ("gamma", True, "scale"),
        ("beta", True, "center"),
        ("moving_mean", False, None),
        ("moving_variance", False, None),
    ],
    "LayerNormalization": [("gamma", True, "scale"), ("beta", True, "center")],
    "PReLU": [("alpha", True, None)],
    # Attention: a scalar scale (use_scale) and, for score_mode="concat", a scalar weight on the summed tanh
    "Attention": [("scale", True, "use_scale"),
                  ("concat_score_weight", True, lambda c: c.get("score_mode", "dot") == "concat")],
    "AdditiveAttention": [("scale", True, "use_scale")],
    "MultiHeadAttention": _projections("query", "key", "gate", "value", "attention_output"),
}
#: Layers whose arrays Keras's native format keeps in sub-objects (``<layer>/query_dense/vars/0``, tf-keras
#: ``<layer>/_query_dense/vars/0``): the sub-object and the role prefix of its kernel and bias, in creation order.
SUB_OBJECTS: dict[str, list[tuple[str, str]]] = {
    "MultiHeadAttention": [("query_dense", "query"), ("key_dense", "key"), ("gate_dense", "gate"),
                           ("value_dense", "value"), ("output_dense", "attention_output")],
}

#: Classes that store nothing.
WEIGHTLESS = frozenset(
    """InputLayer Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout
    AlphaDropout Activation ReLU LeakyReLU ELU Softmax ThresholdedReLU Flatten Reshape Permute RepeatVector Masking
    Concatenate Add Subtract Multiply Average Maximum Minimum Dot MaxPooling1D MaxPooling2D MaxPooling3D
    AveragePooling1D AveragePooling2D AveragePooling3D GlobalMaxPooling1D GlobalMaxPooling2D GlobalMaxPooling3D
    GlobalAveragePooling1D GlobalAveragePooling2D GlobalAveragePooling3D UpSampling1D UpSampling2D ZeroPadding1D
    ZeroPadding2D Cropping1D Cropping2D Lambda ActivityRegularization Identity""".split()
    # Keras 3 functional graphs record the mask of Embedding(mask_zero=True) as the op not_equal(ids, 0), and a
    # Masking layer's mask as any(not_equal(x, mask_value), axis=-1)
    + ["NotEqual", "Any"]
)

WRAPPER_CLASSES = frozenset({"Bidirectional", "TimeDistributed", "RNN", "StackedRNNCells"})


def weight_roles(class_name: str, config: dict[str, Any]) -> list[tuple[str, bool]] | None:
    """The (role, trainable) pairs Keras stores for a leaf layer, or None when the class is unknown."""
    if class_name in WEIGHTLESS:
        return []
    roles = WEIGHT_ROLES.get(class_name)
    if roles is None:
        return None
    return [(role, trainable) for role, trainable, cond in roles if _holds(cond, config)]


def _holds(cond: Any, config: dict[str, Any]) -> bool:
    if cond is None:
        return True
    return bool(cond(config)) if callable(cond) else bool(config.get(cond, True))


def roles_for_count(class_name: str, count: int) -> list[str] | None:
    """Role names for `count` stored arrays of a class whose config is unknown (weights-only files): the
    optional roles (a bias with use_bias=False, ...) are dropped when fewer arrays are stored."""
    roles = WEIGHT_ROLES.get(class_name)
    if roles is None:
        return [] if class_name in WEIGHTLESS and count == 0 else None
    names = [role for role, _, _ in roles]
    optional = [role for role, _, cond in roles if cond is not None]
    while len(names) > count and optional:
        names.remove(optional.pop())
    return names if len(names) == count else None

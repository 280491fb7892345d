"""TensorFlow 1 checkpoints (``model.ckpt.index`` + ``model.ckpt.data-*``, written by ``tf.compat.v1.train.Saver``)
as the neutral model.

The variables are read by lstm-inspect's own tensor-bundle reader (`tf_bundle`): no TensorFlow needed. Cells are recognised by the variables under one scope:

- ``LSTMCell`` / ``BasicLSTMCell`` (scope ``.../lstm_cell`` or ``.../basic_lstm_cell``): ``kernel`` (in+u', 4u) and
  ``bias`` (4u,), with ``LSTMCell``'s optional peepholes ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` (u,) and
  ``projection/kernel`` (u, p) (then u' = p);
- ``GRUCell`` (any scope): ``gates/kernel`` (in+u, 2u), ``gates/bias``, ``candidate/kernel`` (in+u, u),
  ``candidate/bias``.

Each cell becomes a leaf of class ``TF1LSTMCell`` / ``TF1BasicLSTMCell`` / ``TF1GRUCell`` whose key is its scope
(``rnn/multi_rnn_cell/cell_0/lstm_cell``); the cells of a ``MultiRNNCell`` sit below a ``MultiRNNCell`` container
(scope ``.../multi_rnn_cell``). `gates.split` splits them (``gates/tf1_cells.py``). Every other variable (optimizer
slots, ``global_step``, dense layers) is listed raw, grouped by scope. ``forget_bias``, activations and clipping
are constructor arguments of the Python cell: a checkpoint stores none of them.
"""
from __future__ import annotations

import re

from ..errors import UnsupportedFile
from ..model import Layer, ModelFile, Tensor
from . import tf_bundle

_LSTM_SCOPE = re.compile(r"(?:^|/)(?P<kind>basic_lstm_cell|lstm_cell)(?:_\d+)?$")
_MULTI = re.compile(r"^(?P<multi>(?:.*/)?multi_rnn_cell(?:_\d+)?)/(?P<rest>cell_\d+/.+)$")
_LSTM_ROLES = ("kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel")
_GRU_ROLES = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")

is_checkpoint_index = tf_bundle.is_index
prefix_of = tf_bundle.prefix_of


def tensors_of(bundle: tf_bundle.Bundle) -> tuple[dict[str, Tensor], list[str]]:
    """(numeric tensors by name, names of the entries not read as arrays: strings, partitioned variables, ...)."""
    tensors: dict[str, Tensor] = {}
    skipped: list[str] = []
    for name, entry in sorted(bundle.entries.items()):
        if not entry.readable:
            skipped.append(name)
            continue
        tensors[name] = Tensor(name=name, shape=entry.shape, dtype=entry.dtype, source=name,
                               _load=lambda n=name: bundle.read(n))
    return tensors, skipped


def skipped_note(bundle: tf_bundle.Bundle, skipped: list[str]) -> str:
    described = [f"{name} ({'partitioned' if bundle.entries[name].slices else bundle.entries[name].dtype})"
                 for name in skipped[:3]]
    return (f"{len(skipped)} variable(s) not read as arrays: {', '.join(described)}"
            + (", ..." if len(skipped) > 3 else ""))


def read(prefix: str, label: str, bundle: tf_bundle.Bundle | None = None) -> ModelFile:
    bundle = bundle or tf_bundle.Bundle(prefix, label)
    if not bundle.entries:
        raise UnsupportedFile("the TensorFlow checkpoint holds no variables", label)
    tensors, skipped = tensors_of(bundle)
    model = build_model(label, tensors)
    if skipped:  # string tensors, partitioned variables: listed, never guessed at
        model.warnings.append(skipped_note(bundle, skipped))
    return model


def build_model(label: str, tensors: dict[str, Tensor]) -> ModelFile:
    root = Layer(name="model", class_name="TF1Checkpoint", path=())
    model = ModelFile(path=label, kind="tf1-checkpoint", root=root, has_config=False)
    model.backend = "tensorflow"
    used: set[str] = set()
    cells: list[tuple[str, str, dict[str, Tensor]]] = []  # (scope, class, role -> tensor)
    scopes = sorted({name.rpartition("/")[0] for name in tensors} | {name.rsplit("/", 2)[0] for name in tensors
                                                                       if name.count("/") >= 2})
    for scope in scopes:
        base = scope + "/" if scope else ""
        gru = {role: tensors.get(base + role) for role in _GRU_ROLES}
        if all(t is not None for t in gru.values()):
            cells.append((scope, "TF1GRUCell", gru))  # type: ignore[arg-type]
            continue
        lstm = {role: tensors[base + role] for role in _LSTM_ROLES if base + role in tensors}
        named = _LSTM_SCOPE.search(scope)
        if "kernel" in lstm and "bias" in lstm and (named or any(r in lstm for r in _LSTM_ROLES[2:])):
            kind = "TF1BasicLSTMCell" if named and named["kind"] == "basic_lstm_cell" else "TF1LSTMCell"
            cells.append((scope, kind, lstm))
    containers: dict[str, Layer] = {}
    for scope, cls, roles in cells:
        for role, tensor in roles.items():
            tensor.name = role
            used.add(tensor.source)
        kernel = roles["kernel" if cls != "TF1GRUCell" else "candidate/kernel"]
        units = kernel.shape[-1] // (4 if cls != "TF1GRUCell" else 1) if len(kernel.shape) == 2 else 0
        config = {"units": units, "scope": scope}
        if cls != "TF1GRUCell":
            config["use_peepholes"] = "w_i_diag" in roles
            config["num_proj"] = roles["projection/kernel"].shape[-1] if "projection/kernel" in roles else None
        multi = _MULTI.match(scope)
        if multi:
            parent = containers.get(multi["multi"])
            if parent is None:
                parent = containers[multi["multi"]] = Layer(name=multi["multi"], class_name="MultiRNNCell",
                                                            path=(multi["multi"],))
                root.children.append(parent)
            parent.children.append(Layer(name=multi["rest"], class_name=cls, path=(multi["multi"], multi["rest"]),
                                         weights=list(roles.values()), config=config))
        else:
            root.children.append(Layer(name=scope, class_name=cls, path=(scope,), weights=list(roles.values()),
                                       config=config))
    others: dict[str, list[Tensor]] = {}
    for name, tensor in tensors.items():
        if name not in used:
            prefix, _, short = name.rpartition("/")
            tensor.name = short
            others.setdefault(prefix or "(top level)", []).append(tensor)
    for prefix, listed in others.items():
        root.children.append(Layer(name=prefix, class_name="variables", path=(prefix,), weights=listed))
    if not cells:
        model.warnings.append("no TF1 LSTMCell / BasicLSTMCell / GRUCell variables found; every variable is listed raw")
    return model

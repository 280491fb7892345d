"""TensorFlow 1 checkpoints (``model.ckpt.index`` + ``model.ckpt.data-*``, written by ``tf.compat.v1.train.Saver``)
as the neutral model.

The variables are read through ``tf.train.load_checkpoint`` (TensorFlow is an optional extra, imported here only,
when such a file is opened). Cells are recognised by the variables under one scope:

- ``LSTMCell`` / ``BasicLSTMCell`` (scope ``.../lstm_cell`` or ``.../basic_lstm_cell``): ``kernel`` (in+u', 4u) and
  ``bias`` (4u,), with ``LSTMCell``'s optional peepholes ``w_i_diag``, ``w_f_diag``, ``w_o_diag`` (u,) and
  ``projection/kernel`` (u, p) (then u' = p);
- ``GRUCell`` (any scope): ``gates/kernel`` (in+u, 2u), ``gates/bias``, ``candidate/kernel`` (in+u, u),
  ``candidate/bias``.

Each cell becomes a leaf of class ``TF1LSTMCell`` / ``TF1BasicLSTMCell`` / ``TF1GRUCell`` whose key is its scope
(``rnn/multi_rnn_cell/cell_0/lstm_cell``); the cells of a ``MultiRNNCell`` sit below a ``MultiRNNCell`` container
(scope ``.../multi_rnn_cell``). `gates.split` splits them (``gates/split.py: _split_tf1``). Every other variable (optimizer
slots, ``global_step``, dense layers) is listed raw, grouped by scope. ``forget_bias``, activations and clipping
are constructor arguments of the Python cell: a checkpoint stores none of them.
"""
from __future__ import annotations

import os
import re

from ..errors import CorruptFile, UnsupportedFile
from ..model import Layer, ModelFile, Tensor

#: The footer magic of the table (SSTable) a TensorFlow checkpoint's ``.index`` file is.
_TABLE_MAGIC = bytes.fromhex("57fb808b247547db")
_LSTM_SCOPE = re.compile(r"(?:^|/)(?P<kind>basic_lstm_cell|lstm_cell)(?:_\d+)?$")
_MULTI = re.compile(r"^(?P<multi>(?:.*/)?multi_rnn_cell(?:_\d+)?)/(?P<rest>cell_\d+/.+)$")
_LSTM_ROLES = ("kernel", "bias", "w_i_diag", "w_f_diag", "w_o_diag", "projection/kernel")
_GRU_ROLES = ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias")

INSTALL = "pip install 'lstm-inspect[tensorflow]'"


def is_checkpoint_index(path: str) -> bool:
    """A ``.index`` file whose last 8 bytes are the table magic."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < 48:
                return False
            handle.seek(-8, os.SEEK_END)
            return handle.read(8) == _TABLE_MAGIC
    except OSError:
        return False


def prefix_of(label: str) -> str | None:
    """The checkpoint prefix a path names: ``model.ckpt`` itself (no such file, but ``model.ckpt.index`` exists),
    ``model.ckpt.index``, or a ``model.ckpt.data-00000-of-00001`` shard; None otherwise."""
    if label.endswith(".index") and is_checkpoint_index(label):
        return label[: -len(".index")]
    shard = re.match(r"^(?P<prefix>.+)\.data-\d{5}-of-\d{5}$", label)
    if shard and is_checkpoint_index(shard["prefix"] + ".index"):
        return shard["prefix"]
    if not os.path.exists(label) and is_checkpoint_index(label + ".index"):
        return label
    return None


def read(prefix: str, label: str) -> ModelFile:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's C++ start-up chatter on stderr
    try:
        import tensorflow as tf  # noqa: PLC0415  (optional extra: only a TF1 checkpoint needs it)
    except ImportError:
        raise UnsupportedFile(f"a TensorFlow checkpoint: reading it needs TensorFlow ({INSTALL})", label) from None
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
        dtypes = reader.get_variable_to_dtype_map()
    except Exception as exc:  # TF raises DataLossError, NotFoundError, ... for broken or partial checkpoints
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptFile(f"TensorFlow cannot read this checkpoint: {first}", label) from exc
    if not shapes:
        raise UnsupportedFile("the TensorFlow checkpoint holds no variables", label)

    def load(name: str):
        try:
            return reader.get_tensor(name)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptFile(f"cannot read variable {name!r}: {first}", label) from exc

    kinds = {name: getattr(dtypes.get(name), "name", "?") for name in shapes}
    skipped = sorted(name for name, kind in kinds.items() if kind in ("string", "variant", "resource", "?"))
    tensors = {name: Tensor(name=name, shape=tuple(int(d) for d in shape), dtype=kinds[name], source=name,
                            _load=lambda n=name: load(n))
               for name, shape in sorted(shapes.items()) if name not in skipped}
    model = build_model(label, tensors)
    if skipped:  # e.g. a TF2 checkpoint's _CHECKPOINTABLE_OBJECT_GRAPH (a serialized proto, not weights)
        model.warnings.append(f"{len(skipped)} non-numeric variable(s) not listed: {', '.join(skipped[:3])}"
                              + (", ..." if len(skipped) > 3 else ""))
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

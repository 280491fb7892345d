"""`verify` on files with no Keras graph: each recurrent module run by its own framework, compared with `forward`.

- torch state dicts (and torch-layout exports): a ``torch.nn.LSTM`` / ``GRU`` / ``RNN`` built from the module's
  shapes, ``load_state_dict(strict=True)`` with the file's tensors, run in float64 with ``batch_first=True``; a
  ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell`` the same way, stepped over the sequence by a loop.
- ONNX models (and onnx-layout exports): a graph of the module's recurrent node(s) — the node's own attributes copied
  from the ``.onnx`` file (from the export's metadata for arrays files), its W, R, B, P — run by onnxruntime in
  float32; the per-layer nodes of a torch.onnx.export module chained by Transpose + Reshape as torch writes them.
- TF1 checkpoints: the cells rebuilt with ``tf.compat.v1.nn.rnn_cell``, their variables restored from the checkpoint
  by TensorFlow's own ``Saver``, run by ``dynamic_rnn`` in a graph-mode session.

The framework is imported here only, lazily. What a file does not store (torch RNN's nonlinearity, TF1's
forget_bias) is given to both sides alike, so the comparison proves the split and the step, not those choices.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from ..errors import InspectError
from ..model import Layer, ModelFile
from . import native_forward

#: The packages each source framework's reference run needs (the first names it), and how to install them.
_ORACLE_PACKAGES = {"torch": (("torch",), "pip install 'lstm-inspect[torch]'"),
                    "onnx": (("onnxruntime",), "pip install onnxruntime"),
                    # tf.compat.v1.nn.rnn_cell lives in tf-keras since TensorFlow 2.16
                    "tf1": (("tensorflow", "tf_keras"), "pip install 'lstm-inspect[keras]'")}


def framework(module: Layer) -> str:
    """``torch``, ``onnx`` or ``tf1``: whose semantics the module has."""
    leaf = module.children[0].class_name if module.children else module.class_name
    return "torch" if leaf.startswith("Torch") else "onnx" if leaf.startswith("Onnx") else "tf1"


def oracle_package(model: ModelFile) -> tuple[str, str]:
    """The package that runs the file's modules, its version; InspectError when it is not installed."""
    kinds = {framework(m) for m in native_forward.select(model, ())}
    if len(kinds) != 1:
        raise InspectError(f"modules of several frameworks ({', '.join(sorted(kinds))}) in one file", model.path)
    packages, hint = _ORACLE_PACKAGES[kinds.pop()]
    missing = [p for p in packages if importlib.util.find_spec(p) is None]
    if missing:
        raise InspectError(f"verify runs this file's modules with {' + '.join(packages)}; {', '.join(missing)} "
                           f"{'is' if len(missing) == 1 else 'are'} not installed ({hint})", model.path)
    package = packages[0]
    module = importlib.import_module(package)
    return package, str(getattr(module, "__version__", "?"))


def inputs_per_module(model: ModelFile, found: list[Layer], given: Any, batch: int, steps: int, seed: int
                      ) -> dict[str, np.ndarray]:
    """Each module's X (batch, time, features): the given one for every module, else a standard normal one of the
    module's input size."""
    rng = np.random.default_rng(seed)
    if given is not None:
        x = native_forward.single_input(given, model.path)
        native_forward.check_fits(model, found, x)
        return {m.key: x for m in found}
    return {m.key: rng.standard_normal((batch, steps, _input_size(m))) for m in found}


def outputs(model: ModelFile, module: Layer, x: np.ndarray, forget_bias: float, nonlinearity: str
            ) -> dict[str, np.ndarray]:
    """The framework's own outputs of one module on X (batch, time, features), keyed like `native_forward.run`."""
    kind = framework(module)
    if kind == "torch":
        return _torch_outputs(module, x, nonlinearity)
    if kind == "onnx":
        return _onnx_outputs(model, module, x)
    return _tf1_outputs(model, module, x, forget_bias)


def _input_size(module: Layer) -> int:
    size = native_forward.input_size(module)
    if size is None:
        raise InspectError(f"module {module.key!r}: its input size cannot be read from the weights")
    return size


def _torch_outputs(module: Layer, x: np.ndarray, nonlinearity: str) -> dict[str, np.ndarray]:
    import torch

    family = module.class_name.rsplit(".", 1)[-1]
    config = module.config
    if family.endswith("Cell"):
        return _torch_cell_outputs(torch, module, x, nonlinearity)
    options: dict[str, Any] = dict(input_size=int(config["input_size"]), hidden_size=int(config["hidden_size"]),
                                   num_layers=int(config["num_layers"]), bias=bool(config["bias"]),
                                   batch_first=True, bidirectional=bool(config["bidirectional"]))
    if family == "LSTM" and config.get("proj_size"):
        options["proj_size"] = int(config["proj_size"])
    if family == "RNN":
        options["nonlinearity"] = nonlinearity
    net = getattr(torch.nn, family)(**options).double()
    state = {t.name: torch.from_numpy(np.array(t.read(), dtype=np.float64)) for leaf in module.children
             for t in leaf.weights}
    net.load_state_dict(state, strict=True)
    with torch.no_grad():
        output, final = net(torch.from_numpy(np.asarray(x, dtype=np.float64)))
    h_n, c_n = final if isinstance(final, tuple) else (final, None)
    result = {f"{module.key}/output": output.numpy(), f"{module.key}/h_n": h_n.numpy()}
    if c_n is not None:
        result[f"{module.key}/c_n"] = c_n.numpy()
    return result


def _torch_cell_outputs(torch: Any, module: Layer, x: np.ndarray, nonlinearity: str) -> dict[str, np.ndarray]:
    """A ``torch.nn.LSTMCell`` / ``GRUCell`` / ``RNNCell`` stepped over the sequence by a loop, as torch code runs a
    cell; keyed like the one-layer module it equals (output, h_n / c_n with a leading axis of 1)."""
    family = module.class_name.rsplit(".", 1)[-1]
    config = module.config
    options: dict[str, Any] = dict(input_size=int(config["input_size"]), hidden_size=int(config["hidden_size"]),
                                   bias=bool(config["bias"]))
    if family == "RNNCell":
        options["nonlinearity"] = nonlinearity
    cell = getattr(torch.nn, family)(**options).double()
    cell.load_state_dict({t.name: torch.from_numpy(np.array(t.read(), dtype=np.float64))
                          for t in module.children[0].weights}, strict=True)
    state = None
    outputs = []
    with torch.no_grad():
        for step in torch.from_numpy(np.asarray(x, dtype=np.float64)).unbind(1):
            state = cell(step, state)
            outputs.append(state[0] if isinstance(state, tuple) else state)
    h, c = state if isinstance(state, tuple) else (state, None)
    result = {f"{module.key}/output": torch.stack(outputs, 1).numpy(), f"{module.key}/h_n": h[None].numpy()}
    if c is not None:
        result[f"{module.key}/c_n"] = c[None].numpy()
    return result


#: The attributes of an ONNX recurrent node that shape what it computes (copied onto the rebuilt node).
_ONNX_ATTRIBUTES = ("hidden_size", "direction", "activations", "activation_alpha", "activation_beta", "clip",
                    "input_forget", "linear_before_reset", "layout")


def _onnx_outputs(model: ModelFile, module: Layer, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime
    from onnx import TensorProto, helper, numpy_helper

    op = module.children[0].class_name[len("Onnx"):].replace("SimpleRNN", "RNN")
    nodes = native_forward.onnx_nodes(module)
    originals = _onnx_node_attributes(model.path) if model.kind == "onnx" else {}
    graph_nodes, initializers, graph_outputs, keys = [], [], [], {}
    x_name = "X"
    for index, (name, leaves) in enumerate(nodes.items()):
        tag = f"n{index}"
        if index:  # torch.onnx.export's stacking: Y (seq, D, batch, H) -> (seq, batch, D·H)
            initializers.append(numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), f"{tag}_shape"))
            graph_nodes += [helper.make_node("Transpose", [x_name], [f"{tag}_t"], perm=[0, 2, 1, 3]),
                            helper.make_node("Reshape", [f"{tag}_t", f"{tag}_shape"], [f"{tag}_x"])]
            x_name = f"{tag}_x"
        inputs = [x_name]
        for role in ("W", "R", "B", "", "", "", "P"):
            arrays = [t.read() for leaf in leaves for t in leaf.weights if role and t.name == role]
            if len(arrays) == len(leaves) and arrays:
                initializers.append(numpy_helper.from_array(np.stack(arrays).astype(np.float32), f"{tag}_{role}"))
                inputs.append(f"{tag}_{role}")
            else:
                inputs.append("")
        while inputs[-1] == "":
            inputs.pop()
        attributes = originals.get(name) or _onnx_attributes_from_config(module, leaves)
        outs = [f"{tag}_Y", f"{tag}_Y_h"] + ([f"{tag}_Y_c"] if op == "LSTM" else [])
        graph_nodes.append(helper.make_node(op, inputs, outs, name=tag, **attributes))
        key = module.key if len(nodes) == 1 else f"{module.key}/{name.rsplit('/', 1)[-1]}"
        for out in outs:
            keys[out] = f"{key}/{out[len(tag) + 1:]}"
            graph_outputs.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        x_name = f"{tag}_Y"
    graph = helper.make_graph(graph_nodes, "verify", [helper.make_tensor_value_info(
        "X", TensorProto.FLOAT, [None, None, x.shape[-1]])], graph_outputs, initializer=initializers)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"X": np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float32)})
    return {keys[out.name]: value for out, value in zip(graph_outputs, got)}


def _onnx_node_attributes(path: str) -> dict[str, dict[str, Any]]:
    """Each recurrent node's attributes, as the .onnx file states them (the reader has accepted the file); from its
    skeleton, the tensor payloads left in the file."""
    import os

    from onnx import helper
    from ..readers import onnx_file

    fd = os.open(path, os.O_RDONLY)
    try:
        proto, _ = onnx_file.load_skeleton(fd, path)
    finally:
        os.close(fd)
    found = {}
    for index, node in enumerate(proto.graph.node):
        if node.op_type in ("LSTM", "GRU", "RNN"):
            found[node.name or f"{node.op_type.lower()}_{index}"] = {
                a.name: helper.get_attribute_value(a) for a in node.attribute if a.name in _ONNX_ATTRIBUTES}
    return found


def _onnx_attributes_from_config(module: Layer, leaves: list[Layer]) -> dict[str, Any]:
    """An exported arrays file keeps each node's attributes as metadata, read into the leaves' config."""
    first = leaves[0].config
    attributes: dict[str, Any] = {"hidden_size": int(first["units"]),
                                  "direction": "bidirectional" if len(leaves) == 2 else first.get("direction",
                                                                                                  "forward")}
    activations = [a for leaf in leaves for a in leaf.config.get("activations") or []]
    if activations:
        attributes["activations"] = activations
    for key in ("activation_alpha", "activation_beta", "clip"):
        if first.get(key) is not None:
            attributes[key] = first[key]
    if leaves[0].class_name == "OnnxGRU":
        attributes["linear_before_reset"] = int(first.get("linear_before_reset") or 0)
    return attributes


def _tf1_outputs(model: ModelFile, module: Layer, x: np.ndarray, forget_bias: float) -> dict[str, np.ndarray]:
    """dynamic_rnn on cells rebuilt from the checkpoint's shapes, variables restored by Saver from the file.
    A MultiRNNCell's cells run one after the other over the whole sequence (the same numbers as interleaved
    steps), so that every cell's output can be compared."""
    import os

    import warnings

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.compat.v1's rnn_cell lives in tf-keras since TF 2.16
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # every TF1 API used here logs a deprecation warning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _run_tf1_graph(tf.compat.v1, tf, model, module, x, forget_bias)


def _run_tf1_graph(v1: Any, tf: Any, model: ModelFile, module: Layer, x: np.ndarray, forget_bias: float
                   ) -> dict[str, np.ndarray]:
    cells = module.children or [module]
    # bidirectional_dynamic_rnn runs its bw cell on the reversed sequence and reverses the outputs back
    backward = "bw" in module.key.split("/")
    graph = tf.Graph()
    with graph.as_default():
        x_in = v1.placeholder(tf.float32, (None, None, x.shape[-1]))
        seq = tf.reverse(x_in, axis=[1]) if backward else x_in
        fetch = {}
        for index, cell in enumerate(cells):
            seq, state = v1.nn.dynamic_rnn(_tf1_cell(v1, cell, forget_bias), seq, dtype=tf.float32,
                                           scope=f"verify/cell_{index}")
            fetch[cell.key] = (tf.reverse(seq, axis=[1]) if backward else seq, state)
        saver = v1.train.Saver(var_list=_tf1_variable_map(v1.global_variables(), cells))
        with v1.Session(graph=graph) as session:
            saver.restore(session, _checkpoint_prefix(model.path))
            got = session.run(fetch, {x_in: np.asarray(x, dtype=np.float32)})
    result: dict[str, np.ndarray] = {}
    for key, (output, state) in got.items():
        result[f"{key}/output"] = output
        if hasattr(state, "h"):
            result[f"{key}/h"], result[f"{key}/c"] = state.h, state.c
        else:
            result[f"{key}/h"] = state
    if module.children:
        result[f"{module.key}/output"] = got[cells[-1].key][0]
    return result


def _tf1_cell(v1: Any, cell: Layer, forget_bias: float) -> Any:
    rnn_cell = v1.nn.rnn_cell
    units = int(cell.config["units"])
    if cell.class_name == "TF1GRUCell":
        return rnn_cell.GRUCell(units)
    if cell.class_name == "TF1BasicLSTMCell":
        return rnn_cell.BasicLSTMCell(units, forget_bias=forget_bias)
    return rnn_cell.LSTMCell(units, use_peepholes=bool(cell.config.get("use_peepholes")),
                             num_proj=cell.config.get("num_proj"), forget_bias=forget_bias)


def _tf1_variable_map(variables: list[Any], cells: list[Layer]) -> dict[str, Any]:
    """Checkpoint name -> rebuilt variable. A rebuilt variable is ``verify/cell_<i>/<cell>/<role>``; the stored
    tensor of cell i with that role (``kernel``, ``gates/kernel``, ``projection/kernel``...) is restored into it."""
    mapping = {}
    for variable in variables:
        _, index, _, role = variable.op.name.split("/", 3)
        cell = cells[int(index[len("cell_"):])]
        tensor = cell.weight(role)
        if tensor is None:
            raise InspectError(f"TF1 cell {cell.key!r}: the rebuilt cell has {role!r}, which the checkpoint does "
                               "not store")
        mapping[tensor.source] = variable
    return mapping


def _checkpoint_prefix(path: str) -> str:
    """A TF1 checkpoint is named by its prefix; the user may have named the .index or a .data shard."""
    import re

    return re.sub(r"\.(index|data-\d+-of-\d+|meta)$", "", path)

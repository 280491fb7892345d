"""ONNX models (the optional ``onnx`` package parses them): the W, R, B (and LSTM P) initializers of every
``LSTM`` / ``GRU`` / ``RNN`` node, one leaf per direction, split by `gates.split` (classes ``OnnxLSTM``...).

Each recurrent node becomes a container layer named by the node (class ``onnx.LSTM``), with one leaf per direction
(``forward``, ``reverse``) holding that direction's slice of W [D, gates·H, in], R [D, gates·H, H], B [D, 2·gates·H]
and P [D, 3H]. Other nodes that consume initializers are listed with their raw arrays. Tensors stored outside the
file (external data) are never followed.
"""
from __future__ import annotations

from typing import Any

from ..errors import CorruptFile, UnsafeFile, UnsupportedFile
from ..model import Layer, ModelFile, Tensor

RECURRENT_OPS = {"LSTM": ("OnnxLSTM", 3), "GRU": ("OnnxGRU", 2), "RNN": ("OnnxRNN", 1)}
#: Attribute defaults of the ONNX operators (opset 14+).
DEFAULTS = {"direction": "forward", "linear_before_reset": 0, "input_forget": 0, "layout": 0}


def read(path: str, label: str) -> ModelFile:
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UnsupportedFile("an .onnx file: reading it needs the onnx package (pip install 'lstm-inspect[onnx]')",
                              label) from None
    try:
        proto = onnx.load(path, load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CorruptFile(f"not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          label) from exc
    graph = proto.graph
    if not graph.node:
        raise UnsupportedFile("ONNX file holds no graph nodes (not an ONNX model?)", label)
    sources: dict[str, Any] = {init.name: init for init in graph.initializer}
    for node in graph.node:  # weights folded into Constant nodes
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    sources[node.output[0]] = attribute.t

    def loader(name: str):
        proto_tensor = sources[name]

        def load():
            if proto_tensor.data_location == onnx.TensorProto.EXTERNAL:
                raise UnsafeFile(f"tensor {name!r} is stored outside the file (external data); not followed", label)
            return numpy_helper.to_array(proto_tensor)
        return load

    root = Layer(name="model", class_name="Model", path=())
    model = ModelFile(path=label, kind="onnx", root=root, has_config=False, backend="onnx")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    used: set[str] = set()
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        name = node.name or f"{node.op_type.lower()}_{index}"
        if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
            layer = _recurrent(node, name, sources, loader, model.warnings, onnx)
            if layer is not None:
                root.children.append(layer)
                used.update(node.input)
                continue
        weights = [_tensor(i, sources[i], loader(i)) for i in node.input if i in sources and i not in used]
        if weights:
            used.update(t.name for t in weights)
            root.children.append(Layer(name=name, class_name=f"onnx.{node.op_type}", path=(name,), weights=weights))
    if opset is not None:
        model.keras_version = None
        model.backend = f"onnx (opset {opset})"
    return model


def _tensor(name: str, proto_tensor: Any, load: Any) -> Tensor:
    from onnx import helper

    dtype = helper.tensor_dtype_to_np_dtype(proto_tensor.data_type).name if proto_tensor.data_type else "unknown"
    return Tensor(name=name, shape=tuple(int(d) for d in proto_tensor.dims), dtype=dtype, source=name, _load=load)


def _recurrent(node: Any, name: str, sources: dict[str, Any], loader: Any, warnings: list[str], onnx: Any) -> Layer | None:
    leaf_class, per_direction = RECURRENT_OPS[node.op_type]
    attrs = {**DEFAULTS, **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}}
    attrs = {k: v.decode() if isinstance(v, bytes) else [x.decode() if isinstance(x, bytes) else x for x in v]
             if isinstance(v, list) else v for k, v in attrs.items()}
    inputs = list(node.input) + [""] * 8
    w_name, r_name, b_name = inputs[1], inputs[2], inputs[3]
    p_name = inputs[7] if node.op_type == "LSTM" else ""
    if w_name not in sources or r_name not in sources:
        warnings.append(f"{name}: {node.op_type} node whose W / R are not initializers or constants; not read")
        return None
    w_dims = tuple(int(d) for d in sources[w_name].dims)
    directions = ["forward", "reverse"] if attrs["direction"] == "bidirectional" else [attrs["direction"]]
    if len(w_dims) != 3 or w_dims[0] != len(directions):
        warnings.append(f"{name}: W of shape {w_dims} does not fit direction={attrs['direction']}; not read")
        return None
    container = Layer(name=name, class_name=f"onnx.{node.op_type}", path=(name,), config=dict(attrs))
    activations = attrs.get("activations")
    for d, direction in enumerate(directions):
        weights = []
        for role, source in (("W", w_name), ("R", r_name), ("B", b_name), ("P", p_name)):
            if not source or source not in sources:
                continue
            dims = tuple(int(x) for x in sources[source].dims)
            if not dims or dims[0] != len(directions):
                warnings.append(f"{name}: {role} of shape {dims} does not fit direction={attrs['direction']}; skipped")
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(sources[source].data_type).name
            weights.append(Tensor(name=role, shape=dims[1:], dtype=dtype, source=f"{source}[{d}]",
                                  _load=_row(loader(source), d)))
        config = {"units": attrs.get("hidden_size"), "direction": direction,
                  "linear_before_reset": attrs["linear_before_reset"], "input_forget": attrs["input_forget"]}
        if activations:
            config["activations"] = activations[d * per_direction:(d + 1) * per_direction]
        if "clip" in attrs:
            config["clip"] = attrs["clip"]
        container.children.append(Layer(name=direction, class_name=leaf_class, path=(name, direction),
                                        weights=weights, config=config))
    return container


def _row(load: Any, d: int):
    return lambda: load()[d]

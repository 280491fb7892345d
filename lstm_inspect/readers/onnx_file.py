"""ONNX models (the optional ``onnx`` package parses them): the W, R, B (and LSTM P) initializers of every
``LSTM`` / ``GRU`` / ``RNN`` node, one leaf per direction, split by `gates.split` (classes ``OnnxLSTM``...).

Each recurrent node becomes a container layer named by the node (class ``onnx.LSTM``), with one leaf per direction
(``forward``, ``reverse``) holding that direction's slice of W [D, gates·H, in], R [D, gates·H, H], B [D, 2·gates·H]
and P [D, 3H]. Other nodes that consume initializers are listed with their raw arrays. Tensors stored outside the
file (external data) are never followed: every tensor the reader looks at — weights, initial states, Reshape
shapes, ConstantOfShape fills — goes through `_Store.check`, which refuses external data and checks the declared
shape against the bytes stored (exact integers) before numpy or onnx's numpy_helper sees it.

The file is not held in memory: onnx parses a skeleton of it (`onnx_wire`: every field but the large tensor
payloads), and each large tensor is read from the file when asked for — a direction's rows alone, or a row chunk
at a time through a memory map (`model.Tensor._mapped`) when its values are plain little-endian numbers.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from typing import Any

import numpy as np

from ..errors import CorruptFile, InspectError, UnsafeFile, UnsupportedFile
from ..model import MAX_DIMENSION, Layer, ModelFile, Tensor, element_count

RECURRENT_OPS = {"LSTM": ("OnnxLSTM", 3), "GRU": ("OnnxGRU", 2), "RNN": ("OnnxRNN", 1)}
#: TensorProto data types of integer and boolean tensors.
_INDEX_TYPES = frozenset({2, 3, 4, 5, 6, 7, 9, 12, 13})
#: How torch.onnx.export names the nodes of one torch.nn.LSTM / GRU / RNN module: one node per layer,
#: ``/<module scope>/LSTM``, ``/<module scope>/LSTM_1``...
#: A bare module exported on its own has no scope (``/LSTM``, ``/LSTM_1``): it is named like its state dict's
#: module, ``lstm`` (see readers.torch_state).
_TORCH_EXPORT_NODE = re.compile(r"^/(?:(?P<scope>.+)/)?(?P<op>LSTM|GRU|RNN)(?:_(?P<k>\d+))?$")
#: The ops torch.onnx.export puts between two layers' nodes: Y (seq, D, batch, H) -> (seq, batch, D·H).
_RESHAPING_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Identity"})
#: What `inspect` / `check` say of a Loop / Scan whose body holds a recurrent cell's arithmetic.
LOOP_NOTE = "a recurrent layer lowered to Loop: not split"
#: Attribute defaults of the ONNX operators (opset 14+).
DEFAULTS = {"direction": "forward", "linear_before_reset": 0, "input_forget": 0, "layout": 0}


def read(path: str, label: str) -> ModelFile:
    """The model in the ONNX file `path`: its skeleton parsed by onnx (`onnx_wire`), its large tensors left in the
    file and read from it on demand (the file stays open while the model is)."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UnsupportedFile("an .onnx file: reading it needs the onnx package (pip install 'lstm-inspect[onnx]')",
                              label) from None
    fd = os.open(path, os.O_RDONLY)
    try:
        model = _read(fd, label)
    except BaseException:
        os.close(fd)
        raise
    model._closers.append(lambda: os.close(fd))
    return model


def load_skeleton(fd: int, label: str) -> tuple[Any, Any]:
    """(the ModelProto of the file's skeleton, the `onnx_wire.Skeleton`): everything but the large tensor payloads,
    parsed by onnx; a one-line `CorruptFile` when either the walk or onnx's parse fails."""
    import onnx
    from . import onnx_fold, onnx_wire

    walked = onnx_wire.skeleton(fd, label, onnx_fold.MAX_SUBGRAPH_DEPTH)
    try:
        proto = onnx.ModelProto.FromString(walked.data)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise CorruptFile(f"not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          label) from exc
    return proto, walked


def _read(fd: int, label: str) -> ModelFile:
    import onnx
    from . import onnx_fold

    proto, walked = load_skeleton(fd, label)
    store = _Store(fd, walked, label)
    graph = proto.graph
    if not graph.node:
        raise UnsupportedFile("ONNX file holds no graph nodes (not an ONNX model?)", label)
    nodes = onnx_fold.all_nodes(graph, label)  # the main graph's, each If / Loop / Scan body's after its node
    sources: dict[str, Any] = {}
    for sub in onnx_fold.all_graphs(graph):
        for init in sub.initializer:
            sources.setdefault(init.name, init)
    for node in nodes:  # weights folded into Constant nodes
        if node.op_type == "Constant" and node.output:
            for attribute in node.attribute:
                if attribute.name == "value":
                    sources.setdefault(node.output[0], attribute.t)

    for name, proto_tensor in sources.items():
        _dims(proto_tensor, name, label)

    def loader(name: str):
        proto_tensor = sources[name]
        return lambda: store.array(proto_tensor, name)

    root = Layer(name="model", class_name="Model", path=())
    model = ModelFile(path=label, kind="onnx", root=root, has_config=False, backend="onnx")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    used: set[str] = set()
    producers = {output: node for node in nodes for output in node.output if output}
    constants = _Constants(sources, producers, store)
    recurrent: list[tuple[Any, Layer]] = []
    layers: dict[int, Layer] = {}
    shared: dict[tuple[Any, ...], Layer] = {}
    for index, node in enumerate(nodes):  # recurrent nodes first: the stored tensors their W / R / B come from
        if node.op_type in RECURRENT_OPS and node.domain in ("", "ai.onnx"):
            name = node.name or f"{node.op_type.lower()}_{index}"
            layer = _recurrent(node, name, constants, model.warnings, onnx)
            if layer is not None:
                # the same weights read again (the two branches of an If): one layer, not a copy
                signature = (node.op_type, repr(sorted(layer.config.items())),
                             tuple(constants.identity(n) for n in node.input[1:4]))
                if signature in shared:
                    shared[signature].config.setdefault("shared_with", []).append(name)
                    used.update(constants.folded_from)
                    continue
                shared[signature] = layer
                for leaf in layer.children:
                    leaf.config["initial_state"] = _initial_state(node, constants, label)
                layers[index] = layer
                recurrent.append((node, layer))
                used.update(node.input)
                used.update(constants.folded_from)
    for index, node in enumerate(nodes):
        if index in layers:
            root.children.append(layers[index])
            continue
        if node.op_type == "Constant" or node.op_type in RECURRENT_OPS:
            continue
        name = node.name or f"{node.op_type.lower()}_{index}"
        if node.op_type in ("Loop", "Scan") and onnx_fold.lowered_recurrent(node, set(RECURRENT_OPS)):
            model.warnings.append(f"{name}: {LOOP_NOTE} (its body's weights are listed as the body's nodes)")
        # integer tensors (shapes, axes, indices: torch.onnx.export's shape plumbing) are not weights, nor are
        # the doubles older exports cast to int64 for a shape
        if node.op_type == "Cast" and next((a.i for a in node.attribute if a.name == "to"), 0) in _INDEX_TYPES:
            continue
        weights = [_tensor(i, sources[i], loader(i), store) for i in node.input if i in sources and i not in used
                   and sources[i].data_type not in _INDEX_TYPES]
        if weights:
            used.update(t.name for t in weights)
            root.children.append(Layer(name=name, class_name=f"onnx.{node.op_type}", path=(name,), weights=weights))
    _group_torch_exports(root, recurrent, producers, constants)
    _group_torch_linears(root, nodes, sources, loader, store, onnx)
    if opset is not None:
        model.keras_version = None
        model.backend = f"onnx (opset {opset})"
    return model


def _dtype_name(proto_tensor: Any) -> str:
    from onnx import helper

    try:
        return helper.tensor_dtype_to_np_dtype(proto_tensor.data_type).name
    except Exception:  # undefined (0) or a type number onnx does not know
        return "unknown"


def _tensor(name: str, proto_tensor: Any, load: Any, store: "_Store") -> Tensor:
    return Tensor(name=name, shape=tuple(int(d) for d in proto_tensor.dims), dtype=_dtype_name(proto_tensor),
                  source=name, _load=load, _mapped=store.place(proto_tensor, name))


#: Bytes per element of the TensorProto data types read here (float, uint8, int8, uint16, int16, int32, int64,
#: bool, float16, double, uint32, uint64, bfloat16).
_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
#: The typed field each data type's values live in when not in raw_data.
_VALUE_FIELD = {1: "float_data", 2: "int32_data", 3: "int32_data", 4: "int32_data", 5: "int32_data",
                6: "int32_data", 7: "int64_data", 9: "int32_data", 10: "int32_data", 11: "double_data",
                12: "uint64_data", 13: "uint64_data", 16: "int32_data"}
#: The largest tensor read (as for HDF5 datasets).
MAX_TENSOR_BYTES = 4 << 30


def _dims(proto_tensor: Any, name: str, label: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in proto_tensor.dims)
    if any(not 0 <= d <= MAX_DIMENSION for d in dims):
        raise CorruptFile(f"tensor {name!r} declares dims {list(dims)}, not a real shape", label)
    return dims


class _Store:
    """The open file and its skeleton: reads a TensorProto's values — its own, or its payload left in the file —
    after refusing external data and checking the declared shape against the bytes stored (exact integers), before
    numpy (or onnx's numpy_helper) allocates anything."""

    def __init__(self, fd: int, walked: Any, label: str) -> None:
        self.fd, self.walked, self.label = fd, walked, label

    def payload(self, proto_tensor: Any) -> tuple[int, int, str] | None:
        """``(offset, length, field)`` of the tensor's values when they were left in the file."""
        return self.walked.payload(proto_tensor.raw_data) if proto_tensor.HasField("raw_data") else None

    def stored_bytes(self, proto_tensor: Any) -> int:
        """The tensor's size in the file (the skeleton holds a marker in place of a large payload)."""
        payload = self.payload(proto_tensor)
        return proto_tensor.ByteSize() + (payload[1] - len(proto_tensor.raw_data) if payload else 0)

    def check(self, proto_tensor: Any, name: str) -> tuple[tuple[int, ...], int, tuple[int, int, str] | None]:
        """(dims, element count, payload) of a tensor whose values may be read; a one-line refusal otherwise."""
        from onnx import TensorProto

        label = self.label
        if proto_tensor.data_location == TensorProto.EXTERNAL or len(proto_tensor.external_data):
            raise UnsafeFile(f"tensor {name!r} is stored outside the file (external data); not followed", label)
        dims = _dims(proto_tensor, name, label)
        data_type = proto_tensor.data_type
        if data_type not in _ITEMSIZE:
            raise UnsupportedFile(f"tensor {name!r} has ONNX data type {data_type}, which lstm-inspect does not read",
                                  label)
        count = element_count(dims)
        if count * _ITEMSIZE[data_type] > MAX_TENSOR_BYTES:
            raise UnsafeFile(f"tensor {name!r} declares {count * _ITEMSIZE[data_type]:,} bytes (dims {list(dims)}), "
                             f"more than the {MAX_TENSOR_BYTES:,}-byte limit", label)
        payload = self.payload(proto_tensor)
        if payload is not None and payload[2] != "raw_data":  # one packed run of float_data / double_data
            stored, needed, unit = payload[1] // _ITEMSIZE[data_type], count, "values"
        elif proto_tensor.HasField("raw_data"):
            stored = payload[1] if payload else len(proto_tensor.raw_data)
            needed, unit = count * _ITEMSIZE[data_type], "bytes"
        else:
            stored, needed, unit = len(getattr(proto_tensor, _VALUE_FIELD[data_type])), count, "values"
        if stored != needed:
            raise CorruptFile(f"tensor {name!r} stores {stored:,} {unit} but dims {list(dims)} need {needed:,}", label)
        if payload is not None and proto_tensor.HasField("segment"):
            raise CorruptFile(f"tensor {name!r} cannot be read: Currently not supporting loading segments.", label)
        return dims, count, payload

    def array(self, proto_tensor: Any, name: str) -> Any:
        """The tensor's values."""
        dims, count, payload = self.check(proto_tensor, name)
        if payload is None:
            return self._to_array(proto_tensor, name)
        dtype = _plain_dtype(proto_tensor.data_type)
        if dtype is None:  # a type onnx decodes itself (bfloat16): a copy of the proto holding the payload
            whole = type(proto_tensor)()
            whole.CopyFrom(proto_tensor)
            whole.raw_data = self._bytes(payload, name)
            return self._to_array(whole, name)
        return self.rows(proto_tensor, name, 0, dims[0] if dims else 1).reshape(dims)

    def rows(self, proto_tensor: Any, name: str, first: int, count: int) -> Any:
        """Rows [first, first + count) along the first axis, read from the file alone when the values were left
        there and are plain little-endian numbers; else cut from the whole array."""
        dims, _, payload = self.check(proto_tensor, name)
        dtype = _plain_dtype(proto_tensor.data_type)
        if payload is None or dtype is None:
            return self.array(proto_tensor, name)[first:first + count]
        row_bytes = element_count(dims[1:]) * dtype.itemsize
        out = np.empty((count, *dims[1:]) if dims else (), dtype)
        offset, length, _ = payload
        self._read_into(memoryview(out).cast("B"), offset + first * row_bytes, name)
        return out

    def place(self, proto_tensor: Any, name: str, row: int = 0) -> Any:
        """For `model.Tensor._mapped`: ``() -> (fd, offset)`` of row `row` of a tensor whose checked values lie in
        the file as plain little-endian numbers; None otherwise."""
        try:
            dims, _, payload = self.check(proto_tensor, name)
        except InspectError:
            return None  # reading it reports why
        dtype = _plain_dtype(proto_tensor.data_type)
        if payload is None or dtype is None:
            return None
        offset = payload[0] + row * element_count(dims[1:]) * dtype.itemsize
        return lambda: (self.fd, offset)

    def _bytes(self, payload: tuple[int, int, str], name: str) -> bytes:
        data = bytearray(payload[1])
        self._read_into(memoryview(data), payload[0], name)
        return bytes(data)

    def _read_into(self, view: memoryview, offset: int, name: str) -> None:
        done = 0
        while done < len(view):
            got = os.preadv(self.fd, [view[done:]], offset + done)
            if got <= 0:
                raise CorruptFile(f"tensor {name!r} runs past the end of the file (truncated while read?)", self.label)
            done += got

    def _to_array(self, proto_tensor: Any, name: str) -> Any:
        from onnx import numpy_helper

        try:
            return numpy_helper.to_array(proto_tensor)
        except Exception as exc:  # onnx's own checks (ValidationError, ValueError...): a damaged tensor
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CorruptFile(f"tensor {name!r} cannot be read: {text[:200]}", self.label) from exc


def _plain_dtype(data_type: int) -> Any:
    """The numpy dtype whose little-endian bytes are the ONNX type's raw_data, on a little-endian machine (None for
    bfloat16, which onnx decodes itself, and on a big-endian machine)."""
    if sys.byteorder != "little" or data_type == 16 or data_type not in _ITEMSIZE:
        return None
    from onnx import helper

    return np.dtype(helper.tensor_dtype_to_np_dtype(data_type))


class _Constants:
    """Stored tensors (initializers, Constant values) and values folded from them by data movement alone
    (`onnx_fold`): what a recurrent node's W, R, B, P and initial states may be."""

    def __init__(self, sources: dict[str, Any], producers: dict[str, Any], store: _Store) -> None:
        from . import onnx_fold

        self.sources, self.store, self.label = sources, store, store.label
        self.scope = onnx_fold.Scope(sources, producers)
        self.budget = onnx_fold.budget_for(sources, store.stored_bytes)
        self.folded_from: set[str] = set()
        """The stored tensors that folded values came from (not listed again as other nodes' weights)."""
        self.identities: dict[str, Any] = {}
        self.nodes_left = onnx_fold.MAX_FILE_NODES
        """Node evaluations the rest of the read may spend (a file of many nodes folding one big value each time
        stays bounded); the loaders' folds later repeat one read-time fold each."""

    def fold(self, name: str, reading: bool = True) -> Any:
        from . import onnx_fold

        limit = min(onnx_fold.MAX_NODES, self.nodes_left) if reading else onnx_fold.MAX_NODES
        try:
            value, used, nodes = onnx_fold.fold(self.scope, name, self.store.array,
                                                self.label, self.budget, limit)
        except onnx_fold.NotFoldable as exc:
            self.nodes_left -= exc.nodes if reading else 0
            raise
        if reading:
            self.nodes_left -= nodes
            self.folded_from.update(used)
        return value

    def tensor(self, name: str) -> tuple[tuple[int, ...], str, Any]:
        """(dims, dtype, rows) of a stored or folded tensor, ``rows(d)`` reading row d (one direction); raises
        `onnx_fold.NotFoldable` when it is neither. A folded value is computed once here for its shape and again
        by `rows` (no array stays in memory)."""
        if name in self.sources:
            proto = self.sources[name]
            return tuple(int(d) for d in proto.dims), _dtype_name(proto), \
                lambda d: self.store.rows(proto, name, d, 1)[0]
        value = self.fold(name)
        self.identities[name] = (value.shape, value.dtype.str, hashlib.sha256(value.tobytes()).hexdigest())
        return value.shape, value.dtype.name, lambda d: self.fold(name, reading=False)[d]

    def place(self, name: str, row: int) -> Any:
        """`_Store.place` of row `row` of a stored tensor; None for a folded one."""
        return self.store.place(self.sources[name], name, row) if name in self.sources else None

    def identity(self, name: str) -> Any:
        """What a W / R / B is, for telling one set of weights read twice from two copies: the stored tensor's
        name, or a folded value's shape, dtype and SHA-256."""
        return self.identities.get(name, name)

    def value(self, name: str) -> Any:
        """The value of a stored or foldable tensor; None otherwise."""
        from . import onnx_fold

        if name in self.sources:
            return self.store.array(self.sources[name], name)
        try:
            return self.fold(name)
        except onnx_fold.NotFoldable:
            return None


def _recurrent(node: Any, name: str, constants: _Constants, warnings: list[str], onnx: Any) -> Layer | None:
    from .onnx_fold import NotFoldable

    leaf_class, per_direction = RECURRENT_OPS[node.op_type]
    attrs = {**DEFAULTS, **{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}}
    attrs = {k: v.decode() if isinstance(v, bytes) else [x.decode() if isinstance(x, bytes) else x for x in v]
             if isinstance(v, list) else v for k, v in attrs.items()}
    inputs = list(node.input) + [""] * 8
    roles = {"W": inputs[1], "R": inputs[2], "B": inputs[3], "P": inputs[7] if node.op_type == "LSTM" else ""}
    tensors = {}
    for role, source in roles.items():
        if not source:
            continue
        try:
            tensors[role] = constants.tensor(source)
        except NotFoldable as exc:
            if role in "WR":
                warnings.append(f"{name}: {node.op_type} node whose {role} is neither an initializer nor folded from "
                                f"one ({exc}); not read")
                return None
            warnings.append(f"{name}: {role} is neither an initializer nor folded from one ({exc}); skipped")
    w_dims = tensors["W"][0]
    directions = ["forward", "reverse"] if attrs["direction"] == "bidirectional" else [attrs["direction"]]
    if len(w_dims) != 3 or w_dims[0] != len(directions):
        warnings.append(f"{name}: W of shape {w_dims} does not fit direction={attrs['direction']}; not read")
        return None
    container = Layer(name=name, class_name=f"onnx.{node.op_type}", path=(name,), config=dict(attrs))
    activations = attrs.get("activations")
    for d, direction in enumerate(directions):
        weights = []
        for role, (dims, dtype, rows) in tensors.items():
            if not dims or dims[0] != len(directions):
                if d == 0:
                    warnings.append(f"{name}: {role} of shape {dims} does not fit direction={attrs['direction']}; "
                                    "skipped")
                continue
            weights.append(Tensor(name=role, shape=tuple(dims[1:]), dtype=dtype, source=f"{roles[role]}[{d}]",
                                  _load=_row(rows, d), _mapped=constants.place(roles[role], d)))
        config = {"units": attrs.get("hidden_size"), "direction": direction, "node": name, "layer": 0,
                  "linear_before_reset": attrs["linear_before_reset"], "input_forget": attrs["input_forget"],
                  "layout": attrs["layout"], "sequence_lens": bool(inputs[4])}
        if activations:
            config["activations"] = activations[d * per_direction:(d + 1) * per_direction]
        for key in ("clip", "activation_alpha", "activation_beta"):  # alpha / beta: the node's whole lists
            if key in attrs:
                config[key] = attrs[key]
        container.children.append(Layer(name=direction, class_name=leaf_class, path=(name, direction),
                                        weights=weights, config=config))
    return container


#: How torch.onnx.export writes an nn.Linear under its module scope: MatMul(x, weight.T) then Add(bias) on a
#: sequence, Gemm(x, weight, bias, transB=1) on a matrix.
_TORCH_LINEAR_NODE = re.compile(r"^/(?P<scope>.+)/(?P<op>MatMul|Gemm)$")


def _group_torch_linears(root: Layer, graph_nodes: list[Any], sources: dict[str, Any], loader: Any, store: _Store,
                         onnx: Any) -> None:
    """The nodes of an exported nn.Linear become one layer named by the module scope (class ``onnx.Linear``) with
    torch's ``weight`` (out, in) and ``bias``, so that it reads, and diffs against the state dict, as the module."""
    nodes = {node.name: node for node in graph_nodes if node.name}
    layers = {layer.name: layer for layer in root.children}
    for name, node in nodes.items():
        match = _TORCH_LINEAR_NODE.match(name)
        if not match or node.op_type != match["op"]:
            continue
        scope = match["scope"]
        if node.op_type == "MatMul":
            add = nodes.get(f"/{scope}/Add")
            if add is None or add.op_type != "Add" or node.output[0] not in add.input or add.name not in layers:
                continue
            weight_name, bias_name, transposed = node.input[1], next((i for i in add.input if i in sources), ""), True
            # without constant folding, torch writes MatMul(x, Transpose(weight)): the weight as stored, (out, in)
            flip = nodes.get(f"/{scope}/Transpose")
            if name not in layers and flip is not None and flip.output[0] == weight_name and flip.name in layers \
                    and flip.op_type == "Transpose" and next((list(a.ints) for a in flip.attribute if a.name == "perm"),
                                                             [1, 0]) == [1, 0]:
                weight_name, transposed, name = flip.input[0], False, flip.name
            if name not in layers:
                continue
            parts = [layers[name], layers[add.name]]
        else:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if name not in layers or len(node.input) < 3 or attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
                    or attrs.get("beta", 1.0) != 1.0:
                continue
            weight_name, bias_name, transposed = node.input[1], node.input[2], not attrs.get("transB", 0)
            parts = [layers[name]]
        if weight_name not in sources or bias_name not in sources:
            continue
        w_dims = tuple(int(d) for d in sources[weight_name].dims)
        b_dims = tuple(int(d) for d in sources[bias_name].dims)
        out_features = w_dims[-1] if transposed else w_dims[0]
        if len(w_dims) != 2 or b_dims != (out_features,):
            continue
        weight, bias = _tensor(weight_name, sources[weight_name], loader(weight_name), store), \
            _tensor(bias_name, sources[bias_name], loader(bias_name), store)
        weight.name, bias.name = "weight", "bias"
        if transposed:  # MatMul multiplies by weight.T: stored (in, out)
            weight.shape, weight.source = w_dims[::-1], f"{weight_name}.T"
            weight._load = (lambda load: lambda: load().T)(loader(weight_name))
            weight._mapped = None  # a transposed view: not one C-order run
        linear = Layer(name=scope, class_name="onnx.Linear", path=(scope,), weights=[weight, bias],
                       config={"in_features": weight.shape[1], "out_features": out_features})
        root.children[root.children.index(parts[0])] = linear
        for extra in parts[1:]:
            root.children.remove(extra)


def _row(rows: Any, d: int):
    return lambda: rows(d)


#: Ops whose output holds only values of their first input: zeros in, zeros out.
_VALUE_KEEPING_OPS = frozenset({"Expand", "Slice", "Reshape", "Unsqueeze", "Squeeze", "Identity", "Tile", "Transpose"})


def _all_zeros(name: str, constants: _Constants, label: str) -> bool:
    """True for a constant zero tensor, or one cut / broadcast from one (torch.onnx.export writes
    Slice(ConstantOfShape(0)) or Expand(zeros) for the default initial states)."""
    producers = constants.scope.producers
    for _ in range(8):
        value = constants.value(name)
        if value is not None:
            return not bool((value != 0).any())
        node = producers.get(name)
        if node is not None and node.op_type == "ConstantOfShape":
            fill = next((a.t for a in node.attribute if a.name == "value"), None)
            return fill is None or not bool((constants.store.array(fill, f"{node.name or name} fill") != 0).any())
        if node is not None and node.op_type == "ConstantFill":  # opset 7 / 8 exports (an experimental op)
            return next((a.f for a in node.attribute if a.name == "value"), 0.0) == 0.0
        if node is None or node.op_type not in _VALUE_KEEPING_OPS:
            return False
        name = node.input[0]
    return False


def _initial_state(node: Any, constants: _Constants, label: str) -> str:
    """``zeros`` when the node has no initial_h / initial_c or they are constant zeros; ``given`` otherwise (a graph
    input or computed: forward cannot know it)."""
    names = [n for n in list(node.input)[5:7 if node.op_type == "LSTM" else 6] if n]
    return "zeros" if all(_all_zeros(n, constants, label) for n in names) else "given"


def _feeds(earlier: Any, later: Any, producers: dict[str, Any], constants: _Constants) -> bool:
    """True when `later`'s X is `earlier`'s Y through torch's stacking only: Transpose [0, 2, 1, 3] or Squeeze
    (one direction), then Reshape to (seq, batch, D·H)."""
    name = later.input[0]
    for _ in range(4):
        if name == earlier.output[0]:
            return True
        node = producers.get(name)
        if node is None or node.op_type not in _RESHAPING_OPS:
            return False
        if node.op_type == "Transpose":
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if perm != [0, 2, 1, 3]:
                return False
        if node.op_type == "Reshape":
            shape = constants.value(node.input[1])  # older exports: Cast(Constant(double))
            if shape is None or len(shape) != 3 or int(shape[-1]) != -1 and list(shape[:2]) != [0, 0]:
                return False
        name = node.input[0]
    return False


def _group_torch_exports(root: Layer, recurrent: list[tuple[Any, Layer]], producers: dict[str, Any],
                         constants: _Constants) -> None:
    """The per-layer nodes torch.onnx.export writes for one multi-layer module become one container named by the
    module scope (``/enc/lstm/LSTM``, ``/enc/lstm/LSTM_1`` -> ``enc/lstm``) with torch's leaf names ``l0``,
    ``l0_reverse``, ``l1``..., when each node's X is the previous node's Y through torch's stacking alone."""
    scopes: dict[tuple[str, str], list[tuple[int, Any, Layer]]] = {}
    for node, layer in recurrent:
        match = _TORCH_EXPORT_NODE.match(layer.name)
        if match and match["op"] == node.op_type:
            scope = match["scope"] or node.op_type.lower()
            scopes.setdefault((scope, node.op_type), []).append((int(match["k"] or 0), node, layer))
    for (scope, _), members in scopes.items():
        members.sort(key=lambda m: m[0])
        if [k for k, _, _ in members] != list(range(len(members))) or not all(
                _feeds(a[1], b[1], producers, constants) for a, b in zip(members, members[1:])):
            continue
        first = members[0][2]
        container = Layer(name=scope, class_name=first.class_name, path=(scope,),
                          config={**first.config, "num_layers": len(members)})
        for k, _, layer in members:
            for leaf in layer.children:
                leaf.name = f"l{k}" + ("_reverse" if leaf.config["direction"] == "reverse" else "")
                leaf.path = (scope, leaf.name)
                leaf.config["layer"] = k
                container.children.append(leaf)
        position = root.children.index(first)
        root.children[position] = container
        for _, _, layer in members[1:]:
            root.children.remove(layer)

"""TFLite flatbuffers (``TFLiteConverter`` output), as the neutral model — read with lstm-inspect's own bounded
FlatBuffers reader (`flatbuf`), no TensorFlow or tflite package.

The recurrent ops of the main subgraph become layers whose arrays are the Keras gate blocks themselves (split as
stored, like Keras 1 files): ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (operands 1–4 input-to-gate weights i, f, c, o stored
(units, input) → ``W_*`` transposed; 5–8 recurrent-to-gate → ``U_*``; 9–11 peepholes → ``p_i``, ``p_f``, ``p_o``;
12–15 gate biases → ``b_*``; 16 projection → ``proj`` transposed, 17 projection bias; 20–23 layer-norm
coefficients → ``ln_*``), ``BIDIRECTIONAL_SEQUENCE_LSTM`` (the same 17 operands for each direction) and
``UNIDIRECTIONAL_SEQUENCE_RNN`` (``W``, ``U``, ``b``). ``FULLY_CONNECTED`` with constant weights becomes a Dense
layer (weights (out, in) transposed to Keras's kernel). int8 / uint8 weights are dequantized
(scale × (q − zero point), per tensor or per channel) and float16 widened, for statistics and forward; the stored
dtype, scales and zero points stay in the layer's config. A ``WHILE`` loop is a recurrent layer the converter did
not fuse (tf-keras GRU and SimpleRNN): reported, its weights not mapped. Tensor names carry no Keras layer names,
so layers are named by kind (``lstm``, ``lstm_1``, ``dense``) — a Dense takes its name from a bias tensor named
``.../<layer>/BiasAdd`` when there is one.
"""
from __future__ import annotations

import os
import re
from typing import Any

import numpy as np

from ..errors import CorruptFile, UnsupportedFile
from ..model import Layer, ModelFile, Tensor, element_count
from .flatbuf import FlatBufferError, Table, root

MAGIC = b"TFL3"
MAX_BYTES = 2 << 30
#: TFLite TensorType -> numpy dtype.
TYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
         10: "float64"}
CONCATENATION, FULLY_CONNECTED, UNI_RNN, UNI_LSTM, BIDI_LSTM, WHILE, REVERSE_V2 = 2, 9, 35, 44, 52, 119, 105
ACTIVATIONS = {0: "linear", 1: "relu", 2: "relu_n1_to_1", 3: "relu6", 4: "tanh", 5: "sign_bit"}
#: UNIDIRECTIONAL_SEQUENCE_LSTM operand -> (block, transposed)
LSTM_OPERANDS = {1: ("W_i", True), 2: ("W_f", True), 3: ("W_c", True), 4: ("W_o", True), 5: ("U_i", True),
                 6: ("U_f", True), 7: ("U_c", True), 8: ("U_o", True), 9: ("p_i", False), 10: ("p_f", False),
                 11: ("p_o", False), 12: ("b_i", False), 13: ("b_f", False), 14: ("b_c", False), 15: ("b_o", False),
                 16: ("proj", True), 17: ("proj_bias", False), 20: ("ln_i", False), 21: ("ln_f", False),
                 22: ("ln_c", False), 23: ("ln_o", False)}
RNN_OPERANDS = {1: ("W", True), 2: ("U", True), 3: ("b", False)}


def looks_like(head: bytes) -> bool:
    return len(head) >= 8 and head[4:8] == MAGIC


class _File:
    def __init__(self, path: str, label: str) -> None:
        size = os.path.getsize(path)
        if size > MAX_BYTES:
            raise UnsupportedFile(f"a TFLite file of {size:,} bytes (more than {MAX_BYTES:,}); refusing it", label)
        with open(path, "rb") as handle:
            self.buf = handle.read()
        self.label = label
        self.model = root(self.buf)
        self.buffers = self.model.tables(4)
        self.codes = [max(int(c.scalar(0, "b", 0)), int(c.scalar(3, "i", 0))) for c in self.model.tables(1)]
        subgraphs = self.model.tables(2)
        if not subgraphs:
            raise CorruptFile("TFLite model has no subgraph", label)
        self.graph = subgraphs[0]
        self.subgraph_count = len(subgraphs)
        self.tensors = self.graph.tables(0)

    def tensor_info(self, index: int) -> tuple[str, tuple[int, ...], str, Table]:
        if not 0 <= index < len(self.tensors):
            raise CorruptFile(f"an operator names tensor {index} of {len(self.tensors)}", self.label)
        t = self.tensors[index]
        kind = int(t.scalar(1, "b", 0))
        if kind not in TYPES:
            raise UnsupportedFile(f"tensor {index} has TFLite type {kind}, which is not read", self.label)
        shape = tuple(int(d) for d in t.array(0, "<i4"))
        if any(d < 0 for d in shape):
            raise CorruptFile(f"tensor {index} has a negative dimension {shape}", self.label)
        return t.string(3), shape, TYPES[kind], t

    def constant(self, index: int) -> bool:
        t = self.tensors[index] if 0 <= index < len(self.tensors) else None
        if t is None:
            return False
        b = int(t.scalar(2, "I", 0))
        return 0 < b < len(self.buffers) and (self.buffers[b].array(0, "u1").size > 0 or self.buffers[b].scalar(2, "Q", 0) > 0)

    def raw(self, index: int) -> np.ndarray:
        name, shape, dtype, t = self.tensor_info(index)
        b = int(t.scalar(2, "I", 0))
        if not 0 < b < len(self.buffers):
            raise CorruptFile(f"tensor {index} ({name!r}) names buffer {b} of {len(self.buffers)}", self.label)
        buffer = self.buffers[b]
        data = buffer.array(0, "u1")
        if data.size == 0:  # models past 2 GB keep the bytes after the flatbuffer, at an offset in the file
            offset, size = int(buffer.scalar(1, "Q", 0)), int(buffer.scalar(2, "Q", 0))
            if offset <= 0 or offset + size > len(self.buf):
                raise CorruptFile(f"tensor {index} ({name!r}): its buffer lies outside the file", self.label)
            data = np.frombuffer(self.buf, dtype="u1", count=size, offset=offset)
        expected = element_count(shape) * np.dtype(dtype).itemsize  # exact: an int64 product wraps
        if data.size != expected:
            raise CorruptFile(f"tensor {index} ({name!r}): {dtype} {shape} needs {expected:,} bytes but its buffer "
                              f"holds {data.size:,}", self.label)
        return data.view(dtype).reshape(shape)

    def quantization(self, index: int) -> dict[str, Any] | None:
        q = self.tensors[index].table(4)
        if q is None:
            return None
        scale, zero = q.array(2, "<f4"), q.array(3, "<i8")
        if scale.size == 0:
            return None
        return {"scale": [float(s) for s in scale], "zero_point": [int(z) for z in zero] or [0] * scale.size,
                "axis": int(q.scalar(6, "i", 0))}

    def value(self, index: int, transpose: bool) -> np.ndarray:
        """The tensor as float32 (dequantized / widened), transposed to Keras's orientation when asked."""
        try:
            return self._value(index, transpose)
        except FlatBufferError as exc:  # read lazily, after `read` returned: its guard no longer applies
            raise CorruptFile(f"not a valid TFLite flatbuffer: {exc}", self.label) from exc

    def _value(self, index: int, transpose: bool) -> np.ndarray:
        array = self.raw(index)
        _, _, dtype, _ = self.tensor_info(index)
        q = self.quantization(index)
        if dtype in ("int8", "uint8", "int16") and q:
            scale = np.asarray(q["scale"], np.float32)
            zero = np.asarray(q["zero_point"], np.float32)
            if scale.size > 1:  # per channel along the quantized dimension
                shape = [1] * array.ndim
                shape[q["axis"]] = scale.size
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            array = (array.astype(np.float32) - zero) * scale
        elif dtype == "float16":
            array = array.astype(np.float32)
        else:
            array = array.copy()
        return array.T.copy() if transpose and array.ndim == 2 else array


def read(path: str, label: str) -> ModelFile:
    try:
        return _read(_File(path, label), label)
    except FlatBufferError as exc:
        raise CorruptFile(f"not a valid TFLite flatbuffer: {exc}", label) from exc


def _read(f: _File, label: str) -> ModelFile:
    model = ModelFile(path=label, kind="tflite", root=Layer(name="model", class_name="TFLiteModel", path=()),
                      has_config=False, backend="tflite")
    ops = f.graph.tables(3)
    consumers: dict[int, list[int]] = {}
    decoded = []
    for i, op in enumerate(ops):
        index = int(op.scalar(0, "I", 0))
        if not 0 <= index < len(f.codes):
            raise CorruptFile(f"operator {i} names operator code {index} of {len(f.codes)}", label)
        inputs, outputs = [int(v) for v in op.array(1, "<i4")], [int(v) for v in op.array(2, "<i4")]
        decoded.append((f.codes[index], op, inputs, outputs))
        for t in inputs:
            consumers.setdefault(t, []).append(i)
    counts: dict[str, int] = {}

    def name_for(base: str) -> str:
        n = counts.get(base, 0)
        counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    loops = 0
    chain: list[dict[str, Any]] = []  # each layer's data input and output tensors, in op order; None: another op
    reversed_inputs: dict[int, int] = {}  # REVERSE_V2 output -> its input, where an LSTM reads the reversed sequence
    for i, (code, op, inputs, outputs) in enumerate(decoded):
        if code in (UNI_LSTM, UNI_RNN) and inputs:
            source = reversed_inputs.get(inputs[0])
            family = "lstm" if code == UNI_LSTM else "simple_rnn"
            layer = _recurrent(f, name_for(family), op, inputs, code, source is not None, label)
            model.root.children.append(layer)
            chain.append({"layer": layer, "in": inputs[0] if source is None else source, "out": outputs[:1]})
        elif code == REVERSE_V2 and _time_reverse(f, inputs) and \
                all(decoded[c][0] in (UNI_LSTM, UNI_RNN) for c in consumers.get(outputs[0], [])):
            reversed_inputs[outputs[0]] = inputs[0]  # read by the backward half of a Bidirectional
        elif code == REVERSE_V2 and _time_reverse(f, inputs) and _restore(chain, inputs[0], outputs[0]):
            pass  # the backward half's output put back in time order
        elif code == CONCATENATION and _pair(chain, inputs, outputs, op, name_for, model):
            pass
        elif code == BIDI_LSTM:
            model.root.children.append(_bidirectional(f, name_for("bidirectional"), op, inputs, label))
            chain.append({"layer": None})  # not run by forward
        elif code == FULLY_CONNECTED and len(inputs) >= 2 and f.constant(inputs[1]):
            bias_name = f.tensor_info(inputs[2])[0] if len(inputs) > 2 and inputs[2] >= 0 else ""
            named = re.search(r"([^/]+)/BiasAdd$", bias_name)
            layer = Layer(name=name_for(named.group(1) if named else "dense"), class_name="Dense", path=())
            layer.weights.append(_tensor(f, inputs[1], "kernel", True))
            if len(inputs) > 2 and inputs[2] >= 0 and f.constant(inputs[2]):
                layer.weights.append(_tensor(f, inputs[2], "bias", False))
            options = op.table(4)
            layer.config = {"units": layer.weights[0].shape[-1], "use_bias": len(layer.weights) == 2,
                            "activation": ACTIVATIONS.get(int(options.scalar(0, "b", 0)) if options else 0, "?"),
                            "stored": _stored(f, inputs[1:3], ("kernel", "bias"))}
            model.root.children.append(layer)
            chain.append({"layer": layer, "in": inputs[0], "out": outputs[:1]})
        elif code == WHILE:
            loops += 1
        else:
            chain.append({"layer": None})  # an op between the layers: the model is not a plain stack
    for layer in model.root.children:
        layer.path = (layer.name,)
        for child in layer.children:
            child.path = (layer.name, child.name)
    if loops:
        model.warnings.append(f"{loops} WHILE loop(s): a recurrent layer the converter did not fuse into a sequence "
                              "op (tf-keras GRU and SimpleRNN convert this way); its weights are not mapped to gates")
    quantized = [f"{layer.key}/{t.name}" for layer in model.layers for t in layer.weights if t.dtype != "float32"]
    if quantized:
        model.warnings.append(f"dequantized for statistics and export: {len(quantized)} weight(s) stored quantized or "
                              f"as float16 ({', '.join(quantized[:3])}" + (", ..." if len(quantized) > 3 else "")
                              + "); stored dtype, scales and zero points in each layer's config")
    if not model.root.children:
        raise UnsupportedFile("a TFLite model with no recurrent or fully-connected layer holding weights", label)
    if not loops:
        _as_sequential(f, model, chain)
    return model


def _as_sequential(f: _File, model: ModelFile, chain: list[dict[str, Any]]) -> None:
    """A graph that is one op per layer (a Bidirectional: its pair of ops), each taking the previous one's output
    (float input, batch-major), is a Keras Sequential: give it that config, so `forward` and `verify` can run it."""
    graph_in = [int(v) for v in f.graph.array(1, "<i4")]
    graph_out = [int(v) for v in f.graph.array(2, "<i4")]
    if len(graph_in) != 1 or len(graph_out) != 1 or not chain:
        return
    current = graph_in[0]
    for entry in chain:
        if entry["layer"] is None or entry["in"] != current or len(entry["out"]) != 1:
            return
        current = entry["out"][0]
    if current != graph_out[0]:
        return
    _, shape, dtype, _ = f.tensor_info(graph_in[0])
    if dtype != "float32" or any(layer.config.get("time_major") or layer.config.get("cifg")
                                 for layer in model.layers):
        return
    first = Layer(name="input", class_name="InputLayer", path=("input",),
                  config={"batch_input_shape": [None, *shape[1:]], "dtype": "float32"})
    model.root = Layer(name="model", class_name="Sequential", path=(), children=[first, *model.root.children],
                       config={"name": "model"})
    model.has_config = True
    for layer in model.root.children[1:]:
        layer.config.setdefault("use_bias", True)


def _time_reverse(f: _File, inputs: list[int]) -> bool:
    """REVERSE_V2 along axis 1: time, in a batch-major sequence."""
    if len(inputs) != 2 or not f.constant(inputs[1]):
        return False
    axis = f.raw(inputs[1])
    return axis.size == 1 and int(axis.reshape(-1)[0]) == 1


def _restore(chain: list[dict[str, Any]], tensor: int, restored: int) -> bool:
    """A REVERSE_V2 of a backward recurrent layer's output: that layer's output is now the restored sequence."""
    for entry in chain:
        layer = entry["layer"]
        if layer is not None and entry["out"] == [tensor] and layer.config.get("go_backwards"):
            entry["out"] = [restored]
            return True
    return False


def _pair(chain: list[dict[str, Any]], inputs: list[int], outputs: list[int], op: Table, name_for: Any,
          model: ModelFile) -> bool:
    """CONCATENATION on the last axis of a forward and a (restored) backward recurrent layer reading the same
    input: the two halves of a Keras Bidirectional(merge_mode="concat"), made one layer again."""
    options = op.table(4)
    axis = int(options.scalar(0, "i", 0)) if options else 0
    if len(inputs) != 2 or len(outputs) != 1 or axis not in (-1, 2):
        return False
    by_out = {tuple(e["out"]): e for e in chain if e["layer"] is not None}
    fw, bw = by_out.get((inputs[0],)), by_out.get((inputs[1],))
    if fw is None or bw is None or fw["in"] != bw["in"] or fw["layer"].class_name != bw["layer"].class_name or \
            fw["layer"].config.get("go_backwards") or not bw["layer"].config.get("go_backwards"):
        return False
    family = "lstm" if fw["layer"].class_name == "LSTM" else "simple_rnn"
    parent = Layer(name=name_for("bidirectional"), class_name="Bidirectional", path=(),
                   config={"merge_mode": "concat"})
    for half, entry in (("forward", fw), ("backward", bw)):
        entry["layer"].name = f"{half}_{family}"
        parent.children.append(entry["layer"])
    position = min(model.root.children.index(fw["layer"]), model.root.children.index(bw["layer"]))
    model.root.children = [c for c in model.root.children if c not in parent.children]
    model.root.children.insert(position, parent)
    at = min(chain.index(fw), chain.index(bw))
    chain[:] = [e for e in chain if e is not fw and e is not bw]
    chain.insert(at, {"layer": parent, "in": fw["in"], "out": outputs})
    return True


def _tensor(f: _File, index: int, role: str, transpose: bool) -> Tensor:
    """The block as Keras holds it; its source names the TFLite tensor, its stored dtype and quantization (shown
    in every block table and in --json) and whether it was transposed."""
    name, shape, dtype, _ = f.tensor_info(index)
    if transpose and len(shape) == 2:
        shape = shape[::-1]
    stored = _stored(f, [index], (role,))[role]
    source = f"T{index} {name}".replace("/", "|") + (f" [{stored}]" if stored != "float32" else "") \
        + (" transposed" if transpose and len(shape) == 2 else "")
    return Tensor(name=role, shape=shape, dtype=dtype, source=source, _load=lambda: f.value(index, transpose))


def _stored(f: _File, indices: list[int], roles: tuple[str, ...]) -> dict[str, str]:
    """Each stored tensor's dtype, and its scales / zero points when quantized."""
    out = {}
    for index, role in zip(indices, roles):
        if index < 0:
            continue
        _, _, dtype, _ = f.tensor_info(index)
        q = f.quantization(index) if dtype != "float32" else None
        scales = f", scale {', '.join(f'{s:.4g}' for s in q['scale'][:4])}{'…' if len(q['scale']) > 4 else ''}, " \
                 f"zero point {', '.join(str(z) for z in q['zero_point'][:4])}" if q else ""
        out[role] = dtype + scales
    return out


def _recurrent(f: _File, name: str, op: Table, inputs: list[int], code: int, go_backwards: bool, label: str) -> Layer:
    operands = LSTM_OPERANDS if code == UNI_LSTM else RNN_OPERANDS
    used = {k: v for k, v in operands.items() if k < len(inputs) and inputs[k] >= 0}
    weights = [_tensor(f, inputs[k], role, transpose) for k, (role, transpose) in used.items()]
    options = op.table(4)
    config: dict[str, Any] = {
        "units": next((t.shape[-1] for t in weights if t.name in ("U_f", "U")), None),
        "activation": ACTIVATIONS.get(int(options.scalar(0 if code == UNI_LSTM else 1, "b", 4)) if options else 4,
                                      "?"),
        "return_sequences": True, "go_backwards": go_backwards,
        "time_major": bool(options.scalar(3 if code == UNI_LSTM else 0, "?", False)) if options else False,
        "stored": _stored(f, [inputs[k] for k in used], tuple(role for role, _ in used.values())),
    }
    if code == UNI_LSTM:
        config["recurrent_activation"] = "sigmoid"
        config["cell_clip"] = float(options.scalar(1, "f", 0.0)) if options else 0.0
        config["proj_clip"] = float(options.scalar(2, "f", 0.0)) if options else 0.0
        if 1 not in used:
            config["cifg"] = True  # coupled input and forget gate: no input-gate weights
    return Layer(name=name, class_name="LSTM" if code == UNI_LSTM else "SimpleRNN", path=(name,), config=config,
                 weights=weights)


def _bidirectional(f: _File, name: str, op: Table, inputs: list[int], label: str) -> Layer:
    """BIDIRECTIONAL_SEQUENCE_LSTM: operands 1–17 forward, 18–34 backward, each as in the unidirectional op."""
    parent = Layer(name=name, class_name="Bidirectional", path=(name,))
    for direction, base in (("forward_lstm", 0), ("backward_lstm", 17)):
        shifted = [inputs[0]] + [inputs[base + k] if base + k < len(inputs) else -1 for k in range(1, 18)]
        child = _recurrent(f, direction, op, shifted, UNI_LSTM, direction == "backward_lstm", label)
        parent.children.append(child)
    return parent

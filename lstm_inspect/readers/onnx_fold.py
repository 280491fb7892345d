"""Fold ONNX values computed from constants by pure data movement, so that an ``LSTM`` / ``GRU`` / ``RNN`` node
whose W, R, B are built from initializers (older ``torch.onnx.export``, or any export without constant folding:
``Slice`` the gates of ``weight_ih_l0``, ``Concat`` them in ONNX's order, ``Unsqueeze`` the direction axis) reads as
if they were initializers.

A small evaluator of our own, numpy only. It never runs the file's graph (no onnxruntime), never reads external data
(every tensor goes through the reader's ``_array``), and is bounded: at most `MAX_NODES` node evaluations and
`MAX_DEPTH` nested producers per fold, every output's size counted with exact Python integers before numpy
allocates it, and all outputs of one fold together within a byte budget the reader sets from the file's own stored
bytes. A cycle, a chain too deep or an output too large is a one-line `CorruptFile` / `UnsafeFile`; a value that
depends on a graph input, or on an op outside `FOLDABLE_OPS`, is `NotFoldable` (the node is then not read).

A node inside an ``If`` / ``Loop`` / ``Scan`` body reads names of the graphs around it (ONNX's outer scope); the
reader gathers every graph's names into one `Scope`, walking the subgraphs with `all_nodes` (bounded nesting,
no recursion).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import CorruptFile, UnsafeFile
from ..model import MAX_DIMENSION, element_count

#: The ops folded: shape and data movement only (no arithmetic beyond Cast).
FOLDABLE_OPS = frozenset({"Identity", "Cast", "Constant", "ConstantOfShape", "Shape", "Slice", "Concat", "Unsqueeze",
                          "Squeeze", "Transpose", "Reshape", "Gather", "Split"})
#: Node evaluations per fold (torch's opset-9 LSTM uses about 25 per layer and direction).
MAX_NODES = 20_000
#: Node evaluations while reading one file (every recurrent node's W, R, B and initial states together).
MAX_FILE_NODES = 100_000
#: Producers nested in one chain (torch's are 4 deep).
MAX_DEPTH = 256
#: The largest rank of a folded value.
MAX_RANK = 32
#: numpy dtypes of the TensorProto data types a Cast may produce (no strings, no bfloat16).
_CAST_TYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


class NotFoldable(Exception):
    """The value is not a constant this module can compute (a graph input, an op it does not fold)."""

    nodes = 0
    """The node evaluations spent before finding out."""


class Scope:
    """The names a fold may look up: stored tensors (initializers and Constant values, as TensorProtos) and the
    nodes that produce the rest, gathered over the main graph and its subgraphs (ONNX names are unique across a
    model, a subgraph reading the graphs around it by name)."""

    def __init__(self, sources: dict[str, Any], producers: dict[str, Any]) -> None:
        self.sources = sources
        self.producers = producers

    def find(self, name: str) -> tuple[str, Any]:
        """``("tensor", proto)``, ``("node", node)`` or ``("input", None)``: where `name` comes from."""
        if name in self.sources:
            return "tensor", self.sources[name]
        if name in self.producers:
            return "node", self.producers[name]
        return "input", None


class Folder:
    """Evaluates names of one scope; `read(proto, name)` turns a TensorProto into an array (the reader's checked
    ``_array``). One Folder per fold: its memo holds arrays only while the fold runs."""

    def __init__(self, scope: Scope, read: Callable[[Any, str], np.ndarray], label: str, budget_bytes: int,
                 max_nodes: int = MAX_NODES) -> None:
        self.scope, self.read, self.label, self.budget, self.max_nodes = scope, read, label, budget_bytes, max_nodes
        self.memo: dict[str, np.ndarray] = {}
        self.nodes = 0
        self.spent = 0
        self.sources_used: set[str] = set()
        """The stored tensors (initializers, Constant values) the folded values came from."""

    def value(self, name: str) -> np.ndarray:
        """The value of `name`, evaluated depth first without recursion (a deep chain cannot exhaust the stack)."""
        stack: list[tuple[str, bool]] = [(name, False)]
        in_progress: set[str] = set()  # the outputs of the nodes on the current chain
        depth = 0
        while stack:
            current, ready = stack.pop()
            if current in self.memo:
                continue
            kind, found = self.scope.find(current)
            if kind == "input":
                raise NotFoldable(f"{current!r} is a graph input or computed at run time")
            if kind == "tensor":
                self.memo[current] = self.read(found, current)
                self.sources_used.add(current)
                continue
            node = found
            if ready:
                self._run(node)
                in_progress.difference_update(node.output)
                depth -= 1
                continue
            if current in in_progress:
                raise CorruptFile(f"ONNX graph has a cycle through {current!r}", self.label)
            if node.op_type not in FOLDABLE_OPS or node.domain not in ("", "ai.onnx"):
                raise NotFoldable(f"{current!r} is computed by {node.op_type}, which is not folded")
            in_progress.update(o for o in node.output if o)
            depth += 1
            if depth > MAX_DEPTH:
                raise UnsafeFile(f"ONNX constant chain deeper than {MAX_DEPTH} nodes at {current!r}; not folded",
                                 self.label)
            self.nodes += 1
            if self.nodes > self.max_nodes:
                raise UnsafeFile(f"folding {name!r} needs more than {self.max_nodes:,} ONNX nodes "
                                 f"(at most {MAX_NODES:,} per value, {MAX_FILE_NODES:,} per file); not folded",
                                 self.label)
            stack.append((current, True))
            for needed in _operands(node):
                if needed in in_progress:
                    raise CorruptFile(f"ONNX graph has a cycle through {needed!r}", self.label)
                if needed not in self.memo:
                    stack.append((needed, False))
        return self.memo[name]

    # ---------------------------------------------------------------- evaluation

    def _run(self, node: Any) -> None:
        args = [self.memo[n] if n else None for n in node.input]
        attrs = _attributes(node)
        try:
            results = getattr(self, f"_op_{node.op_type}")(args, attrs, node)
        except (CorruptFile, UnsafeFile, NotFoldable):
            raise
        except (ValueError, IndexError, TypeError, OverflowError) as exc:
            raise CorruptFile(f"ONNX {node.op_type} node {node.name or node.output[0]!r} cannot be folded: "
                              f"{str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}", self.label) from None
        for output, result in zip(node.output, results):
            if output:
                self.memo[output] = result

    def _charge(self, shape: tuple[int, ...], itemsize: int, node: Any) -> None:
        """Count an output before it is allocated: its dims, rank and bytes, and the fold's running total."""
        if len(shape) > MAX_RANK or any(not 0 <= int(d) <= MAX_DIMENSION for d in shape):
            raise CorruptFile(f"ONNX {node.op_type} node {node.name or node.output[0]!r} would make a tensor of "
                              f"shape {list(shape)[:8]}, not a real shape", self.label)
        self.spent += element_count(shape) * itemsize
        if self.spent > self.budget:
            raise UnsafeFile(f"folding ONNX constants at {node.name or node.output[0]!r} needs more than "
                             f"{self.budget:,} bytes; not folded", self.label)

    def _op_Identity(self, args, attrs, node):
        return [args[0]]

    def _op_Constant(self, args, attrs, node):
        for key in ("value_float", "value_int"):
            if key in attrs:
                return [np.array(attrs[key], np.float32 if key == "value_float" else np.int64)]
        for key in ("value_floats", "value_ints"):
            if key in attrs:
                self._charge((len(attrs[key]),), 8, node)
                return [np.array(attrs[key], np.float32 if key == "value_floats" else np.int64)]
        if "value" in attrs:
            return [self.read(attrs["value"], node.output[0])]
        raise NotFoldable(f"Constant {node.output[0]!r} holds no numeric value")

    def _op_Cast(self, args, attrs, node):
        to = _CAST_TYPES.get(int(attrs.get("to", 0)))
        if to is None:
            raise NotFoldable(f"Cast {node.output[0]!r} to ONNX type {attrs.get('to')}, which is not folded")
        self._charge(args[0].shape, np.dtype(to).itemsize, node)
        return [args[0].astype(to)]

    def _op_ConstantOfShape(self, args, attrs, node):
        shape = _ints(args[0], "shape")
        fill = self.read(attrs["value"], node.output[0]) if "value" in attrs else np.zeros(1, np.float32)
        if fill.size != 1:
            raise CorruptFile(f"ConstantOfShape {node.output[0]!r} has a fill of {fill.size} values", self.label)
        self._charge(tuple(shape), fill.dtype.itemsize, node)
        return [np.full(tuple(shape), fill.reshape(()), fill.dtype)]

    def _op_Shape(self, args, attrs, node):
        dims = list(args[0].shape)
        start, end = int(attrs.get("start", 0)), attrs.get("end")
        return [np.array(dims[slice(start, None if end is None else int(end))], np.int64)]

    def _op_Slice(self, args, attrs, node):
        data = args[0]
        if len(args) > 1:  # opset 10+: starts, ends, axes, steps are inputs
            starts, ends = _ints(args[1], "starts"), _ints(args[2], "ends")
            axes = _ints(args[3], "axes") if len(args) > 3 and args[3] is not None else list(range(len(starts)))
            steps = _ints(args[4], "steps") if len(args) > 4 and args[4] is not None else [1] * len(starts)
        else:
            starts, ends = list(attrs.get("starts", [])), list(attrs.get("ends", []))
            axes, steps = list(attrs.get("axes", range(len(starts)))), [1] * len(starts)
        if not len(starts) == len(ends) == len(axes) == len(steps):
            raise ValueError("starts, ends, axes and steps differ in length")
        index = [slice(None)] * data.ndim
        for start, end, axis, step in zip(starts, ends, axes, steps):
            if step == 0:
                raise ValueError("a step of 0")
            index[_axis(axis, data.ndim)] = slice(start, end, step)
        return [data[tuple(index)]]  # a view: numpy clamps starts and ends as ONNX does

    def _op_Concat(self, args, attrs, node):
        parts = [a for a in args if a is not None]
        if not parts:
            raise ValueError("no inputs")
        axis = _axis(int(attrs.get("axis", 0)), parts[0].ndim)
        shape = list(parts[0].shape)
        for part in parts[1:]:
            if part.ndim != len(shape) or any(a != b for i, (a, b) in enumerate(zip(part.shape, shape)) if i != axis):
                raise ValueError(f"shapes {list(parts[0].shape)} and {list(part.shape)} do not concatenate")
        shape[axis] = sum(int(p.shape[axis]) for p in parts)
        self._charge(tuple(shape), np.result_type(*parts).itemsize, node)
        return [np.concatenate(parts, axis=axis)]

    def _op_Unsqueeze(self, args, attrs, node):
        axes = _ints(args[1], "axes") if len(args) > 1 and args[1] is not None else list(attrs.get("axes", []))
        rank = args[0].ndim + len(axes)
        if rank > MAX_RANK:
            raise ValueError(f"rank {rank}")
        positions = sorted(_axis(a, rank) for a in axes)
        if len(set(positions)) != len(positions):
            raise ValueError("repeated axes")
        shape = list(args[0].shape)
        for position in positions:
            shape.insert(position, 1)
        return [args[0].reshape(shape)]

    def _op_Squeeze(self, args, attrs, node):
        if len(args) > 1 and args[1] is not None:
            axes = _ints(args[1], "axes")
        else:
            axes = list(attrs.get("axes", [i for i, d in enumerate(args[0].shape) if d == 1]))
        return [np.squeeze(args[0], axis=tuple(_axis(a, args[0].ndim) for a in axes))]

    def _op_Transpose(self, args, attrs, node):
        perm = list(attrs.get("perm", range(args[0].ndim - 1, -1, -1)))
        if sorted(perm) != list(range(args[0].ndim)):
            raise ValueError(f"perm {perm[:8]} is not a permutation of the axes")
        return [np.transpose(args[0], perm)]

    def _op_Reshape(self, args, attrs, node):
        data = args[0]
        shape = _ints(args[1], "shape") if len(args) > 1 and args[1] is not None else list(attrs.get("shape", []))
        if len(shape) > MAX_RANK:
            raise ValueError(f"rank {len(shape)}")
        if not attrs.get("allowzero", 0):
            shape = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(shape)]
        if shape.count(-1) > 1 or any(d < -1 for d in shape):
            raise ValueError(f"shape {shape[:8]}")
        known = element_count([d for d in shape if d != -1])
        if -1 in shape:
            if known == 0 or data.size % known:
                raise ValueError(f"{data.size} values do not fill shape {shape[:8]}")
            shape[shape.index(-1)] = data.size // known
        if element_count(shape) != data.size:
            raise ValueError(f"{data.size} values do not fill shape {shape[:8]}")
        self._charge(tuple(shape), data.dtype.itemsize, node)
        return [data.reshape(shape)]

    def _op_Gather(self, args, attrs, node):
        data, indices = args[0], np.asarray(args[1])
        if indices.dtype.kind not in "iu":
            raise ValueError("indices are not integers")
        axis = _axis(int(attrs.get("axis", 0)), data.ndim)
        size = data.shape[axis]
        if indices.size and (int(indices.min()) < -size or int(indices.max()) >= size):
            raise ValueError(f"an index outside [{-size}, {size})")
        shape = data.shape[:axis] + indices.shape + data.shape[axis + 1:]
        self._charge(tuple(shape), data.dtype.itemsize, node)
        return [np.take(data, np.where(indices < 0, indices + size, indices), axis=axis)]

    def _op_Split(self, args, attrs, node):
        data = args[0]
        axis = _axis(int(attrs.get("axis", 0)), data.ndim)
        count = len(node.output)
        if len(args) > 1 and args[1] is not None:
            sizes = _ints(args[1], "split")
        elif "split" in attrs:
            sizes = list(attrs["split"])
        else:  # equal parts (opset 18's num_outputs: the last part may be smaller)
            parts = int(attrs.get("num_outputs", count))
            step = -(-data.shape[axis] // parts) if parts else 0
            sizes = [min(step, data.shape[axis] - i * step) for i in range(parts)]
        if len(sizes) != count or any(s < 0 for s in sizes) or sum(sizes) != data.shape[axis]:
            raise ValueError(f"split {sizes[:8]} does not cut an axis of {data.shape[axis]} into {count} parts")
        bounds = np.cumsum([0] + sizes)
        index = [slice(None)] * data.ndim
        results = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            index[axis] = slice(int(start), int(end))
            results.append(data[tuple(index)])
        return results


def _operands(node: Any) -> list[str]:
    """The names a node reads (Constant reads none; optional inputs are empty strings)."""
    return [name for name in node.input if name]


def _attributes(node: Any) -> dict[str, Any]:
    """Plain attribute values; tensors stay TensorProtos (read through the reader's checks); graphs are left out."""
    from onnx import AttributeProto, helper

    values = {}
    for attribute in node.attribute:
        if attribute.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
            continue
        if attribute.type == AttributeProto.TENSOR:
            values[attribute.name] = attribute.t
        else:
            values[attribute.name] = helper.get_attribute_value(attribute)
    return values


def _ints(value: np.ndarray | None, what: str) -> list[int]:
    if value is None or np.asarray(value).dtype.kind not in "iu" or np.asarray(value).ndim > 1:
        raise ValueError(f"{what} is not a list of integers")
    if np.asarray(value).size > MAX_RANK * 4:
        raise ValueError(f"{what} holds {np.asarray(value).size:,} values")
    return [int(v) for v in np.asarray(value).ravel()]


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} out of range for rank {rank}")
    return axis % rank


def fold(scope: Scope, name: str, read: Callable[[Any, str], np.ndarray], label: str, budget_bytes: int,
         max_nodes: int = MAX_NODES) -> tuple[np.ndarray, set[str], int]:
    """The value of `name`, the stored tensors it was computed from and the nodes evaluated (a fresh, bounded
    fold)."""
    folder = Folder(scope, read, label, budget_bytes, max_nodes)
    try:
        return np.asarray(folder.value(name)), folder.sources_used, folder.nodes
    except NotFoldable as exc:
        exc.nodes = folder.nodes  # spent all the same
        raise


def budget_for(sources: dict[str, Any], stored_bytes: Callable[[Any], int] = lambda proto: proto.ByteSize()) -> int:
    """Bytes one fold may produce: 64 MiB plus four times what the file stores (a fold only moves stored values,
    so a small file cannot make the reader allocate far more than its own size). `stored_bytes` tells a tensor's
    size in the file (the reader's skeleton holds a marker where a large payload was left in the file)."""
    return (64 << 20) + 4 * sum(stored_bytes(proto) for proto in sources.values())


# ---------------------------------------------------------------- subgraphs

#: Subgraphs read: nesting depth and count (an If inside a Loop inside an If is depth 3).
MAX_SUBGRAPH_DEPTH = 16
MAX_SUBGRAPHS = 10_000


def subgraphs(node: Any) -> list[Any]:
    return [g for attribute in node.attribute for g in ([attribute.g] if attribute.HasField("g") else [])
            + list(attribute.graphs)]


def all_nodes(graph: Any, label: str) -> list[Any]:
    """Every node of the graph, each If / Loop / Scan body's nodes right after the node that holds it (reading
    order), walked without recursion and bounded."""
    ordered: list[Any] = []
    stack = [(iter(graph.node), 0)]
    count = 0
    while stack:
        nodes, depth = stack[-1]
        node = next(nodes, None)
        if node is None:
            stack.pop()
            continue
        ordered.append(node)
        bodies = subgraphs(node)
        count += len(bodies)
        if bodies and (depth >= MAX_SUBGRAPH_DEPTH or count > MAX_SUBGRAPHS):
            raise UnsafeFile(f"ONNX subgraphs nested deeper than {MAX_SUBGRAPH_DEPTH} or more than "
                             f"{MAX_SUBGRAPHS:,} of them; not read", label)
        for body in reversed(bodies):
            stack.append((iter(body.node), depth + 1))
    return ordered


def all_graphs(graph: Any) -> list[Any]:
    """The graph and its subgraphs (after `all_nodes` has bounded them)."""
    graphs, pending = [], [graph]
    while pending:
        current = pending.pop()
        graphs.append(current)
        for node in current.node:
            pending.extend(subgraphs(node))
    return graphs


def lowered_recurrent(node: Any, recurrent_ops: set[str]) -> bool:
    """A Loop / Scan whose body multiplies by weights and applies a gate nonlinearity: tf2onnx's lowering of a
    Keras GRU / LSTM / SimpleRNN (per step: MatMul, Sigmoid or Tanh) rather than a loop over plain arithmetic."""
    ops = {n.op_type for body in subgraphs(node) for n in all_graphs_nodes(body)}
    return bool(ops & {"MatMul", "Gemm"}) and bool(ops & {"Sigmoid", "Tanh", "HardSigmoid"}) \
        and not ops & recurrent_ops


def all_graphs_nodes(graph: Any) -> list[Any]:
    return [n for g in all_graphs(graph) for n in g.node]

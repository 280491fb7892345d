"""A pure-numpy forward pass over the neutral model, with the semantics of the Keras version that wrote the file.

    >>> outputs = run(model, x)                 # {"lstm": ..., "dense": ..., "__output__": ...}
    >>> outputs = run(model, x, trace=True)     # plus "lstm/i", "lstm/f", "lstm/c", "lstm/o", "lstm/cell", ...

Every layer's output is keyed by its layer path (``encoder/enc_lstm_a``); layers with several outputs (an RNN with
``return_state``, a Bidirectional with ``merge_mode=None``) use ``<path>/0``, ``<path>/1``, ... The model's own
output is ``__output__`` (``__output__/0``, ``__output__/1``, ... for several).

Computation runs in the file's precision by default, like Keras: float32 weights in float32, float64 weights in
float64 (`precision.py`); ``dtype=np.float64`` asks for a float64 reference run.
Recurrent layers are vectorised the way Keras's own kernels are: the input projection ``x · kernel + bias`` for
every time step at once, then one ``h · recurrent_kernel`` matmul per step for all gates together. Every recurrent
layer runs through one loop over `RecurrentCell`s rebuilt from its gate blocks: LSTM / GRU / SimpleRNN, the legacy
CuDNNLSTM / CuDNNGRU (the split undoes the cuDNN layout), ConvLSTM1D/2D/3D (convolutions for the matmuls) and
RNN around one cell or a StackedRNNCells (one cell per level, each reading the new state of the one below).
The cells and wrappers are in `recurrent.py`, the layers without state in `layer_ops.py`; this module walks the
graph (Sequential, Functional in Keras 2 and 3 form), matches the inputs and records the outputs.

Masks flow as in Keras: ``Masking`` and ``Embedding(mask_zero=True)`` create a (batch, time) mask, layers that
support masking pass it on, recurrent layers use it (a masked step keeps the previous states; its output is the
previous output, or zeros when ``zero_output_for_mask`` — which Bidirectional forces on when it returns sequences).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InspectError
from ..model import Layer, ModelFile, no_layer_matches
from .layer_ops import LAYER_FUNCS as BASIC_FUNCS, MERGE_CLASSES, OP_FUNCS, Value, as_list, combine_masks, merge
from .layer_ops_attention import ATTENTION_FUNCS, ATTENTION_KEYWORDS
from .layer_ops_conv import CONV_FUNCS
from .precision import compute_dtype
from .recurrent import CELL_CLASSES, RECURRENT_CLASSES, RecurrentLayers

OUTPUT_KEY = "__output__"

#: The stateless layers by Keras class: dense, activations, normalisation, shapes (`layer_ops`), convolutions and
#: pooling (`layer_ops_conv`).
LAYER_FUNCS = {**BASIC_FUNCS, **CONV_FUNCS}

#: Layers that are the identity at inference time (and pass a mask on unchanged).
IDENTITY_CLASSES = frozenset(
    """InputLayer Dropout SpatialDropout1D SpatialDropout2D SpatialDropout3D GaussianNoise GaussianDropout
    AlphaDropout ActivityRegularization Identity""".split()
)
#: Layers whose output keeps the input's time mask (Keras's ``supports_masking`` with the default compute_mask).
MASK_PASSING = IDENTITY_CLASSES | frozenset(
    {"Dense", "Activation", "BatchNormalization", "LayerNormalization", "ReLU", "LeakyReLU", "ELU", "Softmax",
     "TimeDistributed"}
)


def supported_classes() -> list[str]:
    return sorted(IDENTITY_CLASSES | RECURRENT_CLASSES | CELL_CLASSES | MERGE_CLASSES | set(LAYER_FUNCS)
                  | set(ATTENTION_FUNCS) | set(OP_FUNCS) | {
        "StackedRNNCells", "Bidirectional", "TimeDistributed", "Sequential", "Functional", "Model", "Masking", "Embedding", "NotEqual", "Any"})


@dataclass
class InputSpec:
    name: str
    shape: tuple[int | None, ...]
    """Including the batch axis (None when free)."""
    dtype: str = "float32"


class _Stop(Exception):
    """Raised to end the run once every selected layer has produced its output."""


@dataclass
class _Run(RecurrentLayers):
    """One forward pass: walks the model's graph, dispatches each layer (recurrent ones to `RecurrentLayers`,
    stateless ones to `layer_ops`) and records the outputs."""

    trace: bool
    wanted: set[str] | None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    threads: int | None = None

    # -- recording --------------------------------------------------------------------------------------------
    def record(self, layer: Layer, value: Value) -> None:
        values = as_list(value)
        if len(values) == 1:
            self.outputs[layer.key] = values[0]
        else:
            for i, v in enumerate(values):
                self.outputs[f"{layer.key}/{i}"] = v
        if self.wanted is not None:
            self.wanted.discard(layer.key)
            if not self.wanted:
                raise _Stop

    def record_trace(self, layer: Layer, name: str, value: np.ndarray) -> None:
        if self.trace:
            self.outputs[f"{layer.key}/{name}"] = value

    # -- dispatch ---------------------------------------------------------------------------------------------
    def call(self, layer: Layer, x: Value, mask: np.ndarray | None, kwargs: dict[str, Any] | None = None,
             record: bool = True) -> tuple[Value, np.ndarray | None]:
        cls = layer.class_name
        kwargs = kwargs or {}
        if layer.needs_code:
            raise InspectError(f"layer {layer.key or layer.name!r} ({cls}) cannot be run: {layer.needs_code}")
        if cls in ("Sequential",):
            out, out_mask = self.sequential(layer, x, mask)
        elif cls in ("Functional", "Model"):
            out, out_mask = self.functional(layer, as_list(x))
        elif cls in IDENTITY_CLASSES:
            out, out_mask = x, mask
        elif cls in RECURRENT_CLASSES or cls == "Bidirectional":
            initial_state = kwargs.get("initial_state")
            if isinstance(x, list) and initial_state is None:
                # Keras 2 (tf-keras) records `layer(x, initial_state=[h, c])` as one call on [x, h, c]
                x, initial_state = x[0], x[1:] or None
            run_layer = self.recurrent if cls in RECURRENT_CLASSES else self.bidirectional
            out, out_mask = run_layer(layer, x, mask, initial_state)
        elif cls == "TimeDistributed":
            out, out_mask = self.time_distributed(layer, x, mask)
        elif cls in ATTENTION_FUNCS:  # several inputs, each with its own mask (`masks_by_id`)
            out, out_mask = ATTENTION_FUNCS[cls](self, layer, x, mask, kwargs)
        elif cls in MERGE_CLASSES:
            out, out_mask = merge(layer, as_list(x), mask)
        elif cls == "NotEqual":
            # Keras 3 functional graphs record the mask of Embedding(mask_zero=True) as an op: not_equal(ids, 0)
            other = (kwargs.get("extra_args") or [None])[0]
            if isinstance(x, list) and len(x) == 2 and other is None:
                x, other = x
            if other is None:
                raise InspectError(f"layer {layer.key or layer.name!r} (NotEqual) needs two operands")
            out, out_mask = np.not_equal(np.asarray(x), np.asarray(other)), None
        elif cls == "Any":
            # ... and the mask of a Masking layer with several consumers as any(not_equal(x, mask_value), axis=-1)
            axis = layer.config.get("axis")
            out = np.any(np.asarray(x), axis=tuple(axis) if isinstance(axis, list) else axis,
                         keepdims=bool(layer.config.get("keepdims", False)))
            out_mask = None
        elif cls in OP_FUNCS:  # Keras 3 ops that compute masks in a functional graph (expand_dims, logical_or, ...)
            out, out_mask = OP_FUNCS[cls](layer, x, kwargs.get("extra_args")), None
        elif cls == "Masking":
            value = float(layer.config.get("mask_value", 0.0))
            out_mask = np.any(x != value, axis=-1)
            out = x * out_mask[..., None].astype(x.dtype)
        elif cls == "Embedding":
            out, out_mask = self.embedding(layer, x)
        elif cls in LAYER_FUNCS:
            out = LAYER_FUNCS[cls](self, layer, x, mask)
            out_mask = mask if cls in MASK_PASSING else None
        else:
            raise InspectError(f"layer {layer.key or layer.name!r} ({cls}): the numpy forward pass does not "
                               f"support this class")
        if record and layer.path:
            self.record(layer, out)
        return out, out_mask

    # -- containers -------------------------------------------------------------------------------------------
    def sequential(self, layer: Layer, x: Value, mask: np.ndarray | None) -> tuple[Value, np.ndarray | None]:
        for child in layer.children:
            if child.class_name == "InputLayer":
                continue
            x, mask = self.call(child, x, mask)
        return x, mask

    def functional(self, layer: Layer, inputs: list[np.ndarray]) -> tuple[Value, np.ndarray | None]:
        graph = _Graph(layer, self.keras_major)
        if len(inputs) != len(graph.inputs):
            raise InspectError(f"{layer.key or 'model'} takes {len(graph.inputs)} inputs but got {len(inputs)}")
        produced: dict[tuple[str, int], tuple[list[np.ndarray], list[np.ndarray | None]]] = {}
        for (name, _, _), value in zip(graph.inputs, inputs):
            produced[(name, 0)] = ([value], [None])
            child = graph.by_name.get(name)
            if child is not None and child.class_name == "InputLayer" and child.path:
                pass  # inputs are not recorded as layer outputs
        pending = [(child, i, node) for child in graph.order for i, node in enumerate(graph.nodes(child))]
        while pending:
            progressed = False
            remaining = []
            for child, index, node in pending:
                resolved = graph.resolve(node, produced)
                if resolved is None:
                    remaining.append((child, index, node))
                    continue
                args, masks, kwargs = resolved
                mask = combine_masks(masks)
                if "mask" in kwargs:  # Keras 3 records the mask a layer was called with: that is the one it uses
                    explicit = kwargs["explicit_mask"] = kwargs.pop("mask")
                    mask = combine_masks(explicit if isinstance(explicit, list) else [explicit])
                out, out_mask = self.call(child, args, mask, kwargs)
                outs = as_list(out)
                out_masks = out_mask if isinstance(out_mask, list) else [out_mask] * len(outs)
                produced[(child.name, index)] = (outs, out_masks)
                progressed = True
            if not progressed:
                names = ", ".join(sorted({c.name for c, _, _ in remaining}))
                raise InspectError(f"{layer.key or 'model'}: cannot order the graph: layers {names} wait for "
                                   "inputs no layer produces")
            pending = remaining
        results, result_masks = [], []
        for name, node_index, tensor_index in graph.outputs:
            outs, masks = graph.lookup(produced, name, node_index)
            results.append(outs[tensor_index])
            result_masks.append(masks[tensor_index] if tensor_index < len(masks) else None)
        if len(results) == 1:
            return results[0], result_masks[0]
        return results, None

    def embedding(self, layer: Layer, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        table = self.weight(layer, "embeddings")
        ids = np.asarray(x).astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise InspectError(f"layer {layer.key!r} (Embedding): index out of range 0..{table.shape[0] - 1}")
        mask = ids != 0 if layer.config.get("mask_zero", False) else None
        return table[ids], mask


# ---------------------------------------------------------------------------------------------------------------
# Functional graphs (Keras 2 and Keras 3 config forms)


class _Graph:
    def __init__(self, layer: Layer, keras_major: int | None):
        self.layer = layer
        self.keras_major = keras_major
        self.by_name = {child.name: child for child in layer.children}
        self.order = [child for child in layer.children if child.class_name != "InputLayer"]
        self.inputs = _endpoints(layer.config.get("input_layers"))
        self.outputs = _endpoints(layer.config.get("output_layers"))
        if not self.inputs:
            self.inputs = [(c.name, 0, 0) for c in layer.children if c.class_name == "InputLayer"]
        if not self.outputs:
            raise InspectError(f"{layer.key or 'model'}: functional config has no output_layers")

    def nodes(self, child: Layer) -> list[Any]:
        nodes = child.entry.get("inbound_nodes") or []
        return nodes if isinstance(nodes, list) else []

    def lookup(self, produced: dict, name: str, node_index: int) -> tuple[list, list]:
        if (name, node_index) in produced:
            return produced[(name, node_index)]
        # Nested models built on their own Input keep that construction call as node 0 in Keras's numbering;
        # the config lists only the calls in this graph.
        calls = sorted(i for (n, i) in produced if n == name)
        if node_index - 1 in calls:
            return produced[(name, node_index - 1)]
        if len(calls) == 1:
            return produced[(name, calls[0])]
        raise KeyError((name, node_index))

    def resolve(self, node: Any, produced: dict) -> tuple[Value, list, dict] | None:
        """(call argument, input masks, keyword tensors) of one inbound node, or None while an input is missing."""
        masks: list = []
        masks_by_id: dict[int, np.ndarray | None] = {}  # each input's own mask, for layers that use them apart

        def ref(name: str, node_index: int, tensor_index: int) -> np.ndarray:
            outs, out_masks = self.lookup(produced, name, int(node_index))
            masks.append(out_masks[int(tensor_index)] if int(tensor_index) < len(out_masks) else None)
            masks_by_id[id(outs[int(tensor_index)])] = masks[-1]
            return outs[int(tensor_index)]

        try:
            if isinstance(node, dict):  # Keras 3: {"args": [...], "kwargs": {...}}
                args = [_k3_values(a, ref) for a in node.get("args", [])]
                kwargs = {k: _k3_values(v, ref) for k, v in (node.get("kwargs") or {}).items()
                          if k in ("initial_state", "mask") + ATTENTION_KEYWORDS}
                kwargs["masks_by_id"] = masks_by_id
                if len(args) > 1:  # ops such as not_equal(x, 0) take several positional arguments
                    kwargs["extra_args"] = args[1:]
                if not args:
                    raise InspectError(f"{self.layer.key or 'model'}: a call with no positional argument")
                return args[0], masks, kwargs
            if isinstance(node, list):  # Keras 2: [[name, node_index, tensor_index, kwargs], ...]
                values, kwargs = [], {}
                for item in _k2_entries(node):
                    values.append(ref(item[0], item[1], item[2]))
                    extra = item[3] if len(item) > 3 and isinstance(item[3], dict) else {}
                    for keyword in ("initial_state", "mask") + ATTENTION_KEYWORDS:
                        if keyword in extra:
                            kwargs[keyword] = _k2_values(extra[keyword], ref)
                kwargs["masks_by_id"] = masks_by_id
                return (values[0] if len(values) == 1 else values), masks, kwargs
        except KeyError:
            return None
        raise InspectError(f"{self.layer.key or 'model'}: cannot read an inbound node of the config: {node!r}"[:200])


def _k3_values(value: Any, ref: Callable) -> Any:
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        return ref(*value["config"]["keras_history"])
    if isinstance(value, (list, tuple)):
        return [_k3_values(v, ref) for v in value]
    return value


def _k2_entries(node: list) -> list[list]:
    """The [name, node_index, tensor_index, kwargs] entries of a Keras 2 inbound node, in order; tf-keras nests the
    initial states of stacked cells per cell ([x, [[h_low ...], [c_low ...]], [[h_high ...]]])."""
    entries = []
    for item in node:
        if isinstance(item, list) and item and isinstance(item[0], list):
            entries.extend(_k2_entries(item))
        else:
            entries.append(item)
    return entries


def _k2_values(value: Any, ref: Callable) -> Any:
    if isinstance(value, list) and len(value) >= 3 and isinstance(value[0], str):
        return ref(value[0], value[1], value[2])
    if isinstance(value, list):
        return [_k2_values(v, ref) for v in value]
    return value


def _endpoints(spec: Any) -> list[tuple[str, int, int]]:
    if not spec:
        return []
    if isinstance(spec, list) and spec and isinstance(spec[0], str):
        spec = [spec]
    if isinstance(spec, dict):
        spec = list(spec.values())
    return [(str(s[0]), int(s[1]), int(s[2])) for s in spec]


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def input_specs(model: ModelFile) -> list[InputSpec]:
    """The model's inputs: name, shape (batch axis first, None where free) and dtype, from the config."""
    root = model.root
    if not model.has_config:
        raise InspectError("the file has no model config (weights only): the forward pass needs the model's "
                           "architecture; use the full model file", model.path)
    return _specs_of(root)


def _specs_of(layer: Layer) -> list[InputSpec]:
    if layer.class_name in ("Functional", "Model"):
        names = [name for name, _, _ in _endpoints(layer.config.get("input_layers"))]
        by_name = {c.name: c for c in layer.children}
        specs = []
        for name in names:
            child = by_name.get(name)
            if child is None:
                specs.append(InputSpec(name, (None,)))
            elif child.class_name == "InputLayer":
                specs.append(_spec_from_config(name, child.config))
            else:
                specs.extend(_specs_of(child))
        return specs
    if layer.class_name == "Sequential":
        first = next((c for c in layer.children), None)
        if first is None:
            raise InspectError("the model has no layers")
        if first.class_name == "InputLayer":
            return [_spec_from_config(first.name, first.config)]
        if first.class_name in ("Sequential", "Functional", "Model"):
            return _specs_of(first)
        spec = _spec_from_config(layer.name + "_input", first.config)
        if spec.shape == (None,):
            build = layer.config.get("build_input_shape") or (layer.entry.get("build_config") or {}).get("input_shape")
            if isinstance(build, list):
                spec.shape = tuple(build)
        return [spec]
    return [_spec_from_config(layer.name, layer.config)]


def _spec_from_config(name: str, config: dict[str, Any]) -> InputSpec:
    shape = config.get("batch_shape") or config.get("batch_input_shape")
    if shape is None and config.get("input_shape") is not None:
        shape = [None] + list(config["input_shape"])
    dtype = config.get("dtype")
    if isinstance(dtype, dict):
        dtype = (dtype.get("config") or {}).get("name", "float32")
    if not isinstance(dtype, str) or dtype.startswith("mixed"):
        dtype = "float32"
    return InputSpec(name, tuple(shape) if shape else (None,), dtype)


def match_inputs(specs: list[InputSpec], inputs: Any) -> list[np.ndarray]:
    if isinstance(inputs, dict):
        plain = {k.removeprefix("input/") if k != "input" else k: v for k, v in inputs.items()}
        if len(specs) == 1 and len(plain) == 1:
            values = [next(iter(plain.values()))]
        else:
            missing = [s.name for s in specs if s.name not in plain]
            if missing:
                raise InspectError(f"inputs missing for {', '.join(missing)} (the model's inputs are "
                                   f"{', '.join(s.name for s in specs)}; got {', '.join(plain) or 'none'})")
            values = [plain[s.name] for s in specs]
    elif isinstance(inputs, (list, tuple)):
        values = list(inputs)
    else:
        values = [inputs]
    if len(values) != len(specs):
        raise InspectError(f"the model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}), "
                           f"got {len(values)}")
    out = []
    for spec, value in zip(specs, values):
        value = np.asarray(value)
        want = spec.shape
        if len(want) > 1 and (value.ndim != len(want)
                              or any(w is not None and w != g for w, g in zip(want[1:], value.shape[1:]))):
            shown = "(" + ", ".join("batch" if w is None and i == 0 else str(w) for i, w in enumerate(want)) + ")"
            raise InspectError(f"input {spec.name!r} has shape {value.shape} but the model expects {shown}")
        if value.dtype.kind not in "biuf":
            raise InspectError(f"input {spec.name!r} has dtype {value.dtype}: numbers expected")
        out.append(value)
    return out


def run(model: ModelFile, inputs: Any, layers: Sequence[str] = (), trace: bool = False,
        dtype: Any = None, threads: int | None = None) -> dict[str, np.ndarray]:
    """Run `model` on `inputs` (an array, a list in input order, or a dict keyed by input name).

    Returns every layer's output keyed by layer path and the model's output under ``__output__``. With `layers`,
    only the outputs of layers whose path contains one of the names, and the run stops once they are computed.
    With `trace`, also ``<recurrent layer path>/<gate or state>`` arrays of shape (batch, time, units).
    `dtype`: float32 or float64; None (the default) computes in the file's precision (float32 for float32 weights).
    `threads`: how many threads a recurrent layer's batch rows may be split over (`row_split`; the results are
    the same); None (the default) splits a large batch over the usable CPUs when numpy's BLAS runs one thread and
    the machine is not busy, 1 never splits.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, (int, np.integer))
                                or threads < 1):
        raise InspectError(f"threads must be a whole number of at least 1 (or None to decide), got {threads!r}")
    try:
        return _run(model, inputs, layers, trace, dtype, threads)
    except InspectError as exc:
        if exc.path is None:
            exc.path = model.path
        raise


def _run(model: ModelFile, inputs: Any, layers: Sequence[str], trace: bool, dtype: Any,
         threads: int | None) -> dict[str, np.ndarray]:
    specs = input_specs(model)
    values = match_inputs(specs, inputs)
    wanted = None
    if layers:
        matched = {layer.key for layer in model.layers if any(name in layer.key for name in layers)
                   and layer.class_name != "InputLayer"}
        if not matched:
            raise no_layer_matches(layers, [layer.key for layer in model.layers], model.path)
        wanted = set(matched)
    state = _Run(model.keras_major, compute_dtype(dtype, model.layers), trace, wanted, threads=threads)
    # float inputs in the run's dtype, as Keras casts them (so layers that pass x on keep the run's precision);
    # integer ids stay integers
    values = [v.astype(state.dtype) if v.dtype.kind == "f" else v for v in values]
    finished = False
    try:
        root = model.root
        if root.class_name in ("Functional", "Model"):
            out, _ = state.call(root, values, None, record=False)
        else:
            out, _ = state.call(root, values[0], None, record=False)
        finished = True
    except _Stop:
        pass
    result = state.outputs
    if wanted is not None:
        keep = {layer.key for layer in model.layers if any(name in layer.key for name in layers)}
        result = {k: v for k, v in result.items()
                  if k in keep or k.rsplit("/", 1)[0] in keep}
    if finished:
        outs = as_list(out)
        if len(outs) == 1:
            result[OUTPUT_KEY] = outs[0]
        else:
            for i, v in enumerate(outs):
                result[f"{OUTPUT_KEY}/{i}"] = v
    return result

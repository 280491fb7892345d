"""`forward` on files with no Keras graph: PyTorch state dicts, ONNX models and TF1 checkpoints.

Each recurrent module is run on its own with the source framework's semantics, from the gate blocks `gates.split`
returns (so running it proves the split): torch ``nn.LSTM`` / ``GRU`` / ``RNN`` (every layer and direction, proj_size,
both biases), ONNX ``LSTM`` / ``GRU`` / ``RNN`` nodes (peepholes, directions, activations with alpha/beta, clip,
linear_before_reset), TF1 ``LSTMCell`` / ``BasicLSTMCell`` / ``GRUCell`` (peepholes, projection,
``MultiRNNCell`` stacks, the ``bw`` cell of a bidirectional pair run backwards). The input is always
X (batch, time, features); the initial states are zeros, as each framework's default. What a file cannot tell
(torch RNN's nonlinearity, TF1's forget_bias) comes from the caller, with the frameworks' defaults.

The three frameworks share one step: torch's LSTM is ONNX's with no peepholes, its GRU is ONNX's
linear_before_reset=1; TF1's LSTMCell has ONNX's peephole placement and its GRUCell is linear_before_reset=0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import gates
from ..errors import InspectError
from ..model import Layer, ModelFile, no_layer_matches
from .precision import compute_dtype

TORCH_DEFAULT_NONLINEARITY = "tanh"
TF1_DEFAULT_FORGET_BIAS = 1.0
_TF1_CELLS = frozenset(gates.TF1_LAYOUTS)
_ONNX_LEAVES = frozenset(c for c in gates.NATIVE_LAYOUTS if c.startswith("Onnx"))
_TORCH_LEAVES = frozenset(c for c in gates.NATIVE_LAYOUTS if c.startswith("Torch"))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


#: ONNX's activation functions: name -> (function of (x, alpha, beta), default alpha, default beta); alpha/beta are
#: consumed from activation_alpha / activation_beta only by the functions that take them, as onnxruntime does.
_ONNX_ACTIVATIONS: dict[str, tuple[Callable[..., np.ndarray], float | None, float | None]] = {
    "sigmoid": (lambda x, a, b: _sigmoid(x), None, None),
    "tanh": (lambda x, a, b: np.tanh(x), None, None),
    "relu": (lambda x, a, b: np.maximum(x, 0), None, None),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), None, None),
    "softplus": (lambda x, a, b: np.logaddexp(0, x), None, None),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, None),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, None),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * np.expm1(x)), 1.0, None),
}
_DEFAULT_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "SimpleRNN": ("tanh",)}

Activation = Callable[[np.ndarray], np.ndarray]


@dataclass
class Direction:
    """One layer-direction: its blocks (Keras orientation, ``x @ W_g``) and how its step differs by framework."""

    layer: Layer
    blocks: dict[str, np.ndarray]
    family: str
    activations: tuple[Activation, ...]
    linear_before_reset: bool = True
    clip: float | None = None
    reverse: bool = False
    trace: dict[str, np.ndarray] | None = None
    """When a dict: filled with the gates and states of every step, ``<layer key>/<name>`` (batch, time, units) in
    x's time order — LSTM i, f, c (candidate), o, cell, hidden; GRU z, r, h (candidate), hidden; RNN hidden."""


def handles(model: ModelFile) -> bool:
    """True for a file whose recurrent layers are torch / ONNX / TF1 ones (no Keras graph to run)."""
    return any(layer.class_name in _TF1_CELLS or layer.class_name in gates.NATIVE_LAYOUTS for layer in model.layers)


def modules(model: ModelFile) -> list[Layer]:
    """The runnable units: torch modules and ONNX nodes (containers of directions), TF1 cells and MultiRNNCells."""
    found: list[Layer] = []

    def visit(layer: Layer) -> None:
        leaves = {c.class_name for c in layer.children}
        if leaves and leaves <= set(gates.NATIVE_LAYOUTS):
            found.append(layer)
        elif layer.class_name in _TF1_CELLS or (layer.class_name == "MultiRNNCell" and leaves <= _TF1_CELLS):
            found.append(layer)
        else:  # a plain container (an exported .npz groups nodes by path: enc/l0, enc/l1)
            for child in layer.children:
                visit(child)

    for top in model.root.children:
        visit(top)
    return found


def select(model: ModelFile, patterns: tuple[str, ...] | list[str]) -> list[Layer]:
    found = modules(model)
    if not found:
        raise InspectError("no recurrent module to run (no torch.nn.LSTM/GRU/RNN, ONNX LSTM/GRU/RNN node or TF1 "
                           "cell was recognised)", model.path)
    if not patterns:
        return found
    chosen = [m for m in found if any(p in m.key for p in patterns)]
    if not chosen:
        raise no_layer_matches(patterns, [m.key for m in found], model.path, "recurrent modules")
    return chosen


def run(model: ModelFile, inputs: Any, layers: tuple[str, ...] | list[str] = (), dtype: Any = None,
        forget_bias: float | None = None, nonlinearity: str | None = None,
        trace: bool = False) -> dict[str, np.ndarray]:
    """Every selected module run on X (batch, time, features); keys as docs/forward.md lists them. With `trace`,
    also each layer-direction's gates and states per step (`Direction.trace`). `dtype` None: the file's precision."""
    chosen = select(model, layers)
    dtype = compute_dtype(dtype, chosen)
    x = single_input(inputs, model.path).astype(dtype)
    check_fits(model, chosen, x)
    results: dict[str, np.ndarray] = {}
    for module in chosen:
        results.update(run_module(module, x, dtype, forget_bias, nonlinearity, trace))
    return results


def run_module(module: Layer, x: np.ndarray, dtype: Any = None, forget_bias: float | None = None,
               nonlinearity: str | None = None, trace: bool = False) -> dict[str, np.ndarray]:
    """One module (from `modules`) on X (batch, time, features) with its framework's semantics, in `dtype`
    (None: the module's stored precision)."""
    dtype = compute_dtype(dtype, [module])
    x = np.asarray(x).astype(dtype)
    traced: dict[str, np.ndarray] | None = {} if trace else None
    if module.children and module.children[0].class_name in _TORCH_LEAVES:
        result = _run_torch(module, x, dtype, nonlinearity or TORCH_DEFAULT_NONLINEARITY, traced)
    elif module.children and module.children[0].class_name in _ONNX_LEAVES:
        result = _run_onnx(module, x, dtype, traced)
    else:
        result = _run_tf1(module, x, dtype, TF1_DEFAULT_FORGET_BIAS if forget_bias is None else forget_bias, traced)
    return {**result, **(traced or {})}


def check_fits(model: ModelFile, chosen: list[Layer], x: np.ndarray) -> None:
    """Every chosen module takes X's feature count (else one line naming the ones that do not)."""
    misfits = [f"{m.key} takes {input_size(m)}" for m in chosen if input_size(m) not in (None, x.shape[-1])]
    if misfits:
        raise InspectError(f"input has {x.shape[-1]} features but {'; '.join(misfits)} (pick modules with --layer)",
                           model.path)


def stated_defaults(model: ModelFile, layers: tuple[str, ...] | list[str], forget_bias: float | None,
                    nonlinearity: str | None) -> list[str]:
    """What the run assumed because the file does not store it, one line each (the CLI prints them)."""
    notes = []
    for module in select(model, layers):
        leaf = module.children[0].class_name if module.children else module.class_name
        if leaf == "TorchRNN":
            value = nonlinearity or TORCH_DEFAULT_NONLINEARITY
            notes.append(f"{module.key}: {module.class_name} run with nonlinearity={value!r}"
                         + (" (torch's default; a state dict does not store it: --nonlinearity relu for the other)"
                            if nonlinearity is None else ""))
        if leaf in ("TF1LSTMCell", "TF1BasicLSTMCell"):
            value = TF1_DEFAULT_FORGET_BIAS if forget_bias is None else forget_bias
            notes.append(f"{module.key}: TF1 LSTM cell(s) run with forget_bias={value}"
                         + (" (TensorFlow's default; a checkpoint does not store it: --forget-bias to change)"
                            if forget_bias is None else ""))
    return notes


# ------------------------------------------------------------------------------------------------ the shared step


def single_input(inputs: Any, label: str) -> np.ndarray:
    if isinstance(inputs, dict):
        inputs = list(inputs.values())
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 1:
            raise InspectError(f"a recurrent module takes one input X (batch, time, features), got {len(inputs)} "
                               "arrays", label)
        inputs = inputs[0]
    x = np.asarray(inputs)
    if x.ndim != 3 or x.dtype.kind not in "fiu":
        raise InspectError(f"input must be numeric X (batch, time, features), got {x.dtype} {x.shape}", label)
    if x.shape[1] == 0:
        raise InspectError("the input has no time steps", label)
    return x


def input_size(module: Layer) -> int | None:
    first = module.children[0] if module.children else module
    split = gates.split(first)
    return split.input_dim if split is not None and split.blocks else None


def _blocks(layer: Layer, dtype: Any) -> dict[str, np.ndarray]:
    split = gates.split(layer)
    if split is None or not split.blocks:
        reason = "; ".join(split.warnings) if split is not None else "its kernels are missing"
        raise InspectError(f"layer {layer.key!r} ({layer.class_name}) cannot be run: {reason}")
    return {key: value.astype(dtype) for key, value in split.arrays().items()}


def _run_direction(d: Direction, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """x (time, batch, in) -> outputs (time, batch, out) in x's time order, final h, final c (LSTM)."""
    b = d.blocks
    letters = gates.LAYOUTS[d.family].gates
    keys = [f"_{g}" if g else "" for g in letters]
    units = b["W" + keys[0]].shape[1]
    out_units = b["proj"].shape[1] if "proj" in b else units
    zeros = np.zeros(units, dtype=x.dtype)
    # the input term of every step at once, with both biases where the framework adds them outside the reset gate
    projected = {k: x @ b["W" + k] + b.get("b" + k, zeros) for k in keys}
    h = np.zeros((x.shape[1], out_units), dtype=x.dtype)
    c = np.zeros((x.shape[1], units), dtype=x.dtype)
    acts = d.activations

    def pre(term: np.ndarray) -> np.ndarray:
        return np.clip(term, -d.clip, d.clip) if d.clip is not None else term

    steps = range(x.shape[0] - 1, -1, -1) if d.reverse else range(x.shape[0])
    outputs = np.empty((x.shape[0], x.shape[1], out_units), dtype=x.dtype)
    recorded: dict[str, np.ndarray] = {}

    def record(t: int, **values: np.ndarray) -> None:
        for name, value in values.items():
            if name not in recorded:
                recorded[name] = np.empty((x.shape[0],) + value.shape, dtype=x.dtype)
            recorded[name][t] = value

    for t in steps:
        if d.family == "LSTM":
            z = {k: projected[k][t] + h @ b["U" + k] + b.get("rb" + k, zeros) for k in keys}
            i = acts[0](pre(z["_i"] + b.get("p_i", zeros) * c))
            f = acts[0](pre(z["_f"] + b.get("p_f", zeros) * c))
            candidate = acts[1](pre(z["_c"]))
            c = f * c + i * candidate
            o = acts[0](pre(z["_o"] + b.get("p_o", zeros) * c))
            h = o * acts[2](c)
            if "proj" in b:
                h = h @ b["proj"]
            if d.trace is not None:
                record(t, i=i, f=f, c=candidate, o=o, cell=c)
        elif d.family == "GRU":
            r = acts[0](pre(projected["_r"][t] + h @ b["U_r"] + b.get("rb_r", zeros)))
            u = acts[0](pre(projected["_z"][t] + h @ b["U_z"] + b.get("rb_z", zeros)))
            if d.linear_before_reset:
                recurrent = r * (h @ b["U_h"] + b.get("rb_h", zeros))
            else:
                recurrent = (r * h) @ b["U_h"] + b.get("rb_h", zeros)
            candidate = acts[1](pre(projected["_h"][t] + recurrent))
            h = u * h + (1 - u) * candidate
            if d.trace is not None:
                record(t, z=u, r=r, h=candidate)
        else:
            h = acts[0](pre(projected[""][t] + h @ b["U"] + b.get("rb", zeros)))
        outputs[t] = h
        if d.trace is not None:
            record(t, hidden=h)
    if d.trace is not None:
        d.trace.update({f"{d.layer.key}/{name}": value.transpose(1, 0, 2) for name, value in recorded.items()})
    return outputs, h, (c if d.family == "LSTM" else None)


def _run_layer(directions: list[Direction], seq: np.ndarray) -> tuple[list, list, list]:
    """Every direction of one layer on the same input: outputs, final h, final c, in direction order."""
    runs = [_run_direction(direction, seq) for direction in directions]
    return [run[0] for run in runs], [run[1] for run in runs], [run[2] for run in runs]


# ------------------------------------------------------------------------------------------------- per framework


def _run_torch(module: Layer, x: np.ndarray, dtype: Any, nonlinearity: str,
               trace: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """torch.nn.LSTM/GRU/RNN(batch_first=True): output (batch, time, D·out), h_n / c_n (D·layers, batch, ·)."""
    family = gates.NATIVE_LAYOUTS[module.children[0].class_name].family
    if nonlinearity not in ("tanh", "relu"):
        raise InspectError(f"nonlinearity {nonlinearity!r} is not torch.nn.RNN's 'tanh' or 'relu'", module.key)
    names = ("sigmoid", "tanh", "tanh") if family != "SimpleRNN" else (nonlinearity,)
    acts = tuple(_bound(name, None, None) for name in names)
    seq = x.transpose(1, 0, 2)
    finals_h, finals_c = [], []
    layers = sorted({leaf.config.get("layer", 0) for leaf in module.children})
    for k in layers:
        outs, hs, cs = _run_layer([Direction(leaf, _blocks(leaf, dtype), family, acts, linear_before_reset=True,
                                             reverse=leaf.config.get("direction") == "reverse", trace=trace)
                                   for leaf in module.children if leaf.config.get("layer", 0) == k], seq)
        finals_h += hs
        finals_c += cs
        seq = np.concatenate(outs, axis=-1)
    key = module.key
    result = {f"{key}/output": seq.transpose(1, 0, 2), f"{key}/h_n": np.stack(finals_h)}
    if family == "LSTM":
        result[f"{key}/c_n"] = np.stack(finals_c)
    return result


def _bound(name: str, alpha: float | None, beta: float | None) -> Activation:
    func, default_alpha, default_beta = _ONNX_ACTIVATIONS[name]
    a = default_alpha if alpha is None else alpha
    b = default_beta if beta is None else beta
    return lambda v: func(v, a, b).astype(v.dtype)


def _onnx_activations(node: dict[str, Any], family: str, directions: int) -> list[tuple[Activation, ...]]:
    return [tuple(_bound(*spec) for spec in specs) for specs in onnx_activation_specs(node, family, directions)]


def onnx_activation_specs(node: dict[str, Any], family: str, directions: int
                          ) -> list[tuple[tuple[str, float | None, float | None], ...]]:
    """Each direction's activations as (name, alpha, beta), alpha / beta resolved (None where the function takes
    none). activation_alpha / activation_beta are consumed in activation order across the directions, by the
    functions that take them (as onnxruntime reads them)."""
    per_direction = len(_DEFAULT_ACTIVATIONS[family])
    names = list(node.get("activations") or _DEFAULT_ACTIVATIONS[family] * directions)
    alphas = list(node.get("activation_alpha") or [])
    betas = list(node.get("activation_beta") or [])
    specs = []
    for name in names:
        key = str(name).lower()
        if key not in _ONNX_ACTIVATIONS:
            raise InspectError(f"ONNX node {node['node']!r}: activation {name!r} is not one lstm-inspect runs")
        _, default_alpha, default_beta = _ONNX_ACTIVATIONS[key]
        alpha = alphas.pop(0) if default_alpha is not None and alphas else default_alpha
        beta = betas.pop(0) if default_beta is not None and betas else default_beta
        specs.append((key, alpha, beta))
    return [tuple(specs[d * per_direction:(d + 1) * per_direction]) for d in range(directions)]


def onnx_node_config(module: Layer, leaves: list[Layer]) -> dict[str, Any]:
    """One ONNX node's attributes from its direction leaves: each leaf holds its own slice of the activations."""
    return {**module.config, **leaves[0].config, "node": leaves[0].config.get("node", module.key),
            "activations": [a for leaf in leaves for a in leaf.config.get("activations") or []]}


def onnx_nodes(module: Layer) -> dict[str, list[Layer]]:
    """The module's ONNX nodes (one, or a torch.onnx.export chain), each with its direction leaves in order."""
    nodes: dict[str, list[Layer]] = {}
    for leaf in module.children:
        nodes.setdefault(leaf.config.get("node", module.key), []).append(leaf)
    return nodes


def _run_onnx(module: Layer, x: np.ndarray, dtype: Any,
              trace: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """ONNX LSTM/GRU/RNN nodes: per node Y (seq, D, batch, H), Y_h / Y_c (D, batch, H).
    A torch.onnx.export module (several nodes, see readers.onnx_file) chains them as the file does: each node's X is
    the previous Y as (seq, batch, D·H)."""
    family = gates.NATIVE_LAYOUTS[module.children[0].class_name].family
    seq = x.transpose(1, 0, 2)
    result: dict[str, np.ndarray] = {}
    nodes = onnx_nodes(module)
    for name, leaves in nodes.items():
        config = onnx_node_config(module, leaves)
        for flag, why in (("input_forget", "input_forget=1 (coupled gates)"),
                          ("sequence_lens", "a sequence_lens input (per-example lengths)"),
                          # onnxruntime refuses layout=1 for recurrent ops: no oracle to prove a run against
                          ("layout", "layout=1 (batch-major), which onnxruntime does not run either")):
            if config.get(flag):
                raise InspectError(f"ONNX node {name!r} has {why}, which forward does not run", module.key)
        if config.get("initial_state", "zeros") != "zeros":
            raise InspectError(f"ONNX node {name!r} takes initial_h / initial_c that are not constant zeros (a graph "
                               "input or computed); forward starts from zeros and cannot run it", module.key)
        clip = config.get("clip")
        ys, hs, cs = _run_layer([Direction(leaf, _blocks(leaf, dtype), family, activations,
                                           linear_before_reset=bool(config.get("linear_before_reset")),
                                           clip=float(clip) if clip is not None else None,
                                           reverse=leaf.config.get("direction") == "reverse", trace=trace)
                                 for leaf, activations in zip(leaves, _onnx_activations(config, family, len(leaves)))],
                                seq)
        seq = np.concatenate(ys, axis=-1)
        y, y_h = np.stack(ys, axis=1), np.stack(hs)
        key = module.key if len(nodes) == 1 else f"{module.key}/{name.rsplit('/', 1)[-1]}"
        result[f"{key}/Y"], result[f"{key}/Y_h"] = y, y_h
        if family == "LSTM":
            result[f"{key}/Y_c"] = np.stack(cs)
    return result


def _run_tf1(module: Layer, x: np.ndarray, dtype: Any, forget_bias: float,
             trace: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """TF1 cells as dynamic_rnn runs them: ``<cell>/output`` (batch, time, out), final ``<cell>/h`` (and ``/c``);
    a MultiRNNCell feeds each cell's output to the next and also writes ``<multi>/output``."""
    cells = module.children or [module]
    seq = x.transpose(1, 0, 2)
    result: dict[str, np.ndarray] = {}
    acts = tuple(_bound(name, None, None) for name in ("sigmoid", "tanh", "tanh"))
    for cell in cells:
        blocks = _blocks(cell, dtype)
        family = gates.TF1_LAYOUTS[cell.class_name].family
        if family == "LSTM":  # added at run time by the Python cell, stored nowhere
            blocks["b_f"] = blocks.get("b_f", np.zeros(blocks["W_f"].shape[1], dtype=dtype)) + forget_bias
        # bidirectional_dynamic_rnn runs its bw cell on the reversed sequence and reverses the outputs back
        backward = "bw" in module.key.split("/")
        seq, h, c = _run_direction(Direction(cell, blocks, family, acts, linear_before_reset=False, reverse=backward,
                                             trace=trace), seq)
        result[f"{cell.key}/output"] = seq.transpose(1, 0, 2)
        result[f"{cell.key}/h"] = h
        if c is not None:
            result[f"{cell.key}/c"] = c
    if module.children:
        result[f"{module.key}/output"] = seq.transpose(1, 0, 2)
    return result

"""Record what the real frameworks say about every real-world corpus file: tests/realworld/expected/<id>.json.

Never computed by lstm-inspect. For each file listed in sources.json the framework that wrote it (or its nearest
installed successor) loads it and reports:

- ``params``: its parameter count (Keras ``count_params()``, the state dict's / ONNX initializers' sizes);
- ``blocks``: every recurrent gate block, cut from ``get_weights()`` / the state dict / the ONNX W, R, B by the
  framework's own documented gate order (Keras i,f,c,o and z,r,h; torch i,f,g,o and r,z,n; ONNX i,o,f,c and z,r,h),
  with the SHA-256 of its bytes (and of its transpose) so a test can demand bit-for-bit equality;
- ``forward``: the model's output (Keras files that load with their architecture) or each recurrent module's output
  (torch ``nn.LSTM/GRU/RNN``, onnxruntime on the file's own node) on a stored, seeded input.

Files without an architecture (weights-only HDF5 with no JSON beside it) are read with h5py and sliced by Keras's
documented layout: the arrays are the file's, the cutting is the documentation's.

Usage: python tests/realworld/make_expected.py [CORPUS_DIR] [--only ID]
CORPUS_DIR defaults to $LSTM_INSPECT_CORPUS, else <project root>/../shared/realworld.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SEED = 20260312
BATCH, STEPS = 2, 8

KERAS_GATES = {"LSTM": "ifco", "GRU": "zrh", "SimpleRNN": ""}
TORCH_GATES = {"LSTM": "ifco", "GRU": "rzh", "RNN": ""}   # torch's g is Keras's c, n is h
ONNX_GATES = {"LSTM": "iofc", "GRU": "zrh", "RNN": ""}


def corpus_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if os.environ.get("LSTM_INSPECT_CORPUS"):
        return Path(os.environ["LSTM_INSPECT_CORPUS"])
    return ROOT.parent / "shared" / "realworld"


def sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def block(layer: str, gate: str, array: np.ndarray) -> dict:
    array = np.asarray(array)
    entry = {"layer": layer, "gate": gate, "shape": list(array.shape), "dtype": str(array.dtype),
             "sha256": sha(array), "sum": float(array.astype(np.float64).sum()),
             "absmax": float(np.abs(array).max()) if array.size else 0.0}
    if array.ndim == 2:
        entry["sha256_T"] = sha(array.T)
    return entry


def cut(layer: str, prefix: str, array: np.ndarray, gates: str, axis: int) -> list[dict]:
    """Split ``array`` into equal gate slices along ``axis`` (Keras: the last axis; torch / ONNX: the first)."""
    if not gates:
        return [block(layer, prefix, array)]
    parts = np.split(array, len(gates), axis=axis)
    return [block(layer, f"{prefix}_{g}", p) for g, p in zip(gates, parts)]


MAX_VALUES = 4096


def values(array, limit: int | None = MAX_VALUES) -> dict:
    """An array as JSON: shape, dtype and its raw bytes in base64 (exact). Past ``limit`` elements only the first
    ``limit`` of the flattened array are kept (``kept``), with the whole array's float64 sum and largest |value|."""
    array = np.ascontiguousarray(array)
    flat = array.ravel()
    kept = flat if limit is None or flat.size <= limit else flat[:limit]
    return {"shape": list(array.shape), "dtype": str(array.dtype), "kept": int(kept.size),
            "b64": base64.b64encode(kept.astype(array.dtype.newbyteorder("<")).tobytes()).decode(),
            "sum": float(flat.astype(np.float64).sum()), "absmax": float(np.abs(flat).max()) if flat.size else 0.0}


# ---------------------------------------------------------------- Keras

def keras_layer_blocks(layer, prefix: str = "") -> list[dict]:
    """Gate blocks of one Keras layer (and of the layers a wrapper holds), from get_weights()."""
    name = prefix + layer.name
    cls = type(layer).__name__
    if cls == "Bidirectional":
        return (keras_layer_blocks(layer.forward_layer, name + "/")
                + keras_layer_blocks(layer.backward_layer, name + "/"))
    if cls in ("TimeDistributed",):
        return keras_layer_blocks(layer.layer, name + "/")
    family = {"LSTM": "LSTM", "CuDNNLSTM": "LSTM", "ConvLSTM1D": "LSTM", "ConvLSTM2D": "LSTM", "ConvLSTM3D": "LSTM",
              "GRU": "GRU", "CuDNNGRU": "GRU", "SimpleRNN": "SimpleRNN"}.get(cls)
    if family is None:
        out = []
        for sub in getattr(layer, "layers", []) or []:
            out += keras_layer_blocks(sub, name + "/")
        return out
    weights = layer.get_weights()
    gates = KERAS_GATES[family]
    out = cut(name, "W", weights[0], gates, -1) + cut(name, "U", weights[1], gates, -1)
    if len(weights) > 2:
        bias = weights[2]
        if bias.ndim == 2:     # GRU reset_after: row 0 on x·W, row 1 on h·U
            out += cut(name, "b", bias[0], gates, -1) + cut(name, "rb", bias[1], gates, -1)
        else:
            out += cut(name, "b", bias, gates, -1)
    return out


def keras_inputs(model, rng) -> list[np.ndarray]:
    """One seeded input per model input: token ids below the Embedding's vocabulary for an Embedding's input,
    standard normal floats otherwise; free axes take BATCH and STEPS."""
    feeds = []
    embedding_dims = {}
    for layer in model.layers:
        if type(layer).__name__ == "Embedding":
            try:
                node_inputs = layer._inbound_nodes[0].input_tensors if hasattr(layer._inbound_nodes[0], "input_tensors") \
                    else layer.input
            except Exception:
                node_inputs = layer.input
            for tensor in (node_inputs if isinstance(node_inputs, (list, tuple)) else [node_inputs]):
                embedding_dims[id(tensor)] = layer.input_dim
                embedding_dims[getattr(tensor, "name", None)] = layer.input_dim
    for tensor in model.inputs:
        shape = [d if d is not None else (BATCH if i == 0 else STEPS) for i, d in enumerate(tensor.shape)]
        vocab = embedding_dims.get(id(tensor)) or embedding_dims.get(getattr(tensor, "name", None))
        if vocab is None and "int" in str(getattr(tensor, "dtype", "")):
            vocab = 2
        if vocab is not None:
            feeds.append(rng.integers(0, vocab, size=shape).astype(np.int32))
        else:
            feeds.append(rng.standard_normal(shape).astype(np.float32))
    return feeds


def keras1_to_keras2(config: dict) -> dict:
    """A Keras 1 Sequential config as tf-keras can build it (names of arguments only; weights are converted by
    tf-keras's own Keras 1 converter inside load_weights)."""
    layers = config["config"] if isinstance(config["config"], list) else config["config"]["layers"]
    return {"class_name": "Sequential", "config": {"name": "sequential", "layers": [keras1_layer(e) for e in layers]}}


def keras1_layer(entry: dict) -> dict:
    """One Keras 1 layer entry in Keras 2's argument names (a TimeDistributed's wrapped layer too)."""
    cls, c = entry["class_name"], dict(entry["config"])
    new = {"name": c["name"]}
    if "batch_input_shape" in c and c["batch_input_shape"]:
        new["batch_input_shape"] = c["batch_input_shape"]
    elif c.get("input_dim") is not None and cls != "Embedding":
        new["batch_input_shape"] = [None, c.get("input_length"), c["input_dim"]] if cls in ("LSTM", "GRU", "SimpleRNN") \
            else [None, c["input_dim"]]
    if cls in ("LSTM", "GRU", "SimpleRNN"):
        new.update(units=c["output_dim"], activation=c.get("activation", "tanh"),
                   return_sequences=c.get("return_sequences", False), go_backwards=c.get("go_backwards", False))
        if cls != "SimpleRNN":
            new["recurrent_activation"] = c.get("inner_activation", "hard_sigmoid")
        if cls == "LSTM":
            new["unit_forget_bias"] = c.get("forget_bias_init", "one") == "one"
        if cls == "GRU":
            new["reset_after"] = False  # Keras 1's only GRU (tf-keras 2's default is True)
    elif cls == "Dense":
        new.update(units=c["output_dim"], activation=c.get("activation", "linear"), use_bias=c.get("bias", True))
    elif cls == "Embedding":
        new.update(input_dim=c["input_dim"], output_dim=c["output_dim"], mask_zero=c.get("mask_zero", False))
    elif cls == "TimeDistributed":
        new["layer"] = keras1_layer(c["layer"])
    elif cls == "Activation":
        new.update(activation=c["activation"])
    else:
        raise ValueError(f"Keras 1 layer {cls} is not translated by this script")
    return {"class_name": cls, "config": new}


def keras_reference(path: Path, entry: dict, corpus: Path) -> dict:
    """Load with the real Keras: tf-keras for Keras 1/2 files (their writer's line), Keras 3 for Keras 3 files,
    each falling back on the other; weights-only files with their architecture JSON through model_from_json."""
    import h5py
    written_by = entry.get("writer", "")
    first = "keras" if written_by.startswith("keras 3") else "tf_keras"
    order = [first, "tf_keras" if first == "keras" else "keras"]
    errors = []
    architecture = entry.get("architecture")
    keras1 = written_by.startswith("keras 1")
    for package in order:
        try:
            module = __import__(package)
            if keras1:
                with h5py.File(path, "r") as handle:
                    config = json.loads(handle.attrs["model_config"]) if "model_config" in handle.attrs \
                        else json.loads((corpus / architecture).read_text())
                model = module.models.model_from_json(json.dumps(keras1_to_keras2(config)))
                model.load_weights(str(path))      # tf-keras converts the Keras 1 arrays itself
                how = "Keras 1 config translated to Keras 2 names; weights by load_weights (its Keras 1 converter)"
            elif architecture:
                model = module.models.model_from_json((corpus / architecture).read_text())
                model.load_weights(str(path))
                how = f"model_from_json({Path(architecture).name}) + load_weights"
            else:
                model = module.models.load_model(str(path), compile=False)
                how = "load_model(compile=False)"
            return {"model": model, "package": package, "version": module.__version__, "how": how, "errors": errors}
        except Exception as error:  # record and try the other Keras
            errors.append(f"{package}: {type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}")
    return {"model": None, "errors": errors}


def h5_weights_only_reference(path: Path) -> dict:
    """No architecture: each stored recurrent cell goes into a tf-keras LSTM / GRU of its shapes through tf-keras's
    own legacy loader (preprocess_weights_for_loading: it converts CuDNNLSTM / CuDNNGRU and Keras 1 arrays as
    load_weights would), and the blocks are cut from that layer's get_weights()."""
    import h5py
    import tf_keras
    from tf_keras.src.saving.legacy.hdf5_format import preprocess_weights_for_loading

    def text(value):
        return value.decode() if isinstance(value, bytes) else (str(value) if value is not None else None)

    blocks, params = [], 0
    with h5py.File(path, "r") as handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        version, backend = text(root.attrs.get("keras_version")), text(root.attrs.get("backend"))
        for layer_name in [text(n) for n in root.attrs.get("layer_names", [])]:
            group = root[layer_name]
            names = [text(n) for n in group.attrs.get("weight_names", [])]
            arrays = {n: group[n][()] for n in names}
            params += sum(a.size for a in arrays.values())
            by_cell: dict[str, dict] = {}
            for name, value in arrays.items():
                owner, leaf = name.rsplit("/", 1) if "/" in name else ("", name)
                by_cell.setdefault(owner, {})[leaf.split(":")[0]] = value
            for owner, leafs in by_cell.items():
                if "recurrent_kernel" not in leafs:
                    continue
                kernel, recurrent = leafs["kernel"], leafs["recurrent_kernel"]
                units = recurrent.shape[0]
                n = kernel.shape[-1] // units
                bias = leafs.get("bias")
                cudnn = bias is not None and bias.ndim == 1 and bias.size == 2 * n * units
                if n == 4:
                    layer = tf_keras.layers.LSTM(units, use_bias=bias is not None)
                elif n == 3:
                    layer = tf_keras.layers.GRU(units, use_bias=bias is not None,
                                                reset_after=cudnn or (bias is not None and bias.ndim == 2),
                                                recurrent_activation="sigmoid")
                else:
                    layer = tf_keras.layers.SimpleRNN(units, use_bias=bias is not None)
                layer.build((None, None, kernel.shape[0]))
                stored = [kernel, recurrent] + ([bias] if bias is not None else [])
                layer.set_weights(preprocess_weights_for_loading(layer, stored, version, backend))
                label = f"{layer_name}/{owner.split('/')[-1]}" if owner and owner.split("/")[-1] != layer_name \
                    else layer_name
                layer._name = label
                blocks += keras_layer_blocks(layer)
    return {"params": int(params), "blocks": blocks,
            "how": "each stored cell set into a tf-keras layer of its shapes by preprocess_weights_for_loading"}


def keras_file(path: Path, entry: dict, corpus: Path) -> dict:
    ref = keras_reference(path, entry, corpus)
    model = ref.pop("model")
    if model is None:
        import tf_keras
        result = {"reference": f"tf_keras {tf_keras.__version__} layers of the stored shapes (no architecture)",
                  "reference_errors": ref["errors"], "loads": False}
        result.update(h5_weights_only_reference(path))
        return result
    rng = np.random.default_rng(SEED)
    blocks = []
    for layer in model.layers:
        blocks += keras_layer_blocks(layer)
    feeds = keras_inputs(model, rng)
    outputs = model.predict(feeds if len(feeds) > 1 else feeds[0], verbose=0)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    input_names = list(getattr(model, "input_names", None) or [t.name.split(":")[0] for t in model.inputs])
    return {"reference": f"{ref['package']} {ref['version']}", "how": ref["how"], "reference_errors": ref["errors"],
            "loads": True, "params": int(model.count_params()), "blocks": blocks,
            "forward": {"inputs": [{"name": name} | values(x, None) for name, x in zip(input_names, feeds)],
                        "outputs": [values(o) for o in outputs]}}


# ---------------------------------------------------------------- PyTorch

def torch_state_dict(path: Path) -> dict:
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        return dict(load_file(str(path)))
    import torch
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    flat = {}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj.numpy()
        elif isinstance(obj, dict):
            for key, value in obj.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
    walk(loaded, "")
    for wrapper in ("model_state_dict.", "state_dict."):   # the usual checkpoint dict: keep the module names
        if all(k.startswith(wrapper) for k in flat if k.split(".")[0] in {"model_state_dict", "state_dict"}):
            flat = {k[len(wrapper):] if k.startswith(wrapper) else k: v for k, v in flat.items()}
    return flat


def torch_file(path: Path, entry: dict) -> dict:
    import re
    import torch
    state = torch_state_dict(path)
    blocks, modules = [], {}
    pattern = re.compile(r"^(?P<mod>.*?)\.?weight_ih(?P<suffix>_l(?P<layer>\d+)(?P<rev>_reverse)?)?$")
    for key, w_ih in state.items():
        m = pattern.match(key)
        if not m:
            continue
        mod, suffix = m.group("mod"), m.group("suffix") or ""
        dot = "." if mod else ""
        w_hh = state[f"{mod}{dot}weight_hh{suffix}"]
        hidden = w_hh.shape[1]
        n = w_ih.shape[0] // hidden
        family = {4: "LSTM", 3: "GRU", 1: "RNN"}[n]
        gates = TORCH_GATES[family]
        label = f"{mod}{suffix or ''}"
        blocks += cut(label, "W", w_ih, gates, 0) + cut(label, "U", w_hh, gates, 0)
        if f"{mod}{dot}bias_ih{suffix}" in state:
            blocks += cut(label, "b", state[f"{mod}{dot}bias_ih{suffix}"], gates, 0)
            blocks += cut(label, "rb", state[f"{mod}{dot}bias_hh{suffix}"], gates, 0)
        if suffix:
            info = modules.setdefault(mod, {"family": family, "layers": 0, "reverse": False, "input": None,
                                             "hidden": hidden, "bias": f"{mod}{dot}bias_ih{suffix}" in state,
                                             "proj": f"{mod}{dot}weight_hr_l0" in state})
            info["layers"] = max(info["layers"], int(m.group("layer")) + 1)
            info["reverse"] |= bool(m.group("rev"))
            if m.group("layer") == "0" and not m.group("rev"):
                info["input"] = w_ih.shape[1]
    forward = {}
    rng = np.random.default_rng(SEED)
    for mod, info in modules.items():
        cls = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}[info["family"]]
        kwargs = dict(num_layers=info["layers"], bidirectional=info["reverse"], batch_first=True, bias=info["bias"])
        if info["proj"]:
            kwargs["proj_size"] = state[f"{mod}.weight_hr_l0"].shape[0]
        module = cls(info["input"], info["hidden"], **kwargs).double()
        prefix = f"{mod}." if mod else ""
        module.load_state_dict({k[len(prefix):]: torch.from_numpy(np.asarray(v, dtype=np.float64))
                                for k, v in state.items() if k.startswith(prefix) and "." not in k[len(prefix):]})
        x = rng.standard_normal((BATCH, STEPS, info["input"])).astype(np.float32)
        with torch.no_grad():
            out, states = module(torch.from_numpy(x.astype(np.float64)))
        states = states if isinstance(states, tuple) else (states,)
        forward[mod] = {"input": values(x, None), "output": values(out.numpy()),
                        "h_n": values(states[0].numpy())} | ({"c_n": values(states[1].numpy())} if len(states) > 1 else {})
    params = int(sum(np.asarray(v).size for v in state.values()))
    return {"reference": f"torch {torch.__version__}" if path.suffix != ".safetensors" else
            f"safetensors (arrays) + torch {torch.__version__} (modules)",
            "loads": True, "params": params, "blocks": blocks,
            "module_forward": forward}


# ---------------------------------------------------------------- ONNX

def onnx_graphs(graph):
    """The graph and every subgraph (If / Loop / Scan bodies), outermost first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from onnx_graphs(sub)


def onnx_file(path: Path, entry: dict) -> dict:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    model = onnx.load(str(path))
    inits, stored = {}, set()
    recurrent = []
    for graph in onnx_graphs(model.graph):
        for init in graph.initializer:
            inits[init.name] = numpy_helper.to_array(init)
            stored.add(init.name)
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        inits[node.output[0]] = numpy_helper.to_array(attr.t)
            if node.op_type in ONNX_GATES:
                recurrent.append((node, graph is model.graph))
    # W / R / B that the graph computes (older torch.onnx.export): onnxruntime itself gives their values, asked
    # for as extra graph outputs of the file's own graph on a seeded feed (top-level nodes only).
    computed = sorted({name for n, top in recurrent if top for name in n.input[1:4] if name and name not in inits})
    feeds = onnx_feeds(model, entry, np.random.default_rng(SEED))
    if computed:
        probe = onnx.ModelProto()
        probe.CopyFrom(model)
        for name in computed:
            probe.graph.output.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
        inits.update(dict(zip(computed, session.run(computed, feeds))))
    # ... and inside If / Loop bodies, where onnxruntime cannot be asked for an inner value: the nodes computing it
    # from constants, copied into a graph of their own that onnxruntime runs (never lstm-inspect's folding).
    inner = sorted({name for n, top in recurrent if not top for name in n.input[1:4] if name and name not in inits})
    if inner:
        found = onnx_constant_subgraph(model, inner, inits)
        computed += sorted(found)
        inits.update(found)
    blocks, forward, unresolved = [], {}, []
    rng = np.random.default_rng(SEED)
    for node, _top in recurrent:
        if any(name and name not in inits for name in node.input[1:4]):
            unresolved.append(node.name)
            continue
        gates = ONNX_GATES[node.op_type]
        W, R = inits[node.input[1]], inits[node.input[2]]
        B = inits.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        hidden = R.shape[-1]
        for d in range(W.shape[0]):
            label = f"{node.name or node.output[0]}/{'reverse' if d else 'forward'}"
            blocks += cut(label, "W", W[d], gates, 0) + cut(label, "U", R[d], gates, 0)
            if B is not None:
                half = B.shape[-1] // 2
                blocks += cut(label, "b", B[d][:half], gates, 0) + cut(label, "rb", B[d][half:], gates, 0)
        forward[node.name or node.output[0]] = onnx_node_forward(node, W, R, B, hidden, rng)
    outputs = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    params = int(sum(np.asarray(inits[k]).size for k in stored))
    return {"reference": f"onnx {onnx.__version__} + onnxruntime {ort.__version__}", "loads": True,
            "params": params, "blocks": blocks, "computed_weights": computed, "unresolved_nodes": unresolved,
            "recurrent_nodes": [n.name for n, _ in recurrent],
            "producer": f"{model.producer_name} {model.producer_version}".strip(),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "model_outputs": {"feeds": {k: values(v, None) for k, v in feeds.items()},
                              "outputs": [values(o) for o in outputs]},
            "module_forward": forward}


def onnx_constant_subgraph(model, names, inits: dict) -> dict:
    """The values of `names` (one name or a list) computed by onnxruntime from the nodes that produce them out of
    initializers and Constants alone, wherever in the model's graphs those nodes are; {} when they depend on
    anything else (a graph input, a control-flow node)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    names = [names] if isinstance(names, str) else list(names)
    producers = {o: n for g in onnx_graphs(model.graph) for n in g.node for o in n.output}
    nodes, needed, pending = {}, set(), list(names)
    while pending:
        name = pending.pop()
        if name in inits or name in nodes:
            needed.add(name) if name in inits else None
            continue
        node = producers.get(name)
        if node is None or any(a.HasField("g") or len(a.graphs) for a in node.attribute):
            return {}
        for output in node.output:
            nodes[output] = node
        pending.extend(i for i in node.input if i)
    ordered, seen = [], set()
    for node in (n for g in onnx_graphs(model.graph) for n in g.node):  # the file's own (topological) order
        if any(o in nodes for o in node.output) and id(node) not in seen:
            seen.add(id(node))
            ordered.append(node)
    initializers = [numpy_helper.from_array(np.asarray(inits[n]), n) for n in sorted(needed)]
    graph = helper.make_graph(ordered, "constants", [], [helper.make_empty_tensor_value_info(n) for n in names],
                              initializers)
    probe = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip(names, session.run(names, {})))


def onnx_feeds(model, entry: dict, rng) -> dict:
    """A seeded feed for every graph input: the dtype the graph declares, BATCH / STEPS on free axes, small
    non-negative integers for integer inputs; ``onnx_inputs`` in sources.json fixes a value or a shape."""
    from onnx import helper
    init_names = {i.name for i in model.graph.initializer}
    feeds = {}
    overrides = entry.get("onnx_inputs", {})
    for value in model.graph.input:
        if value.name in init_names:
            continue
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        spec = overrides.get(value.name, {})
        if "value" in spec:
            feeds[value.name] = np.asarray(spec["value"], dtype=dtype)
            continue
        shape = spec.get("shape") or [d.dim_value if d.dim_value else (BATCH if i == 0 else STEPS)
                                      for i, d in enumerate(tensor.shape.dim)]
        if dtype.kind in "iub":
            feeds[value.name] = rng.integers(0, 2, size=shape).astype(dtype)
        else:
            feeds[value.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def onnx_node_forward(node, W, R, B, hidden, rng) -> dict:
    """onnxruntime running this node alone (its attributes, W, R, B) on a seeded (time, batch, input) feed."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
    x = rng.standard_normal((STEPS, BATCH, W.shape[-1])).astype(np.float32)
    inputs = ["X", "W", "R"] + (["B"] if B is not None else [])
    outputs = ["Y", "Y_h"] + (["Y_c"] if node.op_type == "LSTM" else [])
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    attrs.pop("layout", None)
    single = helper.make_node(node.op_type, inputs, outputs, **attrs)
    inits = [numpy_helper.from_array(np.asarray(W, np.float32), "W"), numpy_helper.from_array(np.asarray(R, np.float32), "R")]
    if B is not None:
        inits.append(numpy_helper.from_array(np.asarray(B, np.float32), "B"))
    graph = helper.make_graph([single], "one_node", [helper.make_tensor_value_info("X", onnx.TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info(o, onnx.TensorProto.FLOAT, None) for o in outputs], inits)
    one = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    got = ort.InferenceSession(one.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"X": x})
    return {"input_tbf": values(x, None), "attributes": {k: (v.decode() if isinstance(v, bytes) else
            [s.decode() if isinstance(s, bytes) else s for s in v] if isinstance(v, list) else v) for k, v in attrs.items()},
            "outputs": {name: values(arr) for name, arr in zip(outputs, got)}}


# ---------------------------------------------------------------- driver

def reference(path: Path, entry: dict, corpus: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix in (".h5", ".hdf5", ".keras"):
        return keras_file(path, entry, corpus)
    if suffix in (".pt", ".pth", ".safetensors"):
        return torch_file(path, entry)
    if suffix == ".onnx":
        return onnx_file(path, entry)
    raise ValueError(f"no reference for {suffix}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?")
    parser.add_argument("--only", action="append", default=[])
    args = parser.parse_args(argv)
    corpus = corpus_dir(args.corpus)
    sources = json.loads((HERE / "sources.json").read_text())
    out_dir = HERE / "expected"
    out_dir.mkdir(exist_ok=True)
    failures = 0
    for entry in sources["files"]:
        if args.only and entry["id"] not in args.only:
            continue
        path = corpus / entry["file"]
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            print(f"{entry['id']}: the corpus file is not the one listed (sha256 differs)", file=sys.stderr)
            failures += 1
            continue
        record = {"id": entry["id"], "file": entry["file"], "sha256": entry["sha256"], "expect": entry["expect"]}
        if entry["expect"] == "reads":
            try:
                record.update(reference(path, entry, corpus))
            except Exception:
                record.update({"loads": False, "reference_errors": [traceback.format_exc(limit=2).splitlines()[-1]]})
        (out_dir / f"{entry['id']}.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        print(f"{entry['id']}: {record.get('reference', '-')} params={record.get('params')} "
              f"blocks={len(record.get('blocks', []))} loads={record.get('loads')} {record.get('reference_errors', '')}")
    write_sources_md(sources)
    return 1 if failures else 0


def write_sources_md(sources: dict) -> None:
    """SOURCES.md: one row per file, from sources.json and the reference each expected file records."""
    lines = ["# Sources of the real-world corpus", "",
             "Generated by `make_expected.py` from `sources.json` and `expected/`. The files are not in this "
             "repository (README.md says where they live). Each is the blob at the given commit and path.", "",
             "| id | repository | path @ commit | licence | what the model is | written by | reference (make_expected.py) |",
             "|---|---|---|---|---|---|---|"]
    for entry in sources["files"]:
        record_path = HERE / "expected" / f"{entry['id']}.json"
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
        reference = record.get("reference", "—" if entry["expect"] == "reads" else "none: broken as published")
        arch = f" + `{entry['architecture_path']}`" if entry.get("architecture_path") else ""
        gaps = "; ".join(f"{k}: {v}" for k, v in entry.get("gaps", {}).items())
        what = entry["what"] + (f" — known gap ({gaps})" if gaps else "")
        lines.append(f"| `{entry['id']}` | {entry['repo']} | `{entry['path']}`{arch} @ `{entry['commit'][:12]}` | "
                     f"{entry['licence']} | {what} | {entry['writer']} | {reference} |")
    (HERE / "SOURCES.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())

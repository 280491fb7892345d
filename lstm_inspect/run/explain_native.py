"""`explain` for PyTorch, ONNX and TF1 files: a torch module / ONNX node / TF1 cell in its framework's own
equations (the ones `native_forward` runs), with this file's slices and activations."""
from __future__ import annotations

from .. import gates
from ..analysis import notes
from ..model import Layer, ModelFile
from . import native_forward
from .explanation import LayerExplanation, parent_of, shape_text


def explain_native_module(module: Layer) -> LayerExplanation:
    """A torch module / ONNX node (or torch.onnx.export node chain) / TF1 MultiRNNCell: how its parts chain."""
    entry = LayerExplanation(module.key, module.class_name, module.class_name)
    leaves = module.children
    if module.class_name == "MultiRNNCell":
        entry.summary = f"TF1 MultiRNNCell of {len(leaves)} cells"
        entry.equations.append("at every step t: " + " → ".join(["x_t"] + [c.key for c in leaves])
                               + " (each cell's output is the input of the next; the output is the last cell's)")
        return entry
    layers = sorted({leaf.config.get("layer", 0) for leaf in leaves})
    reverse = any(leaf.config.get("direction") == "reverse" for leaf in leaves)
    entry.summary = (f"{module.class_name}: {len(layers)} layer{'s' if len(layers) > 1 else ''}"
                     + (", bidirectional" if reverse and len(leaves) > len(layers) else ", reverse" if reverse else ""))
    for k in layers:
        names = [leaf.key for leaf in leaves if leaf.config.get("layer", 0) == k]
        source = "x" if k == layers[0] else f"y_{k - 1}"
        entry.equations.append(f"y_{k} = " + (f"concat([{', '.join(f'{n}({source})' for n in names)}], axis=-1)"
                                              if len(names) > 1 else f"{names[0]}({source})"))
    entry.equations.append(f"output = y_{layers[-1]} at every step; the final states h_n"
                           + (", c_n" if "LSTM" in module.class_name else "")
                           + " stack every layer's and direction's last h (c), in the order above")
    if reverse:
        entry.pitfalls.append("A reverse direction reads the sequence last step first, and its outputs are put back "
                              "in input time order before the concat.")
    if len(layers) > 1:
        entry.pitfalls.append("Layer k > 0 takes the previous layer's outputs (both directions concatenated) as its "
                              "input, so its W blocks have that many rows.")
    return entry


#: The default activations (gates, candidate, cell output) of each framework's recurrent layers.
_NATIVE_ACTIVATIONS = {"LSTM": ("sigmoid", "tanh", "tanh"), "GRU": ("sigmoid", "tanh"), "SimpleRNN": ("tanh",)}


def _native_activations(layer: Layer, model: ModelFile, family: str) -> list[str]:
    """The activations of one layer-direction, in the order gates, candidate, cell output: fixed for torch and TF1,
    the node's own for ONNX, with the alpha / beta they take (``hardsigmoid[α=0.3, β=0.4]``)."""
    if not layer.class_name.startswith("Onnx"):
        return list(_NATIVE_ACTIVATIONS[family])
    module = parent_of(model, layer)
    leaves = native_forward.onnx_nodes(module)[layer.config.get("node", module.key)] if module else [layer]
    specs = native_forward.onnx_activation_specs(native_forward.onnx_node_config(module or layer, leaves),
                                                 family, len(leaves))[leaves.index(layer)]
    return [name + (f"[{', '.join(f'{g}={v:g}' for g, v in (('α', alpha), ('β', beta)) if v is not None)}]"
                    if alpha is not None or beta is not None else "") for name, alpha, beta in specs]


def explain_native_recurrent(layer: Layer, model: ModelFile) -> LayerExplanation:
    """One layer-direction of a torch module or ONNX node, or a TF1 cell, in its framework's own equations (the ones
    `native_forward` runs), with this file's slices."""
    cls, cfg = layer.class_name, layer.config
    split = gates.split(layer)
    entry = LayerExplanation(layer.key, cls, cls)
    if split is None or not split.blocks:
        entry.summary, entry.supported = f"{cls} (weights not splittable)", False
        entry.pitfalls += split.warnings if split is not None else []
        return entry
    native = split.native
    fam, u = split.layout.family, split.units
    src = {b.key: b.source for b in split.blocks}
    acts = _native_activations(layer, model, fam)
    rec, act, out_act = acts[0], acts[1 % len(acts)], acts[-1]  # SimpleRNN: its one activation for all three
    clip = cfg.get("clip")
    tf1 = native is not None and native.framework == "TF1"

    def pre(gate: str, extra: str = "") -> str:
        suffix = f"_{gate}" if gate else ""
        # the order the framework adds them in: input term and its bias, recurrent term and its bias
        parts = [f"x_t · {src['W' + suffix]}", src.get("b" + suffix), f"h_(t-1) · {src['U' + suffix]}",
                 src.get("rb" + suffix)]
        parts = [part for part in parts if part]
        if "p" + suffix in src:
            parts.append(f"{src['p' + suffix]} ⊙ {'c_t' if gate == 'o' else 'c_(t-1)'}")
        if extra:
            parts.append(extra)
        joined = " + ".join(parts)
        return f"clip({joined}, ±{clip})" if clip is not None else joined

    where = native.framework if native is not None else ""
    entry.summary = f"{where} {fam}, {u} units, input {split.input_dim}" + (
        f", direction {cfg['direction']}" if cfg.get("direction") == "reverse" else "")
    if fam == "LSTM":
        forget = "forget_bias" if tf1 else ""
        entry.equations += [f"i_t = {rec}({pre('i')})", f"f_t = {rec}({pre('f', forget)})",
                            f"c̃_t = {act}({pre('c')})", f"o_t = {rec}({pre('o')})",
                            "c_t = f_t ⊙ c_(t-1) + i_t ⊙ c̃_t",
                            f"h_t = (o_t ⊙ {out_act}(c_t)) · {src['proj']}" if "proj" in src
                            else f"h_t = o_t ⊙ {out_act}(c_t)"]
    elif fam == "GRU":
        entry.equations += [f"z_t = {rec}({pre('z')})", f"r_t = {rec}({pre('r')})"]
        x_h = f"x_t · {src['W_h']}" + (f" + {src['b_h']}" if "b_h" in src else "")
        rb_h = f" + {src['rb_h']}" if "rb_h" in src else ""
        inner = (f"{x_h} + r_t ⊙ (h_(t-1) · {src['U_h']}{rb_h})" if split.reset_after
                 else f"{x_h} + (r_t ⊙ h_(t-1)) · {src['U_h']}{rb_h}")
        entry.equations += [f"h̃_t = {act}({f'clip({inner}, ±{clip})' if clip is not None else inner})",
                            "h_t = z_t ⊙ h_(t-1) + (1 - z_t) ⊙ h̃_t"]
    else:
        entry.equations.append(f"h_t = {act}({pre('')})")
    entry.equations.append("h_0 = 0" + (", c_0 = 0" if fam == "LSTM" else ""))
    reverse = cfg.get("direction") == "reverse" or (tf1 and "bw" in layer.key.split("/"))
    entry.equations.append("runs t = T … 1 (last step first); outputs are kept in input time order" if reverse
                           else "runs t = 1 … T")
    h_units = split.block("proj").shape[1] if "proj" in src else u
    entry.shapes += [("x_t", shape_text("batch", split.input_dim)), ("h_(t-1), h_t", shape_text("batch", h_units))]
    first = split.layout.gates[0]
    for block in split.blocks:
        if block.gate in ("", first) or block.kind == "proj":
            entry.shapes.append((block.source + (" (one gate; the others alike)" if block.gate else ""),
                                 shape_text(*block.shape)))
    if tf1 and fam == "LSTM":
        entry.equations.append("forget_bias: the cell's constructor argument (TensorFlow's default 1.0), stored "
                               "nowhere")
    entry.pitfalls += notes.recurrent_notes(split, model, read_values=False)
    if clip is not None:
        entry.pitfalls.append(f"clip={clip}: every pre-activation is clipped to [-{clip}, {clip}] before its "
                              "activation (no Keras or torch layer does this).")
    return entry

"""The equations each layer computes, written with the file's own slices, shapes and activations.

`explain(model)` returns plain data (`LayerExplanation` records); `to_markdown` turns it into Markdown for an issue
or a notebook; `render.forward_views.render_explain` draws it with rich. The equations are the ones `forward` runs.
"""
from __future__ import annotations

from typing import Any

from .. import gates
from ..gates.activations import activation_name, hard_sigmoid_formula
from ..model import Layer, ModelFile, select_layers
from . import native_forward
from .explain_native import explain_native_module, explain_native_recurrent
from .explanation import Explanation, LayerExplanation, parent_of, shape_text
from .forward import IDENTITY_CLASSES, supported_classes
from .recurrent import CELL_CLASSES, CONV_LSTM_CLASSES, ConvSpec


def explain(model: ModelFile, layers: tuple[str, ...] | list[str] = ()) -> Explanation:
    result = Explanation(model.path, model.keras_version, model.keras_major, warnings=list(model.warnings))
    if native_forward.handles(model):  # torch / ONNX / TF1: what the run assumes because the file does not say
        result.warnings += native_forward.stated_defaults(model, (), None, None)
    elif not model.has_config:
        result.warnings.append("weights-only file: activations and options are not recorded, so the equations "
                               "assume Keras's defaults (tanh, sigmoid, no go_backwards)")
    for layer in select_layers(model, layers):
        if layer.class_name == "InputLayer":
            continue
        result.layers.append(explain_layer(layer, model, parent_of(model, layer)))
    return result


def explain_layer(layer: Layer, model: ModelFile, parent: Layer | None = None) -> LayerExplanation:
    cls = layer.class_name
    known = set(supported_classes())
    if cls in CELL_CLASSES:
        return _recurrent(layer, model, parent, _sequence_owner(model, layer, parent))
    if cls in ("RNN", "StackedRNNCells"):
        return _cell_wrapper(layer)
    if cls in gates.NATIVE_LAYOUTS or cls in gates.TF1_LAYOUTS:
        return explain_native_recurrent(layer, model)
    if layer.children and all(c.class_name in gates.NATIVE_LAYOUTS or c.class_name in gates.TF1_LAYOUTS
                              for c in layer.children):
        return explain_native_module(layer)
    entry = LayerExplanation(layer.key, cls, cls, supported=cls in known and not layer.needs_code)
    cfg = layer.config
    if layer.needs_code:
        entry.pitfalls.append(f"{layer.needs_code}: lstm-inspect cannot run it")
    if cls == "Dense":
        kernel, bias = layer.weight("kernel"), layer.weight("bias")
        act = activation_name(cfg.get("activation", "linear"))
        n_in, n_out = (kernel.shape if kernel is not None and len(kernel.shape) == 2 else ("in", cfg.get("units")))
        entry.summary = f"Dense, {n_out} units, input {n_in}"
        has_bias = bias is not None and cfg.get("use_bias", True)
        core = "x · kernel" + (" + bias" if has_bias else "")
        entry.equations.append(f"y = {core}" if act == "linear" else f"y = {act}({core})")
        entry.shapes += [("x", shape_text("batch", "…", n_in)), ("kernel", shape_text(n_in, n_out))]
        if has_bias:
            entry.shapes.append(("bias", shape_text(n_out)))
        entry.shapes.append(("y", shape_text("batch", "…", n_out)))
        entry.pitfalls.append("kernel is (in, out): y = x · kernel; PyTorch's nn.Linear stores weight = kernel.T.")
        if act not in ("linear", "softmax", "sigmoid"):
            entry.pitfalls.append(f"activation={act} is part of the layer: apply it after the matmul.")
        entry.pitfalls.append("On a 3-D input the matmul applies to the last axis at every time step.")
    elif cls == "Bidirectional":
        mode = cfg.get("merge_mode", "concat")
        merged = {"concat": "y = concat([y_fw, y_bw], axis=-1)", "sum": "y = y_fw + y_bw",
                  "ave": "y = (y_fw + y_bw) / 2", "mul": "y = y_fw ⊙ y_bw",
                  None: "y = [y_fw, y_bw] (two outputs, not merged)"}.get(mode, f"merge_mode={mode!r}")
        names = [c.key for c in layer.children]
        entry.summary = f"Bidirectional, merge_mode={mode}"
        if len(names) == 2:
            entry.equations.append(f"y_fw = {names[0]}(x)   (reads the sequence first step first)")
            seqs = bool(layer.children[0].config.get("return_sequences"))
            entry.equations.append(f"y_bw = {names[1]}(x)   (go_backwards: reads the last step first)"
                                   + ("; then y_bw is reversed along time so y_bw[t] lines up with y_fw[t]"
                                      if seqs else ""))
        entry.equations.append(merged)
        entry.pitfalls.append(f"merge_mode={mode}: " + ("the forward half comes first along the last axis."
                                                         if mode == "concat" else "both directions are combined "
                                                         "elementwise, so neither can be read back from y."
                                                         if mode in ("sum", "ave", "mul") else
                                                         "the two directions are separate outputs."))
        entry.pitfalls.append("The backward layer has its own weights (stored after the forward ones); with a mask, "
                              "Keras zeroes the output at masked steps (zero_output_for_mask) when returning "
                              "sequences.")
    elif cls == "TimeDistributed":
        inner = layer.children[0].key if layer.children else "layer"
        entry.summary = "TimeDistributed"
        entry.equations.append(f"y[:, t] = {inner}(x[:, t]) for every step t (batch and time folded together)")
    elif cls == "Embedding":
        table = layer.weight("embeddings")
        shape = table.shape if table is not None else (cfg.get("input_dim"), cfg.get("output_dim"))
        entry.summary = f"Embedding, {shape[0]} entries of {shape[-1]}"
        entry.equations.append("y[b, t] = embeddings[x[b, t]]")
        entry.shapes += [("x", "(batch, time) integers"), ("embeddings", shape_text(*shape)),
                         ("y", shape_text("batch", "time", shape[-1]))]
        if cfg.get("mask_zero"):
            entry.pitfalls.append("mask_zero=True: index 0 is padding; the steps where x == 0 are masked for the "
                                  "recurrent layers downstream (they keep the previous state).")
    elif cls == "Masking":
        value = cfg.get("mask_value", 0.0)
        entry.summary = f"Masking, mask_value={value}"
        entry.equations += [f"mask[b, t] = any(x[b, t, :] != {value})", "y = x ⊙ mask[..., None]"]
        entry.pitfalls.append("Downstream recurrent layers skip masked steps: the states are carried over unchanged "
                              "and the output repeats the previous step's (zeros inside a Bidirectional "
                              "returning sequences). A re-implementation that runs every step differs exactly there.")
    elif cls == "BatchNormalization":
        eps = cfg.get("epsilon", 1e-3)
        entry.summary = "BatchNormalization (inference: moving statistics)"
        terms = "(x - moving_mean) / sqrt(moving_variance + " + str(eps) + ")"
        entry.equations.append("y = " + ("gamma ⊙ " if layer.weight("gamma") else "") + terms
                               + (" + beta" if layer.weight("beta") else ""))
        entry.pitfalls.append(f"epsilon={eps} (Keras's default 1e-3, PyTorch's 1e-5); the batch's own statistics "
                              "are only used in training.")
    elif cls == "LayerNormalization":
        eps = cfg.get("epsilon", 1e-3)
        entry.summary = f"LayerNormalization over axis {cfg.get('axis', -1)}"
        if cfg.get("rms_scaling"):
            entry.equations.append(f"y = gamma ⊙ x / sqrt(mean(x²) + {eps})")
        else:
            entry.equations.append(f"y = gamma ⊙ (x - mean(x)) / sqrt(var(x) + {eps}) + beta")
        entry.pitfalls.append(f"epsilon={eps} (Keras's default 1e-3, PyTorch's 1e-5).")
    elif cls == "Conv1D":
        kernel = layer.weight("kernel")
        k = kernel.shape if kernel is not None else ("k", "in", "filters")
        entry.summary = f"Conv1D, {k[-1]} filters of width {k[0]}, padding={cfg.get('padding', 'valid')}"
        entry.equations.append("y[:, t] = " + ("" if activation_name(cfg.get("activation")) == "linear" else
                                             activation_name(cfg.get("activation")) + "(")
                               + f"Σ_j x[:, t·{_first(cfg.get('strides', 1))} + j·{_first(cfg.get('dilation_rate', 1))}]"
                               " · kernel[j]" + (" + bias" if layer.weight("bias") else "")
                               + ("" if activation_name(cfg.get("activation")) == "linear" else ")"))
        entry.shapes.append(("kernel", shape_text(*k)))
        entry.pitfalls.append("Keras's kernel is (width, in, filters); PyTorch's Conv1d weight is (filters, in, width)"
                              " and computes a cross-correlation the same way.")
    elif cls in ("MaxPooling1D", "AveragePooling1D", "MaxPool1D", "AvgPool1D"):
        entry.summary = f"{cls}, pool {cfg.get('pool_size')}, strides {cfg.get('strides')}, padding {cfg.get('padding')}"
        entry.equations.append(f"y[:, t] = {'max' if 'Max' in cls else 'mean'}(x[:, t·s : t·s + pool])")
    elif cls == "Activation":
        act = activation_name(cfg.get("activation"))
        entry.summary = f"Activation {act}"
        entry.equations.append(f"y = {act}(x)")
        entry.pitfalls += _activation_pitfalls(act, model)
    elif cls in IDENTITY_CLASSES:
        entry.summary = f"{cls} (identity at inference)"
        entry.equations.append("y = x")
    elif cls in ("Flatten", "Reshape", "Permute", "RepeatVector"):
        entry.equations.append({"Flatten": "y = x.reshape(batch, -1)",
                                "Reshape": f"y = x.reshape(batch, {cfg.get('target_shape')})",
                                "Permute": f"y = x.transpose(0, {cfg.get('dims')})",
                                "RepeatVector": f"y[:, t] = x for t in 0..{cfg.get('n')}"}[cls])
    elif cls in ("Concatenate", "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"):
        entry.equations.append({"Concatenate": f"y = concat(inputs, axis={cfg.get('axis', -1)})",
                                "Add": "y = Σ inputs", "Subtract": "y = x0 - x1", "Multiply": "y = Π inputs",
                                "Average": "y = mean(inputs)", "Maximum": "y = max(inputs)",
                                "Minimum": "y = min(inputs)"}[cls])
    elif layer.children:
        entry.summary = f"{cls} with {len(layer.children)} layers"
        entry.equations.append("runs its layers: " + " → ".join(c.name for c in layer.children
                                                                 if c.class_name != "InputLayer"))
    if not entry.supported:
        entry.pitfalls.append("lstm-inspect's forward pass cannot run this layer.")
    return entry


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _activation_pitfalls(name: str, model: ModelFile) -> list[str]:
    if name == "hard_sigmoid":
        return [f"hard_sigmoid in this file (Keras {model.keras_version or '?'}) is "
                f"{hard_sigmoid_formula(model.keras_major)}; Keras 1/2 and tf-keras use clip(0.2·x + 0.5, 0, 1), "
                "Keras 3 clip(x/6 + 0.5, 0, 1) — PyTorch's Hardsigmoid is the Keras 3 one."]
    if name == "gelu":
        return ["gelu here is the exact erf form (approximate=False), not the tanh approximation."]
    return []


def _sequence_owner(model: ModelFile, layer: Layer, parent: Layer | None) -> Layer:
    """The layer whose config holds the sequence options (return_sequences, go_backwards, ...): the layer itself,
    or the RNN around a cell (through a StackedRNNCells)."""
    if parent is not None and parent.class_name == "StackedRNNCells":
        parent = parent_of(model, parent)
    return parent if parent is not None and parent.class_name == "RNN" else layer


def _cell_wrapper(layer: Layer) -> LayerExplanation:
    cells = layer.children[0].children if layer.children and layer.children[0].class_name == "StackedRNNCells" \
        else layer.children
    names = [c.key for c in cells]
    entry = LayerExplanation(layer.key, layer.class_name, layer.class_name)
    if layer.class_name == "StackedRNNCells":
        entry.summary = f"StackedRNNCells of {len(cells)} cells (run by the RNN around it)"
        entry.equations.append("at every step t: " + " → ".join(["x_t"] + names) + " (each cell's new h_t is the "
                               "input of the cell above at the same step)")
        entry.pitfalls.append("The states are every cell's states in order, bottom cell first: [h, c] of "
                              f"{names[0]}, then of the next cell, ...")
        return entry
    cfg = layer.config
    inner = layer.children[0].class_name if layer.children else "?"
    entry.summary = f"RNN({inner})"
    top = names[-1] if names else "cell"
    entry.equations.append(f"runs {' then '.join(names) or 'its cell'} over the time steps (equations under "
                           f"{'each cell' if len(names) > 1 else names[0] if names else 'the cell'})")
    entry.equations.append(f"output = [h_1 … h_T] of {top} (return_sequences)" if cfg.get("return_sequences")
                           else f"output = h_T of {top} (the last step)")
    if cfg.get("return_state"):
        entry.equations.append("also returns the final states of every cell, bottom cell first")
    if cfg.get("go_backwards"):
        entry.pitfalls.append("go_backwards=True: step 1 reads x_T; with return_sequences the output is in that "
                              "reversed order.")
    return entry


def _recurrent(layer: Layer, model: ModelFile, parent: Layer | None, owner: Layer | None = None) -> LayerExplanation:
    """An LSTM / GRU / SimpleRNN — or a layer computing the same: its cell (LSTMCell, ...), its legacy cuDNN twin,
    a ConvLSTM (convolutions instead of matmuls). `owner` holds the sequence options (the RNN around a cell)."""
    cls, cfg = layer.class_name, layer.config
    owner = owner or layer
    seq_cfg = owner.config
    split = gates.split(layer)
    entry = LayerExplanation(layer.key, cls, cls)
    if split is None or not split.blocks:
        entry.summary = f"{cls} (weights not splittable)"
        entry.supported = False
        if split is not None:
            entry.pitfalls += split.warnings
        return entry
    u, n_in = split.units, split.input_dim
    fam = split.layout.family
    conv = cls in CONV_LSTM_CLASSES
    cudnn = cls in gates.CUDNN_CLASSES
    act = activation_name(cfg.get("activation", "tanh"))
    rec = activation_name(cfg.get("recurrent_activation", "sigmoid"))
    src = {b.key: b.source.replace(" (cuDNN memory order)", "") for b in split.blocks}
    has_bias = any(b.kind == "b" for b in split.blocks)
    extras = []
    if fam == "GRU":
        extras.append(f"reset_after={split.reset_after}")
    kernel = layer.weight("kernel")
    if conv and kernel is not None:
        n_in = kernel.shape[-2]
        extras.insert(0, "kernel " + "×".join(str(k) for k in kernel.shape[:-2]))
    what = f"{u} filters" if conv else f"{u} units"
    entry.summary = f"{cls}, {what}, input {n_in}, activation={act}" + (
        f", recurrent_activation={rec}" if fam != "SimpleRNN" else "") + "".join(", " + e for e in extras)
    # `*` is a convolution (ConvLSTM), `·` a matmul
    op = "*" if conv else "·"

    def term(gate: str) -> str:
        suffix = f"_{gate}" if gate else ""
        parts = [f"x_t {op} {src['W' + suffix]}", f"h_(t-1) {op} {src['U' + suffix]}"]
        if has_bias:
            parts.append(src["b" + suffix])
        if "p" + suffix in src:  # a peephole: i and f look at the old cell state, o at the new one
            parts.append(f"{src['p' + suffix]} ⊙ {'c_t' if gate == 'o' else 'c_(t-1)'}")
        return " + ".join(parts)

    if fam == "LSTM":
        entry.equations += [
            f"i_t = {rec}({term('i')})",
            f"f_t = {rec}({term('f')})",
            f"c̃_t = {act}({term('c')})",
            f"o_t = {rec}({term('o')})",
            "c_t = f_t ⊙ c_(t-1) + i_t ⊙ c̃_t",
            f"h_t = o_t ⊙ {act}(c_t)",
        ]
    elif fam == "GRU" and split.reset_after:
        def xpart(g: str) -> str:
            return f"x_t {op} {src['W_' + g]}" + (f" + {src['b_' + g]}" if has_bias else "")

        def hpart(g: str) -> str:
            return f"h_(t-1) {op} {src['U_' + g]}" + (f" + {src['rb_' + g]}" if has_bias else "")
        entry.equations += [
            f"z_t = {rec}({xpart('z')} + {hpart('z')})",
            f"r_t = {rec}({xpart('r')} + {hpart('r')})",
            f"h̃_t = {act}({xpart('h')} + r_t ⊙ ({hpart('h')}))",
            "h_t = z_t ⊙ h_(t-1) + (1 - z_t) ⊙ h̃_t",
        ]
    elif fam == "GRU":
        bias = (lambda g: f" + {src['b_' + g]}") if has_bias else (lambda g: "")
        entry.equations += [
            f"z_t = {rec}({term('z')})",
            f"r_t = {rec}({term('r')})",
            f"h̃_t = {act}(x_t {op} {src['W_h']} + (r_t ⊙ h_(t-1)) {op} {src['U_h']}{bias('h')})",
            "h_t = z_t ⊙ h_(t-1) + (1 - z_t) ⊙ h̃_t",
        ]
    else:
        entry.equations.append(f"h_t = {act}({term('')})")
    entry.equations.append("h_0 = 0" + (", c_0 = 0" if fam == "LSTM" else "") + " (no initial_state given)")
    if conv:
        spec = ConvSpec.from_config(layer, int(cls[-2]))
        entry.equations.append(f"x_t * W: convolution over the {spec.rank} spatial axes, strides {spec.strides}, "
                               f"padding {spec.padding}, dilation {spec.dilation}; h * U: stride 1, padding same"
                               + ("; data_format channels_first" if spec.channels_first else ""))
    if owner is not layer:
        entry.equations.append(f"(the sequence options below are those of {owner.key!r}, the RNN running this cell)")
    seqs, state = bool(seq_cfg.get("return_sequences")), bool(seq_cfg.get("return_state"))
    out = "output = [h_1 … h_T] (return_sequences)" if seqs else "output = h_T (the last step)"
    if state:
        out += "; also returns the final states " + ("[h_T, c_T]" if fam == "LSTM" else "[h_T]")
    entry.equations.append(out)

    spatial = ("…",) if conv else ()
    entry.shapes += [("x_t", shape_text("batch", *spatial, n_in)), ("h_(t-1), h_t", shape_text("batch", *spatial, u))]
    for block in split.blocks:
        if (block.kind == "W" and block.gate in ("", split.layout.gates[0])) or \
                (block.kind == "U" and block.gate in ("", split.layout.gates[0])) or \
                (block.kind in ("b", "rb") and block.gate in ("", split.layout.gates[0])):
            entry.shapes.append((block.source + (" (one gate; the others alike)" if block.gate else ""), shape_text(*block.shape)))
    if fam == "LSTM":
        entry.shapes.append(("c_(t-1), c_t", shape_text("batch", *spatial, u)))

    # pitfalls
    if act != "tanh":
        entry.pitfalls.append(f"activation={act}, not tanh: it applies to the candidate and to the cell state "
                              "before the output gate" + (" — relu leaves both unbounded." if act == "relu" else "."))
    entry.pitfalls += _activation_pitfalls(rec, model)
    if fam != "SimpleRNN":
        order = ", ".join(split.layout.gates)
        entry.pitfalls.append(f"Gate order along the last axis is {order}"
                              + (" (PyTorch: i, f, g, o — same order, g = c̃)." if fam == "LSTM" else
                                 " (PyTorch: r, z, n — reorder the blocks)."))
    if has_bias and not (fam == "GRU" and split.reset_after):
        entry.pitfalls.append("One bias per gate: it equals PyTorch's b_ih + b_hh. To convert, put it in b_ih and "
                              "zeros in b_hh; adding it twice shifts every gate.")
    if fam == "GRU" and split.reset_after:
        entry.pitfalls.append("reset_after=True: r_t multiplies (h·U_h + rb_h) after the matmul — PyTorch's and "
                              "cuDNN's form; " + (f"bias[0:{3 * u}] is b_ih, bias[{3 * u}:{6 * u}] b_hh." if cudnn
                                                  else "bias row 0 is b_ih, row 1 is b_hh."))
    elif fam == "GRU":
        entry.pitfalls.append("reset_after=False (Keras 2's default): r_t multiplies h_(t-1) before the matmul; "
                              "PyTorch's nn.GRU cannot express this form.")
    if fam == "GRU":
        entry.pitfalls.append("h_t = z ⊙ h_(t-1) + (1 - z) ⊙ h̃: z keeps the old state (not the new one).")
    if not has_bias:
        entry.pitfalls.append("use_bias=False: no bias term at all.")
    if seq_cfg.get("go_backwards"):
        entry.pitfalls.append("go_backwards=True: step 1 reads x_T; with return_sequences the output is in that "
                              "reversed order (output[:, 0] belongs to the last input step).")
    if parent is not None and parent.class_name == "Bidirectional":
        mode = parent.config.get("merge_mode", "concat")
        entry.pitfalls.append(f"Inside Bidirectional {parent.key!r} (merge_mode={mode}).")
    if any(b.kind == "p" for b in split.blocks):
        entry.pitfalls.append("Peepholes: i_t and f_t add p ⊙ c_(t-1), o_t adds p ⊙ c_t (the new cell state). "
                              "torch.nn.LSTM has none; ONNX's LSTM holds them as P (order i, o, f).")
    if cudnn:
        entry.pitfalls.append(f"{cls} (legacy, GPU only): tanh and sigmoid are fixed; each gate's slice of the stored "
                              "kernels is the cuDNN matrix in row-major memory order (the .reshape(...).T above)"
                              + ("; the stored bias holds input then recurrent biases, summed here"
                                 if fam == "LSTM" else "; the GRU is the reset_after=True form") + ".")
    if conv:
        entry.pitfalls.append("Gates are convolutions, not matmuls: kernel (*kernel_size, in, 4·filters), "
                              "recurrent_kernel (*kernel_size, filters, 4·filters); the recurrent one always uses "
                              "stride 1 and padding same, whatever the input convolution's options.")
    if seq_cfg.get("stateful"):
        entry.pitfalls.append("stateful=True: Keras carries the states between batches; forward starts from zeros.")
    return entry


def to_markdown(result: Explanation) -> str:
    lines = [f"# {result.path}", ""]
    if result.keras_version:
        lines += [f"Written by Keras {result.keras_version}.", ""]
    for warning in result.warnings:
        lines.append(f"> warning: {warning}")
    if result.warnings:
        lines.append("")
    for layer in result.layers:
        lines += [f"## `{layer.key}` — {layer.summary}", ""]
        if layer.equations:
            lines += ["```", *layer.equations, "```", ""]
        if layer.shapes:
            lines += ["| term | shape |", "|---|---|"]
            lines += [f"| `{term}` | {shape} |" for term, shape in layer.shapes]
            lines.append("")
        if layer.pitfalls:
            lines += [f"- {p}" for p in layer.pitfalls]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"

"""The explanations `inspect` prints beside a recurrent layer: answers to the questions people ask about it."""
from __future__ import annotations

import numpy as np

from ..gates.activations import activation_name, hard_sigmoid_formula
from ..gates import CUDNN_CLASSES, GateSplit
from ..model import ModelFile


def recurrent_notes(split: GateSplit, model: ModelFile, read_values: bool = True) -> list[str]:
    layout, units, config = split.layout, split.units, split.layer.config
    notes: list[str] = list(split.warnings)
    if split.native is not None:
        return notes + _native_notes(split) + (_value_notes(split) if read_values else [])
    if layout.family != "SimpleRNN":
        order = ", ".join(
            f"{g} = {name} [{i * units}:{(i + 1) * units}]" for i, (g, name) in enumerate(zip(layout.gates, layout.gate_names))
        )
        notes.append(f"Gate order along the last axis of kernel, recurrent_kernel and bias: {order}.")
    if split.layer.class_name in CUDNN_CLASSES:
        n = len(layout.gates) * units
        notes.append(f"Legacy {split.layer.class_name}: each gate's kernel slice is the cuDNN matrix flattened "
                     f"row-major (block = slice.reshape(units, in).T; recurrent: slice.T), and the bias ({2 * n},) holds "
                     f"the input biases [0:{n}] then the recurrent biases [{n}:{2 * n}]"
                     + ("; the blocks show b = input + recurrent bias, as Keras converts it for an LSTM."
                        if layout.family == "LSTM" else "; shown as GRU(reset_after=True), b_* and rb_*, as Keras "
                        "converts it.") + " cuDNN hard-wires tanh and sigmoid.")
    notes.append(_bias_note(split))
    notes.extend(_activation_notes(split, model))
    if config.get("go_backwards"):
        notes.append("go_backwards=True: the sequence is read last step first (and returned in that reversed order).")
    if read_values:
        notes.extend(_value_notes(split))
    return notes


def _bias_note(split: GateSplit) -> str:
    family = split.layout.family
    if not any(b.kind == "b" for b in split.blocks):
        return "use_bias=False: this layer stores no bias."
    if family == "GRU" and split.reset_after:
        return ("reset_after=True: two biases per gate, row 0 (b_*) added to x·W and row 1 (rb_*) to h·U; the reset "
                "gate multiplies (h·U_h + rb_h), as in PyTorch and cuDNN.")
    if family == "GRU":
        return ("reset_after=False: one bias per gate; the candidate uses (r ⊙ h)·U_h, reset applied before the "
                "matmul (PyTorch's GRU cannot express this form).")
    return ("One bias per gate: x·W + h·U + b needs only one, since two biases (PyTorch's b_ih + b_hh) would just be "
            "added together; to convert, put b in b_ih and zeros in b_hh.")


def _activation_notes(split: GateSplit, model: ModelFile) -> list[str]:
    config = split.layer.config
    if not model.has_config or not config:
        return ["No config in this file, so the activations are not recorded (Keras's defaults: activation=tanh, "
                "recurrent_activation=sigmoid)."]
    activation = activation_name(config.get("activation", "tanh"))
    notes = []
    if split.layout.family == "SimpleRNN":
        notes.append(f"h_t = {activation}(x_t·W + h_(t-1)·U + b).")
        return notes
    recurrent = activation_name(config.get("recurrent_activation", "sigmoid"))
    gates = "i, f, o" if split.layout.family == "LSTM" else "z, r"
    notes.append(f"Activations: {recurrent} on the gates ({gates}), {activation} on the candidate"
                 + (" and on the cell state before the output gate." if split.layout.family == "LSTM" else "."))
    if recurrent == "hard_sigmoid":
        version = model.keras_version or "unknown version"
        notes.append(f"hard_sigmoid here is {hard_sigmoid_formula(model.keras_major)} (this file was written by "
                     f"Keras {version}; Keras 1/2 use clip(0.2·x + 0.5, 0, 1), Keras 3 clip(x/6 + 0.5, 0, 1)).")
    if activation != "tanh":
        notes.append(f"activation={activation} instead of tanh: a re-implementation that assumes tanh gives "
                     "similar but different numbers.")
    return notes


def _value_notes(split: GateSplit) -> list[str]:
    notes = []
    forget = split.block("b_f")
    if forget is not None:
        values = forget.read()
        if values.size and np.all(values == 1.0):
            notes.append("b_f is exactly 1.0 everywhere: the initial value set by unit_forget_bias=True "
                         "(nothing is added at run time); this bias looks untrained.")
    biases = [b.read() for b in split.blocks if b.kind in ("b", "rb")]
    if biases and all(np.all(v == 0) for v in biases):
        notes.append("All biases are exactly 0: the initial value; this layer looks untrained.")
    return notes


def _native_notes(split: GateSplit) -> list[str]:
    """Notes for a PyTorch or ONNX layer: its own gate order, two biases, fixed activations."""
    native, units, config = split.native, split.units, split.layer.config
    assert native is not None
    if native.framework == "TF1":
        return _tf1_notes(split)
    notes = []
    if native.family != "SimpleRNN":
        order = ", ".join(f"{n}{'' if n == g else f' (= Keras {g})'} [{i * units}:{(i + 1) * units}]"
                          for i, (g, n) in enumerate(zip(native.order, native.native)))
        notes.append(f"{native.framework} gate order along the first axis of {native.input}, {native.recurrent} and "
                     f"the biases: {order}. The blocks are transposed into Keras's orientation and keys "
                     "(W_i is (input, units), x·W_i).")
    if any(b.kind == "rb" for b in split.blocks):
        if native.family == "GRU" and split.reset_after:
            notes.append("Two biases: b_* (input) and rb_* (recurrent); rb_h sits inside r ⊙ (h·U_h + rb_h) — "
                         "Keras's GRU with reset_after=True" + (" (PyTorch's n is Keras's candidate h)."
                                                                 if native.framework == "PyTorch" else "."))
        elif native.family == "GRU":
            notes.append("linear_before_reset=0: the reset gate multiplies h before U_h (Keras's reset_after=False); "
                         "the two biases b_h + rb_h simply add up.")
        else:
            notes.append("Two biases, b_* (input) and rb_* (recurrent): each gate adds both, so the Keras equivalent "
                         "is one bias b + rb.")
    if split.block("proj") is not None:
        notes.append(f"proj_size={split.block('proj').shape[1]}: h = (o ⊙ tanh(c))·proj with proj = weight_hr.T, so "
                     "the recurrent blocks U_* take the projected h.")
    if any(b.kind == "p" for b in split.blocks):
        notes.append("Peepholes p_i, p_o, p_f (ONNX P, order i, o, f): c_(t-1) ⊙ p_i and p_f enter i and f, "
                     "c_t ⊙ p_o enters o.")
    if native.framework == "PyTorch":
        if native.family == "SimpleRNN":
            notes.append("torch.nn.RNN's nonlinearity (tanh or relu) is not stored in a state dict; tanh is the "
                         "default.")
        else:
            notes.append(f"torch.nn.{'LSTM' if native.family == 'LSTM' else 'GRU'} always uses sigmoid on the gates "
                         "and tanh on the candidate" + (" and the cell state." if native.family == "LSTM" else "."))
    elif config.get("activations"):
        notes.append(f"Activations (ONNX attribute): {', '.join(map(str, config['activations']))}.")
    return notes


def _tf1_notes(split: GateSplit) -> list[str]:
    """Notes for a TensorFlow 1 cell read from a checkpoint."""
    units, notes = split.units, []
    rows = f"rows [0:{split.input_dim}] multiply x (W_*), the rest multiply h (U_*)"
    if split.layout.family == "LSTM":
        order = ", ".join(f"{n}{'' if n == g else f' (= Keras {g})'} [{i * units}:{(i + 1) * units}]"
                          for i, (g, n) in enumerate(zip(split.native.order, split.native.native)))
        notes.append(f"TF1 {split.layer.class_name[3:]}: kernel multiplies concat([x, h]) ({rows}); gate order "
                     f"along its last axis and the bias: {order}.")
        notes.append("forget_bias (default 1.0) is added to f at run time and stored nowhere — not in this "
                     "checkpoint: b_f here excludes it. The cell computes f = σ(x·W_f + h·U_f + b_f + forget_bias); "
                     "for a Keras or PyTorch equivalent use b_f + forget_bias (1.0 unless the code set another value).")
        if split.block("proj") is not None:
            notes.append(f"num_proj={split.block('proj').shape[1]}: h = (o ⊙ tanh(c))·proj (projection/kernel), so "
                         "the recurrent rows U_* take the projected h.")
        if any(b.kind == "p" for b in split.blocks):
            notes.append("Peepholes p_i, p_f, p_o (w_i_diag, w_f_diag, w_o_diag): c_(t-1) ⊙ p_i and p_f enter i "
                         "and f, c_t ⊙ p_o enters o.")
        clips = ", cell_clip and proj_clip are constructor arguments" if split.layer.class_name == "TF1LSTMCell" \
            else " is a constructor argument"
        notes.append(f"activation (default tanh){clips}, not stored in the checkpoint; the gates use sigmoid.")
    else:
        notes.append(f"TF1 GRUCell: gates/kernel multiplies concat([x, h]) ({rows}) and holds r [0:{units}] then "
                     f"u (= Keras z) [{units}:{2 * units}]; candidate/kernel multiplies concat([x, r ⊙ h]) (W_h, U_h). "
                     "This is Keras's GRU with reset_after=False (one bias per gate).")
        notes.append("activation (default tanh) is a constructor argument, not stored in the checkpoint; the gates "
                     "use sigmoid.")
    return notes

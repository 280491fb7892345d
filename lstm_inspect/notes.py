"""The explanations `inspect` prints beside a recurrent layer: answers to the questions people ask about it."""
from __future__ import annotations

import numpy as np

from .activations import activation_name, hard_sigmoid_formula
from .gates import GateSplit
from .model import ModelFile


def recurrent_notes(split: GateSplit, model: ModelFile, read_values: bool = True) -> list[str]:
    layout, units, config = split.layout, split.units, split.layer.config
    notes: list[str] = list(split.warnings)
    if layout.family != "SimpleRNN":
        order = ", ".join(
            f"{g} = {name} [{i * units}:{(i + 1) * units}]" for i, (g, name) in enumerate(zip(layout.gates, layout.gate_names))
        )
        notes.append(f"Gate order along the last axis of kernel, recurrent_kernel and bias: {order}.")
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

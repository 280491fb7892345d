"""The split of TensorFlow 1 cells (read from checkpoints, see `split.TF1_LAYOUTS`) into per-gate blocks.

A TF1 cell's kernel multiplies concat([x, h]): its first `in` rows are the input kernel (the W blocks), the rest the
recurrent kernel (the U blocks), with gates along the last axis. ``forget_bias`` is not stored (TensorFlow adds it
at run time): b_f excludes it.
"""
from __future__ import annotations

from ..model import Layer, Tensor
from .split import BLOCK_KINDS, LAYOUTS, Block, GateLayout, GateSplit, NativeLayout


def split_tf1(layer: Layer, native: NativeLayout) -> GateSplit | None:
    keras = LAYOUTS[native.family]
    layout = GateLayout(native.family, keras.gates, native.gate_names)
    result = _split_lstm(layer, layout, native) if native.family == "LSTM" else _split_gru(layer, layout, native)
    if result is not None:
        kinds = list(BLOCK_KINDS)
        result.blocks.sort(key=lambda b: (kinds.index(b.kind), keras.gates.index(b.gate) if b.gate in keras.gates else -1))
    return result


def _gate_blocks(result: GateSplit, gate: str, kernel: Tensor, name: str, bias: Tensor | None, bias_name: str,
                 start: int | None = None) -> None:
    """One gate's W, U (and b) from a kernel over concat([x, h]): columns start:start+units of the kernel and the
    bias, or the whole of both when `start` is None (a GRU's separate candidate kernel)."""
    in_dim, units = result.input_dim, result.units
    cols = slice(None) if start is None else slice(start, start + units)
    span = ":" if start is None else f"{start}:{start + units}"
    result.blocks.append(Block(f"W_{gate}", "W", gate, kernel, (slice(0, in_dim), cols), f"{name}[0:{in_dim}, {span}]"))
    result.blocks.append(Block(f"U_{gate}", "U", gate, kernel, (slice(in_dim, None), cols),
                               f"{name}[{in_dim}:{kernel.shape[0]}, {span}]"))
    if bias is not None:
        result.blocks.append(Block(f"b_{gate}", "b", gate, bias, (cols,),
                                   bias_name if start is None else f"{bias_name}[{span}]"))


def _split_lstm(layer: Layer, layout: GateLayout, native: NativeLayout) -> GateSplit | None:
    """LSTMCell / BasicLSTMCell: kernel (in + u, 4u) in gate order i, j (= c), f, o; LSTMCell's optional
    peepholes ``w_*_diag`` and projection (with it the recurrent rows are p, not u)."""
    kernel, bias = layer.weight("kernel"), layer.weight("bias")
    projection = layer.weight("projection/kernel")
    if kernel is None or len(kernel.shape) != 2 or kernel.shape[1] % 4:
        return None
    units = kernel.shape[1] // 4
    state = projection.shape[1] if projection is not None and len(projection.shape) == 2 else units
    in_dim = kernel.shape[0] - state
    result = GateSplit(layer, layout, units, in_dim, None, [], native=native)
    problems = []
    if in_dim <= 0:
        problems.append(f"kernel {kernel.shape} has no input rows beside the {state} recurrent rows")
    if projection is not None and projection.shape != (units, state):
        problems.append(f"projection/kernel {projection.shape} is not ({units}, p)")
    if bias is not None and bias.shape != (4 * units,):
        problems.append(f"bias {bias.shape} is not ({4 * units},)")
    peepholes = {g: layer.weight(f"w_{g}_diag") for g in ("i", "f", "o")}
    if any(p is not None and p.shape != (units,) for p in peepholes.values()):
        problems.append(f"peepholes w_*_diag are not ({units},)")
    if problems:
        result.warnings.append(f"{layer.key}: {'; '.join(problems)}; not split")
        return result
    for p, gate in enumerate(native.order):
        _gate_blocks(result, gate, kernel, "kernel", bias, "bias", start=p * units)
    if projection is not None:
        result.blocks.append(Block("proj", "proj", "", projection, (slice(None), slice(None)), "projection/kernel"))
    for gate, tensor in peepholes.items():
        if tensor is not None:
            result.blocks.append(Block(f"p_{gate}", "p", gate, tensor, (slice(None),), f"w_{gate}_diag"))
    return result


def _split_gru(layer: Layer, layout: GateLayout, native: NativeLayout) -> GateSplit | None:
    """GRUCell: gates/kernel (in + u, 2u) in order r, u (= z), and the candidate's own candidate/kernel (in + u, u);
    the reset_after=False form."""
    gk, gb, ck, cb = (layer.weight(n) for n in ("gates/kernel", "gates/bias", "candidate/kernel", "candidate/bias"))
    if gk is None or ck is None or len(ck.shape) != 2 or len(gk.shape) != 2:
        return None
    units = ck.shape[1]
    in_dim = ck.shape[0] - units
    result = GateSplit(layer, layout, units, in_dim, False, [], native=native)
    if in_dim <= 0 or gk.shape != (in_dim + units, 2 * units) or (gb is not None and gb.shape != (2 * units,)) \
            or (cb is not None and cb.shape != (units,)):
        result.warnings.append(f"{layer.key}: gates/kernel {gk.shape}, candidate/kernel {ck.shape} and their biases "
                               f"do not hold a GRUCell of {units} units; not split")
        return result
    for p, gate in enumerate(native.order[:2]):
        _gate_blocks(result, gate, gk, "gates/kernel", gb, "gates/bias", start=p * units)
    _gate_blocks(result, "h", ck, "candidate/kernel", cb, "candidate/bias")
    return result

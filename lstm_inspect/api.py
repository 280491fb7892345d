"""The Python API: the same operations as the commands, returning data instead of printing it.

    >>> import lstm_inspect as li
    >>> with li.open_model("model.h5") as model:
    ...     for layer in model.layers:
    ...         split = li.split_gates(layer)
    ...         if split:
    ...             W_f = split.arrays()["W_f"]        # (input_dim, units): x @ W_f is the forget gate's input term
"""
from __future__ import annotations

import os
from importlib import resources
from typing import Any

import numpy as np

from . import report as _report
from .errors import InspectError
from .model import select_layers
from .readers import open_model


def example_path() -> str:
    """The bundled example model: LSTM(120, relu, input (10, 5)) -> Dense(100, relu) -> Dense(50, relu) -> Dense(1)."""
    return str(resources.files("lstm_inspect") / "data" / "example_lstm.keras")


def inspect(path: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (), stats: bool = True) -> dict[str, Any]:
    """The report `lstm-inspect inspect` prints, as a dict (the documented JSON schema)."""
    with open_model(path) as model:
        return _report.inspect(model, layers, with_stats=stats)


def export_arrays(path: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (), fused: bool = False,
                  forget_bias: float | None = None) -> dict[str, np.ndarray]:
    """Every weight as ``{"<layer path>/<block>": array}``, the keys `lstm-inspect export` writes. With `fused`:
    Keras's fused ``kernel`` / ``recurrent_kernel`` / ``bias`` per recurrent layer, converted for torch / ONNX /
    TF1 files (`forget_bias` required for TF1 LSTM cells)."""
    from . import exporter as _export  # loaded by the commands that write arrays only

    with open_model(path) as model:
        return _export.export_arrays(model, layers, fused, forget_bias)


def export(path: str | os.PathLike[str], output: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = (),
           fused: bool = False, forget_bias: float | None = None) -> list[str]:
    """Write the arrays of `export_arrays` to an .npz (or .safetensors) file, streaming each from the model file in
    bounded chunks; returns the keys written."""
    from . import exporter as _export  # loaded by the commands that write arrays only

    with open_model(path) as model:
        sources = _export.export_sources(model, layers, fused, forget_bias)
        if not sources:
            what = "no layer matched --layer" if layers else "the model stores no weights"
            raise InspectError(f"nothing to export: {what}", os.fspath(path))
        _export.write_arrays(sources, output)
    return list(sources)


def convert(path: str | os.PathLike[str], layout: str, layers: tuple[str, ...] | list[str] = (),
            forget_bias: float | None = None, merge_stacked: bool = False) -> "Any":
    """The recurrent layers of a model in another framework's layout (``"torch"`` or ``"onnx"``), as a
    `conversion.Converted`: ``.arrays`` (torch state-dict keys ``bidi.weight_ih_l0``, ONNX ``bidi/W``), ``.modules``
    (how to build each torch module / ONNX node) and ``.skipped``. Raises `InspectError` for a layer the target
    cannot express (relu LSTM for torch, GRU reset_after=False for torch, ConvLSTM, ...). `forget_bias` is required
    for TF1 LSTM cells (which add it to f at run time and store it nowhere) and is added to b_f. `merge_stacked`
    (torch): consecutive recurrent layers one multi-layer torch module computes become that module (``_l1`` keys,
    ``num_layers``; `Module.stacked` lists its Keras layers; notes say why a neighbour was not merged)."""
    from .gates import conversion

    with open_model(path) as model:
        return conversion.convert(model, layout, select_layers(model, layers), forget_bias=forget_bias,
                               merge_stacked=merge_stacked)


def export_layout(path: str | os.PathLike[str], output: str | os.PathLike[str], layout: str = "keras",
                  layers: tuple[str, ...] | list[str] = (), forget_bias: float | None = None,
                  merge_stacked: bool = False, fused: bool = False) -> "Any":
    """`lstm-inspect export --layout`: write `convert`'s arrays to .npz / .safetensors; returns the `Converted`.
    ``keras``: `export` (gate blocks; None is returned), or with `fused` Keras's fused arrays for every layer,
    returning the conversion of the torch / ONNX / TF1 layers (how to build each Keras layer)."""
    from . import exporter as _export  # loaded by the commands that write arrays only

    if layout == "keras" and not fused:
        export(path, output, layers)
        return None
    if layout == "keras":
        with open_model(path) as model:
            sources, converted = _export.fused_keras_arrays(model, layers, forget_bias, sources=True)
            if not sources:
                raise InspectError("nothing to export: " + ("no layer matched --layer" if layers else
                                                            "the model stores no weights"), os.fspath(path))
            _export.write_arrays(sources, output)
        converted.arrays = sources  # what was written: arrays, or the blocks / weights streamed from the file
        return converted
    converted = convert(path, layout, layers, forget_bias=forget_bias, merge_stacked=merge_stacked)
    _export.write_arrays(converted.arrays, output, converted.metadata())
    return converted


def forward(path: str | os.PathLike[str], inputs: Any, layers: tuple[str, ...] | list[str] = (), trace: bool = False,
            dtype: Any = None, forget_bias: float | None = None,
            nonlinearity: str | None = None, threads: int | None = None) -> dict[str, np.ndarray]:
    """Run the model in numpy with the semantics of the Keras that wrote it.

    `inputs`: an array (one input), a list in input order, or a dict keyed by input name. Returns every layer's
    output keyed by layer path and the model's output under ``__output__`` (``__output__/0``, ... for several);
    with `layers`, only those layers (the run stops once they are computed); with `trace`, also per-step gates
    and states of recurrent layers (``lstm/i``, ``lstm/f``, ``lstm/c``, ``lstm/o``, ``lstm/cell``, ``lstm/hidden``;
    GRU ``z``, ``r``, ``h``, ``hidden``; SimpleRNN ``hidden``), each (batch, time, units).
    `dtype`: None (the default) computes in the file's precision, like Keras (float32 weights in float32, float64
    ones in float64); ``np.float64`` asks for a float64 reference run, ``np.float32`` for float32 whatever the file.
    `threads`: how many threads a recurrent layer's batch rows may be split over (the results are bit-identical);
    None (the default) splits a large batch over the usable CPUs when numpy's BLAS runs one thread
    (``OPENBLAS_NUM_THREADS=1`` set before numpy loads, as the CLI does) and the machine is not busy, 1 never
    splits (docs/forward.md).

    PyTorch, ONNX and TF1 files have no Keras graph: their recurrent modules run one by one with the source
    framework's semantics (`run.native_forward`; keys in docs/forward.md) on one X (batch, time, features), with
    `trace` each layer-direction's gates and states (``rnn/l0/i``, ``rnn/l0_reverse/hidden``, ...);
    `forget_bias` is TF1 LSTM cells' (default 1.0), `nonlinearity` torch.nn.RNN's (default ``"tanh"``)."""
    from .run import native_forward
    from .run.forward import run

    with open_model(path) as model:
        if native_forward.handles(model):
            return native_forward.run(model, inputs, layers=layers, dtype=dtype, forget_bias=forget_bias,
                                      nonlinearity=nonlinearity, trace=trace)
        return run(model, inputs, layers=layers, trace=trace, dtype=dtype, threads=threads)


def verify(path: str | os.PathLike[str], inputs: Any = None, batch: int = 2, steps: int = 8,
           rtol: float | None = None, atol: float | None = None, seed: int = 0,
           layers: tuple[str, ...] | list[str] = (), forget_bias: float | None = None,
           nonlinearity: str | None = None, progress: "Any" = None) -> "Any":
    """Compare `forward` with Keras on the same inputs (random ones fitting the model when not given); PyTorch,
    ONNX and TF1 files: each recurrent module with torch, onnxruntime or TensorFlow (`run.verify_native`).

    Returns a `run.verify_keras.VerifyResult` (``.ok``, ``.diffs`` per output with max abs/rel difference). Needs the
    reference package (``pip install 'lstm-inspect[keras]'``); raises an InspectError without it. `progress`, if
    given, is called with a short description of each step (which layer, which reference) as it starts."""
    from .run.verify_keras import verify as run_verify

    return run_verify(path, inputs=inputs, batch=batch, steps=steps, seed=seed, rtol=rtol, atol=atol,
                      layers=tuple(layers), forget_bias=forget_bias, nonlinearity=nonlinearity, progress=progress)


def explain(path: str | os.PathLike[str], layers: tuple[str, ...] | list[str] = ()) -> "Any":
    """The equations every layer computes with this file's slices, shapes and pitfalls (`run.explain.Explanation`);
    `explain.to_markdown(result)` renders it as Markdown."""
    from .run.explain import explain as run_explain

    with open_model(path) as model:
        return run_explain(model, layers)

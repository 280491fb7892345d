"""Compare the numpy forward pass with Keras itself, layer by layer.

Keras is optional: it is imported here only, lazily, and only by `verify`. The Keras that can read the file is
chosen by the version that wrote it: Keras 3 (``import keras``) for Keras 3 files, tf-keras (``import tf_keras``)
for Keras 2 / tf.keras files. The numpy pass runs first, so a model lstm-inspect cannot run (a Lambda, a custom
class) is refused before Keras ever deserializes it. PyTorch, ONNX and TF1 files are compared with their own
framework instead (`verify_native`), with the same records.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import InspectError
from ..gates import CUDNN_CLASSES
from ..model import FILE_KINDS, KERAS_KINDS, ModelFile, no_layer_matches, select_layers
from ..readers import open_model
from . import native_forward
from .quiet import one_line, silenced_stderr
from .forward import OUTPUT_KEY, InputSpec, input_specs, match_inputs, run

INSTALL_HINT = "pip install 'lstm-inspect[keras]'"
#: A fixed tolerance, used only when rtol / atol are given: |numpy - reference| <= atol + rtol*|reference|.
DEFAULT_RTOL = 1e-5
DEFAULT_ATOL = 1e-6
#: The default, noise-aware tolerance. The reference computes in float32; lstm-inspect runs the model twice, in
#: float64 and in float32, and the gap between those two is the float32 rounding this very computation produces
#: (it grows with the layer's depth, its steps and its weights' scale). A layer passes when
#: max|float64 - reference| <= NOISE_FACTOR * max|float32 - float64| + NOISE_FLOOR_ULPS * 2**-24 * max|reference|:
#: the reference's own rounding may exceed ours (other summation orders, fused kernels) but not by 10x, and the
#: floor (16 float32 ulps of the layer's scale) covers layers whose float32 run happens to be exact.
NOISE_FACTOR = 10.0
NOISE_FLOOR_ULPS = 16.0
FLOAT32_UNIT = 2.0 ** -24


class KerasMissing(InspectError):
    """The Keras needed to verify the file is not installed."""


@dataclass
class LayerDiff:
    key: str
    """The layer path (or ``__output__``), as in `forward`'s result."""
    shape: tuple[int, ...]
    max_abs: float
    """max |numpy − keras| over the layer's output."""
    max_rel: float
    """max |numpy − keras| / |keras| over the elements where |keras| > atol (0 when there are none)."""
    ok: bool
    """Within tolerance (and the shapes agree): max_abs ≤ bound (noise-aware), or every element within
    atol + rtol·|keras| (fixed tolerance)."""
    note: str = ""
    noise: float | None = None
    """max |numpy float32 − numpy float64|: this computation's own float32 rounding (noise-aware mode)."""
    bound: float | None = None
    """The largest max_abs that passes: NOISE_FACTOR·noise + floor (noise-aware mode)."""

    @property
    def margin(self) -> float | None:
        """max_abs / bound: below 1 passes; how close the layer came to failing."""
        if self.bound is None:
            return None
        return self.max_abs / self.bound if self.bound > 0 else (0.0 if self.max_abs == 0 else float("inf"))


@dataclass
class VerifyResult:
    path: str
    reference: str
    """The package that ran the file the second time: ``keras``, ``tf_keras``, ``torch``, ``onnxruntime`` or
    ``tensorflow`` (TF1 checkpoints)."""
    reference_version: str
    file_keras_version: str | None
    rtol: float | None
    """The fixed tolerance when one was asked for; None in the default, noise-aware mode."""
    atol: float | None
    input_shapes: dict[str, tuple[int, ...]]
    diffs: list[LayerDiff] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """What the run assumed because the file does not store it (torch RNN nonlinearity, TF1 forget_bias)."""

    @property
    def ok(self) -> bool:
        return bool(self.diffs) and all(d.ok for d in self.diffs)

    @property
    def worst(self) -> LayerDiff | None:
        return max(self.diffs, key=lambda d: d.max_abs, default=None)

    @property
    def noise_aware(self) -> bool:
        return self.rtol is None and self.atol is None

    @property
    def tolerance(self) -> str:
        """The rule the layers were held to, in one line."""
        if self.noise_aware:
            return (f"|numpy − {self.reference}| ≤ {NOISE_FACTOR:g}·|numpy float32 − numpy float64| + "
                    f"{NOISE_FLOOR_ULPS:g} float32 ulps of the layer's scale")
        return f"|numpy − {self.reference}| ≤ {self.atol:g} + {self.rtol:g}·|{self.reference}|"

    @property
    def largest_margin(self) -> float | None:
        margins = [d.margin for d in self.diffs if d.margin is not None]
        return max(margins) if margins else None


def keras_package_for(model: ModelFile) -> str:
    """``keras`` for Keras 3 files, ``tf_keras`` for Keras 1/2 and tf.keras files."""
    return "keras" if model.keras_major == 3 else "tf_keras"


def make_inputs(model: ModelFile, batch: int = 2, steps: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs that fit the model's inputs: standard normal floats; integers below the smallest
    Embedding ``input_dim`` for integer inputs. Free (None) non-batch axes get `steps`."""
    rng = np.random.default_rng(seed)
    vocab = [int(layer.config.get("input_dim", 0)) for layer in model.layers if layer.class_name == "Embedding"]
    out = {}
    for spec in input_specs(model):
        if len(spec.shape) < 2:
            raise InspectError(f"input {spec.name!r}: the file does not record its shape; pass --input", model.path)
        shape = (batch,) + tuple(steps if n is None else int(n) for n in spec.shape[1:])
        if "int" in spec.dtype or _feeds_embedding(model, spec.name):
            # an Embedding casts its input to integers: a float input declared for it still holds token ids
            out[spec.name] = rng.integers(0, max(min(vocab) if vocab else 10, 1), size=shape).astype(spec.dtype)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return out


def _feeds_embedding(model: ModelFile, input_name: str) -> bool:
    """True when the input goes straight into an Embedding: the first layer of a Sequential model, or an Embedding
    whose inbound nodes name the input (Keras 2 and Keras 3 configs both spell the input layer's name there)."""
    root = model.root
    if root.class_name == "Sequential":
        first = next((c for c in root.children if c.class_name != "InputLayer"), None)
        return first is not None and first.class_name == "Embedding"
    for layer in model.layers:
        if layer.class_name == "Embedding" and f'"{input_name}"' in json.dumps(layer.entry.get("inbound_nodes", [])):
            return True
    return False


def compare(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], rtol: float | None, atol: float | None,
            ours32: dict[str, np.ndarray] | None = None) -> list[LayerDiff]:
    """Every output the reference produced against ours (float64). With `ours32` (the same run in float32) and no
    fixed tolerance, each layer is held to its own float32 noise (`NOISE_FACTOR`)."""
    noise_aware = rtol is None and atol is None and ours32 is not None
    r = DEFAULT_RTOL if rtol is None else rtol
    a = DEFAULT_ATOL if atol is None else atol
    diffs = []
    for key, ref in theirs.items():
        if key not in ours:
            continue
        got = np.asarray(ours[key], dtype=np.float64)
        ref = np.asarray(ref, dtype=np.float64)
        if got.shape != ref.shape:
            diffs.append(LayerDiff(key, tuple(ref.shape), float("inf"), float("inf"), False,
                                   f"shape {got.shape} vs {ref.shape}"))
            continue
        delta = np.abs(got - ref)
        finite = bool(np.isfinite(got).all() and np.isfinite(ref).all())
        floor = NOISE_FLOOR_ULPS * FLOAT32_UNIT * _scale(ref)
        big = np.abs(ref) > (floor if noise_aware else a)
        max_rel = float((delta[big] / np.abs(ref[big])).max()) if big.any() else 0.0
        max_abs = float(delta.max()) if delta.size else 0.0
        note = "" if finite else "non-finite values"
        if noise_aware and key in ours32:
            noise = float(np.abs(np.asarray(ours32[key], dtype=np.float64) - got).max()) if got.size else 0.0
            bound = NOISE_FACTOR * noise + floor
            diffs.append(LayerDiff(key, tuple(ref.shape), max_abs, max_rel, finite and max_abs <= bound, note,
                                   noise=noise, bound=bound))
        else:
            ok = finite and bool(np.all(delta <= a + r * np.abs(ref)))
            diffs.append(LayerDiff(key, tuple(ref.shape), max_abs, max_rel, ok, note))
    return diffs


def _scale(ref: np.ndarray) -> float:
    finite = ref[np.isfinite(ref)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def verify(path: str | os.PathLike[str], inputs: Any = None, batch: int = 2, steps: int = 8,
           rtol: float | None = None, atol: float | None = None, seed: int = 0, layers: tuple[str, ...] = (),
           forget_bias: float | None = None, nonlinearity: str | None = None,
           progress: Callable[[str], None] | None = None) -> VerifyResult:
    """Run the file with lstm-inspect's numpy pass and with Keras (or, for PyTorch / ONNX / TF1 files, with torch,
    onnxruntime or TensorFlow) on the same inputs and compare every layer (or the `layers` whose path contains one
    of the patterns). By default each layer is held to its own float32 noise (`NOISE_FACTOR`); `rtol` / `atol` ask
    for a fixed tolerance instead (the other one then takes its default). `progress` is told what runs now (which layer, which reference). The reference framework's
    own start-up noise on stderr is silenced; when it fails, the error is one line."""
    label = os.fspath(path)
    note = progress or (lambda message: None)
    if rtol is not None or atol is not None:  # a fixed tolerance: the one not given takes its default
        rtol = DEFAULT_RTOL if rtol is None else rtol
        atol = DEFAULT_ATOL if atol is None else atol
    with open_model(label) as model:
        if native_forward.handles(model):
            return _verify_native(model, inputs, batch, steps, seed, rtol, atol, layers, forget_bias, nonlinearity,
                                  note)
        if model.kind == "tflite" and model.has_config:
            specs = input_specs(model)
            values = match_inputs(specs, make_inputs(model, batch, steps, seed) if inputs is None else inputs)
            return _run_tflite(label, run(model, values, dtype=np.float64), specs, values, rtol, atol,
                               run(model, values, dtype=np.float32) if rtol is None and atol is None else None)
        savedmodel = model.kind == "tf-savedmodel" and model.has_config  # tf-keras loads its own SavedModels
        if model.kind not in KERAS_KINDS and not savedmodel:
            raise InspectError(f"verify compares with Keras, which cannot load a {FILE_KINDS.get(model.kind, model.kind)}"
                               "; nor does it hold a PyTorch / ONNX / TF1 recurrent module to run with its own "
                               "framework", label)
        if not model.has_config:
            raise InspectError("weights-only file: it holds no architecture, so Keras cannot rebuild the model "
                               "to compare against; verify the full model file (.keras or model.save('x.h5'))",
                               label)
        package = keras_package_for(model)
        select_layers(model, layers)  # a --layer that matches nothing is refused before anything runs
        if inputs is None:
            inputs = make_inputs(model, batch, steps, seed)
        specs = input_specs(model)
        values = match_inputs(specs, inputs)
        note(f"numpy: running {len(model.layers)} layers")
        ours = run(model, values, dtype=np.float64)
        ours32 = run(model, values, dtype=np.float32) if rtol is None and atol is None else None
        file_version = model.keras_version
        cudnn = [f"{layer.key} ({layer.class_name})" for layer in model.layers if layer.class_name in CUDNN_CLASSES]
    if importlib.util.find_spec(package) is None or importlib.util.find_spec("tensorflow") is None:
        raise KerasMissing(f"verify needs {'Keras 3' if package == 'keras' else 'tf-keras'} with TensorFlow to "
                           f"run this Keras {file_version or '?'} file; install it with: {INSTALL_HINT}", label)
    note(f"importing {package} (with TensorFlow)")
    if cudnn and not _gpu_visible():
        raise InspectError(f"cannot verify {', '.join(cudnn)}: Keras runs the legacy cuDNN layers only on a GPU with "
                           "cuDNN and TensorFlow sees none here; `forward` runs them in numpy (an LSTM/GRU with "
                           "tanh/sigmoid, the two cuDNN biases summed; CuDNNGRU as reset_after=True)", label)
    import warnings

    with silenced_stderr(), warnings.catch_warnings():
        K = _import_keras(package)
        warnings.simplefilter("ignore")
        result = _run_keras(K, package, label, ours, specs, values, file_version, rtol, atol, note, ours32)
    if layers:
        result.diffs = [d for d in result.diffs if any(p in d.key for p in layers)]
        if not result.diffs:
            raise no_layer_matches(layers, list(ours), label, "layer outputs")
    return result


def _verify_native(model: ModelFile, inputs: Any, batch: int, steps: int, seed: int, rtol: float | None,
                   atol: float | None,
                   layers: tuple[str, ...], forget_bias: float | None, nonlinearity: str | None,
                   note: Callable[[str], None]) -> VerifyResult:
    """Each recurrent module of a PyTorch / ONNX / TF1 file run by `native_forward` and by its own framework."""
    from . import verify_native

    chosen = native_forward.select(model, layers)
    note("importing the reference framework")
    with silenced_stderr():
        package, version = verify_native.oracle_package(model)
    xs = verify_native.inputs_per_module(model, chosen, inputs, batch, steps, seed)
    fb = native_forward.TF1_DEFAULT_FORGET_BIAS if forget_bias is None else forget_bias
    nl = nonlinearity or native_forward.TORCH_DEFAULT_NONLINEARITY
    ours: dict[str, np.ndarray] = {}
    ours32: dict[str, np.ndarray] = {}
    theirs: dict[str, np.ndarray] = {}
    for number, module in enumerate(chosen, 1):
        note(f"{module.key} ({number}/{len(chosen)}): numpy")
        ours.update(native_forward.run_module(module, xs[module.key], np.float64, fb, nl))
        if rtol is None and atol is None:
            ours32.update(native_forward.run_module(module, xs[module.key], np.float32, fb, nl))
        note(f"{module.key} ({number}/{len(chosen)}): {package} {version}")
        try:
            with silenced_stderr():
                theirs.update(verify_native.outputs(model, module, xs[module.key], fb, nl))
        except InspectError:
            raise
        except Exception as exc:  # the framework's own failure (an op this machine lacks, ...): one line
            raise InspectError(f"{package} cannot run {module.key} on this machine: {one_line(exc)}",
                               model.path) from exc
    result = VerifyResult(model.path, package, version, None, rtol, atol,
                          {key: tuple(x.shape) for key, x in xs.items()})
    result.diffs = compare(ours, theirs, rtol, atol, ours32)
    result.notes = native_forward.stated_defaults(model, layers, forget_bias, nonlinearity)
    return result


def _run_keras(K: Any, package: str, label: str, ours: dict[str, np.ndarray], specs: list[InputSpec],
               values: list[np.ndarray], file_version: str | None, rtol: float | None, atol: float | None,
               note: Callable[[str], None], ours32: dict[str, np.ndarray] | None = None) -> VerifyResult:
    note(f"{package} {K.__version__}: loading the model")
    try:
        if package == "keras":
            keras_model = K.saving.load_model(label, compile=False, safe_mode=True)
        else:
            keras_model = K.models.load_model(label, compile=False)
    except Exception as exc:  # Keras raises many kinds; report one line
        raise InspectError(f"{package} could not load the model: {type(exc).__name__}: "
                           f"{str(exc).splitlines()[0] if str(exc) else ''}"[:300], label) from exc
    names = [key for key in ours if not key.startswith(OUTPUT_KEY)]
    note(f"{package} {K.__version__}: running " + (", ".join(names) if len(names) <= 4 else f"{len(names)} layers"))
    try:
        theirs = keras_outputs(K, keras_model, values)
    except InspectError:
        raise
    except Exception as exc:  # TensorFlow cannot run an op here (NCHW convolution on a CPU, ...): one line
        layer = _layer_named_in(str(exc), keras_model)
        what = f"layer {layer!r}" if layer else "this model"
        raise InspectError(f"Keras cannot run {what} on this machine: {one_line(exc)}", label) from exc
    result = VerifyResult(label, package, str(K.__version__), file_version, rtol, atol,
                          {s.name: tuple(v.shape) for s, v in zip(specs, values)})
    result.diffs = compare(ours, theirs, rtol, atol, ours32)
    return result


def _layer_named_in(message: str, keras_model: Any) -> str | None:
    """The layer a Keras / TensorFlow error is about: named in it, or the owner of the class it was calling."""
    import re

    layers = _all_layers(keras_model)
    calling = re.search(r"when calling ([\w]+)\.call\(\)", message)
    for layer in reversed(layers):
        classes = {type(layer).__name__, type(getattr(layer, "cell", None)).__name__}
        if (calling and calling.group(1) in classes) or re.search(rf"\b{re.escape(layer.name)}\b", message):
            return layer.name
    return None


def _all_layers(keras_model: Any) -> list[Any]:
    """Every layer of a Keras model, nested ones too (to name the one an error is about)."""
    found = []
    for layer in getattr(keras_model, "layers", []):
        found.append(layer)
        found.extend(_all_layers(layer))
    return found


def _run_tflite(label: str, ours: dict[str, np.ndarray], specs: list[InputSpec], values: list[np.ndarray],
                rtol: float | None, atol: float | None, ours32: dict[str, np.ndarray] | None = None) -> VerifyResult:
    """The TFLite interpreter on the same inputs, one sample at a time (converted models have a fixed batch of 1);
    only the model's output is compared (the interpreter exposes no intermediate layer outputs)."""
    if importlib.util.find_spec("tensorflow") is None:
        raise KerasMissing(f"verify needs TensorFlow's TFLite interpreter to run this file; install it with: "
                           f"{INSTALL_HINT}", label)
    import warnings

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            interpreter = tf.lite.Interpreter(model_path=label)
            interpreter.allocate_tensors()
            (given,), (wanted,) = interpreter.get_input_details(), interpreter.get_output_details()
            outputs = []
            for sample in values[0]:
                interpreter.reset_all_variables()  # the LSTM op keeps its states in variables between invokes
                interpreter.set_tensor(given["index"], sample[None].astype(given["dtype"]))
                interpreter.invoke()
                outputs.append(interpreter.get_tensor(wanted["index"])[0])
        except Exception as exc:  # the interpreter raises RuntimeError / ValueError on what it cannot run
            raise InspectError(f"the TFLite interpreter could not run the model: {type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''}"[:300], label) from exc
    result = VerifyResult(label, "tflite", str(tf.__version__), None, rtol, atol,
                          {s.name: tuple(v.shape) for s, v in zip(specs, values)})
    result.diffs = compare({OUTPUT_KEY: ours[OUTPUT_KEY]}, {OUTPUT_KEY: np.stack(outputs)}, rtol, atol,
                           None if ours32 is None else {OUTPUT_KEY: ours32[OUTPUT_KEY]})
    result.notes = ["the TFLite interpreter exposes the model's output only: intermediate layers are not compared"]
    return result


def _gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (so that Keras can run a CuDNNLSTM / CuDNNGRU)."""
    with silenced_stderr():
        _import_keras("tensorflow")
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _import_keras(package: str) -> Any:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # TensorFlow's plain CPU kernels run Conv2D / Conv3D only channels-last; its oneDNN kernels run both, on any
    # x86 CPU, but TensorFlow turns them on by default only on CPUs with AVX512-VNNI / AMX. Ask for them, so that
    # a channels_first ConvLSTM verifies on every machine (an explicit TF_ENABLE_ONEDNN_OPTS=0 is respected).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    import logging
    import warnings

    logging.getLogger("absl").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import importlib

        return importlib.import_module(package)


def keras_outputs(K: Any, keras_model: Any, values: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Keras's own output of every layer (keyed by layer path, like `forward.run`) and of the model."""
    out: dict[str, np.ndarray] = {}
    feed = values if len(values) > 1 else values[0]
    pred = _flat(keras_model(feed, training=False))
    pred = [np.asarray(p) for p in pred]
    if len(pred) == 1:
        out[OUTPUT_KEY] = pred[0]
    else:
        for i, p in enumerate(pred):
            out[f"{OUTPUT_KEY}/{i}"] = p
    _collect(K, keras_model, list(values), "", out)
    return out


def _flat(x: Any) -> list[Any]:
    if isinstance(x, dict):
        x = list(x.values())
    if isinstance(x, (list, tuple)):
        return [item for sub in x for item in _flat(sub)]
    return [x]


def _collect(K: Any, container: Any, in_values: list[np.ndarray], prefix: str, out: dict[str, np.ndarray]) -> None:
    """Every layer's output inside `container`, by probing the container's graph with a multi-output model.

    Each layer is reached through its last inbound node (its call inside this container's graph); nested
    containers are recursed into with the inputs Keras computed for them."""
    children = [layer for layer in container.layers if type(layer).__name__ != "InputLayer"]
    container_inputs = list(container.inputs)
    tensors: list[Any] = []
    plan: list[tuple[Any, str, int, int]] = []
    for layer in children:
        node = layer._inbound_nodes[-1]
        outs = _flat(node.output_tensors)
        plan.append((layer, "out", len(tensors), len(outs)))
        tensors.extend(outs)
        if isinstance(layer, K.Model):
            ins = _flat(node.input_tensors)
            plan.append((layer, "in", len(tensors), len(ins)))
            tensors.extend(ins)
    probes, where = [], []
    for t in tensors:  # a tensor that is a container input is fed, not probed
        hit = next((i for i, ci in enumerate(container_inputs) if ci is t), None)
        if hit is not None:
            where.append(("in", hit))
        else:
            where.append(("probe", len(probes)))
            probes.append(t)
    raw: list[np.ndarray] = []
    if probes:
        probe = K.Model(container_inputs, probes)
        feed = in_values if len(in_values) > 1 else in_values[0]
        raw = [np.asarray(v) for v in _flat(probe(feed, training=False))]
    got = [in_values[j] if kind == "in" else raw[j] for kind, j in where]
    for layer, kind, start, n in plan:
        vals = got[start:start + n]
        path = prefix + layer.name
        if kind == "out":
            if n == 1:
                out[path] = vals[0]
            else:
                for i, v in enumerate(vals):
                    out[f"{path}/{i}"] = v
        else:
            _collect(K, layer, vals, path + "/", out)


def to_dict(result: VerifyResult) -> dict[str, Any]:
    """The comparison as JSON-ready data (``verify --json``)."""
    return {
        "file": result.path,
        "file_keras_version": result.file_keras_version,
        "reference": result.reference,
        "reference_version": result.reference_version,
        "rtol": result.rtol,
        "atol": result.atol,
        "tolerance": "noise" if result.noise_aware else "fixed",
        "noise_factor": NOISE_FACTOR if result.noise_aware else None,
        "largest_margin": result.largest_margin,
        "inputs": {k: list(v) for k, v in result.input_shapes.items()},
        "notes": result.notes,
        "ok": result.ok,
        "layers": [
            {"key": d.key, "shape": list(d.shape), "max_abs": d.max_abs, "max_rel": d.max_rel, "ok": d.ok,
             "note": d.note, "noise": d.noise, "bound": d.bound, "margin": d.margin}
            for d in result.diffs
        ],
    }

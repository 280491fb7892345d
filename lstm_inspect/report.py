"""The content of `lstm-inspect inspect` as plain data: what the JSON output is, and what renderers draw."""
from __future__ import annotations

from typing import Any

from . import gates
from .analysis import stats
from .analysis.notes import recurrent_notes
from .gates.activations import activation_name
from .model import FILE_KINDS, KERAS_KINDS, Layer, ModelFile, select_layers

SCHEMA_VERSION = 1

#: Config fields shown for a layer when present: the ones that change what the layer computes.
CONFIG_FIELDS = (
    "units", "filters", "kernel_size", "activation", "recurrent_activation", "use_bias", "reset_after",
    "unit_forget_bias", "go_backwards", "return_sequences", "return_state", "stateful", "merge_mode",
    "mask_value", "dropout", "recurrent_dropout", "trainable",
)


def inspect(model: ModelFile, layers: tuple[str, ...] | list[str] = (), with_stats: bool = True) -> dict[str, Any]:
    """Everything `inspect` shows. With ``with_stats=False`` no tensor data is read at all."""
    selected = select_layers(model, layers)
    warnings = list(model.warnings)
    entries = []
    for layer in selected:
        entry = layer_entry(layer, model, with_stats)
        if entry.get("recurrent"):
            warnings.extend(entry["recurrent"]["warnings"])
        entries.append(entry)
    return {
        "schema_version": SCHEMA_VERSION,
        "file": model.path,
        "kind": model.kind,
        "kind_description": FILE_KINDS.get(model.kind, model.kind),
        "keras_version": model.keras_version,
        "backend": model.backend,
        "has_config": model.has_config,
        "total_params": model.total_params,
        "inputs": model_inputs(model),
        "warnings": warnings,
        "layers": entries,
    }


def model_inputs(model: ModelFile) -> list[dict[str, Any]] | None:
    """The model's inputs as its config records them: name, shape (batch axis first; None for a free axis; null
    when the config gives no shape) and dtype. None when the file records no Keras architecture (weights only,
    PyTorch, ONNX, TF1, arrays), so no input is known."""
    if not model.has_config or model.kind not in KERAS_KINDS | {"tf-savedmodel"}:
        return None
    from .errors import InspectError
    from .run.forward import input_specs

    try:
        specs = input_specs(model)
    except (InspectError, TypeError, ValueError, KeyError, AttributeError, IndexError):
        return None  # a config too odd to name its inputs (hostile or hand-built): none is known
    return [{"name": spec.name, "shape": list(spec.shape) if len(spec.shape) > 1 else None, "dtype": spec.dtype}
            for spec in specs]


#: A config value the report shows is at most this long as JSON text; a longer one (a hostile config can put
#: megabytes in ``units``) is summarised, so the report stays bounded whatever the config holds.
MAX_CONFIG_VALUE_CHARS = 2000


def _bounded(value: Any) -> Any:
    """`value`, or a one-line summary when its JSON text would pass MAX_CONFIG_VALUE_CHARS (counted without
    building it, stopping at the bound)."""
    size, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
            size += 2 + 4 * len(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
            size += 2 + 2 * len(item)
        else:
            size += len(item) + 2 if isinstance(item, str) else 24
        if size > MAX_CONFIG_VALUE_CHARS:
            what = f"{type(value).__name__} of {len(value):,} items" if isinstance(value, (dict, list, tuple)) \
                else f"{type(value).__name__} of {len(value):,} characters" if isinstance(value, str) else "value"
            return f"<{what}: over {MAX_CONFIG_VALUE_CHARS:,} characters, not shown>"
    return value


def layer_entry(layer: Layer, model: ModelFile, with_stats: bool) -> dict[str, Any]:
    config = {k: _bounded(layer.config[k]) for k in CONFIG_FIELDS if k in layer.config}
    for key in ("activation", "recurrent_activation"):
        if key in config:
            config[key] = activation_name(config[key])
    entry: dict[str, Any] = {
        "path": layer.key,
        "name": layer.name,
        "class_name": layer.class_name,
        "depth": len(layer.path) - 1,
        "params": layer.param_count,
        "inferred_class": layer.inferred,
        "needs_code": layer.needs_code,
        "config": config,
        "weights": [],
        "recurrent": None,
    }
    split = gates.split(layer)
    blocks = split.blocks if split is not None else []
    weight_stats, block_stats = stats.layer_stats(layer.weights, blocks) if with_stats else ({}, {})
    entry["weights"] = [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "source": t.source,
                         "stats": weight_stats[id(t)].as_dict() if with_stats else None} for t in layer.weights]
    if split is not None:
        entry["recurrent"] = {
            "family": split.layout.family,
            "units": split.units,
            "input_dim": split.input_dim,
            "reset_after": split.reset_after,
            "gates": [{"gate": g, "name": n} for g, n in zip(split.layout.gates, split.layout.gate_names)],
            "blocks": [
                {"key": b.key, "kind": b.kind, "gate": b.gate, "source": b.source, "shape": list(b.shape),
                 "stats": block_stats[id(b)].as_dict() if with_stats else None}
                for b in split.blocks
            ],
            "warnings": split.warnings,
            "notes": recurrent_notes(split, model, read_values=with_stats),
        }
    return entry

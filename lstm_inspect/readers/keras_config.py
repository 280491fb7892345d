"""Turn a Keras model config (Keras 1/2 or Keras 3 form) into the layer tree of the neutral model.

The config is only ever read as data: class names and modules are recorded, never imported.
"""
from __future__ import annotations

from typing import Any

from ..errors import CorruptFile
from ..model import CONTAINER_CLASSES, Layer


def build_tree(model_config: Any, label: str) -> Layer:
    """The model as a root `Layer` (its path is empty) with every sub-layer below it, weights not yet attached."""
    if not isinstance(model_config, dict) or "class_name" not in model_config:
        raise CorruptFile("model config has no class_name: not a Keras model config", label)
    root = _layer(model_config, (), label)
    root.path = ()
    _set_paths(root, ())
    return root


def _layer(entry: Any, parent: tuple[str, ...], label: str) -> Layer:
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise CorruptFile(f"a layer entry under {'/'.join(parent) or 'the model'} has no class_name", label)
    class_name = entry["class_name"]
    config = entry.get("config")
    if isinstance(config, list):  # Keras <= 2.2 Sequential: config is the list of layers itself
        config = {"layers": config}
    if not isinstance(config, dict):
        config = {}
    config = keras2_config(class_name, config)
    name = entry.get("name") or config.get("name") or class_name.lower()
    layer = Layer(name=str(name), class_name=class_name, path=(), config=config, entry=entry)
    sub_layers = config.get("layers")
    if isinstance(sub_layers, list) and (class_name in CONTAINER_CLASSES or entry.get("module") != "keras.layers"):
        layer.children = [_layer(sub, parent + (layer.name,), label) for sub in sub_layers]
    elif class_name == "Bidirectional":
        layer.children = _bidirectional_children(config, parent + (layer.name,), label)
    elif class_name == "TimeDistributed" and isinstance(config.get("layer"), dict):
        layer.children = [_layer(config["layer"], parent + (layer.name,), label)]
    elif class_name == "RNN" and isinstance(config.get("cell"), (dict, list)):
        cell = config["cell"]
        if isinstance(cell, list):  # RNN([cell, cell]) is saved by old Keras as the list itself: a stack of cells
            cell = {"class_name": "StackedRNNCells", "config": {"name": "stacked_rnn_cells", "cells": cell}}
        layer.children = [_layer(cell, parent + (layer.name,), label)]
    elif class_name == "StackedRNNCells" and isinstance(config.get("cells"), list):
        layer.children = [_layer(sub, parent + (layer.name,), label) for sub in config["cells"]]
    return layer


#: Keras 1 spelled these config keys differently; each maps to the Keras 2 key that means the same, per class.
#: A Keras 2 key already present wins, so a config is never rewritten twice.
_KERAS1_RECURRENT = {"output_dim": "units", "inner_activation": "recurrent_activation", "init": "kernel_initializer",
                     "inner_init": "recurrent_initializer", "W_regularizer": "kernel_regularizer",
                     "U_regularizer": "recurrent_regularizer", "b_regularizer": "bias_regularizer",
                     "dropout_W": "dropout", "dropout_U": "recurrent_dropout"}
KERAS1_CONFIG_KEYS: dict[str, dict[str, str]] = {
    "LSTM": _KERAS1_RECURRENT, "GRU": _KERAS1_RECURRENT, "SimpleRNN": _KERAS1_RECURRENT,
    "Dense": {"output_dim": "units", "init": "kernel_initializer", "W_regularizer": "kernel_regularizer",
              "b_regularizer": "bias_regularizer", "bias": "use_bias"},
}


def keras2_config(class_name: str, config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 1 layer config with its keys renamed to Keras 2's (`output_dim` -> `units`, `inner_activation` ->
    `recurrent_activation`, ...), so everything downstream reads one form. Other configs come back as they are."""
    renames = KERAS1_CONFIG_KEYS.get(class_name, {})
    if not any(old in config for old in renames):
        return config
    out = dict(config)
    for old, new in renames.items():
        if old in out:
            value = out.pop(old)
            out.setdefault(new, value)
    return out


def _bidirectional_children(config: dict[str, Any], parent: tuple[str, ...], label: str) -> list[Layer]:
    inner = config.get("layer")
    if not isinstance(inner, dict):
        raise CorruptFile(f"Bidirectional layer {'/'.join(parent)} has no wrapped layer in its config", label)
    forward = _layer(inner, parent, label)
    if not forward.name.startswith("forward_"):  # Keras 2 configs keep the wrapped name, Keras 3 the final one
        forward.name = "forward_" + forward.name
    backward_entry = config.get("backward_layer")
    if isinstance(backward_entry, dict):
        backward = _layer(backward_entry, parent, label)
        if not backward.name.startswith("backward_"):
            backward.name = "backward_" + backward.name
    else:
        backward = _layer(inner, parent, label)
        backward.name = "backward_" + backward.name.removeprefix("forward_")
        # Keras builds the backward copy with go_backwards flipped.
        backward.config = dict(backward.config, go_backwards=not backward.config.get("go_backwards", False))
    return [forward, backward]


def _set_paths(layer: Layer, path: tuple[str, ...]) -> None:
    for child in layer.children:
        child.path = path + (child.name,)
        _set_paths(child, child.path)

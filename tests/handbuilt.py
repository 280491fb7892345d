"""Hand-built files for layouts no installable Keras writes any more, and for hostile or broken input.

Each is made from a real Keras fixture by editing it with h5py / zipfile, following the layout documented in
shared/reference/keras-files-and-gate-layouts.md, and is labelled "hand-built" in test ids.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import h5py
import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "models"


def copy(name: str, dest: Path) -> Path:
    target = dest / name
    if (FIXTURES / name).is_dir():
        shutil.copytree(FIXTURES / name, target)
    else:
        shutil.copy(FIXTURES / name, target)
    return target


def _rename_weights(path: Path, rename) -> None:
    """Move every weight dataset to the name `rename(old)` gives and rewrite weight_names to match."""
    with h5py.File(path, "r+") as f:
        root = f["model_weights"] if "model_weights" in f else f
        for layer_name in [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]:
            group = root[layer_name]
            old_names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            data = {n: group[n][()] for n in old_names}
            for key in list(group.keys()):
                del group[key]
            new_names = [rename(n) for n in old_names]
            for old, new in zip(old_names, new_names):
                group.create_dataset(new, data=data[old])
            group.attrs["weight_names"] = np.array([n.encode() for n in new_names])


def keras23_naming(dest: Path) -> Path:
    """Keras <= 2.3 / TF <= 2.1 named LSTM variables `lstm_1/kernel:0`, without a cell scope."""
    path = copy("k2_classic.h5", dest)
    _rename_weights(path, lambda n: n.replace("lstm_cell/", ""))
    return path


def uniquified_naming(dest: Path) -> Path:
    """TF 2.2-2.12 wrote auto-uniquified scopes: `lstm_1/lstm_cell_1/kernel:0`."""
    path = copy("k2_classic.h5", dest)
    _rename_weights(path, lambda n: n.replace("lstm/lstm_cell/", "lstm_1/lstm_cell_1/"))
    return path


def chunked_attributes(dest: Path) -> Path:
    """Keras splits an attribute over 64 KB into `layer_names0`, `layer_names1`, ... (same for weight_names);
    here they are split regardless of size, with bytes values, as h5py wrote them for old Keras."""
    path = copy("k2_nested.h5", dest)
    with h5py.File(path, "r+") as f:
        root = f["model_weights"]
        names = [_text(n) for n in root.attrs["layer_names"]]
        del root.attrs["layer_names"]
        root.attrs["layer_names0"] = _bytes_array(names[:1])
        root.attrs["layer_names1"] = _bytes_array(names[1:])
        for name in names:
            group = root[name]
            weights = [_text(n) for n in group.attrs["weight_names"]]
            if len(weights) >= 3:
                del group.attrs["weight_names"]
                group.attrs["weight_names0"] = _bytes_array(weights[:2])
                group.attrs["weight_names1"] = _bytes_array(weights[2:])
        f.attrs["model_config"] = np.bytes_(f.attrs["model_config"].encode()
                                            if isinstance(f.attrs["model_config"], str) else f.attrs["model_config"])
    return path


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _bytes_array(names: list[str]) -> np.ndarray:
    return np.array([n.encode() for n in names], dtype=f"S{max(len(n) for n in names)}")


#: Keras 2 config key -> the Keras 1 key that meant the same (Keras 1.2 `recurrent.py` / `core.py`).
KERAS1_KEYS = {"units": "output_dim", "recurrent_activation": "inner_activation", "kernel_initializer": "init",
               "recurrent_initializer": "inner_init", "kernel_regularizer": "W_regularizer",
               "recurrent_regularizer": "U_regularizer", "bias_regularizer": "b_regularizer", "dropout": "dropout_W",
               "recurrent_dropout": "dropout_U", "use_bias": "bias"}


def keras1_layout(dest: Path, source: str = "k2_classic.h5", keras1_config: bool = False) -> Path:
    """Keras 1 wrote an LSTM as 12 arrays `<layer>_W_i, _U_i, _b_i, _W_c, ..., _b_o` (gate order i, c, f, o) and a GRU
    as 9 (`z, r, h`, one bias each), with no keras_version attribute: the same weights rewritten that way.
    With `keras1_config` the model config is Keras 1's too: Sequential's config the plain list of layers (no
    InputLayer), `output_dim`, `inner_activation`, `init`, ... and Dense arrays named `<layer>_W`, `<layer>_b`."""
    path = copy(source, dest)
    with h5py.File(path, "r+") as f:
        if keras1_config:
            _keras1_config(f)
        config = json.loads(f.attrs["model_config"])
        layers = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
        recurrent = {l["config"]["name"]: l["class_name"] for l in layers if l["class_name"] in ("LSTM", "GRU")}
        root = f["model_weights"]
        for attrs in (f.attrs, root.attrs):  # Keras 1 wrote no keras_version, neither on the file nor its weights
            if "keras_version" in attrs:
                del attrs["keras_version"]
        for name, cls in recurrent.items():
            group = root[name]
            stored = [_text(n) for n in group.attrs["weight_names"]]
            kernel, rec, bias = (group[n][()] for n in stored)
            order = "ifco" if cls == "LSTM" else "zrh"  # Keras 2's fused order, to slice from
            units = rec.shape[0]
            for key in list(group.keys()):
                del group[key]
            names = []
            for gate in ("icfo" if cls == "LSTM" else "zrh"):  # Keras 1's storage order
                g = order.index(gate)
                cols = slice(g * units, (g + 1) * units)
                for kind, value in (("W", kernel[:, cols]), ("U", rec[:, cols]), ("b", bias[cols])):
                    names.append(f"{name}_{kind}_{gate}")
                    group.create_dataset(names[-1], data=value)
            group.attrs["weight_names"] = _bytes_array(names)
    return path


def _keras1_config(f: h5py.File) -> None:
    config = json.loads(f.attrs["model_config"])
    layers = config["config"]["layers"] if isinstance(config["config"], dict) else config["config"]
    layers = [layer for layer in layers if layer["class_name"] != "InputLayer"]
    for layer in layers:
        layer["config"] = {KERAS1_KEYS.get(k, k): v for k, v in layer["config"].items()}
        if layer["class_name"] == "Dense":
            group = f["model_weights"][layer["config"]["name"]]
            names = []
            for stored in (_text(n) for n in group.attrs["weight_names"]):
                value = group[stored][()]
                del group[stored]
                names.append(f"{layer['config']['name']}_{'W' if 'kernel' in stored else 'b'}")
                group.create_dataset(names[-1], data=value)
            group.attrs["weight_names"] = _bytes_array(names)
    f.attrs["model_config"] = json.dumps({"class_name": "Sequential", "config": layers})


def units_mismatch(dest: Path) -> Path:
    """A config that says units=5 over weights that hold 120 units."""
    path = copy("k2_classic.h5", dest)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        for layer in config["config"]["layers"]:
            if layer["class_name"] == "LSTM":
                layer["config"]["units"] = 5
        f.attrs["model_config"] = json.dumps(config)
    return path

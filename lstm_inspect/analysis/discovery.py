"""Which model files a list of command-line paths (files, directories, globs) means, for `check`."""
from __future__ import annotations

import os
from typing import Iterable

#: What a directory walk picks up: Keras files and the other model formats lstm-inspect reads. Array files
#: (.npz) and checkpoints (.index) are checked only when named (or globbed): directories hold many that are not
#: models (input data, TF2 SavedModel variables).
MODEL_EXTENSIONS = (".h5", ".hdf5", ".keras", ".safetensors", ".onnx", ".pt", ".pth", ".tflite")


def _walk_picks(name: str, siblings: set[str]) -> bool:
    """A model file for the directory walk; a Keras 3 sharded-weights index (``x.weights.json``) stands for its
    shards (``x_00000.weights.h5``...), which are not checked on their own."""
    if name.endswith(".weights.json"):
        return True
    if not name.endswith(MODEL_EXTENSIONS):
        return False
    from ..readers.keras3 import SHARD_NAME

    shard = SHARD_NAME.match(name)
    return not (shard and f"{shard['base']}.weights.json" in siblings)


def is_model_directory(path: str) -> bool:
    """An unzipped ``.keras`` (``save_model(..., zipped=False)``): config.json plus model.weights.h5/npz; or a
    TensorFlow SavedModel (saved_model.pb plus variables/variables.index)."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")) and \
            os.path.isfile(os.path.join(path, "variables", "variables.index")):
        return True
    return (os.path.isfile(os.path.join(path, "config.json"))
            and any(os.path.isfile(os.path.join(path, w)) for w in ("model.weights.h5", "model.weights.npz")))


def _leaves(root: str, path: str) -> bool:
    """True when `path` is a symbolic link whose target lies outside the directory `root` being walked."""
    if not os.path.islink(path):
        return False
    inside = os.path.realpath(root)
    target = os.path.realpath(path)
    return os.path.commonpath([inside, target]) != inside


def discover(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The model files that `paths` (files, directories, globs) name, in a stable order, and notes about paths
    that named nothing. A path that does not exist is returned as is, so checking it reports it as unreadable.
    A directory walk never follows a symbolic link out of the directory it was given (a note names each one)."""
    import glob

    found: list[str] = []
    notes: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            if is_model_directory(path):
                found.append(path)
                continue
            before = len(found)
            for root, dirs, files in os.walk(path):
                dirs.sort()
                keep = []
                for d in dirs:
                    full = os.path.join(root, d)
                    if _leaves(path, full):
                        notes.append(f"{full}: a symbolic link out of {path}; not followed")
                    elif is_model_directory(full):
                        found.append(full)
                    elif not d.startswith("."):
                        keep.append(d)
                dirs[:] = keep
                names = set(files)
                for f in sorted(files):
                    if not _walk_picks(f, names):
                        continue
                    full = os.path.join(root, f)
                    if _leaves(path, full):
                        notes.append(f"{full}: a symbolic link out of {path}; not followed")
                    else:
                        found.append(full)
            if len(found) == before:
                notes.append(f"{path}: no model files ({', '.join(MODEL_EXTENSIONS)}, .weights.json, Keras model "
                             "directories) below it")
        elif not os.path.exists(path) and any(c in path for c in "*?["):
            matches = sorted(glob.glob(path, recursive=True))
            if not matches:
                notes.append(f"{path}: the pattern matches nothing")
            for match in matches:
                if os.path.isdir(match):
                    sub, sub_notes = discover([match])
                    found.extend(sub)
                else:
                    found.append(match)
        else:
            found.append(path)
    unique = list(dict.fromkeys(found))
    return unique, notes

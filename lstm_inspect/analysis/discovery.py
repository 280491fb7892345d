"""Which model files a list of command-line paths (files, directories, globs) means, for `check`."""
from __future__ import annotations

import os
from typing import Iterable

#: What a directory walk picks up: Keras files, the other model formats lstm-inspect reads, and the pickle carriers
#: (.npz, .bin: a gate over a directory must scan them for code). Checkpoints (.index) are checked only when named
#: (or globbed): a TF2 SavedModel's variables are not a model of their own.
MODEL_EXTENSIONS = (".h5", ".hdf5", ".keras", ".safetensors", ".onnx", ".pt", ".pth", ".tflite", ".npz", ".bin")
#: The `check` verdict of a `.bin` that holds no model (not a zip, pickle, HDF5, safetensors or TFLite file) and no
#: code: ONNX external data, tokenizer or optimizer blobs, GGUF files... A pass, not an unreadable file.
NOT_A_MODEL = "not a model file; no code found"


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


def not_a_model_file(path: str) -> bool:
    """True for a `.bin` whose first bytes are none of the containers lstm-inspect reads (zip, HDF5, safetensors,
    a protocol 2-5 pickle as torch.save writes, TFLite): raw data, not a model that failed to read. Read through
    one checked handle (a FIFO or device is not "not a model": it stays refused)."""
    if not path.lower().endswith(".bin"):
        return False
    from ..errors import InspectError
    from ..readers import safe_open

    try:
        fd = safe_open.open_regular(path, path)
    except InspectError:
        return False
    try:
        head = os.pread(fd, 16, 0)
    finally:
        os.close(fd)
    containers = (b"PK\x03\x04", b"PK\x05\x06", b"\x89HDF\r\n\x1a\n")
    pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    safetensors = len(head) >= 9 and head[8:9] == b"{"
    return bool(head) and not (head.startswith(containers) or pickle or safetensors or head[4:8] == b"TFL3")


def walked_npz(paths: Iterable[str], files: Iterable[str]) -> frozenset[str]:
    """The `.npz` files among `files` that a directory walk found (not named, not matched by a glob): `check`
    scans them for code only (`CheckOptions.code_only`), since a directory's `.npz` files are as often input data
    as weights, and the value rules would judge the data."""
    import glob

    named = set(paths)
    for path in paths:
        if not os.path.exists(path) and any(c in path for c in "*?["):
            named.update(glob.glob(path, recursive=True))
    return frozenset(f for f in files if f.lower().endswith(".npz") and f not in named)

"""SavedModel directories: tf-keras ``model.save("dir")`` (TF 2.0–2.15's default, ``save_format="tf"``) and
Keras 3 ``model.export("dir")``, as the neutral model.

The weights come from ``variables/variables.index`` + its shards (`tf_bundle`), mapped to layers through the
bundle's object graph (`tf2_checkpoint`): the full names of the variables (``lstm/lstm_cell/kernel``) name their
layers. tf-keras also writes ``keras_metadata.pb``, a ``SavedMetadata`` proto whose nodes carry JSON metadata; the
root node's holds the model config, Keras version and backend, read like an ``.h5`` file's ``model_config``. Without
it (Keras 3 export, a plain ``tf.Module``) layer classes are inferred from names and shapes. ``saved_model.pb``
(the graphs and functions) is never parsed: nothing in it is needed to read weights.
"""
from __future__ import annotations

import os
import stat
from typing import Any

from ..errors import CorruptFile, UnsafeFile, UnsupportedFile
from ..model import Layer, ModelFile
from . import safe_open, tf2_checkpoint, tf_bundle
from .h5safe import MAX_ATTRIBUTE_BYTES, parse_json
from .infer import layers_from_weights
from .keras_config import build_tree
from .protowire import Message, ProtoError

MARKERS = ("saved_model.pb", "saved_model.pbtxt")


def is_saved_model(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, m)) for m in MARKERS)


def _small_file(path: str, label: str) -> bytes | None:
    """A regular file's bytes (None when absent); links and oversized files are refused."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise UnsafeFile(f"{os.path.basename(path)} is a symbolic link; refusing to follow it", label)
    if not stat.S_ISREG(info.st_mode):
        raise CorruptFile(f"{os.path.basename(path)} is not a regular file", label)
    if info.st_size > MAX_ATTRIBUTE_BYTES:
        raise UnsupportedFile(f"{os.path.basename(path)} has {info.st_size:,} bytes (more than "
                              f"{MAX_ATTRIBUTE_BYTES:,}); refusing it", label)
    # opened once without following a link, checked on the handle: a swap after the lstat above is refused
    return safe_open.read_bounded(path, label, MAX_ATTRIBUTE_BYTES, follow=False)


def keras_metadata(path: str, label: str) -> dict[str, Any] | None:
    """The root node's JSON metadata from ``keras_metadata.pb`` (None without the file)."""
    raw = _small_file(os.path.join(path, "keras_metadata.pb"), label)
    if raw is None:
        return None
    try:
        nodes = Message(raw).messages(1)
        root = next((n for n in nodes if n.text(3) == "root"), None)
        text = root.bytes(5) if root is not None else None
    except ProtoError as exc:
        raise CorruptFile(f"keras_metadata.pb is not a valid SavedMetadata proto: {exc}", label) from exc
    if text is None:
        raise CorruptFile("keras_metadata.pb has no root node", label)
    meta = parse_json(text, "keras_metadata.pb's root metadata", label)
    if not isinstance(meta, dict):
        raise CorruptFile("keras_metadata.pb's root metadata is not a JSON object", label)
    return untuple(meta)


def untuple(value: Any) -> Any:
    """tf-keras's SavedModel metadata writes tuples as ``{"class_name": "__tuple__", "items": [...]}``; an ``.h5``
    config has plain lists there. (Nesting is bounded by `parse_json`'s depth check.)"""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__" and isinstance(value.get("items"), list) and len(value) == 2:
            return [untuple(v) for v in value["items"]]
        return {k: untuple(v) for k, v in value.items()}
    if isinstance(value, list):
        return [untuple(v) for v in value]
    return value


def read(path: str, label: str) -> ModelFile:
    prefix = os.path.join(path, "variables", "variables")
    if not os.path.isfile(prefix + ".index"):
        raise UnsupportedFile("a SavedModel without variables/variables.index: it stores no weights", label)
    meta = keras_metadata(path, label)
    bundle = tf_bundle.Bundle(prefix, label)  # its data shards stay open (checked on the handle) while read
    try:
        model = _read_bundle(bundle, meta, label)
    except BaseException:
        bundle.close()
        raise
    model._closers.append(bundle.close)
    return model


def _read_bundle(bundle: tf_bundle.Bundle, meta: dict[str, Any] | None, label: str) -> ModelFile:
    from .legacy_h5 import _attach

    if not tf2_checkpoint.has_object_graph(bundle):
        raise CorruptFile("the SavedModel's variables hold no object graph (_CHECKPOINTABLE_OBJECT_GRAPH)", label)
    found = tf2_checkpoint.variables(bundle, label)
    model = ModelFile(path=label, kind="tf-savedmodel", root=Layer(name="model", class_name="Model", path=()),
                      has_config=False)
    model.backend = "tensorflow"
    config = meta.get("model_config") if meta else None
    groups = tf2_checkpoint.weight_groups(bundle, found, model)
    if isinstance(config, dict):
        model.root = build_tree(config, label)
        model.has_config = True
        model.keras_version = str(meta.get("keras_version") or "") or None
        model.backend = str(meta.get("backend") or "tensorflow")
        _attach(model, groups)
    else:
        model.root.children = [layers_from_weights(name, named) for name, named in groups.items()]
        model.warnings.append("weights-only file: a SavedModel without keras_metadata.pb (Keras 3 model.export, or "
                              "not Keras), so layer classes are inferred from the variables' names and shapes")
    return model

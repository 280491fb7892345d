"""Open any supported model file by looking at its content; the extension is only a hint in messages.

Every file format lives in this package (one module per format; `keras_config.py` normalises Keras configs) and
builds the neutral `ModelFile`. May import only `model`, `errors` and `schema`; frameworks lazily, where a format
needs them."""
from __future__ import annotations

import os

from ..errors import CorruptFile, InspectError, UnsupportedFile
from ..model import ModelFile


def open_model(path: str | os.PathLike[str]) -> ModelFile:
    """Open a Keras model or weights file (or a saved-model directory) and return its neutral model.

    Tensors are read lazily: keep the returned object open (use it as a context manager) while reading them.
    """
    from . import safe_open

    label = os.fspath(path)
    safe_open.check_regular(label, label)  # a FIFO or device is refused before anything opens it
    from . import tf_bundle

    if os.path.isdir(label):
        from . import keras3, tf_saved_model

        if tf_saved_model.is_saved_model(label):
            return tf_saved_model.read(label, label)
        prefix = tf_bundle.checkpoint_in(label)  # a directory holding a TensorFlow `checkpoint` file
        if prefix is not None:
            return _open_bundle(prefix, label)
        return keras3.read_directory(label, label)
    prefix = tf_bundle.prefix_of(label)  # a TensorFlow checkpoint: its prefix, its .index, a .data-* shard
    if prefix is None and os.path.basename(label) == "checkpoint" and os.path.isfile(label):
        prefix = tf_bundle.checkpoint_in(os.path.dirname(label) or ".", label)
    if prefix is not None:
        return _open_bundle(prefix, label)
    if not os.path.exists(label):
        raise InspectError("no such file or directory", label)
    # Opened once and checked on the handle: every reader below reads this very file through `source`.
    fd = safe_open.open_regular(label, label)
    try:
        model = _open_content(fd, safe_open.handle_path(fd, label), label)
    except BaseException:
        os.close(fd)
        raise
    model._closers.insert(0, lambda: os.close(fd))  # closers run last-first: the handle goes last
    return model


def _open_content(fd: int, source: str, label: str) -> ModelFile:
    """The model in the open regular file `fd` (reopenable as `source`), named `label` in messages."""
    try:
        head = os.pread(fd, 9, 0)
    except OSError as exc:
        raise InspectError(f"cannot read: {exc.strerror or exc}", label) from exc
    if not head:
        raise CorruptFile("file is empty", label)

    from . import archive, h5safe, polyglot, tflite_file

    # HDF5 and zip at once, a zip after other bytes, trailing data: other tools would read another view
    polyglot.refuse_ambiguous(fd, os.pread(fd, 16, 0), label)
    if tflite_file.looks_like(os.pread(fd, 16, 0)):  # the TFLite identifier sits at bytes 4-8
        polyglot.refuse_ambiguous(fd, head, label, read_as="a TFLite model")
        return tflite_file.read(source, label)

    if h5safe.is_hdf5(head):
        return _open_hdf5(source, label)
    if archive.is_zip(head):
        from . import keras3, npz_file, torch_state

        names = _zip_names(source, label)
        if torch_state.is_torch_zip(names):
            return _open_torch(source, label, legacy=False)
        if npz_file.looks_like(names):
            return npz_file.read(source, label)
        return keras3.read_archive(source, label)
    from . import torch_state, safetensors_file

    if safetensors_file.looks_like(head, os.fstat(fd).st_size):
        polyglot.refuse_ambiguous(fd, head, label, read_as="a safetensors file")
        return safetensors_file.read(source, label)
    if torch_state.is_pickle(head, label):
        polyglot.refuse_ambiguous(fd, head, label, read_as="a pickle")
        return _open_torch(source, label, legacy=True)
    if label.endswith(".json") or head.lstrip().startswith(b"{"):
        return _open_json(fd, label)
    if label.endswith(".onnx"):  # ONNX protobuf has no magic number: the extension decides, the parse confirms
        from . import onnx_file

        polyglot.refuse_ambiguous(fd, head, label, read_as="an ONNX model")
        polyglot.refuse_onnx_extras(fd, label)
        return onnx_file.read(source, label)
    hint = " (the name says HDF5, but the content is not)" if label.endswith((".h5", ".hdf5", ".keras")) else ""
    raise UnsupportedFile("not a Keras model file: neither HDF5 nor a zip archive (nor .npz, safetensors, PyTorch, ONNX, TFLite or a TensorFlow checkpoint)" + hint,
                          label)


def _open_torch(source: str, label: str, legacy: bool) -> ModelFile:
    """A ``torch.save`` file, read natively (`torch_zip`: scanned for code, then only tensor rebuilds interpreted).
    A pickle that is free of code but holds more than a state dict goes to ``torch.load(weights_only=True)`` when
    torch is installed."""
    from . import torch_state, torch_zip

    try:
        return torch_zip.read_legacy(source, label) if legacy else torch_zip.read(source, label)
    except torch_zip.NotAStateDict as refused:
        try:
            import torch  # noqa: F401
        except ImportError:
            raise refused from None
        return torch_state.read_torch_file(source, label)


def _open_bundle(prefix: str, label: str) -> ModelFile:
    """A TF2 object-based checkpoint when the bundle holds an object graph, else a TF1 checkpoint."""
    from . import tf1_checkpoint, tf2_checkpoint, tf_bundle

    bundle = tf_bundle.Bundle(prefix, label)  # its data shards stay open (checked on the handle) while read
    try:
        if tf2_checkpoint.has_object_graph(bundle):
            model = tf2_checkpoint.read(prefix, label, bundle)
        else:
            model = tf1_checkpoint.read(prefix, label, bundle)
    except BaseException:
        bundle.close()
        raise
    model._closers.append(bundle.close)
    return model


def _open_json(fd: int, label: str) -> ModelFile:
    """A Keras 3 sharded-weights index (``x.weights.json``); no other JSON file is a model."""
    from . import h5safe, keras3

    size = os.fstat(fd).st_size
    if size > h5safe.MAX_ATTRIBUTE_BYTES:
        raise UnsupportedFile(f"a JSON file larger than {h5safe.MAX_ATTRIBUTE_BYTES:,} bytes: not a sharded-weights "
                              "index", label)
    index = h5safe.parse_json(os.pread(fd, size, 0), "the JSON file", label)
    if not keras3.is_shard_index(index):
        raise UnsupportedFile("a JSON file, but not a Keras sharded-weights index (no weight_map); a model's "
                              "config.json is read with its weights: open the .keras file or its directory", label)
    return keras3.read_sharded(label, index, label)


def _zip_names(source: str, label: str) -> list[str]:
    from . import archive

    zipped = archive.Archive(source, label)
    try:
        return zipped.names()
    finally:
        zipped.close()


def _open_hdf5(source: str, label: str) -> ModelFile:
    from . import h5safe, keras3, legacy_h5

    f = h5safe.open_file(source, label)
    try:
        with h5safe.library_errors_as_corrupt(label):
            if legacy_h5.looks_like(f):
                model = legacy_h5.read(f, label)
            elif keras3.looks_like_weights(f):
                model = keras3.read_weights(f, label)
            else:
                raise UnsupportedFile(
                    "HDF5 file holds no Keras model or weights (no model_config, layer_names or layers)", label
                )
    except BaseException:
        f.close()
        raise
    model._closers.append(f.close)
    return model

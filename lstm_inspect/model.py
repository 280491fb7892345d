"""The neutral model of a Keras file: a tree of layers holding lazily read tensors.

Readers build it; everything else (gate splitting, stats, export, forward) works on it and never on the file
format. Nothing here knows about HDF5 or zip archives.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .errors import InspectError

#: The classes that hold other layers as a graph of their own.
CONTAINER_CLASSES = frozenset({"Sequential", "Functional", "Model"})

#: Bytes of one chunk when an array is read in parts (`Tensor.row_chunks`); the CLI's ``--chunk-size`` sets it.
CHUNK_BYTES = 32 << 20
#: `Tensor.read` keeps arrays up to this size for the next call (weights that forward, notes and rules read again),
#: while the arrays kept so far in this process total at most CACHE_TOTAL_BYTES; larger arrays are read again each
#: time, so that no large array (and no sum of many) stays in memory after its user is done with it.
CACHE_BYTES = 1 << 20
CACHE_TOTAL_BYTES = 64 << 20
_cached_bytes = 0


#: No dimension of a real weight comes near this; a larger one is a corrupt or hostile header (numpy could not even
#: describe an empty array with it).
MAX_DIMENSION = 1 << 40


def element_count(shape: Any) -> int:
    """The number of elements of `shape`, exactly: Python integers never wrap (numpy's int64 product wrapped a
    (2**32, 2**32) kernel to 0 elements)."""
    count = 1
    for n in shape:
        count *= int(n)
    return count


@dataclass(eq=False)
class Tensor:
    """One stored weight array; its values are read from the file the first time `read()` is called."""

    name: str
    """The weight's role in its layer as Keras names it: ``kernel``, ``recurrent_kernel``, ``bias``, ``gamma``..."""
    shape: tuple[int, ...]
    dtype: str
    source: str
    """Where the array lives inside the file, e.g. ``model_weights/lstm/lstm/lstm_cell/kernel:0``."""
    _load: Callable[[], np.ndarray] = field(repr=False)
    _value: np.ndarray | None = field(default=None, repr=False)
    _read_part: Callable[[tuple, np.ndarray | None], np.ndarray] | None = field(default=None, repr=False)
    """``(index, out)`` -> the values at `index` (a tuple of slices / ints), read into `out` when given: set by
    readers that can read part of an array from the file (HDF5 hyperslabs)."""
    _mapped: Callable[[], tuple[int, int] | None] | None = field(default=None, repr=False)
    """``()`` -> ``(file descriptor, byte offset)`` when the array's values lie in the file as one C-order run of
    its dtype, in native byte order (an uncompressed contiguous HDF5 dataset, a .safetensors tensor, a stored .npz
    member, a contiguous torch storage view), else None: set by readers that can tell. Large arrays are then read
    through a read-only memory map of the file, a row chunk at a time (no copy; `_mapped_rows`); `read` still
    reads the whole array."""

    @property
    def size(self) -> int:
        return element_count(self.shape)

    @property
    def nbytes(self) -> int:
        try:
            itemsize = np.dtype(self.dtype).itemsize
        except TypeError:  # a dtype numpy does not name (bfloat16...): assume the widest usual one
            itemsize = 8
        return self.size * itemsize

    def read(self) -> np.ndarray:
        """The whole array. Kept for the next call only when small (`CACHE_BYTES`)."""
        if self._value is not None:
            return self._value
        global _cached_bytes
        value = self._load()
        if value.nbytes <= CACHE_BYTES and _cached_bytes + value.nbytes <= CACHE_TOTAL_BYTES:
            self._value = value
            _cached_bytes += value.nbytes
        return value

    def read_part(self, index: tuple, out: np.ndarray | None = None) -> np.ndarray:
        """The values at `index`, reading only them from the file when the reader can (into `out` when given)."""
        place = self._place()
        if place is not None:
            value = _read_mapped(place, self.shape, np.dtype(self.dtype), index, out)
            if value is not None:
                return value
        if self._read_part is None or self._value is not None or self.nbytes <= CACHE_BYTES:
            value = self.read()[index]
            if out is None:
                return value
            out[...] = value
            return out
        return self._read_part(index, out)

    @property
    def mapped(self) -> bool:
        """True when `row_chunks` reads this array through a memory map of the file (a pass over it costs no copy)."""
        return self._place() is not None

    def _place(self) -> tuple[int, int] | None:
        """Where a large array's values lie in the file for a memory map (`_mapped`), or None."""
        if self._mapped is None or self._value is not None or self.nbytes <= CACHE_BYTES:
            return None
        return self._mapped()

    def row_chunks(self, max_bytes: int | None = None, rows: int | None = None, low: int = 0,
                   high: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, rows)``: the array in pieces along its first axis, `rows` rows at a time or at most
        `max_bytes` each (default `CHUNK_BYTES`; at least one row), read from the file into one reused buffer — a
        piece is valid until the next is made. Rows [low, high) only when given (default: all)."""
        if not self.shape or not self.shape[0]:
            yield 0, self.read()
            return
        high = self.shape[0] if high is None else min(high, self.shape[0])
        if rows is None:
            rows = max(1, (max_bytes or CHUNK_BYTES) // max(1, self.nbytes // self.shape[0]))
        place = self._place()
        if place is not None:
            yield from _mapped_rows(place, self.shape, np.dtype(self.dtype), rows, low, high)
            return
        if self._read_part is None or self._value is not None or rows >= high - low:
            value = self.read()
            for start in range(low, high, rows):
                yield start, value[start:min(high, start + rows)]
            return
        buffer = np.empty((rows, *self.shape[1:]), dtype=self.dtype)
        for start in range(low, high, rows):
            stop = min(high, start + rows)
            yield start, self._read_part((slice(start, stop),), buffer[: stop - start])

    def release(self) -> None:
        """Forget the cached values (the next `read()` reads the file again): bounds memory over many layers."""
        self._value = None


def _mapped_rows(place: tuple[int, int], shape: tuple[int, ...], dtype: np.dtype, rows: int, low: int = 0,
                 high: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, rows)`` of an array stored as one C-order run at ``place`` = (file descriptor, byte offset),
    rows [low, high) `rows` at a time, each a read-only view of a memory map of the file: no copy is made, and each
    map is dropped from the process's memory (MADV_DONTNEED, then unmapped) when the next is made, so resident
    memory stays at one chunk. A view kept past that reads the file again when touched. The reader checked that the
    run lies inside the file (a file truncated while mapped would fault: the isolated reader reports the crash)."""
    import mmap

    fd, offset = place
    per_row = element_count(shape[1:])
    row_bytes = per_row * dtype.itemsize
    high = shape[0] if high is None else high
    previous = None
    try:
        for start in range(low, high, rows):
            stop = min(high, start + rows)
            first = offset + start * row_bytes
            base = first - first % mmap.ALLOCATIONGRANULARITY
            mapping = mmap.mmap(fd, offset + stop * row_bytes - base, access=mmap.ACCESS_READ, offset=base)
            _unmap(previous)
            previous = mapping
            values = np.frombuffer(mapping, dtype=dtype, count=(stop - start) * per_row, offset=first - base)
            yield start, values.reshape((stop - start, *shape[1:]))
            del values
    finally:
        _unmap(previous)


def _unmap(mapping: Any) -> None:
    if mapping is None:
        return
    import mmap

    try:
        mapping.madvise(getattr(mmap, "MADV_DONTNEED"))  # out of resident memory even while a view refers to it
    except (AttributeError, OSError, ValueError):
        pass
    try:
        mapping.close()
    except BufferError:
        pass  # a view still refers to the map: it is unmapped when the last view goes


def _read_mapped(place: tuple[int, int], shape: tuple[int, ...], dtype: np.dtype, index: tuple,
                 out: np.ndarray | None) -> np.ndarray | None:
    """The values at `index` (ints and step-1 slices on the first axis, anything numpy takes after it) copied from
    mapped row chunks into `out` (or a new array); None when the index is of another kind."""
    index = index if isinstance(index, tuple) else (index,)
    if any(part is Ellipsis for part in index):
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (len(shape) - len(index) + 1) + index[at + 1:]
    if not index or len(index) > len(shape):
        return None
    first, rest = index[0], index[1:]
    if isinstance(first, (int, np.integer)) and -shape[0] <= first < shape[0]:
        low = int(first) + (shape[0] if first < 0 else 0)
        high = low + 1
    elif isinstance(first, slice) and first.indices(shape[0])[2] == 1:
        low, high, _ = first.indices(shape[0])
        high = max(low, high)
    else:
        return None
    if not all(isinstance(part, (slice, int, np.integer)) for part in rest):
        return None
    selected = np.broadcast_to(np.empty((), dtype=np.bool_), shape)[index].shape
    if out is None:
        out = np.empty(selected, dtype=dtype)
    target = out[np.newaxis] if isinstance(first, (int, np.integer)) else out
    rows = max(1, CHUNK_BYTES // max(1, element_count(shape[1:]) * dtype.itemsize))
    for start, chunk in _mapped_rows(place, shape, dtype, rows, low, high):
        target[start - low:start - low + chunk.shape[0]] = chunk[(slice(None),) + rest]
        del chunk
    return out


@dataclass(eq=False)
class Layer:
    """A layer as the file describes it; containers (models, wrappers) hold their sub-layers in `children`."""

    name: str
    class_name: str
    path: tuple[str, ...]
    """Layer names from the outermost container below the model down to this layer: ``("encoder", "enc_lstm_a")``."""
    config: dict[str, Any] = field(default_factory=dict)
    """The layer's own Keras config (``units``, ``activation``, ...); empty when the file has no config."""
    weights: list[Tensor] = field(default_factory=list)
    children: list["Layer"] = field(default_factory=list)
    entry: dict[str, Any] = field(default_factory=dict, repr=False)
    """The raw config entry (``class_name``, ``module``, ``inbound_nodes``, ...), for graph walking."""
    inferred: bool = False
    """True when the class was guessed from weight names and shapes because the file has no config."""

    @property
    def key(self) -> str:
        """The layer path joined by ``/``: the prefix of this layer's keys in exports."""
        return "/".join(self.path)

    @property
    def own_params(self) -> int:
        return sum(t.size for t in self.weights)

    @property
    def param_count(self) -> int:
        """Every stored value of this layer and its sub-layers, as Keras's ``count_params()`` counts them."""
        return self.own_params + sum(child.param_count for child in self.children)

    @property
    def is_container(self) -> bool:
        return bool(self.children)

    def walk(self) -> Iterator["Layer"]:
        """This layer, then every layer below it, depth first in file order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def weight(self, name: str) -> Tensor | None:
        return next((t for t in self.weights if t.name == name), None)

    @property
    def needs_code(self) -> str | None:
        """Why Keras would need user code to rebuild this layer, or None."""
        if self.class_name == "Lambda":
            return "Lambda layer: its function is stored as code and runs when Keras loads the model"
        if ">" in self.class_name:  # legacy HDF5 configs name a registered class "package>Name", with no module
            return f"custom class {self.class_name!r} must be registered to load"
        module = self.entry.get("module")
        registered = self.entry.get("registered_name")
        if registered and registered != self.class_name:
            return f"custom class {registered!r} must be registered to load"
        if module and not re.match(r"(keras|tf_keras)(\.|$)", str(module)):  # keras_hub, kerasx are not Keras
            return f"class {self.class_name!r} comes from module {module!r}"
        return None


@dataclass(eq=False)
class ModelFile:
    """An opened model file. Use as a context manager, or call `close()`, to release the file."""

    path: str
    kind: str
    """One of the file kinds in `FILE_KINDS`."""
    root: Layer
    keras_version: str | None = None
    backend: str | None = None
    has_config: bool = True
    warnings: list[str] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def keras_major(self) -> int | None:
        """2 for Keras 2 / tf.keras / tf-keras files, 3 for Keras 3, 1 for Keras 1, None when unknown."""
        if not self.keras_version:
            return None
        head = self.keras_version.split(".", 1)[0]
        return int(head) if head.isdigit() else None

    @property
    def layers(self) -> list[Layer]:
        """Every layer below the model itself, depth first."""
        return list(self.root.walk())[1:]

    @property
    def total_params(self) -> int:
        return self.root.param_count

    def find(self, pattern: str) -> list[Layer]:
        """Layers whose path contains `pattern` (matching any part of ``a/b/c``)."""
        return [layer for layer in self.layers if pattern in layer.key]

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()

    def __enter__(self) -> "ModelFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The kinds Keras itself writes (and `verify` can hand to Keras).
KERAS_KINDS = frozenset({"keras1-h5", "keras1-weights-h5", "keras2-h5", "keras2-weights-h5", "keras3-h5",
                         "keras3-weights-h5", "keras3-sharded-weights", "keras-zip", "keras-dir"})

FILE_KINDS = {
    "keras1-h5": "Keras 1 full model (HDF5)",
    "keras1-weights-h5": "Keras 1 weights only (HDF5)",
    "keras2-h5": "Keras 2 / tf.keras full model (HDF5)",
    "keras2-weights-h5": "Keras 2 / tf.keras weights only (HDF5)",
    "keras3-h5": "Keras 3 full model, legacy HDF5",
    "keras3-weights-h5": "Keras 3 weights only (.weights.h5)",
    "keras3-sharded-weights": "Keras 3 sharded weights only (.weights.json index + _00000.weights.h5 shards)",
    "keras-zip": "Keras native .keras archive",
    "keras-dir": "Keras native model directory (unzipped .keras)",
    "torch-safetensors": "PyTorch state dict (.safetensors)",
    "safetensors": "named arrays in the keras or onnx layout (.safetensors, e.g. lstm-inspect export)",
    "npz": "named arrays (.npz from np.savez or lstm-inspect export; never unpickled)",
    "torch-state-dict": "PyTorch state dict (torch.save, read without unpickling; see readers/torch_zip.py)",
    "onnx": "ONNX model",
    "tf1-checkpoint": "TensorFlow checkpoint (.index + .data-*; TF1 cells recognised), read without TensorFlow",
    "tf2-checkpoint": "TensorFlow 2 object-based checkpoint (save_weights without .h5, tf.train.Checkpoint)",
    "tflite": "TFLite flatbuffer (TFLiteConverter; fused sequence LSTM / RNN ops, int8 / float16 weights dequantized)",
    "tf-savedmodel": "TensorFlow SavedModel directory (tf-keras model.save(save_format='tf'), Keras 3 model.export)",
}


def select_layers(model: ModelFile, patterns: tuple[str, ...] | list[str] = ()) -> list[Layer]:
    """Layers whose path contains any of `patterns` (all layers when none), with their sub-layers. Patterns that
    match nothing are an InspectError listing the file's layer paths (`no_layer_matches`)."""
    if not patterns:
        return model.layers
    chosen: dict[int, Layer] = {}
    for layer in model.layers:
        if any(p in layer.key for p in patterns):
            for sub in layer.walk():
                chosen.setdefault(id(sub), sub)
    if not chosen:
        raise no_layer_matches(patterns, [layer.key for layer in model.layers], model.path)
    return [layer for layer in model.layers if id(layer) in chosen]


def no_layer_matches(patterns: tuple[str, ...] | list[str], paths: list[str], file: str,
                     what: str = "layer paths") -> InspectError:
    """The one error of every command whose --layer matches nothing: the file's `paths`, closest first."""
    import difflib

    def closeness(path: str) -> float:
        return max(difflib.SequenceMatcher(None, p.lower(), path.lower()).ratio() for p in patterns)

    ranked = sorted(dict.fromkeys(p for p in paths if p), key=closeness, reverse=True)
    shown = ", ".join(ranked[:_LISTED_PATHS]) + (f", ... ({len(ranked) - _LISTED_PATHS} more)"
                                                   if len(ranked) > _LISTED_PATHS else "")
    return InspectError(f"--layer {', '.join(patterns)} matches nothing; the {what} are (closest first): "
                        f"{shown or '(none)'}", file)


#: How many layer paths a no-match error lists.
_LISTED_PATHS = 30

"""Find code a model file would run when loaded, wherever it hides — read as data, never imported or run.

Two sources, one kind of result (`CodeFinding`: where, what):

- **Keras configs** (`scan_config`): the whole parsed JSON is walked, every dict and list, so nesting cannot hide
  anything — wrappers (TimeDistributed, Bidirectional), nested models, RNN cells, ``compile_config`` /
  ``training_config`` (loss, metrics, optimizer), objects inside a layer's attributes (an ``activation``, a
  regularizer, an initializer). Reported: serialized Python (Keras 3 ``__lambda__``, Keras 1/2 marshalled Lambda
  bytecode, any string that is base64 of marshalled bytecode or of a pickle — TorchModuleWrapper's whole pickled
  torch module —, its callables named), functions and classes from a ``module`` outside Keras or with a custom
  ``registered_name``, legacy ``package>Name`` classes, Keras 2 class names Keras does not define, Keras functions
  outside activations / losses / metrics (``keras.utils.get_file``, ``keras.config.enable_unsafe_deserialization``),
  and function names that are not Keras's (``"loss": "<lambda>"``). Where is a JSON path:
  ``config.json: config.layers[1].config.layer.config.function``.
- **Pickles** (`scan_file`): ``.pt`` / ``.pth`` / ``.bin`` (every ``.pkl`` member of a torch zip; the pickles of a
  legacy file or a bare pickle) and ``.npz`` members holding object arrays, disassembled by
  `lstm_inspect.readers.pickle_scan`: every import outside the tensor allow-list, with the member and byte offset.
"""
from __future__ import annotations

import binascii
import io
import json
import os
import re
import stat
import zipfile
from typing import Any, Iterator

from ..readers import pickle_scan
from ..readers.pickle_scan import CodeFinding
from .keras_names import KERAS_CLASSES, KERAS_FUNCTIONS

#: At most this many findings per file are listed (then one line says how many more).
MAX_FINDINGS = 200
#: Keras's own modules: ``keras``, ``keras.src.layers...``, ``tf_keras...`` (not ``keras_hub`` or ``kerasx``).
_KERAS_MODULE = re.compile(r"^(keras|tf_keras)(\.|$)")
#: Keras modules whose functions a config may name as data: activations, losses, metrics.
_KERAS_FUNCTION_MODULE = re.compile(r"^(keras|tf_keras)(\.src)?\.(activations|losses|metrics)(\.|$)")
#: Keras 3's serialization markers for plain values (tuples, tensors, arrays...), not classes.
_VALUE_MARKERS = frozenset({"__tuple__", "__tensor__", "__numpy__", "__bytes__", "__keras_tensor__",
                            "__typespec__", "__ellipsis__", "__slice__", "__dtype__"})
#: Keys under which a config nests layers (a model's list, a wrapper's layer, an RNN's cell or cells).
_LAYER_KEYS = frozenset({"layers", "layer", "backward_layer", "forward_layer", "cell", "cells"})
#: Keys whose string values name a function Keras looks up when loading.
_FUNCTION_KEYS = frozenset({"activation", "recurrent_activation", "loss", "metrics", "weighted_metrics", "fn"})
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")
#: Decoded payloads larger than this are reported without being scanned further.
MAX_PAYLOAD_BYTES = 64 << 20


def scan_config(document: Any, source: str) -> list[CodeFinding]:
    """Every place in a parsed Keras config (``config.json``, ``model_config``, ``training_config``) that holds or
    names code; `source` prefixes each JSON path."""
    walker = _Walker(source)
    walker.walk(document, "", None, ())
    return walker.findings


def _join(path: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key)}]"


class _Walker:
    def __init__(self, source: str):
        self.source = source
        self.findings: list[CodeFinding] = []
        self.layers: tuple[str, ...] = ()

    def report(self, path: str, what: str) -> None:
        self.findings.append(CodeFinding(f"{self.source}: {path or '(top level)'}", what, "/".join(self.layers)))

    def walk(self, node: Any, path: str, key: str | None, layers: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            name = node.get("config", {}).get("name") if isinstance(node.get("config"), dict) else None
            if key in _LAYER_KEYS and isinstance(name, str) and isinstance(node.get("class_name"), str):
                layers = (*layers, name)  # a nested layer: findings below it name it
            self.layers = layers
            if self.object(node, path):
                return
            for child_key, value in node.items():
                self.walk(value, _join(path, child_key), child_key if isinstance(child_key, str) else None, layers)
        elif isinstance(node, list):
            for index, value in enumerate(node):
                # a list under "metrics" still names functions; under "function" (Keras 2 Lambda) it holds code
                self.walk(value, _join(path, index), key, layers)
        elif isinstance(node, str):
            self.layers = layers
            payload = embedded_code(node)
            if payload:
                self.report(path, payload)
            elif key in _FUNCTION_KEYS and not _keras_function_name(node):
                self.report(path, f"names the function {node!r}, which Keras does not define: loading the model "
                                  "(with compile=True for a loss or metric) needs user code for it")

    def object(self, node: dict, path: str) -> bool:
        """Report a serialized object that is code; True when nothing below it needs walking."""
        cls, module = node.get("class_name"), node.get("module")
        registered, config = node.get("registered_name"), node.get("config")
        if not isinstance(cls, str):
            return False
        if cls == "__lambda__":
            self.report(path, "a serialized Python lambda (marshalled bytecode that Keras runs when loading)")
            return True
        if cls == "function" and "module" in node:  # Keras 3's serialized function
            name = config if isinstance(config, str) else json.dumps(config)[:80]
            if not (isinstance(module, str) and _KERAS_FUNCTION_MODULE.match(module) and name in KERAS_FUNCTIONS):
                self.report(path, f"the Python function {name!r} from module {module!r}"
                                  + ("" if isinstance(module, str) and _KERAS_MODULE.match(module) else
                                     ": loading imports and calls code outside the file"))
            return True
        if cls == "Lambda" and isinstance(config, dict):
            self.keras2_lambda(config, _join(path, "config"))
        if cls == "TorchModuleWrapper" and isinstance(config, dict) and isinstance(config.get("module"), str):
            payload = embedded_code(config["module"]) or "a payload that is not a pickle (not checked)"
            self.report(_join(_join(path, "config"), "module"),
                        "TorchModuleWrapper: a whole torch module, pickled (Keras loads it with "
                        f"torch.load(weights_only=False)): {payload}")
            config, layers = {k: v for k, v in config.items() if k != "module"}, self.layers
            for child_key, value in node.items():
                if child_key != "config":
                    self.walk(value, _join(path, child_key), child_key, layers)
            for child_key, value in config.items():
                self.walk(value, _join(_join(path, "config"), child_key), child_key, layers)
            return True
        reasons = []
        if isinstance(module, str) and not _KERAS_MODULE.match(module):
            reasons.append(f"from module {module!r} (imported when loading)")
        if isinstance(registered, str) and registered != cls and not (isinstance(module, str)
                                                                      and _KERAS_MODULE.match(module)):
            reasons.append(f"registered as {registered!r}")
        if ">" in cls and not _keras_registered(cls):
            reasons.append("a registered custom class")
        elif ("module" not in node and "config" in node and cls not in KERAS_CLASSES
              and cls not in _VALUE_MARKERS and ">" not in cls):
            reasons.append("not a class Keras defines")
        if reasons:
            self.report(path, f"custom class {cls!r}: " + ", ".join(reasons) + "; loading needs code that is not "
                              "in the file")
        return False

    def keras2_lambda(self, config: dict, path: str) -> None:
        """A Keras 1/2 Lambda names a function by name and module (the bytecode forms are caught as strings)."""
        for field in ("function", "output_shape", "mask"):
            value, kind = config.get(field), config.get(f"{field}_type")
            if isinstance(value, str) and kind == "function" and not embedded_code(value):
                where = config.get("module") if field == "function" else config.get(f"{field}_module")
                self.report(_join(path, field), f"Lambda layer calls the Python function {value!r} from module "
                                                f"{where!r}")


def _keras_registered(cls: str) -> bool:
    """tf-keras writes its own optimizers as ``Custom>Adam`` (and Keras 3 some objects as ``keras>Name``)."""
    package, _, name = cls.partition(">")
    return package in ("Custom", "keras", "Keras", "tf_keras") and name in KERAS_CLASSES


def _keras_function_name(name: str) -> bool:
    return name in KERAS_FUNCTIONS or name in KERAS_CLASSES or name == "" or name.lower() in KERAS_FUNCTIONS


def embedded_code(text: str) -> str | None:
    """What a string is if it is code: marshalled Python bytecode (Keras 1's raw form, or base64 as Keras 2 and 3
    write Lambda functions), or base64 of a pickle / torch.save zip (whose imports are named)."""
    if len(text) >= 16 and text[0] == "\u00e3":  # Keras 1: marshal.dumps(code).decode("raw_unicode_escape")
        return "marshalled Python bytecode (Keras runs it when loading)"
    if len(text) < 24 or not _BASE64.fullmatch(text[:96]):
        return None
    head = _b64("".join(text[:96].split())[:16])
    if head is None:
        return None
    if head[:1] == b"\xe3":
        return "marshalled Python bytecode, base64 (Keras runs it when loading)"
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
        if len(text) > MAX_PAYLOAD_BYTES * 4 // 3:
            return "a base64 pickle too large to check"
        data = _b64("".join(text.split()))
        if data is None:
            return None
        return describe_pickles(data)
    return None


def _b64(text: str) -> bytes | None:
    try:
        return binascii.a2b_base64(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def describe_pickles(data: bytes) -> str:
    """One line naming what the pickles in `data` (a bare pickle or a torch.save zip) import outside the
    allow-list, or that they import nothing else."""
    findings = list(_pickle_findings(data, "payload"))
    imported = list(dict.fromkeys(f.what for f in findings))
    kind = "a torch.save zip" if data[:2] == b"PK" else "a pickle"
    if not imported:
        return f"{kind} that imports only tensor rebuild functions"
    shown = ", ".join(imported[:6]) + (f" and {len(imported) - 6} more" if len(imported) > 6 else "")
    return f"{kind} that imports and would call {shown}"


# ------------------------------------------------------------------------------------------------------ files


def scan_file(path: str) -> list[CodeFinding]:
    """Every place in a model file that holds or names code: the Keras configs (``config.json`` of a ``.keras`` zip
    or directory; ``model_config`` and ``training_config`` of an HDF5 file) and the pickles (every ``.pkl`` member
    of a torch zip, the pickles of a legacy torch file or a bare pickle, ``.npy`` members of Python objects).

    Independent of the model readers, so code is found in a file whose weights cannot be read. A damaged file gives
    what was found up to the damage (the readers report it); a config that cannot be parsed is a finding, since
    what is not read is not checked.
    """
    from ..errors import InspectError

    try:
        if os.path.isdir(path):
            return _cap(_directory(path))
        if not stat.S_ISREG(os.stat(path).st_mode):
            return []  # a FIFO or a device is never opened (the readers refuse it)
        return _cap(_regular_file(path, follow=True))
    except (InspectError, OSError, ValueError, EOFError):  # damage the readers report
        return []


def _regular_file(path: str, follow: bool) -> list[CodeFinding]:
    """The findings of one file, opened once (a link followed only when `follow`), checked to be a regular file on
    the handle and read through it: libraries that want a path get the handle's /proc/self/fd name."""
    from ..readers import h5safe, safe_open, torch_state

    fd = safe_open.open_regular(path, path, follow=follow)
    try:
        source = safe_open.handle_path(fd, path)
        head = os.pread(fd, 9, 0)
        if h5safe.is_hdf5(head):
            return _hdf5(source)
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            return _zip(source)
        if torch_state.is_pickle(head, path):
            with os.fdopen(os.dup(fd), "rb") as handle:
                return list(_stream_findings(handle, ""))
        return []
    finally:
        os.close(fd)


def _cap(findings: list[CodeFinding]) -> list[CodeFinding]:
    if len(findings) <= MAX_FINDINGS:
        return findings
    return findings[:MAX_FINDINGS] + [CodeFinding("…", f"{len(findings) - MAX_FINDINGS:,} more findings not listed")]


def _json(text: bytes | str | None, what: str, path: str) -> list[CodeFinding]:
    from ..errors import InspectError
    from ..readers import h5safe

    if text is None:
        return []
    try:
        document = h5safe.parse_json(text, what, path)
    except InspectError as exc:
        return [CodeFinding(what, f"not checked: {exc.message}")]
    return scan_config(document, what)


def _directory(path: str) -> list[CodeFinding]:
    from ..errors import InspectError
    from ..readers import h5safe, safe_open

    config = os.path.join(path, "config.json")
    if not os.path.isfile(config) or os.path.islink(config):
        return []
    if os.path.getsize(config) > h5safe.MAX_ATTRIBUTE_BYTES:
        return [CodeFinding("config.json", "larger than the config bound: not checked")]
    try:  # one handle, never through a link (a swap after the checks above is refused, not followed)
        text = safe_open.read_bounded(config, path, h5safe.MAX_ATTRIBUTE_BYTES, follow=False)
    except InspectError as exc:
        return [CodeFinding("config.json", f"not checked: {exc.message}")]
    found = _json(text, "config.json", path)
    weights = os.path.join(path, "model.weights.npz")
    if os.path.isfile(weights) and not os.path.islink(weights):
        found += _regular_file(weights, follow=False)
    return found


def _hdf5(path: str) -> list[CodeFinding]:
    from ..errors import InspectError
    from ..readers import h5safe

    found: list[CodeFinding] = []
    f = h5safe.open_file(path, path)
    try:
        with h5safe.library_errors_as_corrupt(path):
            for name in ("model_config", "training_config"):
                try:
                    text = h5safe.attr(f, name, path)
                except InspectError as exc:
                    found.append(CodeFinding(name, f"not checked: {exc.message}"))
                    continue
                found += _json(text, name, path)
    finally:
        f.close()
    return found


def _zip(path: str) -> list[CodeFinding]:
    from ..readers import h5safe
    from ..readers.archive import Archive

    archive = Archive(path, path)
    try:
        found: list[CodeFinding] = []
        names = archive.names()
        if "config.json" in names:  # a .keras archive: its config, compile_config inside it
            found += _json(archive.read_bytes("config.json", h5safe.MAX_ATTRIBUTE_BYTES), "config.json", path)
        for name in names:
            if name.endswith(".pkl"):
                found += pickle_scan.scan_bytes(archive.read_bytes(name, pickle_scan.MAX_PICKLE_BYTES),
                                                name).findings
            elif name.endswith(".npy"):
                with archive.open_stream(name) as member:  # inflates only the header (and a pickle)
                    found += _npy(member, name)
            elif name.endswith(".npz"):  # a .keras archive's model.weights.npz (older Keras loaded it with pickles)
                found += _nested_npz(archive.read_bytes(name, pickle_scan.MAX_PICKLE_BYTES), name)
        return found
    finally:
        archive.close()


def _nested_npz(data: bytes, where: str) -> list[CodeFinding]:
    try:
        nested = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        return []
    found: list[CodeFinding] = []
    with nested:
        for info in nested.infolist()[:10_000]:
            if info.filename.endswith(".npy"):
                with nested.open(info) as member:
                    found += _npy(member, f"{where}:{info.filename}")
    return found


def _pickle_findings(data: bytes, where: str) -> Iterator[CodeFinding]:
    """A pickle or a torch.save zip held in memory (a config's base64 payload)."""
    if data[:2] == b"PK":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, ValueError):
            return
        with archive:
            for info in archive.infolist()[:1000]:
                if info.filename.endswith(".pkl"):
                    with archive.open(info) as member:
                        pickle_data = member.read(pickle_scan.MAX_PICKLE_BYTES + 1)
                    if len(pickle_data) > pickle_scan.MAX_PICKLE_BYTES:
                        yield CodeFinding(f"{where}:{info.filename}", "pickle too large to check")
                    else:
                        yield from pickle_scan.scan_bytes(pickle_data, f"{where}:{info.filename}").findings
    else:
        yield from _stream_findings(io.BytesIO(data), f"{where} ")


def _npy(member: Any, name: str) -> list[CodeFinding]:
    """An ``.npy`` member of Python objects is a header followed by a pickle of the array."""
    import numpy as np

    try:
        version = np.lib.format.read_magic(member)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        _, _, dtype = reader(member, max_header_size=10_000)
    except Exception:  # a damaged header: the npz reader reports it
        return []
    if not dtype.hasobject:
        return []
    offset = member.tell()
    scanned = pickle_scan.scan(member, f"{name} (object array pickle at byte {offset})")
    return scanned.findings
def _stream_findings(handle: Any, prefix: str) -> Iterator[CodeFinding]:
    """A bare pickle, or the five pickles of a legacy torch.save file (the first one is torch's magic number)."""
    from ..readers.torch_zip import LEGACY_MAGIC

    start = handle.tell()
    first = pickle_scan.scan(handle, f"{prefix}pickle 1")
    yield from first.findings
    if not first.complete:
        return
    if not _is_magic(handle, start, first.end, LEGACY_MAGIC):
        return
    handle.seek(start + first.end)
    for index in range(2, 6):
        scanned = pickle_scan.scan(handle, f"{prefix}pickle {index} of 5 (at byte {handle.tell()})")
        yield from scanned.findings
        if not scanned.complete:
            return


def _is_magic(handle: Any, start: int, end: int, magic: int) -> bool:
    handle.seek(start)
    data = handle.read(end)
    import pickletools

    try:
        values = [arg for op, arg, _ in pickletools.genops(data) if op.name in ("LONG1", "LONG", "LONG4")]
    except Exception:
        return False
    return values == [magic]

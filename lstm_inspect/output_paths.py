"""Where a command writes: exactly the path the user gave, or a one-line refusal before any work is done.

numpy's ``savez`` appends ``.npz`` to a name without it, so ``-o out/noext`` used to write ``out/noext.npz`` and
``-o out/`` a hidden ``out/.npz`` while the message named the path given. Every writer checks its path here first.
"""
from __future__ import annotations

import os

from .errors import InspectError

#: What each kind of output may be called (the first is the one suggested).
NPZ = (".npz",)
ARRAYS = (".npz", ".safetensors")
JSON = (".json",)
HTML = (".html", ".htm")


def checked_output(path: str | os.PathLike[str], extensions: tuple[str, ...], what: str = "the output file") -> str:
    """`path` as a string when it names a file this output may be written to; otherwise an InspectError (exit 2)
    naming the expected extension. The file's directory must exist; nothing is created or added to the name."""
    path = os.fspath(path)
    expected = " or ".join(extensions)
    if not path or path.endswith(("/", os.sep)) or os.path.isdir(path):
        raise InspectError(f"is a directory; -o takes a file name ending in {expected}", path or ".")
    if not path.lower().endswith(extensions):
        raise InspectError(f"{what} must end in {expected} (the name is used as given, nothing is "
                           "appended)", path)
    parent = os.path.dirname(path) or "."
    if not os.path.isdir(parent):
        raise InspectError(f"cannot write: no such directory {parent!r}", path)
    return path

"""Keeping a reference framework's start-up noise off the user's terminal.

TensorFlow prints "Could not find cuda drivers", oneDNN notices and absl's "All log messages before
absl::InitializeLog()" from C++ straight to file descriptor 2, where neither TF_CPP_MIN_LOG_LEVEL nor Python's
logging reaches. While a reference framework is imported and run, fd 2 goes to a temporary file instead; what it
wrote is kept for the error message when the framework fails, and dropped otherwise.
"""
from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from typing import Iterator


class Captured:
    """What the framework wrote on fd 2 while silenced (read after the block)."""

    text = ""


@contextlib.contextmanager
def silenced_stderr() -> Iterator[Captured]:
    """fd 2 (and sys.stderr) into a temporary file for the duration of the block."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    captured = Captured()
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield captured
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read(1 << 20).decode("utf-8", "replace")


def one_line(exc: BaseException, limit: int = 600) -> str:
    """A framework's exception as one readable line: TensorFlow's ``{{function_node ...}}`` / ``[[{{node ...}}]]``
    decorations and op names dropped, whitespace collapsed, at most `limit` characters."""
    text = str(exc) or type(exc).__name__
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text)  # Keras 3 makes the op's message bold
    text = re.sub(r"\{\{[^{}]*\}\}", "", text)
    text = re.sub(r"\[\[[^\[\]]*\]\]", "", text)
    text = re.sub(r"\[Op:[^\]]*\]", "", text)
    text = re.sub(r"Graph execution error:|Detected at node[^\n]*", "", text)
    # Keras 3 wraps the op's error: "Exception encountered when calling X.call(). <error> Arguments received by ..."
    text = re.sub(r"Exception encountered when calling [\w.]+\(\)\.?", "", text)
    text = text.split("Arguments received by")[0]
    text = re.sub(r"\bname:\s*$", "", text.strip())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith(
        ("File ", "Traceback", "^"))]
    text = " ".join(lines) if lines else type(exc).__name__
    text = re.sub(r"\s+", " ", text).strip(" .:")
    return text if len(text) <= limit else text[: limit - 3] + "..."

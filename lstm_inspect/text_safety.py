"""The output boundary: every string that came from a file is data, shown so it cannot act on a terminal, a parser
or a CI runner.

A layer name, a config value, a file name or an error message quoting one may hold anything: ``ESC[2J`` (clears a
terminal), an OSC title or hyperlink, NUL, a newline followed by ``::error ...`` (a GitHub workflow command), a
lone surrogate (not encodable, so printing it crashes), ``[link=file:///etc/passwd]`` (rich markup). Renderers pass
such strings through `visible` (human output, JUnit, GitHub, SARIF, one-line errors) or `json_safe` (JSON), and
build rich output from `Text` objects, never from markup strings holding file data.
"""
from __future__ import annotations

import math
import re
from typing import Any

#: Characters that act instead of showing, or show nothing: C0 controls (newline, ESC, NUL ...), DEL, C1 controls
#: (0x80-0x9f, including NEL and the 8-bit CSI / OSC), zero-width and bidirectional controls (U+200B-U+200F,
#: U+202A-U+202E, U+2060-U+2069: "Trojan source"), line / paragraph separators (U+2028, U+2029), the BOM, Unicode
#: noncharacters U+FFFE / U+FFFF (not allowed in XML 1.0), Unicode tag characters, and lone surrogates (not UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb\ufffe\uffff"
                     "\ud800-\udfff\U000e0000-\U000e007f]")
_UNSAFE_KEEP_NEWLINES = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff"
                                   "\ufff9-\ufffb\ufffe\uffff\ud800-\udfff\U000e0000-\U000e007f]")
_SURROGATE = re.compile("[\ud800-\udfff]")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _code(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    point = ord(char)
    if point < 0x100:
        return f"\\x{point:02x}"
    if point < 0x10000:
        return f"\\u{point:04x}"
    return f"\\U{point:08x}"


def visible(text: Any) -> str:
    """`text` on one line with every control, invisible or unencodable character written as its escape
    (``\\x1b``, ``\\n``, ``\\ud800``, ``\\u202e``): safe for a terminal, XML 1.0, a workflow command and UTF-8."""
    return _UNSAFE.sub(_code, text if isinstance(text, str) else str(text))


def visible_lines(text: str) -> str:
    """Like `visible` but keeps newlines: for multi-line documents lstm-inspect composes itself (Markdown)."""
    return _UNSAFE_KEEP_NEWLINES.sub(_code, text)


#: The human output shows at most this many characters of one string from a file (a name can be megabytes).
MAX_SHOWN_CHARS = 1000


def shorten(text: str, limit: int = MAX_SHOWN_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def sanitize(data: Any) -> Any:
    """`data` (JSON-like: dicts, lists, strings, numbers) with `visible` applied to every string, keys included,
    and strings past MAX_SHOWN_CHARS shortened: what the human renderers draw from."""
    if isinstance(data, str):
        return shorten(visible(data))
    if isinstance(data, dict):
        return {sanitize(k): sanitize(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [sanitize(v) for v in data]
    return data


#: How the JSON outputs write numbers RFC 8259 has no token for.
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def json_safe(data: Any) -> Any:
    """`data` as strict RFC 8259 JSON can carry it: NaN / ±Inf become the strings ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``; a lone surrogate (not Unicode text: a non-UTF-8 byte of a file name, or ``\\ud800`` in a
    config) becomes its visible escape. Other strings stay exact (JSON escapes their control characters)."""
    if isinstance(data, str):
        return _SURROGATE.sub(_code, data)
    if isinstance(data, float):
        if math.isnan(data):
            return "NaN"
        return NON_FINITE.get(data, data)
    if isinstance(data, dict):
        return {json_safe(k) if isinstance(k, str) else k: json_safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(v) for v in data]
    return data


def dumps(data: Any, indent: int | None = 2) -> str:
    """The one way lstm-inspect writes JSON for users: `json_safe`, and never a NaN / Infinity token."""
    import json

    return json.dumps(json_safe(data), indent=indent, allow_nan=False)

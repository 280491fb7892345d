"""More fuzzing (issue 13): the ONNX, safetensors and Keras-directory readers with structured hostile edits, and
every output format with arbitrary strings (any code point, lone surrogates included).

Same contract as tests/test_fuzz.py: each mutant is inspected and exported in the isolated child and must end in a
report or a one-line InspectError naming the file, in bounded time, creating no other file. Seeds are written by
the real writers (onnx.helper, Keras 3's saved directory fixture, the safetensors export fixture); the mutations
are hand-made.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from lstm_inspect.analysis.check import FileResult, Finding
from lstm_inspect.render.formats import FORMATTERS
from lstm_inspect.text_safety import dumps
from test_fuzz import EXAMPLES, FUZZ, FIXTURES, _mutate, mutations, outcome

HOSTILE_FUZZ = settings(FUZZ, max_examples=max(EXAMPLES // 5, 1))
any_text = st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=40)
huge_ints = st.one_of(st.integers(-5, 70_000), st.integers(-(1 << 70), 1 << 70))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz_hostile")


def onnx_seed() -> bytes:
    from test_hostile_readers import lstm_onnx

    return lstm_onnx().SerializeToString()


@HOSTILE_FUZZ
@given(tensor=st.integers(0, 2), dims=st.lists(huge_ints, max_size=4), data_type=st.integers(0, 20),
       cut=st.integers(0, 200), external=st.booleans(), **mutations)
def test_onnx_mutations(work, tensor, dims, data_type, cut, external, flips, where, junk, keep):
    """Structured edits of one initializer (dims, data type, raw data length, external data), then byte edits."""
    import onnx

    model = onnx.load_from_string(onnx_seed())
    init = model.graph.initializer[tensor]
    if dims:
        del init.dims[:]
        try:
            init.dims.extend(dims)
        except ValueError:  # protobuf refuses a dim outside int64: not a file anyone can write
            return
    if data_type != 1:
        init.data_type = data_type
    init.raw_data = init.raw_data[:max(0, len(init.raw_data) - cut)]
    if external:
        entry = init.external_data.add()
        entry.key, entry.value = "location", "secret.bin"
        init.data_location = onnx.TensorProto.EXTERNAL
    try:
        data = model.SerializeToString()
    except ValueError:  # protobuf refuses a dim outside int64: not a file anyone can write
        return
    (work / "secret.bin").write_bytes(b"\x00" * 256)
    path = work / "mutant.onnx"
    path.write_bytes(_mutate(data, flips, where, junk, keep))
    outcome(path, work)


SAFETENSORS_SEED = FIXTURES.parent / "exports" / "k3_bidi_gru.onnx.safetensors"


@HOSTILE_FUZZ
@given(name=st.sampled_from([0, 1, 2]), shape=st.lists(huge_ints, max_size=4),
       dtype=st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F8_E4M3", "X", 7]),
       offsets=st.one_of(st.none(), st.lists(huge_ints, min_size=0, max_size=3)))
def test_safetensors_header_mutations(work, name, shape, dtype, offsets):
    data = SAFETENSORS_SEED.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + length])
    key = sorted(k for k in header if k != "__metadata__")[name]
    header[key]["shape"] = shape
    header[key]["dtype"] = dtype
    if offsets is not None:
        header[key]["data_offsets"] = offsets
    text = json.dumps(header).encode()
    path = work / "mutant.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    outcome(path, work)


json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70), st.floats(),
                                     any_text),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(any_text, inner, max_size=4)), max_leaves=12)


@HOSTILE_FUZZ
@given(member=st.sampled_from(["config.json", "metadata.json", "model.weights.h5"]),
       how=st.sampled_from(["json", "bytes", "symlink", "fifo", "directory", "missing"]), value=json_values,
       path_in_config=st.lists(st.sampled_from(["config", "layers", 0, 1, "name", "class_name"]), max_size=4),
       **mutations)
def test_keras_directory_mutations(work, member, how, value, path_in_config, flips, where, junk, keep):
    """A Keras 3 saved directory (k3_nested_dir) with one member replaced: hostile JSON at a place in the config,
    mangled bytes, a symbolic link (to /etc/passwd), a FIFO, a directory or nothing."""
    folder = work / "model_dir"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(FIXTURES / "k3_nested_dir", folder)
    target = folder / member
    if how == "json" and member.endswith(".json"):
        document = json.loads(target.read_bytes())
        node = document
        for step in path_in_config[:-1]:
            child = node[step] if isinstance(node, dict) and step in node else \
                node[step] if isinstance(node, list) and isinstance(step, int) and step < len(node) else None
            if not isinstance(child, (dict, list)):
                break
            node = child
        if isinstance(node, dict):
            node[str(path_in_config[-1]) if path_in_config else "config"] = value
        target.write_text(json.dumps(document))
    elif how in ("json", "bytes"):
        target.write_bytes(_mutate(target.read_bytes(), flips, where, junk, keep))
    else:
        target.unlink()
        if how == "symlink":
            target.symlink_to("/etc/passwd")
        elif how == "fifo":
            os.mkfifo(target)
        elif how == "directory":
            target.mkdir()
    outcome(folder, work)


# ---------------------------------------------------------------------------------------------------------------
# Output formats: any string from a file, in every format

_ACTIVE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\ud800-\udfff\ufffe\uffff]")


@HOSTILE_FUZZ
@given(path=any_text.filter(bool), layer=any_text, block=st.one_of(st.none(), any_text), message=any_text,
       error=st.one_of(st.none(), any_text), number=st.floats())
def test_every_output_format_takes_any_string(path, layer, block, message, error, number):
    result = FileResult(path=path, kind="keras-zip", error=error,
                        findings=[] if error else [Finding("non-finite", "error", layer, block, message)])
    for fmt, render in FORMATTERS.items():
        text = render([result], ["non-finite"], False)
        text.encode("utf-8")
        if fmt in ("json", "sarif"):
            json.loads(text, parse_constant=lambda token: pytest.fail(f"{fmt}: {token}"))
        else:
            assert not _ACTIVE.search(text.replace("\n", "")), fmt
        if fmt == "junit":
            ET.fromstring(text.encode("utf-8"))
        if fmt == "github":
            assert len(text.splitlines()) == 1 and text.startswith(("::error ", "::warning "))
    from lstm_inspect.render.check import render_check

    out = io.StringIO()
    render_check([result], Console(file=out, width=100, color_system=None), strict=False)
    assert not _ACTIVE.search(out.getvalue().replace("\n", ""))
    document = json.loads(dumps({"v": number, "s": layer}), parse_constant=lambda token: pytest.fail(token))
    assert isinstance(document["v"], (float, int, str))

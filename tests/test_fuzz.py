"""Mutation fuzzing over real fixture files: bit flips, truncations, overwritten byte ranges, corrupted zip
headers, and structurally valid HDF5 files with hostile configs and attributes.

Every mutant is inspected (with statistics, so every tensor is read) and exported inside the isolated child the CLI
uses. Whatever the bytes, the outcome must be a report or an `InspectError` — never a bug (InternalError), never
a crash or hang of the test process — within a bounded time and memory, and nothing may be written outside the
output path. Deterministic (derandomized) so CI runs the same cases every time; FUZZ_EXAMPLES scales it up.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lstm_inspect import InspectError, export, inspect, isolation

FIXTURES = Path(__file__).parent / "fixtures" / "models"
SEEDS = ["k2_gru_ra.h5", "k2_nested_weights.h5", "k3_bidi_concat.h5", "k3_gru_ra.keras", "k2_nested.keras",
         "k3_bidi_concat.weights.h5", "k3_multi_io.keras",
         # exported arrays (tests/fixtures/exports): .npz (stored and deflated members) and .safetensors
         "../exports/k3_bidi_gru.torch.npz", "../exports/k3_bidi_gru.torch.compressed.npz",
         "../exports/k3_bidi_gru.onnx.safetensors", "../exports/k2_stacked.blocks.npz"]
ZIP_SEEDS = [s for s in SEEDS if s.endswith((".keras", ".npz"))]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
TIMEOUT = 20.0
MAX_MEMORY = 1 << 30


def outcome(path: Path, out_dir: Path) -> str:
    """'ok' or 'refused'; anything else fails the test."""
    before = set(os.listdir(out_dir))
    start = time.monotonic()
    try:
        isolation.run(inspect, str(path), label=str(path), timeout=TIMEOUT, max_memory=MAX_MEMORY)
        isolation.run(export, str(path), str(out_dir / "out.npz"), label=str(path), timeout=TIMEOUT,
                      max_memory=MAX_MEMORY)
        result = "ok"
    except InspectError as exc:
        assert str(path) in str(exc)
        assert "\n" not in str(exc)
        result = "refused"
    assert time.monotonic() - start < 2 * TIMEOUT + 5
    created = set(os.listdir(out_dir)) - before
    assert created <= {"out.npz", path.name}, created
    (out_dir / "out.npz").unlink(missing_ok=True)
    return result


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _mutant(work: Path, seed: str, data: bytes) -> Path:
    path = work / ("mutant" + "".join(Path(seed).suffixes))
    path.write_bytes(data)
    return path


@FUZZ
@given(seed=st.sampled_from(SEEDS), flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                                                   min_size=1, max_size=32))
def test_bit_flips(work, seed, flips):
    data = bytearray((FIXTURES / seed).read_bytes())
    for where, bit in flips:
        data[int(where * len(data))] ^= 1 << bit
    outcome(_mutant(work, seed, bytes(data)), work)


@FUZZ
@given(seed=st.sampled_from(SEEDS), keep=st.floats(0, 1, exclude_max=True))
def test_truncations(work, seed, keep):
    data = (FIXTURES / seed).read_bytes()
    outcome(_mutant(work, seed, data[: int(keep * len(data))]), work)


@FUZZ
@given(seed=st.sampled_from(SEEDS), where=st.floats(0, 1, exclude_max=True), junk=st.binary(min_size=1, max_size=512))
def test_overwritten_ranges(work, seed, where, junk):
    data = bytearray((FIXTURES / seed).read_bytes())
    start = int(where * len(data))
    data[start:start + len(junk)] = junk
    outcome(_mutant(work, seed, bytes(data[: max(len(data), start)])), work)


@FUZZ
@given(seed=st.sampled_from(ZIP_SEEDS), field=st.integers(0, 45),
       value=st.integers(0, 255), target=st.sampled_from(["local", "central", "end"]))
def test_zip_header_corruption(work, seed, field, value, target):
    data = bytearray((FIXTURES / seed).read_bytes())
    signature = {"local": b"PK\x03\x04", "central": b"PK\x01\x02", "end": b"PK\x05\x06"}[target]
    offsets = [i for i in range(len(data)) if data.startswith(signature, i)]
    offset = offsets[value % len(offsets)] + field
    if offset < len(data):
        data[offset] = value
    outcome(_mutant(work, seed, bytes(data)), work)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["class_name", "config", "layers", "name", "units", "layer", "inbound_nodes", "module",
                         "registered_name", "backward_layer", "use_bias", "reset_after", "trainable", "activation"]),
        children, max_size=6),
    max_leaves=30,
)


@FUZZ
@given(config=json_values, where=st.sampled_from(["model_config", "layer_names", "weight_names", "keras_version"]))
def test_hostile_attributes(work, config, where):
    path = work / "attrs.h5"
    shutil.copy(FIXTURES / "k2_nested.h5", path)
    with h5py.File(path, "r+") as f:
        if where == "model_config":
            f.attrs["model_config"] = json.dumps(config)
        elif where == "keras_version":
            f.attrs["keras_version"] = json.dumps(config)
        elif where == "layer_names":
            f["model_weights"].attrs["layer_names"] = np.array([json.dumps(config).encode()[:60]])
        else:
            f["model_weights/encoder"].attrs["weight_names"] = np.array([json.dumps(config).encode()[:60]])
    outcome(path, work)


@FUZZ
@given(shape=st.lists(st.integers(0, 70_000), min_size=0, max_size=9), dtype=st.sampled_from(["f4", "f2", "i8", "u1"]),
       which=st.sampled_from(["kernel:0", "recurrent_kernel:0", "bias:0"]))
def test_hostile_dataset_shapes(work, shape, dtype, which):
    path = work / "shapes.h5"
    shutil.copy(FIXTURES / "k2_gru_ra.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/gru/gru/gru_cell"]
        del group[which]
        chunks = tuple(max(1, min(n, 4)) for n in shape) if shape and all(shape) else None
        group.create_dataset(which, shape=tuple(shape), dtype=dtype, chunks=chunks)
    outcome(path, work)


SHARDED = Path(__file__).parent / "fixtures" / "sharded"
shard_names = st.sampled_from(["model_00000.weights.h5", "model_00001.weights.h5", "model_00002.weights.h5",
                               "model_00009.weights.h5", "../model_00000.weights.h5", "/etc/model_00000.weights.h5",
                               "sub/model_00000.weights.h5", "model.weights.json", "", ".", "model_0.weights.h5"])


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(entries=st.dictionaries(
    st.sampled_from(["/layers/gru/cell/vars", "/layers/dense/vars", "/layers/bidirectional/forward_layer/cell/vars",
                     "/vars", "x"]),
    shard_names | st.lists(shard_names, max_size=3) | json_values, max_size=5),
    keep=st.booleans(), metadata=json_values)
def test_hostile_shard_index(work, entries, keep, metadata):
    """A Keras 3 sharded-weights index (made by Keras, tests/fixtures/sharded) with hostile weight_map entries and
    metadata: shards named outside the folder, missing, twice, the index itself, not strings."""
    folder = work / "sharded"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(SHARDED, folder, ignore=shutil.ignore_patterns("*.py"))
    index = json.loads((folder / "model.weights.json").read_text())
    index["weight_map"] = {**(index["weight_map"] if keep else {}), **entries}
    index["metadata"] = metadata
    (folder / "model.weights.json").write_text(json.dumps(index))
    outcome(folder / "model.weights.json", folder)


# ---------------------------------------------------------------------------------------------------------------
# TensorFlow's own formats (tests/fixtures/tf_formats, written by TensorFlow): the tensor bundle (.index table and
# .data shard), the protobuf wire decoder (object graph, SavedMetadata) and the TFLite flatbuffer reader.

TF_FORMATS = Path(__file__).parent / "fixtures" / "tf_formats"
TF_FUZZ = settings(FUZZ, max_examples=max(EXAMPLES // 10, 1))
BUNDLES = ["tfk_stack_ckpt", "tf1_lstm.ckpt", "tf1_part.ckpt"]
TFLITES = ["tfl_lstm.tflite", "tfl_lstm_int8.tflite"]


def _mutate(data: bytes, flips, where: float, junk: bytes, keep: float) -> bytes:
    out = bytearray(data)
    for at, bit in flips:
        out[int(at * len(out))] ^= 1 << bit
    start = int(where * len(out))
    out[start:start + len(junk)] = junk
    return bytes(out[: max(1, int(keep * len(out)))]) if keep < 1 else bytes(out)


mutations = dict(flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)), max_size=8),
                 where=st.floats(0, 1, exclude_max=True), junk=st.binary(max_size=64),
                 keep=st.one_of(st.just(1.0), st.floats(0, 1)))


@TF_FUZZ
@given(seed=st.sampled_from(BUNDLES), part=st.sampled_from(["index", "data-00000-of-00001"]), **mutations)
def test_tf_bundle_mutations(work, seed, part, flips, where, junk, keep):
    """A checkpoint whose index table or data shard is damaged: a report (CRCs caught it, or it missed the
    tensors) or one line, every tensor read (inspect computes statistics)."""
    folder = work / "bundle"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for name in ("index", "data-00000-of-00001"):
        data = (TF_FORMATS / f"{seed}.{name}").read_bytes()
        (folder / f"m.{name}").write_bytes(_mutate(data, flips, where, junk, keep) if name == part else data)
    outcome(folder / "m", work)


@TF_FUZZ
@given(seed=st.sampled_from(TFLITES), **mutations)
def test_tflite_mutations(work, seed, flips, where, junk, keep):
    outcome(_mutant(work, seed, _mutate((TF_FORMATS / seed).read_bytes(), flips, where, junk, keep)), work)


def _walk_proto(message, depth: int = 0) -> None:
    """Decode every length-delimited field as a nested message, as deep as a schema could ask (bounded)."""
    from lstm_inspect.readers.protowire import Message, ProtoError

    if depth > 4:
        return
    for values in message.fields.values():
        for value in values:
            if isinstance(value, bytes):
                try:
                    _walk_proto(Message(value), depth + 1)
                except ProtoError:
                    pass


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(data=st.one_of(st.binary(max_size=256), st.sampled_from(["graph", "metadata"]).flatmap(
    lambda which: st.tuples(st.just(which), st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                                               st.integers(0, 7)), min_size=1, max_size=16)))))
def test_protowire_and_object_graph(data):
    """In-process (pure Python): random and mutated protobuf bytes — the TrackableObjectGraph of a real TF2
    checkpoint, the SavedMetadata of a real SavedModel — decode or raise one ProtoError / InspectError."""
    from lstm_inspect.readers import tf2_checkpoint, tf_bundle, tf_saved_model
    from lstm_inspect.readers.protowire import Message, ProtoError

    if isinstance(data, bytes):
        try:
            _walk_proto(Message(data))
        except ProtoError:
            pass
        try:  # a partitioned variable's slice key: OrderedCode, decoded by hand
            tf_bundle.decode_slice_key(b"\0" + data)
        except ProtoError:
            pass
        return
    which, flips = data
    if which == "graph":
        bundle = tf_bundle.Bundle(str(TF_FORMATS / "tfk_stack_ckpt"), "fuzz")
        (raw,) = bundle.read_strings(tf2_checkpoint.OBJECT_GRAPH_KEY)
    else:
        raw = (TF_FORMATS / "tfk_stack_sm" / "keras_metadata.pb").read_bytes()
    mutated = bytearray(raw)
    for at, bit in flips:
        mutated[int(at * len(mutated))] ^= 1 << bit
    try:
        if which == "graph":
            bundle.read_strings = lambda name: [bytes(mutated)]  # past the CRC, straight to the parser
            tf2_checkpoint.variables(bundle, "fuzz")
        else:
            folder = Path(os.environ.get("TMPDIR", "/tmp")) / f"fuzz-meta-{os.getpid()}"
            folder.mkdir(exist_ok=True)
            (folder / "keras_metadata.pb").write_bytes(bytes(mutated))
            tf_saved_model.keras_metadata(str(folder), "fuzz")
    except InspectError as exc:
        assert "\n" not in str(exc)


# PyTorch pickles: the disassembler (readers/pickle_scan.py) and the native .pt reader (readers/torch_zip.py).
CODE = Path(__file__).parent / "fixtures" / "code"
TORCH_SEEDS = ["torch_clean.pt", "torch_clean_legacy.pt", "torch_os_system.pt", "torch_exec_p4.pt"]
PICKLE_CASES = settings(FUZZ, max_examples=max(EXAMPLES // 20, 1))


def scan_outcome(path: Path) -> None:
    """The code scan of a mutant, in the isolated child: a list of findings (never an exception), in bounded time."""
    found = isolation.run(_scan_as_strings, str(path), label=str(path), timeout=TIMEOUT, max_memory=MAX_MEMORY)
    assert isinstance(found, list) and all(isinstance(f, str) for f in found)


def _scan_as_strings(path: str) -> list[str]:
    from lstm_inspect.analysis.code_scan import scan_file

    return [str(f) for f in scan_file(path)]


@PICKLE_CASES
@given(seed=st.sampled_from(TORCH_SEEDS), where=st.floats(0, 1, exclude_max=True),
       junk=st.binary(min_size=1, max_size=64), keep=st.floats(0.2, 1))
def test_torch_pickles_mutated(work, seed, where, junk, keep):
    """torch.save files (zip and legacy, clean and with an os.system payload) and a bare pickle, overwritten and
    truncated: reading gives a report or one line, the scan a list of findings."""
    data = bytearray((CODE / seed).read_bytes())
    start = int(where * len(data))
    data[start:start + len(junk)] = junk
    path = _mutant(work, seed, bytes(data[: max(2, int(keep * len(data)))]))
    outcome(path, work)
    scan_outcome(path)


pickle_opcodes = [op for op in __import__("pickletools").opcodes]


@settings(FUZZ, max_examples=EXAMPLES)
@given(ops=st.lists(st.tuples(st.sampled_from(pickle_opcodes), st.binary(max_size=12)), max_size=40),
       proto=st.integers(0, 5))
def test_random_opcode_streams(ops, proto):
    """Random opcode sequences (each opcode followed by random argument bytes): the disassembler ends with a result
    (never an exception) within its budgets, and the state-dict machine either reads or refuses in one line."""
    import io

    from lstm_inspect.errors import InspectError as ReadError
    from lstm_inspect.readers import pickle_scan, torch_zip

    data = (b"\x80" + bytes([proto]) if proto >= 2 else b"") + b"".join(op.code.encode("latin-1") + arg
                                                                        for op, arg in ops) + b"."
    scanned = pickle_scan.scan_bytes(data, "fuzz", max_ops=1000)
    assert isinstance(scanned.findings, list) and scanned.end <= len(data)
    try:
        torch_zip._Machine("fuzz").run(io.BytesIO(data), "fuzz")
    except ReadError as exc:
        assert "\n" not in exc.message


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(value=json_values, protocol=st.integers(0, 5))
def test_pickles_of_plain_data_are_clean(value, protocol):
    """Python's own pickles of plain data (dicts, lists, numbers, strings, None) import nothing: no finding, and the
    scan reaches STOP; with an exec payload beside the same data, exactly builtins.exec is found."""
    import pickle

    from lstm_inspect.readers import pickle_scan

    scanned = pickle_scan.scan_bytes(pickle.dumps(value, protocol=protocol), "p")
    assert scanned.findings == [] and scanned.complete
    evil = pickle_scan.scan_bytes(pickle.dumps([value, _Exec()], protocol=protocol), "p")
    assert [f.what for f in evil.findings] == ["builtins.exec"]


class _Exec:
    def __reduce__(self):
        return exec, ("x = 1",)

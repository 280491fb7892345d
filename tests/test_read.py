"""Reading every file kind: the layer tree, parameter counts equal to Keras's count_params(), layer paths,
hand-built legacy layouts, and laziness."""
from __future__ import annotations

import numpy as np
import pytest

import handbuilt
from conftest import FIXTURES, manifest
from lstm_inspect import open_model, split_gates
from lstm_inspect.model import FILE_KINDS

KIND_OF = {"h5-full": ("keras2-h5", "keras3-h5"), "h5-weights": ("keras2-weights-h5",), "keras-zip": ("keras-zip",),
           "keras-dir": ("keras-dir",), "keras3-weights": ("keras3-weights-h5",)}


def all_files():
    for file, entry in sorted(manifest()["files"].items()):
        yield pytest.param(file, entry, id=file)


@pytest.mark.parametrize("file,entry", list(all_files()))
def test_param_counts_equal_keras_count_params(file, entry):
    check_counts(FIXTURES, file, entry)


def check_counts(root, file: str, entry: dict) -> None:
    """The file's kind, total and per-layer parameter counts are what Keras reported when it wrote the file."""
    with open_model(root / file) as model:
        assert model.kind in KIND_OF[entry["kind"]]
        assert model.kind in FILE_KINDS
        assert model.total_params == entry["count_params"]
        if model.has_config:
            top = {layer.name: layer.param_count for layer in model.root.children}
            for name, count in entry["layer_params"].items():
                assert top[name] == count, name


@pytest.mark.parametrize("file,entry", [p for p in all_files() if p.values[1]["kind"] != "h5-weights"
                                        or p.values[1]["model"] != "nested"])
def test_every_recurrent_layer_is_split(file, entry):
    with open_model(FIXTURES / file) as model:
        for layer in model.layers:
            if layer.class_name in ("LSTM", "GRU", "SimpleRNN"):
                split = split_gates(layer)
                assert split is not None and split.blocks, layer.key
                assert not split.warnings, split.warnings


def test_versions_and_backend_are_read():
    with open_model(FIXTURES / "k2_classic.h5") as model:
        assert model.keras_version.startswith("2.") and model.backend == "tensorflow"
    with open_model(FIXTURES / "k3_classic.keras") as model:
        assert model.keras_version.startswith("3.") and model.keras_major == 3


@pytest.mark.parametrize("file", ["k2_nested.h5", "k2_nested.keras", "k3_nested.keras", "k3_nested.h5",
                                  "k3_nested.weights.h5", "k3_nested_dir"])
def test_nested_layer_paths(file):
    with open_model(FIXTURES / file) as model:
        keys = {layer.key for layer in model.layers}
    assert {"encoder", "encoder/enc_lstm_a", "encoder/inner", "encoder/inner/enc_lstm_b"} <= keys


@pytest.mark.parametrize("file", ["k2_bidi_concat.h5", "k3_bidi_concat.keras", "k3_bidi_concat.weights.h5",
                                  "k2_bidi_concat_weights.h5"])
def test_bidirectional_keeps_directions_apart(file):
    with open_model(FIXTURES / file) as model:
        bidi = next(layer for layer in model.layers if layer.name == "bidi")
        assert bidi.class_name == "Bidirectional"
        assert [c.name for c in bidi.children] == ["forward_lstm", "backward_lstm"]
        forward, backward = (c.weight("kernel").read() for c in bidi.children)
        assert not np.array_equal(forward, backward)


def test_weights_only_keras3_recovers_user_layer_names():
    with open_model(FIXTURES / "k3_stacked.weights.h5") as model:
        names = {layer.key for layer in model.layers}
    assert {"lstm_a", "lstm_b", "td"} <= names


def test_custom_and_lambda_layers_listed_raw_never_run():
    with open_model(FIXTURES / "k3_lambda_custom.keras") as model:
        by_name = {layer.name: layer for layer in model.layers}
    assert "Lambda" in by_name["times_two"].needs_code
    assert by_name["scale"].needs_code
    assert [t.shape for t in by_name["scale"].weights] == [(4,)]


# --- hand-built files: layouts no installable Keras writes any more (built from the documented layout) -------

@pytest.mark.parametrize("build", [handbuilt.keras23_naming, handbuilt.uniquified_naming,
                                   handbuilt.chunked_attributes], ids=lambda f: f"hand-built:{f.__name__}")
def test_hand_built_legacy_layouts_read_like_the_original(build, tmp_path):
    path = build(tmp_path)
    original = path.name
    from lstm_inspect import export_arrays

    ours, reference = export_arrays(path), export_arrays(FIXTURES / original)
    assert ours.keys() == reference.keys()
    for key in ours:
        np.testing.assert_array_equal(ours[key], reference[key])


def test_hand_built_units_mismatch_warns_and_follows_the_weights(tmp_path):
    path = handbuilt.units_mismatch(tmp_path)
    with open_model(path) as model:
        split = split_gates(next(layer for layer in model.layers if layer.name == "lstm"))
    assert split.units == 120
    assert "lstm: config says units=5 but the weights hold 120 units" in split.warnings


def test_tensors_are_read_lazily(monkeypatch):
    import h5py

    reads = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: reads.append(self.name) or original(self, key))
    from lstm_inspect import inspect

    inspect(FIXTURES / "k3_classic.keras", stats=False)
    inspect(FIXTURES / "k2_classic.h5", stats=False)
    assert reads == []
    inspect(FIXTURES / "k2_classic.h5", layers=["dense_2"])
    assert reads and all("dense_2" in name for name in reads)

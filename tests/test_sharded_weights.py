"""Keras 3 sharded weights (``model.save_weights("m.weights.json", max_shard_size=...)``): the index and its shards
read as one weights file. Written by real Keras 3 during the test with random non-zero weights and biases, split
so small that one layer's ``vars`` group spans two shards; read back, it must equal what Keras itself holds."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import keras
from lstm_inspect import open_model
from lstm_inspect.cli import cli
from lstm_inspect.gates import split


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    inputs = keras.Input((5, 3))
    x = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="bidi")(inputs)
    x = keras.layers.GRU(6, name="gru", return_sequences=True)(x)
    x = keras.layers.RNN(keras.layers.StackedRNNCells([keras.layers.LSTMCell(3), keras.layers.SimpleRNNCell(2)]),
                         name="stack")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="dense")(x))
    rng = np.random.default_rng(11)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    model.save_weights(str(out / "m.weights.json"), max_shard_size=700 / 1024 ** 3)  # ~700 bytes per shard
    model.save_weights(str(out / "whole.weights.h5"))
    return out, model


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_keras_split_the_weights_across_shards(saved):
    out, _ = saved
    index = json.loads((out / "m.weights.json").read_text())
    assert len({n for v in index["weight_map"].values() for n in (v if isinstance(v, list) else [v])}) >= 3
    assert any(isinstance(v, list) and len(v) > 1 for v in index["weight_map"].values())  # one vars group, 2 shards


def test_read_as_one_weights_file_equal_to_keras(saved):
    out, model = saved
    with open_model(out / "m.weights.json") as opened:
        assert opened.kind == "keras3-sharded-weights"
        assert opened.total_params == model.count_params()
        assert [c.name for c in opened.root.children if c.class_name != "InputLayer"] == \
            ["bidi", "gru", "stack", "dense"]
        layers = {layer.key: layer for layer in opened.layers}
        # every array equals the one Keras holds for that layer, in Keras's order
        bidi = model.get_layer("bidi")  # its halves are named forward_lstm[_n] by Keras's name counter
        for keras_layer, key in [(bidi.forward_layer, f"bidi/{bidi.forward_layer.name}"),
                                 (bidi.backward_layer, f"bidi/{bidi.backward_layer.name}"),
                                 (model.get_layer("gru"), "gru"), (model.get_layer("dense"), "dense")]:
            ours = [t.read() for t in layers[key].weights]
            theirs = keras_layer.get_weights()
            assert len(ours) == len(theirs) and all(np.array_equal(a, b) for a, b in zip(ours, theirs)), key
        cells = [layer for layer in opened.layers if layer.path[:1] == ("stack",) and layer.weights]
        assert [[t.read() for t in c.weights] for c in cells] and all(
            np.array_equal(a, b) for a, b in zip([t.read() for c in cells for t in c.weights],
                                                 model.get_layer("stack").get_weights()))
        assert split(layers["gru"]).blocks  # split into gate blocks like any weights file


def test_diff_with_the_unsharded_file_is_identical(saved):
    out, _ = saved
    result = run("diff", out / "m.weights.json", out / "whole.weights.h5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["identical"] and report["summary"]["blocks_compared"] > 30


def test_keras_loads_what_we_read_back(saved, tmp_path):
    """The index exported --fused and set into a fresh model gives Keras's own outputs."""
    out, model = saved
    result = run("export", out / "m.weights.json", "--fused", "-o", tmp_path / "w.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "w.npz") as data:
        assert np.array_equal(data["gru/kernel"], model.get_layer("gru").get_weights()[0])


def test_check_walks_the_index_not_the_shards(saved, tmp_path):
    out, _ = saved
    result = run("check", out, "--format", "json")
    files = [r["file"] for r in json.loads(result.output)["files"]]
    assert sorted(os.path.basename(f) for f in files) == ["m.weights.json", "whole.weights.h5"], files


def copy_store(saved, tmp_path):
    out, _ = saved
    for name in os.listdir(out):
        if name.startswith("m"):
            shutil.copy(out / name, tmp_path / name)
    return json.loads((tmp_path / "m.weights.json").read_text())


@pytest.mark.parametrize("damage,words", [
    ("traversal", "not a shard file beside the index"),
    ("absolute", "not a shard file beside the index"),
    ("missing", "is missing"),
    ("link", "is a link"),
    ("dropped", "some are missing"),
    ("no_map", "not a Keras sharded-weights index"),
    ("not_json", "not valid JSON"),
])
def test_damaged_stores_are_one_line_errors(saved, tmp_path, damage, words):
    index = copy_store(saved, tmp_path)
    weight_map = index["weight_map"]
    first = sorted({n for v in weight_map.values() for n in (v if isinstance(v, list) else [v])})[0]
    if damage == "traversal":
        weight_map[next(iter(weight_map))] = "../elsewhere_00000.weights.h5"
    elif damage == "absolute":
        weight_map[next(iter(weight_map))] = "/etc/x_00000.weights.h5"
    elif damage == "missing":
        os.remove(tmp_path / first)
    elif damage == "link":
        os.remove(tmp_path / first)
        os.symlink(saved[0] / first, tmp_path / first)
    elif damage == "dropped":  # a vars group split across two shards, the one with its first arrays left out
        key, names = next((k, v) for k, v in weight_map.items() if isinstance(v, list) and len(v) > 1)
        for k, v in list(weight_map.items()):
            rest = [n for n in (v if isinstance(v, list) else [v]) if n != names[0]]
            weight_map[k] = rest
        weight_map = {k: v for k, v in weight_map.items() if v}
        index["weight_map"] = weight_map
    elif damage == "no_map":
        index = {"metadata": {}}
    text = "{not json" if damage == "not_json" else json.dumps(index)
    (tmp_path / "m.weights.json").write_text(text)
    result = run("inspect", tmp_path / "m.weights.json")
    assert result.exit_code == 2, result.output
    assert words in result.stderr and str(tmp_path / "m.weights.json") in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

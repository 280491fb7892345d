"""Keras 1 weights-only files (Keras 1's `save_weights`: no model config; arrays named `lstm_1_W_i`, `gru_1_U_z:0`,
`simplernn_1_W`, `dense_1_b`, a TimeDistributed's `dense_2_W`, a Bidirectional's `forward_lstm_1_W_i`) are split
into gates by name and shape exactly as when a config is present.

Keras 1 cannot be installed here, so these files are HAND-BUILT: h5py writes, under Keras 1's names and in its order
(Keras 1.2 `recurrent.py`: each gate's W, U, b; LSTM gates i, c, f, o, GRU z, r, h; `:0` after each name under the
TensorFlow backend, none under Theano), the arrays tf-keras itself loaded from a real tf-keras fixture. What the
tests prove:

- the hand-built file is a Keras 1 weights file as Keras reads it: tf-keras's own Keras 1 converter
  (`load_weights` on a file with no keras_version) loads it into the fixture's model, whose output is then the
  fixture's recorded Keras output;
- lstm-inspect's gate blocks from that file equal Keras's own fused arrays cut gate by gate in Keras 2's order
  (i, f, c, o / z, r, h; independent of lstm-inspect's split), and equal the blocks it reads from the Keras 2 file;
- on real Keras 1 files (the corpus, when present) the arrays give the same gates without a config as with it.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import FIXTURES, run_cli
from lstm_inspect import export_arrays, open_model

KERAS1_NAME = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "simplernn", "Dense": "dense", "Embedding": "embedding",
               "BatchNormalization": "batchnormalization"}
#: Keras 1.2 ``normalization.py``: gamma, beta, running_mean, running_std (which held the running variance)
KERAS1_BATCHNORM = ("gamma", "beta", "running_mean", "running_std")
KERAS2_ORDER = {"LSTM": "ifco", "GRU": "zrh"}
KERAS1_ORDER = {"LSTM": "icfo", "GRU": "zrh"}


def keras1_arrays(layer, fused: bool) -> list[tuple[str, np.ndarray]]:
    """(short name, array) of one Keras 2 leaf layer as Keras 1 stored it."""
    cls = type(layer).__name__
    weights = layer.get_weights()
    if cls in KERAS1_ORDER and not fused:
        kernel, recurrent, bias = weights
        units = recurrent.shape[0]
        out = []
        for gate in KERAS1_ORDER[cls]:
            g = KERAS2_ORDER[cls].index(gate)
            cols = slice(g * units, (g + 1) * units)
            out += [(f"W_{gate}", kernel[:, cols]), (f"U_{gate}", recurrent[:, cols]), (f"b_{gate}", bias[cols])]
        return out
    return list(zip({"Dense": "Wb", "Embedding": "W", "BatchNormalization": KERAS1_BATCHNORM}.get(cls, "WUb"), weights))


def write_keras1_weights(model, path: Path, tensorflow: bool, fused: bool = False) -> dict[str, str]:
    """HAND-BUILT: `model`'s weights as Keras 1's `save_weights` wrote them (root attr `layer_names`, per layer a
    group with `weight_names`, no keras_version). Returns {Keras 2 layer path: Keras 1 layer path} per leaf."""
    counts: Counter = Counter()

    def fresh(cls: str) -> str:
        counts[cls] += 1
        return f"{KERAS1_NAME.get(cls, cls.lower())}_{counts[cls]}"

    where, groups = {}, []
    suffix = ":0" if tensorflow else ""
    with h5py.File(path, "w") as f:
        for layer in model.layers:
            cls = type(layer).__name__
            if cls == "InputLayer":
                continue
            if cls == "TimeDistributed":
                group, inner = fresh(cls), fresh(type(layer.layer).__name__)
                arrays = [(f"{inner}_{short}", v) for short, v in keras1_arrays(layer.layer, fused)]
                where[f"{layer.name}/{layer.layer.name}"] = group
            elif cls == "Bidirectional":
                group, inner = fresh(cls), fresh(type(layer.forward_layer).__name__)
                arrays = []
                for side in ("forward", "backward"):
                    wrapped = getattr(layer, f"{side}_layer")
                    arrays += [(f"{side}_{inner}_{short}", v) for short, v in keras1_arrays(wrapped, fused)]
                    where[f"{layer.name}/{wrapped.name}"] = f"{group}/{side}_{inner}"
            else:
                group = fresh(cls)
                arrays = [(f"{group}_{short}", v) for short, v in keras1_arrays(layer, fused)]
                where[layer.name] = group
            h5 = f.create_group(group)
            for stored, value in arrays:
                h5.create_dataset(stored + suffix, data=value)
            h5.attrs["weight_names"] = np.array([(stored + suffix).encode() for stored, _ in arrays])
            groups.append(group)
        f.attrs["layer_names"] = np.array([g.encode() for g in groups])
    return where


def keras_gates(layer) -> dict[str, np.ndarray]:
    """Keras's own arrays of a leaf layer cut gate by gate in Keras 2's fused order (not lstm-inspect's split)."""
    cls = type(layer).__name__
    weights = layer.get_weights()
    if cls == "SimpleRNN":
        return dict(zip(("W", "U", "b"), weights))
    if cls not in KERAS2_ORDER:  # under Keras's own names for them (Dense kernel, BatchNormalization moving_mean ...)
        return {weight.name.rsplit("/", 1)[-1].split(":", 1)[0]: value for weight, value in zip(layer.weights, weights)}
    kernel, recurrent, bias = weights
    units = recurrent.shape[0]
    cuts = {gate: slice(g * units, (g + 1) * units) for g, gate in enumerate(KERAS2_ORDER[cls])}
    return {f"{kind}_{gate}": array[..., cut] for kind, array in zip("WUb", weights) for gate, cut in cuts.items()}


def leaves(model):
    """(Keras 2 layer path, leaf layer) for every leaf layer with weights."""
    for layer in model.layers:
        inner = [getattr(layer, "layer", None)] if type(layer).__name__ == "TimeDistributed" else (
            [layer.forward_layer, layer.backward_layer] if type(layer).__name__ == "Bidirectional" else [])
        if inner:
            yield from ((f"{layer.name}/{leaf.name}", leaf) for leaf in inner)
        elif layer.get_weights():
            yield layer.name, layer


def assert_blocks_are_keras_arrays(model, where, ours, keras2=None) -> None:
    """Every leaf's arrays in `ours` (lstm-inspect's export of the Keras 1 file; `where` maps Keras 2 layer paths to
    its Keras 1 ones) equal Keras's own arrays cut gate by gate, and `keras2`'s (the Keras 2 file's export) if given."""
    for keras_path, leaf in leaves(model):
        prefix = where[keras_path]
        mine = {k[len(prefix) + 1:]: v for k, v in ours.items() if k.rsplit("/", 1)[0] == prefix}
        expected = keras_gates(leaf)
        assert mine.keys() == expected.keys(), (keras_path, sorted(mine))
        for key, value in expected.items():
            np.testing.assert_array_equal(mine[key], value, err_msg=f"{keras_path}/{key}")
            if keras2 is not None:
                np.testing.assert_array_equal(mine[key], keras2[f"{keras_path}/{key}"], err_msg=f"{keras_path}/{key}")


CASES = [  # fixture, the classes lstm-inspect must infer for its top-level layers
    ("k2_classic", ["LSTM", "Dense", "Dense", "Dense"]),
    ("k2_gru_nora", ["GRU", "Dense"]),
    ("k2_simplernn", ["SimpleRNN", "SimpleRNN", "Dense"]),
    ("k2_stacked", ["LSTM", "LSTM", "Dense"]),  # TimeDistributed(Dense): its arrays are the Dense's
    ("k2_bidi_concat", ["Bidirectional", "Dense"]),
]


@pytest.fixture(scope="module")
def tf_keras():
    import tf_keras

    return tf_keras


@pytest.mark.parametrize("fused", [False, True], ids=["per-gate", "consume_less=gpu"])
@pytest.mark.parametrize("tensorflow", [False, True], ids=["theano-names", "tensorflow-names"])
@pytest.mark.parametrize("source,classes", CASES, ids=[f"hand-built:keras1-weights:{c[0]}" for c in CASES])
def test_keras1_weights_split_like_keras(tmp_path, tf_keras, source, classes, tensorflow, fused):
    model = tf_keras.models.load_model(FIXTURES / f"{source}.h5", compile=False)
    path = tmp_path / "keras1_weights.h5"
    where = write_keras1_weights(model, path, tensorflow, fused)

    # Keras's own Keras 1 converter reads the hand-built file into the fixture's model (every weight zeroed first,
    # so all must come from the file): the model's output is the one Keras recorded for the fixture.
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype.as_numpy_dtype))
    model.load_weights(str(path))
    oracle = np.load(FIXTURES / f"{source}.oracle.npz")
    np.testing.assert_allclose(model.predict(oracle["input"], verbose=0), oracle["__output__"], rtol=1e-5, atol=1e-6)

    with open_model(path) as opened:
        assert opened.keras_version is None and not opened.has_config and opened.kind == "keras1-weights-h5"
        assert [layer.class_name for layer in opened.root.children] == classes
        assert all(layer.class_name != "Unknown" for layer in opened.layers)
    assert_blocks_are_keras_arrays(model, where, export_arrays(path), export_arrays(FIXTURES / f"{source}.h5"))


def test_keras1_weights_show_and_export_gates(tmp_path, tf_keras, capsys):
    """The CLI on a hand-built Keras 1 weights file: gate blocks shown and exported under their gate keys; the kind
    line names Keras 1 (was "Keras 2 / tf.keras weights only") in the text, --json, snapshot and HTML outputs."""
    import json

    model = tf_keras.models.load_model(FIXTURES / "k2_gru_nora.h5", compile=False)
    path = tmp_path / "gru_keras1_weights.h5"
    write_keras1_weights(model, path, tensorflow=True)
    assert run_cli(["inspect", str(path), "--json"]) == 0
    report = capsys.readouterr().out
    assert '"GRU"' in report and "Unknown" not in report
    fields = json.loads(report)
    assert (fields["kind"], fields["kind_description"]) == ("keras1-weights-h5", "Keras 1 weights only (HDF5)")
    assert run_cli(["inspect", str(path), "--no-stats"]) == 0
    text = capsys.readouterr().out
    assert "Keras 1 weights only (HDF5)" in text and "Keras 2" not in text
    assert run_cli(["snapshot", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "keras1-weights-h5"
    html = tmp_path / "report.html"
    assert run_cli(["report", str(path), "-o", str(html)]) == 0
    assert "Keras 1 weights only (HDF5)" in html.read_text()
    out = tmp_path / "gates.npz"
    assert run_cli(["export", str(path), "-o", str(out)]) == 0
    with np.load(out) as exported:
        assert {k.split("/", 1)[1] for k in exported.files if k.startswith("gru_1/")} == {
            f"{kind}_{gate}" for kind in "WUb" for gate in "zrh"}
        assert not any("gru_1_" in k for k in exported.files)  # no raw Keras 1 names


@pytest.mark.parametrize("tensorflow", [False, True], ids=["theano-names", "tensorflow-names"])
def test_keras1_batchnormalization_arrays_take_keras2_names(tmp_path, tf_keras, tensorflow):
    """Keras 1 BatchNormalization arrays (``batchnormalization_1_gamma``, ``_beta``, ``_running_mean``,
    ``_running_std``) are named gamma, beta, moving_mean, moving_variance: where tf-keras's own Keras 1 converter
    puts them (the model, all weights zeroed, loads the hand-built file and gives the original output)."""
    layers = tf_keras.layers
    model = tf_keras.Sequential([tf_keras.Input((6, 4)), layers.BatchNormalization(),
                                 layers.LSTM(5, return_sequences=True), layers.BatchNormalization(axis=1),
                                 layers.Flatten(), layers.Dense(3)])
    rng = np.random.default_rng(7)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in model.get_weights()])  # variances > 0
    x = rng.standard_normal((3, 6, 4)).astype(np.float32)
    want = model.predict(x, verbose=0)
    path = tmp_path / "keras1_batchnorm.h5"
    where = write_keras1_weights(model, path, tensorflow)
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype.as_numpy_dtype))
    model.load_weights(str(path))
    np.testing.assert_allclose(model.predict(x, verbose=0), want, rtol=1e-6, atol=1e-6)

    with open_model(path) as opened:
        assert opened.kind == "keras1-weights-h5"
        assert [layer.class_name for layer in opened.root.children if layer.weights] == [
            "BatchNormalization", "LSTM", "BatchNormalization", "Dense"]
    ours = export_arrays(path)
    assert_blocks_are_keras_arrays(model, where, ours)
    assert {"batchnormalization_1/moving_variance", "batchnormalization_2/gamma"} <= ours.keys()

    # with a config (Keras 1 names in a full model) the arrays go to the config's layers under the same names, and
    # the model runs forward to Keras's output
    from lstm_inspect import forward

    source, full = tmp_path / "keras2.h5", tmp_path / "keras1_model.h5"
    model.save(source)
    write_keras1_model(model, source, full)
    with open_model(full) as opened:
        assert opened.kind == "keras1-h5" and not opened.warnings
        ours_norms = [layer for layer in opened.layers if layer.class_name == "BatchNormalization"]
        keras_norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
        assert [[t.name for t in layer.weights] for layer in ours_norms] == [list(keras_gates(layer))
                                                                             for layer in keras_norms]
    np.testing.assert_allclose(forward(full, x)["__output__"], want, rtol=1e-5, atol=1e-5)


def write_keras1_group(path: Path, group: str, arrays: list[tuple[str, np.ndarray]], tensorflow: bool) -> None:
    """HAND-BUILT: a Keras 1 weights file of one layer group (no keras_version), arrays named ``<group>_<short>``."""
    suffix = ":0" if tensorflow else ""
    with h5py.File(path, "w") as f:
        h5 = f.create_group(group)
        for short, value in arrays:
            h5.create_dataset(f"{group}_{short}{suffix}", data=value)
        h5.attrs["weight_names"] = np.array([f"{group}_{short}{suffix}".encode() for short, _ in arrays])
        f.attrs["layer_names"] = np.array([group.encode()])


CONV_CASES = [("Conv1D", "tf"), ("Conv1D", "th"), ("Conv2D", "tf"), ("Conv2D", "th")]


@pytest.mark.parametrize("cls,order", CONV_CASES, ids=[f"hand-built:keras1:{c}-{o}" for c, o in CONV_CASES])
def test_keras1_convolution_arrays_take_keras2_names_and_layout(tmp_path, tf_keras, cls, order):
    """Keras 1 ``convolution1d_1_W`` / ``_b`` become ``kernel`` / ``bias`` with the kernel in Keras 2's layout: what
    tf-keras's own Keras 1 converter loads into the Keras 2 layer. Convolution1D's (k, 1, in, f), or Keras 1.0's
    (f, in, k, 1) ("th"); Convolution2D's (rows, cols, in, f) under dim_ordering 'tf', (f, in, rows, cols) under
    'th' (loaded by tf-keras into a channels_first Conv2D)."""
    layers = tf_keras.layers
    if cls == "Conv1D":
        model = tf_keras.Sequential([tf_keras.Input((9, 3)), layers.Conv1D(4, 3)])
    else:
        first = order == "th"
        model = tf_keras.Sequential([tf_keras.Input((3, 7, 6)), layers.Conv2D(
            4, (2, 3), data_format="channels_first" if first else "channels_last")])
    rng = np.random.default_rng(11)
    kernel, bias = (rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights())
    stored = kernel[:, None] if cls == "Conv1D" else kernel  # Keras 1 ran Convolution1D as a one-column conv 2-D
    if order == "th":
        stored = np.transpose(stored, (3, 2, 0, 1))
    group = f"convolution{cls[4]}d_1"
    path = tmp_path / "keras1_conv.h5"
    write_keras1_group(path, group, [("W", stored), ("b", bias)], tensorflow=order == "tf")
    model.load_weights(str(path))  # tf-keras's Keras 1 converter
    np.testing.assert_array_equal(model.get_weights()[0], kernel)
    np.testing.assert_array_equal(model.get_weights()[1], bias)

    with open_model(path) as opened:
        assert opened.kind == "keras1-weights-h5"
        assert [(layer.class_name, [t.name for t in layer.weights]) for layer in opened.layers] == [
            (cls, ["kernel", "bias"])]
        theano = [w for w in opened.warnings if "Theano" in w]
        assert len(theano) == (order == "th")  # written with Theano's names (no ":0") here
    assert run_cli(["check", str(path)]) == 0  # the Theano note is no config mismatch
    ours = export_arrays(path)
    np.testing.assert_array_equal(ours[f"{group}/kernel"], kernel)
    np.testing.assert_array_equal(ours[f"{group}/bias"], bias)


@pytest.mark.parametrize("group,shape", [("convolution2d_1", (4, 3, 2, 4)), ("conv_a", (2, 3, 3, 4))],
                         ids=["layout-open", "not-keras1-name"])
def test_keras1_convolution_left_raw_when_unsure(tmp_path, group, shape):
    """f filters at both ends of W (dim ordering open), or a name Keras 1 did not give a convolution (a (k, 1, in, f)
    kernel could be a Convolution1D's or a one-column Convolution2D's): stored names kept."""
    path = tmp_path / "conv.h5"
    write_keras1_group(path, group, [("W", np.ones(shape, np.float32)), ("b", np.ones(4, np.float32))], False)
    with open_model(path) as opened:
        assert [t.name for t in opened.layers[0].weights] == [f"{group}_W", f"{group}_b"]


def test_keras2_names_without_version_stay_keras2(tmp_path):
    """Only Keras 1's unscoped names make a file without a keras_version Keras 1: Keras 2's scoped ones do not."""
    keras2 = weights_only_copy(FIXTURES / "k2_classic.h5", tmp_path / "keras2_no_version.h5")  # lstm/lstm_cell/...
    with open_model(keras2) as opened:
        assert opened.keras_version is None and opened.kind == "keras2-weights-h5"


def test_not_keras1_names_stay_raw(tmp_path):
    """Arrays that only look half like Keras 1's (an incomplete LSTM, an unknown suffix) are not guessed at."""
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        for group, names in {"lstm_1": ["lstm_1_W_i", "lstm_1_U_i", "lstm_1_b_i"], "odd_1": ["odd_1_X", "odd_1_W"]}.items():
            h5 = f.create_group(group)
            for name in names:
                h5.create_dataset(name, data=np.ones((2, 2), np.float32))
            h5.attrs["weight_names"] = np.array([n.encode() for n in names])
        f.attrs["layer_names"] = np.array([b"lstm_1", b"odd_1"])
    with open_model(path) as opened:
        assert [layer.class_name for layer in opened.root.children] == ["Unknown", "Unknown"]
        assert [t.name for t in opened.root.children[0].weights] == ["lstm_1_W_i", "lstm_1_U_i", "lstm_1_b_i"]


CORPUS = Path(os.environ.get("LSTM_INSPECT_CORPUS", Path(__file__).resolve().parents[2] / "shared" / "realworld"))
KERAS1_FULL = ["KonduitAI__dl4j-test-resources/simple_lstm_th_keras_1_model.h5",
               "KonduitAI__dl4j-test-resources/simple_lstm_tf_keras_1_model.h5"]


def weights_only_copy(full: Path, dest: Path) -> Path:
    """A full-model file's `model_weights` alone, as `save_weights` lays it out (no config, no keras_version)."""
    with h5py.File(full, "r") as src, h5py.File(dest, "w") as out:
        for name in src["model_weights"]:
            src.copy(src["model_weights"][name], out, name=name)
        out.attrs["layer_names"] = src["model_weights"].attrs["layer_names"]
    return dest


if CORPUS.is_dir():  # the real Keras 1 files are not in the repository (tests/realworld/README.md)
    @pytest.mark.parametrize("file", KERAS1_FULL, ids=["corpus:keras1-theano", "corpus:keras1-tensorflow"])
    def test_real_keras1_arrays_split_the_same_without_config(tmp_path, file):
        full = CORPUS / file
        weights = weights_only_copy(full, tmp_path / "weights.h5")
        with_config, without = export_arrays(full), export_arrays(weights)
        assert with_config.keys() == without.keys() and any(k.endswith("/W_i") for k in without)
        for key in with_config:
            np.testing.assert_array_equal(without[key], with_config[key], err_msg=key)
        with open_model(weights) as opened, open_model(full) as whole:  # the full model records keras_version
            assert [layer.class_name for layer in opened.root.children] == ["LSTM", "Dense"]
            assert (opened.kind, whole.kind, whole.keras_version) == ("keras1-weights-h5", "keras1-h5", "1.2.2")

    def test_real_keras1_timedistributed_runs_with_its_model_json(tmp_path):
        """ChemTS (Keras 1.1.1, trained): weights only — Embedding, GRU ``gru_1_W_z:0`` ..., a TimeDistributed group
        holding ``dense_1_W:0`` — and its model.json. Put together as Keras 1 saved a full model (the JSON as
        model_config, the arrays under model_weights), `forward` equals tf-keras's output (recorded by
        make_expected.py: tf-keras's Keras 1 converter loading the same arrays into the translated config)."""
        from lstm_inspect import forward
        from test_realworld import FLOAT32_NOISE, array, expected, worst

        entry = {"id": "tsudalab__ChemTS__model"}
        weights, config = CORPUS / "tsudalab__ChemTS/model.h5", (CORPUS / "tsudalab__ChemTS/model.json").read_text()
        full = tmp_path / "chemts_full.h5"
        with h5py.File(weights, "r") as src, h5py.File(full, "w") as out:
            out.attrs["model_config"] = config
            out.attrs["keras_version"] = "1.1.1"
            root = out.create_group("model_weights")
            for name in src:
                src.copy(src[name], root, name=name)
            root.attrs["layer_names"] = src.attrs["layer_names"]
        with open_model(full) as opened:
            assert not opened.warnings
            (td,) = [layer for layer in opened.root.children if layer.class_name == "TimeDistributed"]
            assert not td.weights and [t.name for t in td.children[0].weights] == ["kernel", "bias"]
        recorded = expected(entry)["forward"]
        (x,) = [array(item) for item in recorded["inputs"]]
        diff, scale = worst(forward(full, x, dtype=np.float64)["__output__"], array(recorded["outputs"][0]))
        assert diff <= FLOAT32_NOISE * scale, f"max |numpy - keras| = {diff:.3g}"

    def test_real_keras1_weights_file_splits_like_its_full_model():
        """The corpus's own Keras 1 weights file (Theano) and the full model it was saved beside hold the same
        arrays: the same gates with and without the config."""
        weights = CORPUS / "KonduitAI__dl4j-test-resources/simple_lstm_th_keras_1_weights.h5"
        with_config, without = export_arrays(CORPUS / KERAS1_FULL[0]), export_arrays(weights)
        assert with_config.keys() == without.keys()
        for key in with_config:
            np.testing.assert_array_equal(without[key], with_config[key], err_msg=key)


# ------------------------------------------------------------------ Keras 1 names inside wrappers, with a config


def keras1_config(entry):
    """A Keras 2 config with Keras 1's argument names (`output_dim`, `inner_activation`, `bias`, ...) at every depth."""
    from handbuilt import KERAS1_KEYS

    if isinstance(entry, list):
        return [keras1_config(item) for item in entry]
    if not isinstance(entry, dict):
        return entry
    out = {key: keras1_config(value) for key, value in entry.items()}
    if entry.get("class_name") in ("LSTM", "GRU", "SimpleRNN", "Dense") and isinstance(entry.get("config"), dict):
        out["config"] = {KERAS1_KEYS.get(k, k): v for k, v in out["config"].items()}
    return out


def write_keras1_model(model, source: Path, path: Path) -> None:
    """HAND-BUILT: the fixture file with Keras 1's argument names in its config, no keras_version, and every layer's
    arrays under Keras 1's names — a TimeDistributed's group holding `<dense>_W`, `<dense>_b`, a Bidirectional's
    `forward_<lstm>_W_i` ... `backward_<lstm>_b_o` — written from tf-keras's own weights."""
    import json
    import shutil

    shutil.copy(source, path)
    with h5py.File(path, "r+") as f:
        f.attrs["model_config"] = json.dumps(keras1_config(json.loads(f.attrs["model_config"])))
        root = f["model_weights"]
        for attrs in (f.attrs, root.attrs):
            attrs.pop("keras_version", None)
        for layer in model.layers:
            cls = type(layer).__name__
            if cls == "TimeDistributed":
                arrays = [(f"{layer.layer.name}_{s}", v) for s, v in keras1_arrays(layer.layer, fused=False)]
            elif cls == "Bidirectional":
                arrays = [(f"forward_{layer.forward_layer.name.removeprefix('forward_')}_{s}", v)
                          for s, v in keras1_arrays(layer.forward_layer, fused=False)]
                arrays += [(f"backward_{layer.backward_layer.name.removeprefix('backward_')}_{s}", v)
                           for s, v in keras1_arrays(layer.backward_layer, fused=False)]
            elif layer.get_weights():
                arrays = [(f"{layer.name}_{s}", v) for s, v in keras1_arrays(layer, fused=False)]
            else:
                continue
            group = root[layer.name]
            for key in list(group):
                del group[key]
            for stored, value in arrays:
                group.create_dataset(stored, data=value)
            group.attrs["weight_names"] = np.array([stored.encode() for stored, _ in arrays])


@pytest.mark.parametrize("source,wrapper", [("k2_stacked", "td"), ("k2_bidi_concat", "bidi")],
                         ids=["hand-built:keras1:timedistributed-dense", "hand-built:keras1:bidirectional-lstm"])
def test_keras1_names_in_wrappers_run_forward(tmp_path, tf_keras, source, wrapper):
    """With a config, a wrapper's Keras 1 arrays go to the wrapped layer: `forward` equals Keras's recorded output
    and the output of tf-keras's own Keras 1 converter loading the same file."""
    from lstm_inspect import forward

    model = tf_keras.models.load_model(FIXTURES / f"{source}.h5", compile=False)
    path = tmp_path / "keras1_model.h5"
    write_keras1_model(model, FIXTURES / f"{source}.h5", path)
    with open_model(path) as opened:
        assert opened.keras_version is None and not opened.warnings
        (outer,) = [layer for layer in opened.root.children if layer.name == wrapper]
        assert not outer.weights and all(leaf.weights for leaf in outer.children)
    oracle = np.load(FIXTURES / f"{source}.oracle.npz")
    got = forward(path, oracle["input"])
    np.testing.assert_allclose(got["__output__"], oracle["__output__"], rtol=1e-5, atol=1e-6)
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, weight.dtype.as_numpy_dtype))
    model.load_weights(str(path))
    np.testing.assert_allclose(got["__output__"], model.predict(oracle["input"], verbose=0), rtol=1e-5, atol=1e-6)
    keras2 = export_arrays(FIXTURES / f"{source}.h5")
    ours = export_arrays(path)
    assert ours.keys() == keras2.keys()
    for key in keras2:
        np.testing.assert_array_equal(ours[key], keras2[key], err_msg=key)

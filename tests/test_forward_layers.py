"""The layers real recurrent models use around their RNNs, against Keras 3 and tf-keras: TimeDistributed around
Conv2D / pooling / Flatten / Dropout (LRCN), 2-D convolutions and pooling, Conv3D and 3-D pooling after a ConvLSTM2D,
Attention / AdditiveAttention / MultiHeadAttention. The fixtures (tests/fixtures/generate_layers.py) are written by
the real Keras with random non-zero biases; their oracles are Keras's own per-layer outputs. Every fixture also
runs in tests/test_forward.py's per-layer parity test; here: both dtypes, verify, bounded memory, refusals."""
from __future__ import annotations

import numpy as np
import pytest

import lstm_inspect
from conftest import FIXTURES, manifest
from lstm_inspect.run import layer_ops
from lstm_inspect.run.forward import OUTPUT_KEY, run

CONV_MODELS = ["lrcn", "conv2d_pool", "convlstm_conv3d"]
ATTENTION_MODELS = ["attention", "attention_masked", "layer_options"]
FILES = [f"{flavour}_{name}{suffix}" for name in CONV_MODELS + ATTENTION_MODELS for flavour in ("k2", "k3")
         for suffix in (".h5", ".keras")]


def oracle(file: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / manifest()["files"][file]["oracle"]) as npz:
        return {k: npz[k] for k in npz.files}


def inputs_of(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in values.items() if k == "input" or k.startswith("input/")}


def largest_difference(file: str, dtype) -> tuple[float, str]:
    expected = oracle(file)
    ours = lstm_inspect.forward(FIXTURES / file, inputs_of(expected), dtype=dtype)
    worst = (0.0, "")
    for key, want in expected.items():
        if key in inputs_of(expected):
            continue
        assert ours[key].shape == want.shape, key
        worst = max(worst, (float(np.max(np.abs(ours[key] - want))), key))
    return worst


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("file", FILES)
def test_every_layer_matches_keras_in_both_dtypes(file, dtype):
    expected = oracle(file)
    ours = lstm_inspect.forward(FIXTURES / file, inputs_of(expected), dtype=dtype)
    assert ours[OUTPUT_KEY].dtype == dtype  # the ops compute in the run's dtype, never forced to float64
    worst, key = largest_difference(file, dtype)
    assert worst < 1e-6, (key, worst)


def test_convolution_in_chunks_equals_one_pass(monkeypatch):
    """conv_nd bounds its im2col buffer by convolving a few samples at a time: the result does not change."""
    file = "k3_lrcn.keras"
    expected = oracle(file)
    whole = lstm_inspect.forward(FIXTURES / file, inputs_of(expected))
    monkeypatch.setattr(layer_ops, "IM2COL_BYTES", 4096)  # a few samples (time steps folded into the batch)
    chunked = lstm_inspect.forward(FIXTURES / file, inputs_of(expected))
    for key in whole:
        np.testing.assert_array_equal(whole[key], chunked[key], err_msg=key)


def test_conv_nd_chunks_bound_the_buffer():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 12, 11, 3))
    kernel = rng.standard_normal((3, 2, 3, 4))
    one = layer_ops.conv_nd(x, kernel, (2, 1), "same", (1, 2))
    old = layer_ops.IM2COL_BYTES
    try:
        layer_ops.IM2COL_BYTES = 1  # one sample at a time
        chunked = layer_ops.conv_nd(x, kernel, (2, 1), "same", (1, 2))
    finally:
        layer_ops.IM2COL_BYTES = old
    np.testing.assert_allclose(chunked, one, rtol=1e-12, atol=1e-12)
    assert one.shape == (50, 6, 11, 4)


@pytest.mark.parametrize("file", ["k2_lrcn.h5", "k3_lrcn.keras", "k3_conv2d_pool.keras", "k2_conv2d_pool.keras",
                                  "k2_convlstm_conv3d.h5", "k3_convlstm_conv3d.keras", "k2_attention.h5",
                                  "k3_attention.keras", "k2_attention_masked.keras", "k3_attention_masked.keras",
                                  "k2_layer_options.h5", "k3_layer_options.keras"])
def test_verify_passes(file):
    result = lstm_inspect.verify(FIXTURES / file)
    assert result.ok, [(d.key, d.max_abs, d.note) for d in result.diffs if not d.ok]
    assert len(result.diffs) >= 5


def test_grouped_convolution_is_refused_by_name():
    with lstm_inspect.open_model(FIXTURES / "k3_conv2d_pool.keras") as model:
        layer = next(layer for layer in model.layers if layer.name == "conv_valid")
        layer.config["groups"] = 3
        x = inputs_of(oracle("k3_conv2d_pool.keras"))
        with pytest.raises(lstm_inspect.InspectError, match="conv_valid.*Conv2D.*grouped"):
            run(model, x)


@pytest.mark.parametrize("file", ["k2_attention_masked.h5", "k3_attention_masked.keras"])
def test_attention_masks_follow_each_keras(file):
    """The masked fixture discriminates: tf-keras's Attention uses the query / value masks, Keras 3's does not (it
    runs the layer without its inputs' masks); run the other way, the pass misses Keras's output."""
    expected = oracle(file)
    with lstm_inspect.open_model(FIXTURES / file) as model:
        right = run(model, inputs_of(expected))
        model.keras_version = "3.15.0" if model.keras_major == 2 else "2.15.0"
        wrong = run(model, inputs_of(expected))
    np.testing.assert_allclose(right["dot"], expected["dot"], rtol=1e-5, atol=1e-6)
    assert np.max(np.abs(wrong["dot"] - expected["dot"])) > 1e-2


def test_multi_head_attention_weights_are_named_in_every_file_kind():
    for file in ("k2_attention.h5", "k2_attention.keras", "k3_attention.keras", "k3_attention.h5",
                 "k3_attention.weights.h5", "k2_attention_weights.h5"):
        with lstm_inspect.open_model(FIXTURES / file) as model:
            mha = next(layer for layer in model.layers if layer.name == "mha_cross")
            assert [w.name for w in mha.weights] == ["query_kernel", "key_kernel", "value_kernel",
                                                     "attention_output_kernel"], file
            assert mha.class_name == "MultiHeadAttention", file  # also in weights-only files, by the sub-scopes
            assert [w.shape for w in mha.weights] == [(4, 3, 2), (4, 3, 2), (4, 3, 5), (3, 5, 6)], file
            concat = next(layer for layer in model.layers if layer.name == "concat")
            assert [w.name for w in concat.weights] == ["scale", "concat_score_weight"], file


def test_unsupported_attention_option_is_refused_by_name():
    with lstm_inspect.open_model(FIXTURES / "k3_attention.keras") as model:
        layer = next(layer for layer in model.layers if layer.name == "mha_self")
        layer.config["attention_axes"] = [1, 2]
        with pytest.raises(lstm_inspect.InspectError, match="mha_self.*MultiHeadAttention.*attention_axes"):
            run(model, inputs_of(oracle("k3_attention.keras")))

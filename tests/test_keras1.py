"""Keras 1 files in full Keras 1 form — a Sequential config that is the plain list of layers, `output_dim`,
`inner_activation`, `init`, per-gate LSTM/GRU arrays and Dense `<layer>_W`/`<layer>_b` — which no installable Keras
writes: HAND-BUILT (tests/handbuilt.py) from real tf-keras fixtures whose forward pass is proven against Keras
elsewhere. Read as Keras 1, they must split, export and run forward exactly like the file they were built from."""
from __future__ import annotations

import numpy as np
import pytest

import handbuilt
from lstm_inspect import export_arrays, forward, open_model
from test_gate_proof import FIXTURES


@pytest.mark.parametrize("source,layer", [("k2_classic.h5", "lstm"), ("k2_gru_nora.h5", "gru")],
                         ids=["hand-built:keras1:lstm-dense", "hand-built:keras1:gru-dense"])
def test_keras1_config_reads_as_keras2(tmp_path, source, layer):
    path = handbuilt.keras1_layout(tmp_path, source, keras1_config=True)
    with open_model(path) as k1, open_model(FIXTURES / source) as k2:
        assert k1.keras_version is None and not k1.warnings
        assert (k1.kind, k2.kind) == ("keras1-h5", "keras2-h5")
        (rnn,) = [candidate for candidate in k1.layers if candidate.name == layer]
        (original,) = [candidate for candidate in k2.layers if candidate.name == layer]
        for key in ("units", "recurrent_activation", "activation"):
            assert rnn.config[key] == original.config[key]
        assert "output_dim" not in rnn.config and "inner_activation" not in rnn.config
        dense = [candidate for candidate in k1.layers if candidate.class_name == "Dense"]
        assert dense and all([t.name for t in d.weights] == ["kernel", "bias"] for d in dense)
        assert all(t.source.endswith(("_W", "_b")) for d in dense for t in d.weights)  # stored names kept
    exported = export_arrays(path)
    assert exported.keys() == export_arrays(FIXTURES / source).keys()
    assert {k for k in exported if k.startswith(layer + "/")} >= {f"{layer}/{kind}_{gate}" for kind in "WUb"
                                                                 for gate in ("ifco" if layer == "lstm" else "zrh")}
    oracle = np.load(FIXTURES / f"{source[:-3]}.oracle.npz")
    x = oracle["input"]
    got, want = forward(path, x), forward(FIXTURES / source, x)
    # Keras's own output on the weights these Keras 1 arrays were cut from
    np.testing.assert_allclose(got["__output__"], oracle["__output__"], rtol=1e-4, atol=1e-5)
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


@pytest.mark.parametrize("source", ["k2_classic", "k2_gru_nora"],
                         ids=["hand-built:keras1:lstm-dense", "hand-built:keras1:gru-dense"])
def test_keras1_file_matches_keras_own_converter(tmp_path, source):
    """The strongest oracle: tf-keras's own Keras 1 -> 2 converter (`load_weights` on a file with no keras_version
    runs `preprocess_weights_for_loading` with original_keras_version "1": concat(W_i, W_f, W_c, W_o) for LSTM,
    concat(W_z, W_r, W_h) for GRU) loads the hand-built file into the Keras 2 model; its predict is our forward."""
    import tf_keras as keras
    path = handbuilt.keras1_layout(tmp_path, source + ".h5", keras1_config=True)
    model = keras.models.load_model(FIXTURES / f"{source}.h5", compile=False)
    for weight in model.weights:  # nothing of the original weights may survive: all must come from the Keras 1 file
        weight.assign(np.zeros(weight.shape))
    model.load_weights(str(path))
    x = np.load(FIXTURES / f"{source}.oracle.npz")["input"]
    np.testing.assert_allclose(forward(path, x)["__output__"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)

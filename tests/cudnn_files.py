#!/usr/bin/env python
"""Write legacy CuDNNLSTM / CuDNNGRU model files with tf-keras, from real LSTM / GRU fixtures.

tf-keras 2.x still ships `CuDNNLSTM` and `CuDNNGRU` (tf_keras.src.layers.rnn.cudnn_lstm / cudnn_gru): they can be
built and saved on a CPU, though not run. For each source fixture this script rebuilds the model with every LSTM
(GRU) replaced by a CuDNNLSTM (CuDNNGRU) of the same name and units, fills it with the source model's weights
converted by Keras's own `_convert_rnn_weights` (the conversion `preprocess_weights_for_loading` applies between the
two layouts), and saves it with `model.save(.h5)` and `save_weights(.h5)`. So the cuDNN layout in these files is
whatever Keras writes, and the source fixture's oracle (computed by Keras with the LSTM / GRU) is the expected output.

It also writes ``<name>.keras_back.npz``: the CuDNN layers' weights converted back by the same Keras function into
the LSTM / GRU layout (``<layer>/kernel``, ``/recurrent_kernel``, ``/bias``), for comparison with lstm-inspect's split.

Usage: python tests/cudnn_files.py OUTDIR SOURCE.h5 [SOURCE.h5 ...]   (tf-keras 2 files only)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

#: Config keys LSTM / GRU have and the cuDNN layers do not (cuDNN hard-wires tanh / sigmoid, a bias, reset_after).
_DROPPED = ("activation", "recurrent_activation", "use_bias", "dropout", "recurrent_dropout", "implementation",
            "unroll", "reset_after", "time_major")
CUDNN_OF = {"LSTM": "CuDNNLSTM", "GRU": "CuDNNGRU"}


def _to_cudnn(config):
    """The model config with LSTM / GRU entries turned into CuDNNLSTM / CuDNNGRU (recursively)."""
    if isinstance(config, dict):
        out = {k: _to_cudnn(v) for k, v in config.items()}
        if out.get("class_name") in CUDNN_OF and isinstance(out.get("config"), dict):
            layer = out["config"]
            if layer.get("activation", "tanh") != "tanh" or layer.get("recurrent_activation", "sigmoid") != "sigmoid":
                raise SystemExit(f"{layer.get('name')}: cuDNN layers only have tanh / sigmoid")
            if out["class_name"] == "GRU" and not layer.get("reset_after", True):
                raise SystemExit(f"{layer.get('name')}: CuDNNGRU is the reset_after=True form")
            out["class_name"] = CUDNN_OF[out["class_name"]]
            out["config"] = {k: v for k, v in layer.items() if k not in _DROPPED}
            out.pop("module", None)
            out.pop("registered_name", None)
        return out
    if isinstance(config, list):
        return [_to_cudnn(v) for v in config]
    return config


def main(argv):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np
    import tf_keras as K
    from tf_keras.src.layers.rnn.cudnn_gru import CuDNNGRU
    from tf_keras.src.layers.rnn.cudnn_lstm import CuDNNLSTM
    from tf_keras.src.saving.legacy.hdf5_format import _convert_rnn_weights

    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for source in argv[1:]:
        original = K.models.load_model(source, compile=False)
        config = {"class_name": type(original).__name__, "config": original.get_config()}
        cudnn = K.models.model_from_json(json.dumps(_to_cudnn(config)),
                                         custom_objects={"CuDNNLSTM": CuDNNLSTM, "CuDNNGRU": CuDNNGRU})
        back = {}
        pairs = list(zip(_leaves(original), _leaves(cudnn)))
        assert len(pairs) == len(_leaves(original)) == len(_leaves(cudnn))
        for old, new in pairs:
            weights = old.get_weights()
            if type(new).__name__ in ("CuDNNLSTM", "CuDNNGRU"):
                weights = _convert_rnn_weights(new, weights)  # Keras's LSTM -> CuDNNLSTM conversion
                new.set_weights(weights)
                twin = type(old).from_config(old.get_config())  # and Keras's CuDNN -> LSTM conversion, back
                returned = _convert_rnn_weights(twin, new.get_weights())
                for role, value in zip(("kernel", "recurrent_kernel", "bias"), returned):
                    back[f"{new.name}/{role}"] = np.asarray(value)
            else:
                new.set_weights(weights)
        stem = Path(source).name.rsplit(".", 1)[0].replace("k2_", "k2_cudnn_", 1)
        cudnn.save(str(out / f"{stem}.h5"), save_format="h5")
        cudnn.save_weights(str(out / f"{stem}_weights.h5"), save_format="h5")
        np.savez(out / f"{stem}.keras_back.npz", **back)
        written[stem] = {"source": Path(source).name, "layers": sorted({k.split("/")[0] for k in back})}
    (out / "cudnn.json").write_text(json.dumps(written, indent=1))
    return 0


def _leaves(model):
    out = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            out.extend(_leaves(layer))
        elif type(layer).__name__ == "Bidirectional":  # its directions share the wrapper's variables
            out.extend([layer.forward_layer, layer.backward_layer])
        elif type(layer).__name__ != "InputLayer":
            out.append(layer)
    return out


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

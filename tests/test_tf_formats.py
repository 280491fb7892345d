"""TensorFlow's own files read without TensorFlow: TF2 object-based checkpoints (tf-keras ``save_weights``,
``tf.train.Checkpoint`` over tf-keras and Keras 3 models), SavedModel directories (tf-keras ``save_format="tf"``
with keras_metadata.pb, Keras 3 ``model.export``) and a ``tf.compat.v1`` Saver checkpoint.

The fixtures in tests/fixtures/tf_formats were written by those writers (make_tf_formats.py, random non-zero
weights); their oracles hold each layer's ``get_weights()`` and the model's own output. Every array read must equal
the writer's, the SavedModel's forward must equal Keras's predict, and diff against the same model's .h5 / .keras
must find nothing. The reading is also done in a process where TensorFlow cannot be imported.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from lstm_inspect import export_arrays, open_model
from lstm_inspect.cli import cli

HERE = Path(__file__).parent / "fixtures" / "tf_formats"

#: file -> (oracle, kind, has config)
FILES = {
    "tfk_stack_sm": ("tfk_stack", "tf-savedmodel", True),
    "tfk_stack_ckpt": ("tfk_stack", "tf2-checkpoint", False),
    "tfk_stack_tfckpt": ("tfk_stack", "tf2-checkpoint", False),
    "k3_stack_export": ("k3_stack", "tf-savedmodel", False),
    "k3_stack_tfckpt": ("k3_stack", "tf2-checkpoint", False),
}
LAYERS = ["lstm", "gru_rb", "bidi", "rnn", "gru", "dense"]
#: What the writer's model holds: Keras's count_params() of the stack.
PARAMS = 602


def oracle(name):
    with np.load(HERE / f"{name}.oracle.npz") as data:
        return {k: data[k] for k in data.files}


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def stored_weights(model, top):
    """A top-level layer's arrays in get_weights() order (leaves depth first, each kernel, recurrent, bias)."""
    (layer,) = [layer for layer in model.root.children if layer.name == top]
    order = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}
    out = []
    for leaf in layer.walk():
        out += [t.read() for t in sorted(leaf.weights, key=lambda t: order.get(t.name, 9))]
    return out


@pytest.mark.parametrize("name", list(FILES))
def test_every_array_equals_the_writers(name):
    source, kind, has_config = FILES[name]
    data = oracle(source)
    with open_model(HERE / name) as model:
        assert model.kind == kind and model.has_config == has_config
        # optimizer slots, counters, seed generators are not counted; tf.train.Checkpoint(step=...)'s variable is
        step = 1 if name == "tfk_stack_tfckpt" else 0
        assert model.total_params == PARAMS + step
        assert [layer.name for layer in model.root.children if layer.weights or layer.children] == \
            LAYERS + ["step"] * step
        classes = {layer.key: layer.class_name for layer in model.layers}
        assert classes["lstm"] == "LSTM" and classes["gru"] == "GRU" and classes["rnn"] == "SimpleRNN"
        assert classes["bidi"] == "Bidirectional" and classes["bidi/backward_lstm"] == "LSTM"
        assert all(layer.inferred != has_config for layer in model.layers if layer.weights)
        for top in LAYERS:
            ours = stored_weights(model, top)
            theirs = [data[f"{top}/{i}"] for i in range(len(ours))]
            assert f"{top}/{len(ours)}" not in data
            for a, b in zip(ours, theirs):
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b, err_msg=f"{name}: {top}")


@pytest.mark.parametrize("name", ["tfk_stack_ckpt", "tfk_stack_sm", "tfk_stack_tfckpt"])
def test_training_state_is_listed_apart(name):
    with open_model(HERE / name) as model:
        note = next(w for w in model.warnings if w.startswith("training state listed apart"))
        assert "Adam/m/lstm/lstm_cell/kernel" in note
        sources = [t.source for layer in model.layers for t in layer.weights]
        assert not any("optimizer" in s or "save_counter" in s or "keras_api" in s for s in sources)


@pytest.mark.parametrize("a,b", [("tfk_stack.h5", "tfk_stack_sm"), ("tfk_stack.h5", "tfk_stack_ckpt"),
                                 ("tfk_stack.h5", "tfk_stack_tfckpt"), ("k3_stack.keras", "k3_stack_export"),
                                 ("k3_stack.keras", "k3_stack_tfckpt")])
def test_diff_against_the_same_models_keras_file_is_identical(a, b):
    result = run_cli("diff", HERE / a, HERE / b)
    assert "62 blocks compared, 0 changed" in result.output, result.output
    if b == "tfk_stack_tfckpt":  # tf.train.Checkpoint(model=..., step=...): the step variable is there too
        assert result.exit_code == 1 and "1 added" in result.output and "+ added   step" in result.output
    else:
        assert result.exit_code == 0 and "identical" in result.output, result.output


def test_savedmodel_forward_equals_keras_predict(tmp_path):
    data = oracle("tfk_stack")
    np.save(tmp_path / "x.npy", data["x"])
    result = run_cli("forward", HERE / "tfk_stack_sm", "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npz")
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "y.npz") as out:
        np.testing.assert_allclose(out["__output__"], data["y"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("args", [("inspect", "--json"), ("export", "--layout", "torch", "--layer", "lstm", "--layer", "rnn"),
                                  ("export", "--layout", "onnx"), ("export", "--fused"), ("check",),
                                  ("snapshot",), ("explain",)])
@pytest.mark.parametrize("name", ["tfk_stack_sm", "tfk_stack_ckpt"])
def test_every_command_runs(name, args, tmp_path):
    extra = ["-o", tmp_path / "out.npz"] if args[0] == "export" else \
        ["-o", tmp_path / "s.json"] if args[0] == "snapshot" else []
    result = run_cli(args[0], HERE / name, *args[1:], *extra)
    assert result.exit_code in (0, 1), result.output  # check may find something to say about random weights
    assert "Traceback" not in result.output


def test_the_ways_to_name_a_tf2_checkpoint(tmp_path):
    expected = export_arrays(HERE / "tfk_stack_ckpt")
    for path in (HERE / "tfk_stack_ckpt.index", HERE / "tfk_stack_ckpt.data-00000-of-00001", HERE / "checkpoint"):
        got = export_arrays(path)
        assert sorted(got) == sorted(expected) and all(np.array_equal(got[k], expected[k]) for k in got)
    # a directory holding a `checkpoint` state file opens the checkpoint it names
    for part in ("index", "data-00000-of-00001"):
        shutil.copy(HERE / f"tfk_stack_ckpt.{part}", tmp_path / f"w.{part}")
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "w"\nall_model_checkpoint_paths: "w"\n')
    assert sorted(export_arrays(tmp_path)) == sorted(expected)


@pytest.mark.parametrize("named", ["../w", "/etc/w", "sub/w", "w"])
def test_checkpoint_file_is_followed_only_beside_itself(tmp_path, named):
    """TF1's Saver writes absolute paths into `checkpoint`: only the last component is looked for, beside it."""
    (tmp_path / "sub").mkdir()
    for part in ("index", "data-00000-of-00001"):
        shutil.copy(HERE / f"tfk_stack_ckpt.{part}", tmp_path / "sub" / f"w.{part}")
    (tmp_path / "sub" / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')
    assert run_cli("inspect", tmp_path / "sub" / "checkpoint", "--no-stats").exit_code == 0
    (tmp_path / "checkpoint").write_text(f'model_checkpoint_path: "{named}"\n')  # no w.index beside this one
    result = run_cli("inspect", tmp_path / "checkpoint")
    assert result.exit_code == 2 and "looks only in the checkpoint file's own directory" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_savedmodel_with_symlinked_metadata_is_refused(tmp_path):
    target = tmp_path / "sm"
    shutil.copytree(HERE / "tfk_stack_sm", target)
    (target / "keras_metadata.pb").unlink()
    (target / "keras_metadata.pb").symlink_to(HERE / "tfk_stack_sm" / "keras_metadata.pb")
    result = run_cli("inspect", target)
    assert result.exit_code == 2 and "symbolic link" in result.output, result.output


def test_savedmodel_without_variables_is_one_line(tmp_path):
    (tmp_path / "sm").mkdir()
    (tmp_path / "sm" / "saved_model.pb").write_bytes(b"\x08\x01")
    result = run_cli("inspect", tmp_path / "sm")
    assert result.exit_code == 2 and "variables/variables.index" in result.output, result.output


NO_TENSORFLOW = textwrap.dedent("""
    import sys
    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorboard"):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTensorFlow())
""")


def test_read_where_tensorflow_cannot_be_imported(tmp_path):
    names = list(FILES) + ["tf1_lstm.ckpt"]
    code = NO_TENSORFLOW + textwrap.dedent("""
        import sys, numpy as np
        from lstm_inspect import export_arrays
        here, out, names = sys.argv[1], sys.argv[2], sys.argv[3:]
        for name in names:
            np.savez(f"{out}/{name}.npz", **export_arrays(f"{here}/{name}"))
        assert not any(m.split(".")[0] in ("tensorflow", "tf_keras") for m in sys.modules)
    """)
    done = subprocess.run([sys.executable, "-c", code, str(HERE), str(tmp_path), *names], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    for name in names:
        expected = export_arrays(HERE / name)
        with np.load(tmp_path / f"{name}.npz") as got:
            assert sorted(got.files) == sorted(expected)
            for key in got.files:
                np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name}: {key}")


def test_tf1_saver_fixture_reproduces_dynamic_rnn():
    import reference

    data = oracle("tf1_lstm")
    arrays = export_arrays(HERE / "tf1_lstm.ckpt")
    blocks = {k.rsplit("/", 1)[1]: v for k, v in arrays.items() if k.startswith("rnn/lstm_cell/")}
    blocks["b_f"] = blocks["b_f"] + 1.0  # forget_bias, added at run time by LSTMCell, stored nowhere
    np.testing.assert_allclose(reference.run("LSTM", data["x"], blocks), data["y"], rtol=1e-5, atol=1e-6)


def test_tensorflow_reads_what_we_read():
    """The other side of the proof: TensorFlow's own loader agrees with the files' arrays (and with us)."""
    import tensorflow as tf

    for name in ("tfk_stack_ckpt", "tfk_stack_sm/variables/variables", "k3_stack_export/variables/variables"):
        reader = tf.train.load_checkpoint(str(HERE / name))
        with open_model(HERE / name.split("/")[0]) as model:
            for layer in model.layers:
                for tensor in layer.weights:
                    np.testing.assert_array_equal(tensor.read(), reader.get_tensor(tensor.source))


def test_verify_savedmodel_against_tf_keras():
    """tf-keras loads its own SavedModel (keras_metadata.pb + variables) and runs it: every layer matches."""
    result = run_cli("verify", HERE / "tfk_stack_sm")
    assert result.exit_code == 0, result.output
    assert "7 outputs match tf_keras" in result.output, result.output


def test_check_walk_finds_savedmodels_and_tflite(tmp_path):
    shutil.copytree(HERE / "tfk_stack_sm", tmp_path / "models" / "sm")
    shutil.copy(HERE / "tfl_lstm.tflite", tmp_path / "models" / "m.tflite")
    result = run_cli("check", tmp_path / "models", "--format", "json")
    assert result.exit_code in (0, 1), result.output
    assert '"tf-savedmodel"' in result.output and '"tflite"' in result.output


def test_partitioned_variables_are_put_together():
    """Variables stored in slices under encoded keys: a TF1 fixed_size_partitioner variable (3 slices) and a tf-keras
    LSTM written with TF2's experimental_sharding_callback (13 shards, kernels cut across them): each read whole,
    equal to the writer's value and to TensorFlow's own reading."""
    import tensorflow as tf

    data = oracle("partitioned")
    with open_model(HERE / "tf1_part.ckpt") as model:
        (tensor,) = [t for layer in model.layers for t in layer.weights]
        np.testing.assert_array_equal(tensor.read(), data["part"])
        np.testing.assert_array_equal(tensor.read(), tf.train.load_checkpoint(str(HERE / "tf1_part.ckpt")).get_tensor("part"))
    with open_model(HERE / "tfk_sharded") as model:
        assert [layer.class_name for layer in model.layers] == ["LSTM", "Dense"]
        for layer in model.layers:
            order = {"kernel": 0, "recurrent_kernel": 1, "bias": 2}
            for i, t in enumerate(sorted(layer.weights, key=lambda t: order[t.name])):
                np.testing.assert_array_equal(t.read(), data[f"{layer.name}/{i}"])


def test_slice_missing_is_one_line(tmp_path):
    index = (HERE / "tf1_part.ckpt.index").read_bytes()
    (tmp_path / "p.ckpt.index").write_bytes(index)
    data = bytearray((HERE / "tf1_part.ckpt.data-00000-of-00001").read_bytes())
    data[5] ^= 1
    (tmp_path / "p.ckpt.data-00000-of-00001").write_bytes(bytes(data))
    result = run_cli("inspect", tmp_path / "p.ckpt")
    assert result.exit_code == 2 and "CRC-32C" in result.output, result.output

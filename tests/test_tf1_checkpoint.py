"""Reading TensorFlow 1 checkpoints: TF1 cells (tf.compat.v1.nn.rnn_cell LSTMCell with peepholes and projection,
BasicLSTMCell, GRUCell, MultiRNNCell, and a bidirectional_dynamic_rnn pair) are built and run by TensorFlow itself in
graph mode (tf.compat.v1.nn.dynamic_rnn, random non-zero weights and biases) in a subprocess, saved with
tf.compat.v1.train.Saver, then read by lstm-inspect; a plain numpy cell (tests/reference.py) fed with the split
blocks reproduces TensorFlow's outputs — with forget_bias (1.0, added at run time, stored nowhere) added to b_f.
Without it the outputs do not match. Also: the ways to name a checkpoint, refusals, and TensorFlow being optional."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import reference
from lstm_inspect import export_arrays, inspect, open_model
from lstm_inspect.cli import cli

RTOL, ATOL = 1e-5, 1e-6
WORST = [0.0]

#: name -> (python expression building the cell(s) inside the graph, input size, bidirectional, with an Adam
#: optimizer and global_step, whose variables the checkpoint then holds too)
CASES = {
    "lstm_peep_proj": ("rnn_cell.LSTMCell(5, use_peepholes=True, num_proj=3)", 4, False, False),
    "lstm_plain": ("rnn_cell.LSTMCell(4)", 3, False, True),
    "basic_lstm": ("rnn_cell.BasicLSTMCell(4)", 3, False, False),
    "gru": ("rnn_cell.GRUCell(4)", 3, False, False),
    "multi": ("rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(4, use_peepholes=True), rnn_cell.GRUCell(3), "
              "rnn_cell.BasicLSTMCell(2)])", 3, False, False),
    "bidi_lstm": ("rnn_cell.LSTMCell(3)", 2, True, False),
}

GENERATOR = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    import numpy as np
    import tensorflow as tf
    tf1 = tf.compat.v1
    rnn_cell = tf1.nn.rnn_cell
    out_dir, cases = sys.argv[1], json.loads(sys.argv[2])
    for name, (expr, in_dim, bidi, train) in cases.items():
        rng = np.random.default_rng(sum(map(ord, name)))
        x = rng.normal(size=(3, 6, in_dim)).astype(np.float32)
        graph = tf.Graph()
        with graph.as_default():
            tf1.set_random_seed(1)
            inputs = tf1.placeholder(tf.float32, x.shape)
            if bidi:
                (fw, bw), _ = tf1.nn.bidirectional_dynamic_rnn(eval(expr), eval(expr), inputs, dtype=tf.float32)
                outputs = {"fw": fw, "bw": bw}
            else:
                seq, _ = tf1.nn.dynamic_rnn(eval(expr), inputs, dtype=tf.float32)
                outputs = {"out": seq}
                if train:  # never run: only its variables (Adam slots, beta powers, global_step) are saved
                    step = tf1.train.get_or_create_global_step()
                    tf1.train.AdamOptimizer().minimize(tf.reduce_sum(seq), global_step=step)
            saver = tf1.train.Saver()
            with tf1.Session() as session:
                session.run(tf1.global_variables_initializer())
                for var in tf1.global_variables():  # every weight and bias clearly non-zero
                    value = rng.normal(size=var.shape.as_list()) * 0.5
                    var.load(np.asarray(value).astype(var.dtype.base_dtype.as_numpy_dtype), session)
                values = session.run(outputs, {inputs: x})
                saver.save(session, os.path.join(out_dir, name + ".ckpt"))
        np.savez(os.path.join(out_dir, name + "_oracle.npz"), x=x, **values)
    # a TF2 object-based checkpoint: opens, its variables listed raw, its object-graph proto skipped
    tf.train.Checkpoint(dense=tf.Variable(np.ones((2, 3), np.float32))).save(os.path.join(out_dir, "tf2", "ckpt"))
""")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    """Every case written and run by TensorFlow (one subprocess: graph mode stays out of the test process)."""
    out = tmp_path_factory.mktemp("tf1")
    done = subprocess.run([sys.executable, "-c", GENERATOR, str(out), json.dumps(CASES)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def oracle(ckpts, name):
    with np.load(ckpts / f"{name}_oracle.npz") as data:
        return {k: data[k] for k in data.files}


def blocks_of(arrays, key, forget_bias=1.0):
    blocks = {k[len(key) + 1:]: v for k, v in arrays.items() if k.startswith(key + "/")}
    assert blocks, f"no blocks for {key}: {sorted(arrays)}"
    if "b_f" in blocks and "W_i" in blocks:  # LSTM: the run-time forget_bias the checkpoint does not hold
        blocks["b_f"] = blocks["b_f"] + forget_bias
    return blocks


def run_cell(blocks, x, go_backwards=False):
    family = "LSTM" if "W_i" in blocks else "GRU"
    return reference.run(family, x, blocks, go_backwards=go_backwards, reset_after=False if family == "GRU" else None)


def close(ours, theirs, what):
    WORST[0] = max(WORST[0], float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL, err_msg=what)


SINGLE = {"lstm_peep_proj": ("rnn/lstm_cell", "TF1LSTMCell"), "lstm_plain": ("rnn/lstm_cell", "TF1LSTMCell"),
          "basic_lstm": ("rnn/basic_lstm_cell", "TF1BasicLSTMCell"), "gru": ("rnn/gru_cell", "TF1GRUCell")}


@pytest.mark.parametrize("name", list(SINGLE))
def test_single_cells_are_split_and_reproduced(ckpts, name):
    key, cls = SINGLE[name]
    data = oracle(ckpts, name)
    prefix = ckpts / f"{name}.ckpt"
    with open_model(prefix) as model:
        assert model.kind == "tf1-checkpoint"
        assert [(layer.key, layer.class_name) for layer in model.layers if layer.class_name.startswith("TF1")] == \
            [(key, cls)]
    arrays = export_arrays(prefix)
    close(run_cell(blocks_of(arrays, key), data["x"]), data["out"], f"{name}: every output step")
    if cls != "TF1GRUCell":  # the split bias excludes forget_bias: without adding it the cell does not match
        assert not np.allclose(run_cell(blocks_of(arrays, key, forget_bias=0.0), data["x"]), data["out"],
                               rtol=RTOL, atol=ATOL)


def test_lstm_peepholes_and_projection_blocks(ckpts):
    arrays = export_arrays(ckpts / "lstm_peep_proj.ckpt")
    blocks = blocks_of(arrays, "rnn/lstm_cell")
    assert blocks["W_i"].shape == (4, 5) and blocks["U_i"].shape == (3, 5) and blocks["proj"].shape == (5, 3)
    assert {"p_i", "p_f", "p_o"} <= set(blocks)
    data = oracle(ckpts, "lstm_peep_proj")
    for drop in ("p_i", "p_f", "p_o", "proj"):  # each extra array matters to the proof
        trimmed = dict(blocks)
        trimmed.pop(drop)
        if drop == "proj":
            continue  # without proj the output has 5 units, not 3: trivially different
        assert not np.allclose(run_cell(trimmed, data["x"]), data["out"], rtol=RTOL, atol=ATOL), drop


def test_multi_rnn_cell_chained(ckpts):
    data = oracle(ckpts, "multi")
    with open_model(ckpts / "multi.ckpt") as model:
        (multi,) = [layer for layer in model.root.children if layer.class_name == "MultiRNNCell"]
        assert multi.key == "rnn/multi_rnn_cell"
        assert [(c.key, c.class_name) for c in multi.children] == [
            ("rnn/multi_rnn_cell/cell_0/lstm_cell", "TF1LSTMCell"),
            ("rnn/multi_rnn_cell/cell_1/gru_cell", "TF1GRUCell"),
            ("rnn/multi_rnn_cell/cell_2/basic_lstm_cell", "TF1BasicLSTMCell")]
        keys = [c.key for c in multi.children]
    arrays = export_arrays(ckpts / "multi.ckpt")
    seq = data["x"]
    for key in keys:
        seq = run_cell(blocks_of(arrays, key), seq)
    close(seq, data["out"], "MultiRNNCell: LSTMCell(peepholes) -> GRUCell -> BasicLSTMCell, every output step")


def test_bidirectional_pair(ckpts):
    data = oracle(ckpts, "bidi_lstm")
    arrays = export_arrays(ckpts / "bidi_lstm.ckpt")
    fw = run_cell(blocks_of(arrays, "bidirectional_rnn/fw/lstm_cell"), data["x"])
    bw = run_cell(blocks_of(arrays, "bidirectional_rnn/bw/lstm_cell"), data["x"], go_backwards=True)[:, ::-1]
    close(fw, data["fw"], "bidirectional_dynamic_rnn forward cell")
    close(bw, data["bw"], "bidirectional_dynamic_rnn backward cell")


def test_every_way_to_name_a_checkpoint(ckpts):
    names = [ckpts / "gru.ckpt", ckpts / "gru.ckpt.index", ckpts / "gru.ckpt.data-00000-of-00001"]
    results = [export_arrays(path) for path in names]
    for other in results[1:]:
        assert sorted(other) == sorted(results[0])
        assert all(np.array_equal(other[k], results[0][k]) for k in other)


def test_notes_say_forget_bias_is_not_stored(ckpts):
    report = inspect(ckpts / "basic_lstm.ckpt", stats=False)
    leaf = next(e for e in report["layers"] if e["path"] == "rnn/basic_lstm_cell")
    notes = " ".join(leaf["recurrent"]["notes"])
    assert "forget_bias" in notes and "stored nowhere" in notes and "b_f here excludes it" in notes
    sources = {b["key"]: b["source"] for b in leaf["recurrent"]["blocks"]}
    assert sources["W_c"] == "kernel[0:3, 4:8]" and sources["U_f"] == "kernel[3:7, 8:12]"
    assert sources["b_o"] == "bias[12:16]"
    names = {g["gate"]: g["name"] for g in leaf["recurrent"]["gates"]}
    assert names["c"] == "cell candidate (TF1 j)"


@pytest.mark.parametrize("name", ["multi", "lstm_plain"])
def test_every_variable_is_listed(ckpts, name):
    """Variables outside the cells (Adam slots `kernel/Adam`, `beta1_power`, `global_step`) are listed raw, never
    taken for a cell and never dropped: the model counts every stored value."""
    import tensorflow as tf
    shapes = tf.train.load_checkpoint(str(ckpts / f"{name}.ckpt")).get_variable_to_shape_map()
    with open_model(ckpts / f"{name}.ckpt") as model:
        assert model.total_params == sum(int(np.prod(s)) for s in shapes.values())
        listed = {f"{layer.name}/{t.name}" if layer.name != "(top level)" else t.name
                  for layer in model.layers if layer.class_name == "variables" for t in layer.weights}
        cells = [layer.key for layer in model.layers if layer.class_name.startswith("TF1")]
    if name == "lstm_plain":
        assert {"rnn/lstm_cell/kernel/Adam", "rnn/lstm_cell/bias/Adam_1", "global_step", "beta1_power"} <= listed
        assert cells == ["rnn/lstm_cell"]
    else:
        assert not listed


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_export_to_torch_or_onnx_without_forget_bias_is_refused(ckpts, tmp_path):
    for layout in ("torch", "onnx"):
        result = run_cli("export", ckpts / "lstm_plain.ckpt", "--layout", layout, "-o", tmp_path / f"o_{layout}.npz")
        assert result.exit_code == 2, result.output
        assert "forget_bias" in result.output and "--forget-bias" in result.output
        assert "Traceback" not in result.output and "rnn/lstm_cell" in result.output
        assert not (tmp_path / f"o_{layout}.npz").exists()


def exported(ckpts, tmp_path, name, layout, forget_bias="1.0"):
    """`export --layout L --forget-bias F` through the CLI, read back with the modules recorded in its header."""
    from safetensors import safe_open
    out = tmp_path / f"{name}_{layout}.safetensors"
    result = run_cli("export", ckpts / f"{name}.ckpt", "--layout", layout, "--forget-bias", forget_bias, "-o", out)
    assert result.exit_code == 0, result.output
    with safe_open(str(out), "np") as f:
        modules = json.loads(f.metadata()["modules"])
        arrays = {k: f.get_tensor(k) for k in f.keys()}
    return {m["key"]: m for m in modules}, arrays, result.output


def torch_run(module, arrays, x):
    import torch
    net = getattr(torch.nn, module["target"].split(".")[-1])(**module["args"])
    prefix = module["key"] + "."
    net.load_state_dict({k[len(prefix):]: torch.from_numpy(v) for k, v in arrays.items() if k.startswith(prefix)},
                        strict=True)
    with torch.no_grad():
        return net(torch.from_numpy(x))[0].numpy()


def onnx_seq(module, arrays, x, reverse=False):
    from test_layout_export import onnx_run
    from lstm_inspect.gates.conversion import Module
    y, _ = onnx_run(Module(module["key"], module["layer"], module["target"], module["args"]), arrays, x)
    return y[:, 0].transpose(1, 0, 2)


@pytest.mark.parametrize("name", ["lstm_plain", "basic_lstm", "bidi_lstm"])
def test_forget_bias_export_to_torch_reproduces_tensorflow(ckpts, tmp_path, name):
    """TF1 LSTMCell / BasicLSTMCell with --forget-bias 1.0 -> torch.nn.LSTM (strict load) = dynamic_rnn outputs."""
    data = oracle(ckpts, name)
    modules, arrays, output = exported(ckpts, tmp_path, name, "torch")
    assert "forget_bias=1 (given, not stored in the checkpoint) is added to b_f" in output
    assert "assumes tanh and sigmoid" in output
    if name == "bidi_lstm":  # two separate cells; the bw one ran on the input reversed in time
        fw = torch_run(modules["bidirectional_rnn.fw.lstm_cell"], arrays, data["x"])
        bw = torch_run(modules["bidirectional_rnn.bw.lstm_cell"], arrays, data["x"][:, ::-1].copy())[:, ::-1]
        close(fw, data["fw"], "fw cell as torch.nn.LSTM")
        close(bw, data["bw"], "bw cell as torch.nn.LSTM")
    else:
        (module,) = modules.values()
        assert module["target"] == "torch.nn.LSTM"
        close(torch_run(module, arrays, data["x"]), data["out"], f"{name} as torch.nn.LSTM")
    _, off, _ = exported(ckpts, tmp_path, name, "torch", forget_bias="0")  # the flag's value is what gets added
    assert not np.allclose(off[next(k for k in off if "bias_ih" in k)], arrays[next(k for k in arrays if "bias_ih" in k)])


@pytest.mark.parametrize("name", ["lstm_plain", "basic_lstm", "gru", "multi"])
def test_forget_bias_export_to_onnx_reproduces_tensorflow(ckpts, tmp_path, name):
    """--forget-bias 1.0 -> ONNX LSTM / GRU (linear_before_reset=0) / peepholes P in onnxruntime = dynamic_rnn;
    MultiRNNCell: its three cells (LSTM with peepholes, GRU, BasicLSTM) chained as three nodes."""
    data = oracle(ckpts, name)
    modules, arrays, _ = exported(ckpts, tmp_path, name, "onnx")
    seq = data["x"]
    for module in modules.values():
        if module["target"] == "onnx:GRU":
            assert module["args"]["linear_before_reset"] == 0
        seq = onnx_seq(module, arrays, seq)
    if name == "multi":
        assert "rnn/multi_rnn_cell/cell_0/lstm_cell/P" in arrays
    close(seq, data["out"], f"{name} as ONNX node(s) in onnxruntime")


@pytest.mark.parametrize("name", ["lstm_plain", "basic_lstm", "gru"])
def test_forget_bias_export_to_keras_fused_reproduces_tensorflow(ckpts, tmp_path, name):
    """`export --fused --forget-bias 1.0`: Keras 3 LSTM / GRU(reset_after=False) given the arrays with set_weights
    computes dynamic_rnn's outputs; without the flag an LSTM cell is refused."""
    import keras
    data = oracle(ckpts, name)
    out = tmp_path / "k.npz"
    if name != "gru":
        refused = run_cli("export", ckpts / f"{name}.ckpt", "--fused", "-o", out)
        assert refused.exit_code == 2 and "--forget-bias" in refused.output and not out.exists(), refused.output
    result = run_cli("export", ckpts / f"{name}.ckpt", "--fused", "--forget-bias", "1.0", "-o", out)
    assert result.exit_code == 0, result.output
    key, _ = SINGLE[name]
    with np.load(out) as arrays:
        weights = [arrays[f"{key}/{n}"] for n in ("kernel", "recurrent_kernel", "bias")]
    units = weights[1].shape[0]
    layer = keras.layers.GRU(units, return_sequences=True, reset_after=False) if name == "gru" else \
        keras.layers.LSTM(units, return_sequences=True)
    assert ("reset_after=False" in result.output) == (name == "gru")
    layer.build((None, None, weights[0].shape[0]))
    layer.set_weights(weights)
    close(np.asarray(layer(data["x"])), data["out"], f"{name} as a Keras layer")


@pytest.mark.parametrize("name,reason", [("lstm_peep_proj", "projection"), ("multi", "peepholes")])
def test_tf1_cells_keras_cannot_hold_are_refused(ckpts, tmp_path, name, reason):
    result = run_cli("export", ckpts / f"{name}.ckpt", "--fused", "--forget-bias", "1", "-o", tmp_path / "o.npz")
    assert result.exit_code == 2 and reason in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize("name,reason", [("gru", "reset_after=False"), ("lstm_peep_proj", "peepholes")])
def test_tf1_cells_torch_cannot_hold_are_refused(ckpts, tmp_path, name, reason):
    result = run_cli("export", ckpts / f"{name}.ckpt", "--layout", "torch", "--forget-bias", "1", "-o",
                     tmp_path / "o.npz")
    assert result.exit_code == 2 and reason in result.output and "Traceback" not in result.output, result.output


#: Run before the code of a subprocess: any import of TensorFlow (or tf-keras) fails, as on a machine without it.
NO_TENSORFLOW = textwrap.dedent("""
    import sys
    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "tf_keras", "tensorboard"):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoTensorFlow())
""")


def run_without_tensorflow(code, *args):
    """`code` in a fresh interpreter where TensorFlow cannot be imported; returns its stdout."""
    done = subprocess.run([sys.executable, "-c", NO_TENSORFLOW + textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_read_without_tensorflow_equals_tensorflow(ckpts, tmp_path):
    """Every case read where TensorFlow cannot be imported: the exported arrays equal what TensorFlow's own
    tf.train.load_checkpoint returns for the same variables (checked here, with TensorFlow)."""
    import tensorflow as tf
    run_without_tensorflow("""
        import sys, numpy as np
        from lstm_inspect import open_model
        out, names = sys.argv[1], sys.argv[2:]
        for name in names:
            with open_model(f"{out}/{name}.ckpt") as model:
                arrays = {t.source: t.read() for layer in model.layers for t in layer.weights}
            np.savez(f"{out}/{name}_native.npz", **arrays)
        assert not any(m.split(".")[0] == "tensorflow" for m in sys.modules)
    """, ckpts, *CASES)
    for name in CASES:
        reader = tf.train.load_checkpoint(str(ckpts / f"{name}.ckpt"))
        shapes = reader.get_variable_to_shape_map()
        with np.load(ckpts / f"{name}_native.npz") as ours:
            assert sorted(ours.files) == sorted(shapes), name
            for key in ours.files:
                theirs = reader.get_tensor(key)
                assert ours[key].dtype == theirs.dtype, key
                np.testing.assert_array_equal(ours[key], theirs, err_msg=f"{name}: {key}")


def test_tf2_object_checkpoint_is_read_through_its_object_graph(ckpts):
    """A plain tf.train.Checkpoint(dense=tf.Variable(...)): the variable is listed under its tracked name,
    save_counter apart as training state (tests/test_tf_formats.py covers Keras models)."""
    result = run_cli("inspect", ckpts / "tf2" / "ckpt-1")
    assert result.exit_code == 0, result.output
    with open_model(ckpts / "tf2" / "ckpt-1") as model:
        assert model.kind == "tf2-checkpoint"
        assert [(layer.key, [t.name for t in layer.weights]) for layer in model.layers] == [("dense", ["dense"])]
        assert model.total_params == 6
        assert any("save_counter" in w for w in model.warnings)


def test_index_file_that_is_not_a_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "notes.index"
    path.write_bytes(b"an index of something else\n" * 4)
    result = run_cli("inspect", path)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert "not a Keras model file" in result.output


def test_missing_data_shard_is_one_line(ckpts, tmp_path):
    (tmp_path / "cut.ckpt.index").write_bytes((ckpts / "gru.ckpt.index").read_bytes())
    result = run_cli("inspect", tmp_path / "cut.ckpt")
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def _copy(ckpts, tmp_path, name="gru"):
    for part in ("index", "data-00000-of-00001"):
        (tmp_path / f"c.ckpt.{part}").write_bytes((ckpts / f"{name}.ckpt.{part}").read_bytes())
    return tmp_path / "c.ckpt"


def one_line_error(path, *args, expect=""):
    result = run_cli("inspect", path, *args)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    assert expect in result.output, result.output
    return result.output


def test_flipped_data_byte_fails_the_crc(ckpts, tmp_path):
    prefix = _copy(ckpts, tmp_path)
    shard = tmp_path / "c.ckpt.data-00000-of-00001"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    assert run_cli("inspect", prefix, "--no-stats").exit_code == 0  # no tensor data read: nothing to check
    one_line_error(prefix, expect="fails its CRC-32C check")


def test_flipped_index_byte_fails_the_block_crc(ckpts, tmp_path):
    prefix = _copy(ckpts, tmp_path)
    index = tmp_path / "c.ckpt.index"
    data = bytearray(index.read_bytes())
    data[10] ^= 0x01
    index.write_bytes(bytes(data))
    one_line_error(prefix, expect="CRC-32C")


def test_symlinked_shard_is_refused(ckpts, tmp_path):
    (tmp_path / "c.ckpt.index").write_bytes((ckpts / "gru.ckpt.index").read_bytes())
    (tmp_path / "c.ckpt.data-00000-of-00001").symlink_to(ckpts / "gru.ckpt.data-00000-of-00001")
    one_line_error(tmp_path / "c.ckpt", expect="symbolic link")


def test_truncated_shard_is_one_line(ckpts, tmp_path):
    prefix = _copy(ckpts, tmp_path)
    shard = tmp_path / "c.ckpt.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-7])
    one_line_error(prefix, expect="outside its data shard")


def test_library_import_does_not_import_tensorflow():
    code = ("import sys, lstm_inspect, lstm_inspect.readers, lstm_inspect.readers.tf1_checkpoint, lstm_inspect.cli; "
            "assert 'tensorflow' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert done.returncode == 0, done.stderr


def test_zz_report_worst():
    print(f"\nTF1 checkpoints: largest difference to TensorFlow's outputs {WORST[0]:.2e}")

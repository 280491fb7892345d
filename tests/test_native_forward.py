"""`forward` on PyTorch, ONNX and TF1 files, proven against the frameworks themselves: real torch modules saved as
.safetensors and .pt, onnx.helper graphs run by onnxruntime, TF1 cells run by TensorFlow's dynamic_rnn. The numpy
run is fed from `gates.split`'s blocks, so each match also proves the split; a wrong forget_bias, nonlinearity or a
swapped gate must not match."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import onnxruntime as ort
import torch
import test_onnx_read
import test_torch_read
from lstm_inspect import forward, open_model, split_gates
from lstm_inspect.cli import cli
from lstm_inspect.errors import InspectError
from test_tf1_checkpoint import ckpts, oracle  # noqa: F401  (the module fixture: TensorFlow writes the checkpoints)

ATOL = 1e-5
WORST: dict[str, float] = {}


def close(ours, theirs, what):
    WORST[what.split(":")[0]] = max(WORST.get(what.split(":")[0], 0.0), float(np.max(np.abs(ours - theirs))))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL, err_msg=what)


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def cli_forward(path, x, tmp_path, *options):
    np.save(tmp_path / "x.npy", x)
    result = run_cli("forward", path, "--input", tmp_path / "x.npy", "-o", tmp_path / "out.npz", *options)
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "out.npz") as data:
        return {k: data[k] for k in data.files}, result.output


TORCH = ["lstm_2l_bidi", "lstm_proj", "lstm_nobias", "gru_2l_bidi", "rnn_tanh"]


@pytest.mark.parametrize("saver", ["safetensors", "pt"])
@pytest.mark.parametrize("name", TORCH)
def test_torch_modules_forward_equals_torch(name, saver, tmp_path):
    module = test_torch_read.build(name)
    path = tmp_path / f"{name}.{saver}"
    test_torch_read.save(module, saver, path)
    x = np.random.default_rng(3).normal(size=(2, 6, 3))
    with torch.no_grad():
        output, state = module.double()(torch.from_numpy(x))
    ours, said = cli_forward(path, x, tmp_path)
    close(ours["rnn/output"], output.numpy(), f"torch {name}: output")
    h_n, c_n = state if isinstance(state, tuple) else (state, None)
    close(ours["rnn/h_n"], h_n.numpy(), f"torch {name}: h_n")
    if c_n is not None:
        close(ours["rnn/c_n"], c_n.numpy(), f"torch {name}: c_n")
    assert ("nonlinearity='tanh'" in said) == name.startswith("rnn")


def test_torch_rnn_relu_needs_the_choice(tmp_path):
    module = test_torch_read.build("rnn_relu")
    path = tmp_path / "relu.safetensors"
    test_torch_read.save(module, "safetensors", path)
    x = np.random.default_rng(4).normal(size=(2, 5, 3))
    with torch.no_grad():
        output = module.double()(torch.from_numpy(x))[0].numpy()
    close(forward(path, x, nonlinearity="relu")["rnn/output"], output, "torch rnn_relu: output")
    assert not np.allclose(forward(path, x)["rnn/output"], output, atol=ATOL)  # the tanh default is not relu


def test_torch_swapped_gate_fails(tmp_path):
    module = test_torch_read.build("lstm_2l_bidi")
    state = {"rnn." + k: v.clone() for k, v in module.state_dict().items()}
    w = state["rnn.weight_ih_l0"]
    state["rnn.weight_ih_l0"] = torch.cat([w[5:10], w[0:5], w[10:]])  # i and f exchanged
    from safetensors.torch import save_file
    save_file(state, str(tmp_path / "swapped.safetensors"))
    x = np.random.default_rng(3).normal(size=(2, 6, 3))
    with torch.no_grad():
        output = module.double()(torch.from_numpy(x))[0].numpy()
    assert not np.allclose(forward(tmp_path / "swapped.safetensors", x)["rnn/output"], output, atol=ATOL)


ONNX = [c for c in test_onnx_read.CASES] + [
    ("lstm_clip_hardsigmoid", "LSTM", "bidirectional",
     {"clip": 0.7, "activations": ["HardSigmoid", "Tanh", "ScaledTanh", "Sigmoid", "LeakyRelu", "Tanh"],
      "activation_alpha": [0.3, 0.9, 0.05], "activation_beta": [0.4, 1.1]}, True, True, None),
    ("gru_affine", "GRU", "forward", {"activations": ["Sigmoid", "Affine"], "activation_alpha": [0.5],
                                      "activation_beta": [0.1]}, True, False, None),
]


@pytest.mark.parametrize("case,op,direction,attrs,with_b,with_p,acts", ONNX, ids=[c[0] for c in ONNX])
def test_onnx_nodes_forward_equals_onnxruntime(case, op, direction, attrs, with_b, with_p, acts, tmp_path):
    path = tmp_path / f"{case}.onnx"
    proto = test_onnx_read.build(case, op, direction, attrs, with_b, with_p, path)
    x = np.random.default_rng(7).normal(size=(2, 6, 3))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()],
                        session.run(None, {"X": x.transpose(1, 0, 2).astype(np.float32)})))
    ours = forward(path, x)
    for name, value in expected.items():
        close(ours[f"{case}_node/{name}"], value, f"onnx {case}: {name}")


def test_onnx_peephole_matters(tmp_path):
    path = tmp_path / "p.onnx"
    proto = test_onnx_read.build("lstm_rev_peephole", "LSTM", "reverse", {}, True, True, path)
    x = np.random.default_rng(7).normal(size=(2, 6, 3))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(["Y"], {"X": x.transpose(1, 0, 2).astype(np.float32)})[0]
    plain = tmp_path / "plain.onnx"
    test_onnx_read.build("lstm_rev_peephole", "LSTM", "reverse", {}, True, False, plain)  # same seed, no P
    assert not np.allclose(forward(plain, x)["lstm_rev_peephole_node/Y"], y, atol=ATOL)


TF1 = {"lstm_peep_proj": ["rnn/lstm_cell"], "lstm_plain": ["rnn/lstm_cell"], "basic_lstm": ["rnn/basic_lstm_cell"],
       "gru": ["rnn/gru_cell"], "multi": ["rnn/multi_rnn_cell"]}


@pytest.mark.parametrize("name", list(TF1))
def test_tf1_cells_forward_equals_dynamic_rnn(ckpts, name, tmp_path):  # noqa: F811
    data = oracle(ckpts, name)
    ours, said = cli_forward(ckpts / f"{name}.ckpt", data["x"], tmp_path)
    (key,) = TF1[name]
    close(ours[f"{key}/output"], data["out"], f"tf1 {name}: output")
    assert ("forget_bias=1.0 (TensorFlow's default" in said) == (name != "gru")
    if name != "gru":  # forget_bias is stored nowhere: another value must not reproduce TensorFlow
        wrong = forward(ckpts / f"{name}.ckpt", data["x"], forget_bias=0.0)[f"{key}/output"]
        assert not np.allclose(wrong, data["out"], atol=ATOL)


def test_tf1_bidirectional_pair(ckpts):  # noqa: F811
    data = oracle(ckpts, "bidi_lstm")
    ours = forward(ckpts / "bidi_lstm.ckpt", data["x"])
    close(ours["bidirectional_rnn/fw/lstm_cell/output"], data["fw"], "tf1 bidi: fw")
    close(ours["bidirectional_rnn/bw/lstm_cell/output"], data["bw"], "tf1 bidi: bw")


def test_refusals_name_the_file_and_reason(tmp_path):
    module = test_torch_read.build("gru_2l_bidi")
    path = tmp_path / "g.safetensors"
    test_torch_read.save(module, "safetensors", path)
    x = np.zeros((1, 3, 3))
    for kwargs, words in [({"inputs": np.zeros((1, 3, 5))}, "5 features"), ({"inputs": x, "layers": ["nope"]}, "nope"),
                          ({"inputs": np.zeros((3, 3))}, "(batch, time")]:
        with pytest.raises(InspectError, match=words.replace("(", r"\(")) as info:
            forward(path, **kwargs)
        assert str(path) in str(info.value) or "nope" in str(info.value)
    result = run_cli("forward", path, "--input", tmp_path / "missing.npy", "-o", tmp_path / "o.npz")
    assert result.exit_code == 2


def test_zz_report_worst():
    print("\nworst |numpy - framework|:", {k: f"{v:.1e}" for k, v in sorted(WORST.items())})


def test_onnx_clip_and_layout_matter(tmp_path):
    """clip changes the result (so its run is tested); layout=1 is refused."""
    path = tmp_path / "clip.onnx"
    proto = test_onnx_read.build("clipped", "LSTM", "forward", {"clip": 0.3}, True, False, path)
    x = np.random.default_rng(8).normal(size=(2, 6, 3))
    y = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        ["Y"], {"X": x.transpose(1, 0, 2).astype(np.float32)})[0]
    close(forward(path, x)["clipped_node/Y"], y, "onnx clip: Y")
    unclipped = tmp_path / "unclipped.onnx"
    test_onnx_read.build("clipped", "LSTM", "forward", {}, True, False, unclipped)  # same seed, no clip
    assert not np.allclose(forward(unclipped, x)["clipped_node/Y"], y, atol=ATOL)
    test_onnx_read.build("batch_major", "GRU", "forward", {"layout": 1}, True, False, tmp_path / "layout.onnx")
    with pytest.raises(InspectError, match="layout=1"):  # onnxruntime refuses it too: nothing to prove a run against
        forward(tmp_path / "layout.onnx", x)


def test_onnx_initial_state_from_the_graph_is_refused(tmp_path):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n)
             for n, s in (("W", (1, 12, 3)), ("R", (1, 12, 4)))]
    node = helper.make_node("GRU", ["X", "W", "R", "", "", "H0"], ["Y"], name="g", hidden_size=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("H0", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], inits)
    import onnx
    onnx.save(helper.make_model(graph), tmp_path / "h0.onnx")
    np.save(tmp_path / "x.npy", np.zeros((1, 3, 3)))
    result = run_cli("forward", tmp_path / "h0.onnx", "--input", tmp_path / "x.npy", "-o", tmp_path / "o.npz")
    assert result.exit_code == 2 and "initial_h" in result.output and "'g'" in result.output, result.output


# ------------------------------------------------------------------------------------------------------------------
# explain: each framework's equations, with the file's slices (the ones run above)


def explained(path):
    """explain's layers by key, and its warnings."""
    from lstm_inspect import explain

    result = explain(path)
    return {layer.key: layer for layer in result.layers}, result.warnings


def test_explain_torch_modules(tmp_path):
    for name in ("lstm_proj", "gru_2l_bidi", "rnn_tanh"):
        path = tmp_path / f"{name}.safetensors"
        test_torch_read.save(test_torch_read.build(name), "safetensors", path)
        layers, warnings = explained(path)
        assert all(layer.supported and "cannot run" not in " ".join(layer.pitfalls) for layer in layers.values())
        leaf = layers["rnn/l0"]
        text = "\n".join(leaf.equations)
        if name == "lstm_proj":
            assert "weight_hr_l0" in text and text.count("bias_hh_l0[") == 4  # both biases in every gate
        if name == "gru_2l_bidi":
            assert "r_t ⊙ (h_(t-1) · weight_hh_l0[" in text  # torch's n: reset after the matmul, b_hn inside
            assert "runs t = T … 1" in "\n".join(layers["rnn/l1_reverse"].equations)
            assert layers["rnn"].equations[1].startswith("y_1 = concat([rnn/l1(y_0), rnn/l1_reverse(y_0)]")
        if name == "rnn_tanh":
            assert text.startswith("h_t = tanh(") and any("nonlinearity" in w for w in warnings)


def test_explain_onnx_nodes_take_their_attributes(tmp_path):
    path = tmp_path / "clip.onnx"
    case = next(c for c in ONNX if c[0] == "lstm_clip_hardsigmoid")
    test_onnx_read.build(*case[:6], path)
    layers, _ = explained(path)
    forward_text = "\n".join(layers["lstm_clip_hardsigmoid_node/forward"].equations)
    # the node's activations with the alpha / beta each takes, consumed in order as onnxruntime does
    assert forward_text.startswith("i_t = hardsigmoid[α=0.3, β=0.4](clip(") and "P[0][" in forward_text
    assert "h_t = o_t ⊙ scaledtanh[α=0.9, β=1.1](c_t)" in forward_text
    reverse_text = "\n".join(layers["lstm_clip_hardsigmoid_node/reverse"].equations)
    assert reverse_text.startswith("i_t = sigmoid(clip(") and "c̃_t = leakyrelu[α=0.05](" in reverse_text
    assert "h_t = o_t ⊙ tanh(c_t)" in reverse_text
    path = tmp_path / "gru.onnx"
    test_onnx_read.build("gru_lbr0", "GRU", "forward", {"linear_before_reset": 0}, True, False, path)
    assert "(r_t ⊙ h_(t-1)) · R[0][" in "\n".join(explained(path)[0]["gru_lbr0_node/forward"].equations)


def test_explain_tf1_cells_show_forget_bias(ckpts):  # noqa: F811
    layers, warnings = explained(ckpts / "multi.ckpt")
    lstm = "\n".join(layers["rnn/multi_rnn_cell/cell_0/lstm_cell"].equations)
    assert "+ forget_bias)" in lstm.splitlines()[1] and "w_f_diag ⊙ c_(t-1)" in lstm
    gru = "\n".join(layers["rnn/multi_rnn_cell/cell_1/gru_cell"].equations)
    assert "(r_t ⊙ h_(t-1)) · candidate/kernel[" in gru
    assert layers["rnn/multi_rnn_cell"].summary == "TF1 MultiRNNCell of 3 cells"
    assert any("forget_bias=1.0" in w for w in warnings)
    pair, _ = explained(ckpts / "bidi_lstm.ckpt")  # bidirectional_dynamic_rnn's bw cell reads the sequence backwards
    assert "runs t = T … 1 (last step first); outputs are kept in input time order" in \
        pair["bidirectional_rnn/bw/lstm_cell"].equations and "runs t = 1 … T" in pair["bidirectional_rnn/fw/lstm_cell"].equations


def _split_top(body, sep=" + "):
    """Split at `sep` outside parentheses."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        depth += {"(": 1, ")": -1}.get(body[i], 0)
        if depth == 0 and body.startswith(sep, i):
            parts.append(body[start:i])
            start = i = i + len(sep)
            continue
        i += 1
    return parts + [body[start:]]


def _quoted(arrays, text):
    """A quoted slice: `weight_ih_l0[0:5, :].T`, `W[0][8:12, :].T`, `gates/kernel[0:4, 3:6]`, `candidate/bias`."""
    import re

    name, index, transposed = re.fullmatch(r"([\w/]+)((?:\[[^\]]*\])*)(\.T)?", text).groups()
    value = arrays[name]
    for group in re.findall(r"\[([^\]]*)\]", index):
        value = value[tuple(slice(*map(int, p.split(":"))) if ":" in p and p.strip() != ":" else
                            slice(None) if p.strip() == ":" else int(p) for p in group.split(","))]
    return value.T if transposed else value


def _first_step(equations, arrays, x):
    """Evaluate the written equations at t = 1 (h_0 = c_0 = 0): every gate, then h_1."""
    from lstm_inspect.run.native_forward import _ONNX_ACTIVATIONS

    values = {}

    def evaluate(body):
        clip = None
        if body.startswith("clip("):
            body, clip = body[len("clip("):-1].rsplit(", ±", 1)
        total = 0.0
        for term in _split_top(body):
            if term.startswith("x_t · "):
                total = total + x @ _quoted(arrays, term[len("x_t · "):])
            elif term.startswith("h_(t-1) · ") or term.endswith("⊙ c_(t-1)") or term.startswith("(r_t ⊙ h_(t-1))"):
                continue  # zero at the first step
            elif term.startswith("r_t ⊙ (h_(t-1) · "):  # reset after the matmul: r ⊙ (0 + rb)
                inner = _split_top(term[len("r_t ⊙ ("):-1])
                total = total + values["r"] * sum(_quoted(arrays, t) for t in inner[1:])
            elif term.endswith(" ⊙ c_t"):
                total = total + _quoted(arrays, term[:-len(" ⊙ c_t")]) * values["c"]
            elif term == "forget_bias":
                total = total + 1.0
            else:
                total = total + _quoted(arrays, term)
        return np.clip(total, -float(clip), float(clip)) if clip else total

    def act(label, v):  # sigmoid, or hardsigmoid[α=0.3, β=0.4]
        name, _, params = label.partition("[")
        given = dict(p.split("=") for p in params.rstrip("]").split(", ")) if params else {}
        func, alpha, beta = _ONNX_ACTIVATIONS[name]
        return func(v, float(given.get("α", alpha or 0)), float(given.get("β", beta or 0)))

    import re

    for eq in equations:
        m = re.fullmatch(r"(\w|c̃|h̃)_t = (\w+(?:\[[^\]]*\])?)\((.*)\)", eq)
        if m and m.group(1) in ("i", "f", "o", "z", "r", "c̃", "h̃", "h"):
            gate, name, body = m.groups()
            if gate == "o" and "c" not in values:
                values["c"] = values["i"] * values["c̃"]  # c_1 = f ⊙ 0 + i ⊙ c̃ (o may read c_t)
            values[gate] = act(name, evaluate(body))
    if "o" in values:
        out = re.fullmatch(r"h_t = \(?o_t ⊙ (\w+(?:\[[^\]]*\])?)\(c_t\)\)?(?: · (.*))?",
                           next(e for e in equations if e.startswith("h_t")))
        h = values["o"] * act(out.group(1), values["c"])
        return h @ _quoted(arrays, out.group(2)) if out.group(2) else h
    if "z" in values:
        return (1 - values["z"]) * values["h̃"]
    return values["h"]


def test_explained_equations_reproduce_the_first_step(tmp_path, ckpts):  # noqa: F811
    """Each written-out equation, evaluated with its quoted slices at t = 1, gives forward's first output."""
    import onnx
    from onnx import numpy_helper

    cases = []
    torch.manual_seed(3)
    for name, module in (("lstm_proj", torch.nn.LSTM(3, 5, proj_size=2, batch_first=True)),
                         ("gru", torch.nn.GRU(3, 4, batch_first=True)), ("rnn", torch.nn.RNN(3, 4, batch_first=True))):
        with torch.no_grad():  # one layer, one direction: the module's output is this layer's
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.3)
        path = tmp_path / f"{name}.safetensors"
        test_torch_read.save(module, "safetensors", path)
        cases.append((path, "rnn/l0", "rnn/output", None))
    for case in [c for c in ONNX if c[0] in ("lstm_bidi_peephole", "lstm_clip_hardsigmoid", "gru_lbr0",
                                                "gru_affine", "rnn_relu")]:
        path = tmp_path / f"{case[0]}.onnx"
        proto = test_onnx_read.build(*case[:6], path)
        arrays = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in proto.graph.initializer}
        cases.append((path, f"{case[0]}_node/forward", f"{case[0]}_node/Y", arrays))
    for name, key in (("lstm_peep_proj", "rnn/lstm_cell"), ("gru", "rnn/gru_cell"), ("basic_lstm", "rnn/basic_lstm_cell")):
        cases.append((ckpts / f"{name}.ckpt", key, f"{key}/output", None))
    for path, key, output, arrays in cases:
        layers, _ = explained(path)
        with open_model(path) as model:
            leaf = next(layer for layer in model.layers if layer.key == key)
            arrays = arrays or {t.name: np.asarray(t.read(), dtype=np.float64) for t in leaf.weights}
            x = np.random.default_rng(5).normal(size=(2, 4, split_gates(leaf).input_dim))
        h1 = _first_step(layers[key].equations, arrays, x[:, 0])
        ran = forward(path, x, layers=[key.split("/")[0]])[output]
        first = ran[0, 0] if output.endswith("/Y") else ran[:, 0, :h1.shape[-1]]
        np.testing.assert_allclose(h1, first, rtol=1e-6, atol=1e-7, err_msg=f"{path.name} {key}")

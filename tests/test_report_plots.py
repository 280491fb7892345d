"""`lstm-inspect plot`, `diff --html`, the notebook views and `block_figure`: real Keras files, the figures checked
against the library's own numbers, the diff page loaded in headless Chromium."""
from __future__ import annotations

import builtins
import re
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import lstm_inspect as li
from browser import chromium, full_page_screenshot, load, rendered_sizes
from conftest import FIXTURES
from lstm_inspect.cli import cli
from test_check_rules import sources


def run(*args, code: int = 0) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def test_plot_writes_every_block_and_activation(tmp_path):
    model = FIXTURES / "k3_bidi_concat.keras"
    run("plot", model, "-o", tmp_path / "figs")
    with li.open_model(model) as opened:
        keys = [f"{layer.key}/{b.key}" for layer in opened.layers if (s := li.split_gates(layer)) for b in s.blocks]
    assert keys
    for key in keys:
        image = Image.open(tmp_path / "figs" / f"{key}.png")
        assert image.size[0] > 300 and np.asarray(image.convert("L")).std() > 10
    for name in ("histogram_W", "histogram_U", "singular_values", "activation_f", "activation_hidden", "saturation"):
        assert (tmp_path / "figs" / "bidi" / "forward_lstm" / f"{name}.png").is_file()
    run("plot", model, "-o", tmp_path / "svg", "--format", "svg", "--layer", "backward")
    svgs = sorted(p.relative_to(tmp_path / "svg").as_posix() for p in (tmp_path / "svg").rglob("*.svg"))
    assert svgs and all(p.startswith("bidi/backward_lstm/") for p in svgs)
    assert (tmp_path / "svg" / "bidi" / "backward_lstm" / "U_f.svg").read_text().lstrip().startswith("<?xml")


def test_plot_without_matplotlib_is_one_line_exit_2(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out = run("plot", FIXTURES / "k3_classic.keras", "-o", tmp_path / "x", code=2)
    assert out.strip().splitlines() == ["lstm-inspect: error: matplotlib is needed for this: "
                                        "pip install 'lstm-inspect[plot]'"]
    assert not (tmp_path / "x").exists()
    # report needs no extra
    run("report", FIXTURES / "k3_classic.keras", "-o", tmp_path / "r.html")


def test_layer_names_become_safe_folders(tmp_path):
    from lstm_inspect.render.plots import safe_part

    assert safe_part("..") == "_" and safe_part("../etc") == "_etc"
    assert safe_part("<img src=x>") == "_img_src_x_" and safe_part("") == "_"


def test_block_figure_is_the_blocks_values(tmp_path):
    fig = li.block_figure(li.example_path(), "lstm/U_f")
    image = fig.axes[0].images[0]
    with li.open_model(li.example_path()) as model:
        u_f = li.split_gates(model.find("lstm")[0]).block("U_f").read()
    assert np.array_equal(np.asarray(image.get_array()), u_f)
    low, high = image.get_clim()
    assert low == -high and high > 0
    profile = li.block_figure(li.example_path(), "lstm/b_f").axes[0].lines[0].get_ydata()
    assert abs(np.mean(profile) - 1.0) < 0.05  # the example's unit_forget_bias
    with pytest.raises(li.InspectError, match="no gate block"):
        li.block_figure(li.example_path(), "lstm/U_x")


def changed_copy(tmp_path):
    """k3_classic.h5 and a copy with U_f moved slightly, three U_o rows tripled and b_f raised by 0.5."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    shutil.copy(FIXTURES / "k3_classic.h5", a)
    shutil.copy(a, b)
    where = sources(b)
    with h5py.File(b, "r+") as f:
        kernel = f[where["lstm/recurrent_kernel"]][...]
        kernel[:, 120:240] += np.random.default_rng(0).normal(0, 0.02, (120, 120))
        kernel[10:13, 360:480] *= 3
        f[where["lstm/recurrent_kernel"]][...] = kernel
        bias = f[where["lstm/bias"]][...]
        bias[120:240] += 0.5
        f[where["lstm/bias"]][...] = bias
    return a, b


def test_diff_html_in_chromium(tmp_path):
    a, b = changed_copy(tmp_path)
    page = tmp_path / "diff.html"
    out = run("diff", a, b, "--html", page, code=1)
    assert "U_f" in out  # the terminal table is still printed
    html = page.read_text()
    assert "<script" not in html
    with chromium() as driver:
        console = load(driver, page)
        assert [e for e in console if e["level"] in ("SEVERE", "WARNING")] == []
        blocks = rendered_sizes(driver, "data-block")
        assert {f"lstm/{k}_{g}" for k in "WUb" for g in "ifco"} == set(blocks)
        assert all(w > 20 and h > 10 for w, h in blocks.values())
        text = driver.find_element("tag name", "body").text
        assert "3 of 18 blocks changed" in text and "Unchanged (3 layers): dense, dense_1, dense_2" in text
        pixels = full_page_screenshot(driver, tmp_path / "diff.png")
        assert pixels.std() > 8
    rel = dict(re.findall(r"<td>(\w+)</td><td>changed</td><td>[^<]+</td><td>([^<]+)</td>", html))
    assert set(rel) == {"U_f", "U_o", "b_f"}


def test_notebook_views(tmp_path):
    a, b = changed_copy(tmp_path)
    with li.open_model(li.example_path()) as model:
        assert isinstance(model, li.ModelFile)
        html = model._repr_html_()
        assert 'data-block="lstm/U_f"' in html and 'data-trace="lstm/f"' in html and "<script" not in html
        split = li.split_gates(model.find("lstm")[0])
        assert isinstance(split, li.GateSplit)
        section = split._repr_html_()
        assert section.count("data-block=") == 12 and "Activations need the whole model" in section
    record = li.diff(a, b)
    assert record["identical"] is False and record["summary"]["blocks_changed"] == 3
    assert 'data-block="lstm/U_o"' in record._repr_html_()


def test_native_trace_is_the_modules_own_run(tmp_path):
    """forward --trace on a torch file: each layer-direction's hidden trace is torch's output, its last cell state
    torch's c_n; the report draws them."""
    import torch
    from safetensors.torch import load_file

    from test_report_html import torch_and_onnx_files

    path = torch_and_onnx_files(tmp_path)[0]
    x = np.random.default_rng(0).standard_normal((2, 7, 3))
    traced = li.forward(path, x, trace=True, dtype=np.float64)  # exact against torch in float64
    module = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, batch_first=True).double()
    module.load_state_dict({k.removeprefix("rnn."): v.double() for k, v in load_file(str(path)).items()})
    with torch.no_grad():
        y, (_, c) = module(torch.tensor(x))
    y, c = y.numpy(), c.numpy()
    assert np.abs(traced["rnn/l1/hidden"] - y[..., :16]).max() < 1e-12
    assert np.abs(traced["rnn/l1_reverse/hidden"] - y[..., 16:]).max() < 1e-12
    assert np.abs(traced["rnn/l1/cell"][:, -1] - c[2]).max() < 1e-12
    assert np.abs(traced["rnn/l1_reverse/cell"][:, 0] - c[3]).max() < 1e-12  # read X[:, 0] last
    assert {f"rnn/l0/{g}" for g in ("i", "f", "c", "o")} <= set(traced)
    assert ((traced["rnn/l0/f"] > 0) & (traced["rnn/l0/f"] < 1)).all()

"""`lstm-inspect report`: the page built from real Keras / torch / ONNX files, loaded from file:// in headless
Chromium. Asserted in the browser: no console message of level SEVERE, every gate block and activation figure
present with a rendered size, a screenshot that is not blank, and a hostile layer name shown as text with no
script run. Screenshots are kept in $LSTM_INSPECT_SHOTS when set (to look at them), else in the test's tmp dir.
"""
from __future__ import annotations

import io
import json
import os
import re
import zipfile
from html import unescape
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from browser import chromium, full_page_screenshot, load, rendered_sizes
from conftest import FIXTURES
from lstm_inspect import gates
from lstm_inspect.api import example_path
from lstm_inspect.cli import cli
from lstm_inspect.readers import open_model
from test_check_rules import gate, hostile, set_block

HOSTILE_NAME = "<img src=x onerror=alert(1)><script>alert(2)</script>"
KERAS_CASES = ["k3_bidi_concat.keras", "k2_gru_nora.h5", "k3_gru_ra.keras", "k3_simplernn.keras",
               "k3_convlstm2d.keras", "k3_cell_wrappers.keras", "k2_classic_weights.h5", "k2_lstm_hardsig.h5"]
TRACED = {"LSTM": ("i", "f", "c", "o", "cell", "hidden"), "GRU": ("z", "r", "h", "hidden"), "SimpleRNN": ("hidden",)}


def run(*args) -> str:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def recurrent_blocks(path: Path) -> dict[str, tuple[str, list[str]]]:
    """{layer path: (family, [export keys of its gate blocks])}, from the library's own split."""
    out = {}
    with open_model(path) as model:
        for layer in model.layers:
            split = gates.split(layer)
            if split is not None and split.blocks:
                out[layer.key] = (split.layout.family, [f"{layer.key}/{b.key}" for b in split.blocks])
    return out


def keras_file_with_hostile_name(out: Path) -> Path:
    """Keras 3 writes an LSTM named ``evil_lstm`` (its own name check refuses ``/``); the name is then replaced by
    HOSTILE_NAME in config.json and, with h5py, in the ``name`` attribute Keras gives the layer's vars group."""
    import h5py

    import keras

    model = keras.Sequential([keras.Input((6, 3)), keras.layers.LSTM(8, name="evil_lstm"), keras.layers.Dense(2)])
    model.layers[0].cell.bias.assign(np.random.default_rng(1).normal(size=32))
    written = out / "written.keras"
    model.save(written)
    target = out / "evil.keras"
    with zipfile.ZipFile(written) as source, zipfile.ZipFile(target, "w") as copy:
        for member in source.namelist():
            data = source.read(member)
            if member == "config.json":
                data = data.replace(b"evil_lstm", json.dumps(HOSTILE_NAME)[1:-1].encode())
            if member == "model.weights.h5":
                buffer = io.BytesIO(data)
                with h5py.File(buffer, "r+") as weights:
                    assert weights["layers/lstm/vars"].attrs["name"] == "evil_lstm"
                    weights["layers/lstm/vars"].attrs["name"] = HOSTILE_NAME
                data = buffer.getvalue()
            copy.writestr(member, data)
    return target


def tf1_checkpoint(out: Path) -> Path:
    """TF1 cells written by TensorFlow itself (graph mode, in a subprocess): MultiRNNCell of an LSTMCell with
    peepholes, a GRUCell and a BasicLSTMCell."""
    import subprocess
    import sys

    from test_tf1_checkpoint import CASES, GENERATOR

    done = subprocess.run([sys.executable, "-c", GENERATOR, str(out), json.dumps({"multi": CASES["multi"]})],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / "multi.ckpt"


def torch_and_onnx_files(out: Path) -> list[Path]:
    import torch
    from safetensors.torch import save_file

    from test_onnx_read import build as build_onnx

    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 16, num_layers=2, bidirectional=True, batch_first=True)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    save_file({f"rnn.{k}": v.contiguous() for k, v in module.state_dict().items()}, str(out / "torch_lstm.safetensors"))
    build_onnx("gru_bidi", "GRU", "bidirectional", {"linear_before_reset": 1}, True, False, out / "gru.onnx")
    return [out / "torch_lstm.safetensors", out / "gru.onnx"]


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """{case: (model file, report page)} for the bundled example, Keras fixtures of every recurrent kind, a torch,
    an ONNX and a TF1 file, a file with a hostile layer name and one with a check finding (U_f zeroed)."""
    out = tmp_path_factory.mktemp("report")
    models = {"example": Path(example_path())}
    models.update({name: FIXTURES / name for name in KERAS_CASES})
    models.update({p.name: p for p in torch_and_onnx_files(out)})
    models["tf1_multi"] = tf1_checkpoint(out)
    models["hostile"] = keras_file_with_hostile_name(out)
    models["dead_gate"] = hostile(out, set_block("recurrent_kernel", gate(1), np.zeros_like), name="dead.h5")
    built = {}
    for case, model in models.items():
        page = out / f"{re.sub(r'[^A-Za-z0-9_]', '_', case)}.html"
        run("report", model, "-o", page)
        built[case] = (model, page)
    return built


@pytest.fixture(scope="module")
def browser():
    with chromium() as driver:
        yield driver


def shots_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("LSTM_INSPECT_SHOTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


CASES = ["example", *KERAS_CASES, "torch_lstm.safetensors", "gru.onnx", "tf1_multi", "hostile", "dead_gate"]


@pytest.mark.parametrize("case", CASES)
def test_page_in_chromium(pages, browser, case, tmp_path):
    model, page = pages[case]
    html = page.read_text(encoding="utf-8")
    assert len(html.encode()) < 10 * 1024 * 1024
    console = load(browser, page)
    assert [entry for entry in console if entry["level"] in ("SEVERE", "WARNING")] == []
    expected = recurrent_blocks(model)
    assert expected, "every case has a recurrent layer"
    blocks = rendered_sizes(browser, "data-block")
    wanted = [key for _, keys in expected.values() for key in keys]
    assert sorted(blocks) == sorted(wanted)
    assert all(w > 20 and h > 10 for w, h in blocks.values()), blocks
    traces = rendered_sizes(browser, "data-trace")
    assert all(w > 20 and h > 20 for w, h in traces.values()), traces
    with open_model(model) as opened:
        # weights-only Keras files have no graph to run; torch / ONNX / TF1 modules run without one
        runs = opened.has_config or not opened.kind.startswith("keras")
    if runs:  # every recurrent layer's gates and states over time
        wanted_traces = [f"{path}/{name}" for path, (family, _) in expected.items() for name in TRACED[family]]
        assert set(wanted_traces) <= set(traces), set(wanted_traces) - set(traces)
        assert "seeded random input" in browser.find_element("tag name", "body").text
    else:
        assert traces == {}
        assert "No activations" in browser.find_element("tag name", "body").text
    pixels = full_page_screenshot(browser, shots_dir(tmp_path) / f"{page.stem}.png")
    packed = pixels[::4, ::4].astype(np.int32) @ np.array([1 << 16, 1 << 8, 1])
    assert pixels.std() > 8 and len(np.unique(packed)) > 200  # drawn, in many colours: not a blank page


def test_hostile_layer_name_is_text_and_runs_nothing(pages, browser):
    from selenium.common.exceptions import NoAlertPresentException

    _, page = pages["hostile"]
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html and "<img src=x" not in html
    load(browser, page)
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text  # noqa: B018 (an alert() would be open here)
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.execute_script("return document.querySelectorAll('img:not([src^=\"data:\"])').length") == 0
    assert HOSTILE_NAME in browser.find_element("tag name", "body").text
    assert f"{HOSTILE_NAME}/U_f" in rendered_sizes(browser, "data-block")


def test_page_is_self_contained(pages):
    for _, page in pages.values():
        html = page.read_text(encoding="utf-8")
        policy = unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1))
        assert "default-src 'none'" in policy and "script-src 'none'" in policy and "img-src data:" in policy
        assert not re.search(r'(src|href)="(?!data:|#)', html)  # only inline images and in-page links
        assert "<script" not in html and "<link" not in html


def test_check_findings_are_marked_on_their_block(pages, browser):
    _, page = pages["dead_gate"]
    load(browser, page)
    flagged = browser.execute_script(
        "return [...document.querySelectorAll('figure.li-flag')].map(e => e.getAttribute('data-block'))")
    assert flagged == ["lstm/U_f"]
    text = browser.find_element("css selector", 'figure[data-block="lstm/U_f"]').text
    assert "dead-block" in text


def test_forget_bias_profile_and_input_file(tmp_path):
    """--input: the note names the file; a large input saturates the gates more than a small one."""
    example = example_path()
    shares = []
    for scale in (0.01, 30.0):
        x = np.random.default_rng(0).standard_normal((2, 10, 5)).astype(np.float32) * scale
        np.save(tmp_path / f"x{scale}.npy", x)
        page = tmp_path / f"p{scale}.html"
        run("report", example, "-o", page, "--input", tmp_path / f"x{scale}.npy")
        html = page.read_text()
        assert f"the input x{scale}.npy" in html
        assert "activation=relu instead of tanh" in html  # inspect's notes on the layer
        shares.append([float(m) for m in re.findall(r"saturated (\d+)% near 0", html)])
    assert sum(shares[1]) > sum(shares[0])


def test_layer_option_and_bad_input(tmp_path):
    page = tmp_path / "only.html"
    run("report", FIXTURES / "k3_stacked.keras", "-o", page, "--layer", "lstm_b")
    keys = set(re.findall(r'data-block="([^"]+)"', page.read_text()))
    assert keys and all(k.startswith("lstm_b/") for k in keys)
    result = CliRunner().invoke(cli, ["report", str(FIXTURES / "k3_stacked.keras"), "-o", str(page), "--layer", "zz"])
    assert result.exit_code == 2 and "--layer zz matches nothing" in result.output
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(cli, ["report", str(bad), "-o", str(tmp_path / "x.html")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_png_writer_and_pooling():
    from PIL import Image

    from lstm_inspect.render.png import encode_png, pool

    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(rgb)))), rgb)
    colours = np.random.default_rng(2).integers(0, 256, (256, 3), dtype=np.uint8)
    indices = rgb[..., 0]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(encode_png(indices, colours))).convert("RGB")), colours[indices])
    matrix = np.random.default_rng(1).normal(size=(1030, 700))
    matrix[1029, 3] = -50.0
    pooled, window = pool(matrix)
    assert window == (3, 2) and pooled.shape == (344, 350)
    assert pooled[343, 1] == -50.0  # the outlier keeps its window, with its sign
    assert np.abs(pooled).max() == 50.0


def test_input_that_does_not_fit_is_said_on_stderr_and_page(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 10, 7), np.float32))  # the example takes (batch, 10, 5)
    page = tmp_path / "p.html"
    out = run("report", example_path(), "-o", page, "--input", tmp_path / "x.npy")
    assert "No activations: input 'input' has shape (2, 10, 7) but the model expects (batch, 10, 5)" in out
    assert "No activations" in page.read_text() and "data-trace" not in page.read_text()

"""The command line as a new user meets it: -o writes exactly the path given or refuses it, a mistyped command is
named, -V works, a --layer that matches nothing is exit 2 in every command with the file's layer paths, every error
is one line on stderr, and verify is quiet, shows progress and reports a framework failure in one line."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import FIXTURES
from lstm_inspect import __version__
from lstm_inspect.cli import cli

BIDI = str(FIXTURES / "k2_bidi_concat.h5")
CLASSIC = str(FIXTURES / "k2_classic.h5")


def run(*args: str):
    result = CliRunner().invoke(cli, list(args))
    assert "Traceback" not in result.output
    return result


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lstm-inspect: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --- -o ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def x_npy(tmp_path) -> str:
    path = tmp_path / "x.npy"
    np.save(path, np.random.default_rng(0).standard_normal((2, 10, 5)).astype(np.float32))
    return str(path)


def writers(tmp_path: Path, x_npy: str) -> dict[str, tuple[list[str], str]]:
    """Each command that writes a file: its arguments before -o, and the extension it writes."""
    return {
        "export": (["export", CLASSIC], ".npz"),
        "export torch": (["export", BIDI, "--layout", "torch"], ".safetensors"),
        "forward": (["forward", CLASSIC, "--input", x_npy], ".npz"),
        "snapshot": (["snapshot", CLASSIC], ".json"),
        "check": (["check", CLASSIC, "--format", "junit"], ".xml"),
        "report": (["report", BIDI], ".html"),
    }


@pytest.mark.parametrize("command", ["export", "export torch", "forward", "snapshot", "check", "report"])
def test_output_path_is_exactly_the_one_given_or_refused(tmp_path, x_npy, command):
    args, extension = writers(tmp_path, x_npy)[command]
    out = tmp_path / "out"
    out.mkdir()
    for bad, expected in ((out / "noext", extension), (out / "x.txt", extension), (str(out) + os.sep, "directory"),
                          (out, "directory")):
        result = run(*args, "-o", str(bad))
        assert_one_line_error(result, expected)
        assert sorted(os.listdir(out)) == [], f"{command} -o {bad} wrote {os.listdir(out)}"
    target = out / f"result{extension}"
    result = run(*args, "-o", str(target))
    assert result.exit_code in (0, 1), result.output
    assert os.listdir(out) == [target.name]
    if command not in ("check", "report"):
        assert str(target) in result.stderr  # the message names the file written


def test_output_in_a_missing_directory_is_refused(tmp_path):
    result = run("export", CLASSIC, "-o", str(tmp_path / "nodir" / "g.npz"))
    assert_one_line_error(result, "no such directory")


def test_api_export_writes_exactly_the_path(tmp_path):
    from lstm_inspect import InspectError, export

    with pytest.raises(InspectError, match="must end in .npz or .safetensors"):
        export(CLASSIC, tmp_path / "plain")
    export(CLASSIC, tmp_path / "upper.NPZ")  # numpy would have written upper.NPZ.npz
    assert os.listdir(tmp_path) == ["upper.NPZ"]


# --- typos, version, usage errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("typo, command", [("inpsect", "inspect"), ("exprot", "export"), ("verfy", "verify"),
                                           ("chek", "check")])
def test_a_mistyped_command_is_named(typo, command):
    result = run(typo, CLASSIC, "-o", "x.npz")
    line = assert_one_line_error(result, f"did you mean '{command}'?")
    assert typo in line


def test_a_file_named_like_a_command_is_still_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("inspectt").write_bytes(Path(CLASSIC).read_bytes())  # an existing path is a model, whatever its name
    result = run("inspectt")
    assert result.exit_code == 0 and "Total params: 77,681" in result.stdout
    assert run(CLASSIC).exit_code == 0


@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(flag):
    result = run(flag)
    assert result.exit_code == 0 and __version__ in result.stdout


def test_usage_errors_are_one_line():
    assert_one_line_error(run("inspect", "--bogus", CLASSIC), "--bogus", "lstm-inspect inspect --help")
    assert_one_line_error(run("export", CLASSIC), "-o")


# --- --layer ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["inspect", "export", "snapshot", "diff", "forward", "explain", "verify"])
def test_layer_matching_nothing_is_exit_2_listing_the_paths(tmp_path, x_npy, command):
    args = {"inspect": ["inspect", BIDI], "export": ["export", BIDI, "-o", str(tmp_path / "a.npz")],
            "snapshot": ["snapshot", BIDI], "diff": ["diff", BIDI, BIDI],
            "forward": ["forward", BIDI, "--input", x_npy, "-o", str(tmp_path / "f.npz")],
            "explain": ["explain", BIDI], "verify": ["verify", BIDI]}[command]
    line = assert_one_line_error(run(*args, "--layer", "bidj"), "--layer bidj matches nothing")
    listed = line.split("(closest first): ")[1].split(", ")
    assert listed[0] == "bidi" and set(listed) == {"bidi", "bidi/forward_lstm", "bidi/backward_lstm", "dense", "seq"}


def test_layer_matching_nothing_in_check_is_an_unreadable_verdict_and_exit_2():
    result = run("check", BIDI, "--layer", "bidj")
    assert result.exit_code == 2 and "--layer bidj matches nothing" in result.stderr


def test_torch_file_layer_matching_nothing(tmp_path, x_npy):
    out = tmp_path / "t.safetensors"
    assert run("export", BIDI, "--layout", "torch", "-o", str(out)).exit_code == 0
    for command in (["explain", str(out)], ["forward", str(out), "--input", x_npy, "-o", str(tmp_path / "f.npz")]):
        assert_one_line_error(run(*command, "--layer", "nope"), "--layer nope matches nothing", "bidi")


def test_check_of_a_missing_path_prints_nothing_on_stdout():
    result = run("check", "nosuch_dir")
    assert_one_line_error(result, "nosuch_dir: no such file or directory")


# --- verify -----------------------------------------------------------------------------------------------------


def test_verify_a_framework_failure_is_one_line_exit_2(tmp_path):
    """A channels_first ConvLSTM2D written by Keras 3: with oneDNN off, TensorFlow's CPU Conv2D refuses NCHW (the
    machine the issue was found on); verify says so in one line."""
    model = tmp_path / "cf.keras"
    script = textwrap.dedent(f"""
        import numpy as np, keras
        inp = keras.Input((4, 3, 6, 6))
        out = keras.layers.ConvLSTM2D(2, 3, data_format="channels_first", padding="same")(inp)
        m = keras.Model(inp, out)
        rng = np.random.default_rng(0)
        m.layers[1].set_weights([rng.normal(size=w.shape).astype("float32") for w in m.layers[1].get_weights()])
        m.save({str(model)!r})
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)
    env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    proc = subprocess.run([sys.executable, "-m", "lstm_inspect", "verify", str(model)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"lstm-inspect: error: {model}: Keras cannot run layer 'conv_lstm2d' on this "
                                  "machine: The Conv2D op currently only supports the NHWC tensor format on the CPU")


def test_verify_on_a_terminal_shows_progress_and_no_framework_noise():
    """In a real terminal (tmux): the spinner names the step as it runs; TensorFlow's start-up lines never show."""
    from test_rendering import _tmux_session

    seen, screen = _tmux_session(f"{sys.executable} -m lstm_inspect verify {BIDI}", watch=r"verify: .*")
    assert any("importing tf_keras" in s for s in seen) or any("tf_keras 2" in s for s in seen), seen
    assert "OK: 3 outputs match tf_keras" in screen
    for noise in ("cuda", "absl", "oneDNN", "WARNING"):
        assert noise not in screen, screen


# --- input shapes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["k3_multi_io.keras", "k3_embed.keras", "k3_nested.keras", "k3_classic.h5"])
def test_inputs_are_the_ones_keras_builds(name):
    """inspect --json's inputs equal Keras 3's own model.inputs (name, shape with None, dtype); the text shows them."""
    import json

    import keras

    path = str(FIXTURES / name)
    report = json.loads(run("inspect", path, "--json", "--no-stats").stdout)
    model = keras.saving.load_model(path, compile=False, safe_mode=True)
    expected = [{"name": t.name, "shape": list(t.shape), "dtype": str(t.dtype)} for t in model.inputs]
    got = report["inputs"]
    assert got == expected
    text = run("inspect", path, "--no-stats").stdout
    for i in got:
        assert f"{i['name']} (" + ", ".join(str(n) for n in i["shape"]) + f") {i['dtype']}" in text


def test_inputs_of_files_without_an_architecture_are_none_known():
    import json

    for path in (str(FIXTURES / "k3_classic.weights.h5"), str(FIXTURES / "k2_classic_weights.h5")):
        assert json.loads(run("inspect", path, "--json", "--no-stats").stdout)["inputs"] is None
        assert "Inputs: none known" in run("inspect", path, "--no-stats").stdout


# --- plain arrays -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("trace", [False, True])
def test_forward_output_reads_as_plain_arrays(tmp_path, trace):
    """What `forward -o` writes (layer outputs, gates per step) is no model of any framework: listed as arrays."""
    import json

    x = tmp_path / "x.npy"
    np.save(x, np.random.default_rng(0).standard_normal((2, 10, 5)).astype(np.float32))
    out = tmp_path / "out.npz"
    assert run("forward", CLASSIC, "--input", str(x), "-o", str(out), *(["--trace"] if trace else [])).exit_code == 0
    report = json.loads(run("inspect", str(out), "--json").stdout)
    assert report["backend"] is None and report["inputs"] is None
    assert {layer["class_name"] for layer in report["layers"]} == {"arrays"}
    stored = dict(np.load(out))
    listed = {(layer["path"] + "/" if layer["path"] != "(top level)" else "") + w["name"]: w["shape"]
              for layer in report["layers"] for w in layer["weights"]}
    assert listed == {k: list(v.shape) for k, v in stored.items()}
    text = run("inspect", str(out)).stdout
    assert "layout" not in text and "torch" not in text and "inferred" not in text


def test_safetensors_with_no_known_layout_is_plain(tmp_path):
    import json

    from safetensors.numpy import save_file

    path = tmp_path / "a.safetensors"
    save_file({"alpha": np.ones((3, 2), np.float32), "beta/gamma_x": np.zeros(4, np.float32)}, str(path))
    report = json.loads(run("inspect", str(path), "--json").stdout)
    assert report["backend"] is None and {layer["class_name"] for layer in report["layers"]} == {"arrays"}
    # a real state dict still reads as torch
    save_file({"lstm.weight_ih_l0": np.ones((8, 3), np.float32), "lstm.weight_hh_l0": np.ones((8, 2), np.float32)},
              str(path))
    report = json.loads(run("inspect", str(path), "--json").stdout)
    assert any(layer["class_name"].startswith("torch.nn.LSTM") or "LSTM" in layer["class_name"]
               for layer in report["layers"])


# --- stdin and URLs ---------------------------------------------------------------------------------------------


def test_stdin_is_spooled_read_and_removed(tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    data = Path(CLASSIC).read_bytes()
    proc = subprocess.run([sys.executable, "-m", "lstm_inspect", "-", "--no-stats"], input=data, env=env,
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.decode()
    assert out.splitlines()[0] == "-" and "Total params: 77,681" in out
    bad = subprocess.run([sys.executable, "-m", "lstm_inspect", "export", "-", "-o", str(tmp_path / "x.npz")],
                         input=data[:1000], env=env, capture_output=True, text=False)
    err = bad.stderr.decode()
    assert bad.returncode == 2 and err.count("\n") == 1 and err.startswith("lstm-inspect: error: -: ")
    assert not [p for p in os.listdir(tmp_path) if p.startswith("lstm-inspect-stdin-")]  # spool removed


@pytest.mark.parametrize("args", [["explain"], ["explain", "--markdown"], ["check"], ["check", "--format", "json"],
                                  ["check", "--format", "junit"], ["diff", str(CLASSIC)], ["verify", "--json"]])
def test_stdin_is_named_dash_in_every_output(tmp_path, args):
    """The model read from stdin is '-' in what every command prints, never its temporary spool file."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = [sys.executable, "-m", "lstm_inspect", args[0], "-", *args[1:]]
    proc = subprocess.run(command, input=Path(CLASSIC).read_bytes(), env=env, capture_output=True)
    assert proc.returncode in (0, 1), proc.stderr
    assert "lstm-inspect-stdin-" not in proc.stdout.decode() + proc.stderr.decode()


@pytest.mark.parametrize("url", ["https://example.com/m.h5", "http://127.0.0.1:1/m.keras", "s3://bucket/m.h5",
                                 "gs://bucket/m.h5", "hf://user/repo/m.safetensors"])
def test_a_url_says_in_one_line_how_to_read_it(url):
    for args in (["inspect", url], ["export", url, "-o", "x.npz"], ["check", url]):
        assert_one_line_error(run(*args), url, "local files only", "| lstm-inspect -")


# --- shell completion (as README documents it) -------------------------------------------------------------------


def _complete(words: str, shell: str = "bash") -> str:
    env = {**os.environ, "COMP_WORDS": words, "COMP_CWORD": str(len(words.split()) - 1),
           "_LSTM_INSPECT_COMPLETE": f"{shell}_complete", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run([sys.executable, "-m", "lstm_inspect"], env=env, capture_output=True, text=True).stdout


def test_shell_completion_as_documented():
    assert "plain,inspect" in _complete("lstm-inspect ins").splitlines()
    assert {"plain,--layer", "plain,--layout"} <= set(_complete("lstm-inspect export --la").splitlines())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    script = f'eval "$(_LSTM_INSPECT_COMPLETE=bash_source {sys.executable} -m lstm_inspect)"; complete -p'
    registered = subprocess.run(["bash", "--norc", "-c", script], env=env, capture_output=True, text=True).stdout
    assert "_lstm_inspect_completion" in registered
    for shell in ("zsh", "fish"):
        env["_LSTM_INSPECT_COMPLETE"] = f"{shell}_source"
        source = subprocess.run([sys.executable, "-m", "lstm_inspect"], env=env, capture_output=True, text=True)
        assert "_lstm_inspect_completion" in source.stdout
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "_LSTM_INSPECT_COMPLETE=bash_source lstm-inspect" in readme

import json
import os
import sys
from pathlib import Path

import pytest

# Keep TensorFlow quiet and deterministic wherever a test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# TensorFlow runs channels_first convolutions (k3_convlstm_options.keras: ConvLSTM2D data_format=channels_first) on
# the CPU only through oneDNN, which it enables by default only on CPUs with AVX512-VNNI / AMX; enabled here (and by
# verify) the fixtures run on every x86 CPU. Set before anything imports TensorFlow; child processes inherit it.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# One thread per native pool in the test process. The CLI under test forks an isolated child per file (as the real
# CLI does, from a process with no such pools); this test process also runs torch, TensorFlow, onnxruntime and
# BLAS, and a child forked while one of their worker threads holds a lock can hang on it (seen as a rare
# 120 s --timeout in a forked reader). Single-threaded pools hold no such locks. Set before numpy is imported.
for _pool in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
              "TF_NUM_INTEROP_THREADS"):
    os.environ.setdefault(_pool, "1")
sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).parent / "fixtures" / "models"


def manifest() -> dict:
    with open(FIXTURES / "manifest.json") as handle:
        return json.load(handle)


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def run_cli(argv: list[str]) -> int:
    """`lstm_inspect.cli.main` without the bounds the console script puts on its own process: in-process tests
    share the pytest process, whose address space and alarm signal must stay unlimited for the tests after them
    (a browser started later crashed under the bound)."""
    from lstm_inspect.cli import cli

    try:
        cli.main(args=argv, prog_name="lstm-inspect", standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(autouse=True)
def _process_limits_untouched():
    """No test may leave the pytest process bounded (an address-space limit or an alarm set by the CLI's own
    parent bounds): later tests would fail far from the cause."""
    import resource
    import signal

    before = resource.getrlimit(resource.RLIMIT_AS)
    yield
    after = resource.getrlimit(resource.RLIMIT_AS)
    timer = signal.getitimer(signal.ITIMER_REAL)
    resource.setrlimit(resource.RLIMIT_AS, before)
    signal.setitimer(signal.ITIMER_REAL, 0)
    assert after == before and timer[0] == 0, f"the test left process limits set: RLIMIT_AS {after}, alarm {timer}"


@pytest.fixture
def input_and_forget_gates_swapped(monkeypatch):
    """The torch / ONNX forward given W_i and W_f swapped: what a wrong gate order in the split would give."""
    from lstm_inspect.run import native_forward

    blocks = native_forward._blocks

    def swapped(layer, dtype):
        found = blocks(layer, dtype)
        found["W_i"], found["W_f"] = found["W_f"], found["W_i"]
        return found

    monkeypatch.setattr(native_forward, "_blocks", swapped)


def assert_json_block_stats(stdout: str, key: str, expected) -> None:
    """`inspect --json`'s statistics of the first recurrent layer's block `key` are those of `expected` (the same
    values from the framework's own arrays, float64): min and max exact, std to 1e-9."""
    import numpy as np

    layer = next(entry for entry in json.loads(stdout)["layers"] if entry["recurrent"])
    stats = next(b for b in layer["recurrent"]["blocks"] if b["key"] == key)["stats"]
    expected = np.asarray(expected, dtype=np.float64)
    assert stats["max"] == expected.max() and stats["min"] == expected.min()
    assert stats["std"] == pytest.approx(expected.std(), rel=1e-9)


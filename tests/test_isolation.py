"""Isolation: a crash, hang or runaway allocation while reading one file becomes an error for that file only."""
from __future__ import annotations

import os
import signal
import time

from pathlib import Path

import numpy as np
import pytest

from lstm_inspect import InspectError, example_path, inspect, isolation


def _segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def _hang():
    time.sleep(60)


def _allocate_8_gib():
    return float(np.ones(1 << 30).sum())


def _refuse():
    raise InspectError("refused for a reason")


def _bug():
    raise ZeroDivisionError("a bug")


def test_result_comes_back_as_data():
    assert isolation.run(inspect, example_path(), label="x")["total_params"] == 77_681


def test_segfault_becomes_an_error_for_that_file():
    with pytest.raises(InspectError, match=r"f\.h5: the reader crashed \(SIGSEGV\)"):
        isolation.run(_segfault, label="f.h5")


def test_hang_is_cut_off_at_the_timeout():
    start = time.monotonic()
    with pytest.raises(InspectError, match="longer than 0.5 s"):
        isolation.run(_hang, label="f.h5", timeout=0.5)
    assert time.monotonic() - start < 10


def test_memory_is_bounded():
    with pytest.raises(InspectError, match="memory limit"):
        isolation.run(_allocate_8_gib, label="f.h5", max_memory=512 << 20)


def test_inspect_errors_keep_message_and_code():
    with pytest.raises(InspectError) as info:
        isolation.run(_refuse, label="f.h5")
    assert str(info.value) == "f.h5: refused for a reason" and info.value.exit_code == 2


def test_bugs_are_reported_as_internal_errors():
    with pytest.raises(isolation.InternalError, match="ZeroDivisionError: a bug"):
        isolation.run(_bug, label="f.h5")


def test_a_whole_answer_does_not_wait_for_the_child_to_end_and_the_child_is_reaped_later():
    """The child ends its answer before it exits (the kernel tears its address space down before closing its
    descriptors): the parent takes a whole answer and goes on; the child, if still ending, is reaped at the next
    fork, so no zombie stays behind."""
    from lstm_inspect import forking

    pid, read_end = forking.fork(lambda: b"x" * 100_000)
    outcome, answer, status = forking.collect(read_end, pid, timeout=10)
    assert (outcome, answer, os.WIFEXITED(status) and os.WEXITSTATUS(status)) == ("done", b"x" * 100_000, 0)
    time.sleep(0.5)
    forking._reap_finished()
    assert pid not in forking._UNREAPED
    with pytest.raises(ChildProcessError):  # reaped already
        os.waitpid(pid, os.WNOHANG)


def test_a_child_still_running_after_its_answer_is_killed_at_its_time():
    """A child that read a hostile file is not trusted to end because it answered: past its time (or when this
    process exits) it is killed and reaped."""
    from lstm_inspect import forking

    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    forking._UNREAPED[pid] = time.monotonic() + 60
    forking._reap_finished()
    assert pid in forking._UNREAPED  # still within its time
    forking._UNREAPED[pid] = time.monotonic() - 1
    start = time.monotonic()
    forking._reap_finished()
    assert pid not in forking._UNREAPED and time.monotonic() - start < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_an_answer_cut_short_by_a_crash_is_no_answer():
    """A child that dies in the middle of its answer: what arrived is not taken for a whole answer (its length
    comes first), and the status tells the crash."""
    from lstm_inspect import forking

    assert forking._whole(forking._HEADER.pack(10) + b"12345") is None
    assert forking._whole(forking._HEADER.pack(5) + b"12345") == b"12345"
    pid, read_end = forking.fork(lambda: _segfault() or b"never")
    outcome, answer, status = forking.collect(read_end, pid, timeout=10)
    assert (outcome, answer) == ("done", b"") and os.WTERMSIG(status) == signal.SIGSEGV


# --- through the CLI: one bad file costs that file only ---------------------------------------------------------

import json  # noqa: E402
import shutil  # noqa: E402

from click.testing import CliRunner  # noqa: E402

from conftest import FIXTURES  # noqa: E402
from lstm_inspect.analysis import check as checks  # noqa: E402
from lstm_inspect.cli import cli  # noqa: E402


def _sabotage(monkeypatch, crash: str, hang: str) -> None:
    """Make the reader segfault on one file and hang on another, as a corrupt file can make libhdf5 do. The
    forked children inherit the patch; nothing in the package has a hook for this."""
    real = checks.check_path

    def check_path(path, options=None):
        if path.endswith(crash):
            _segfault()
        if path.endswith(hang):
            _hang()
        return real(path, options)

    monkeypatch.setattr(checks, "check_path", check_path)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_check_gives_every_other_file_a_verdict(tmp_path, monkeypatch, jobs):
    for name in ("k3_gru_ra.keras", "k2_gru_ra.h5", "k3_simplernn.h5"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    shutil.copy(FIXTURES / "k3_gru_ra.keras", tmp_path / "crashes.keras")
    shutil.copy(FIXTURES / "k3_gru_ra.keras", tmp_path / "hangs.keras")
    _sabotage(monkeypatch, "crashes.keras", "hangs.keras")
    result = CliRunner().invoke(cli, ["--timeout", "3", "check", "--format", "json", "-j", jobs, str(tmp_path)])
    assert result.exit_code == 2, result.output
    verdicts = {Path(r["file"]).name: r for r in json.loads(result.stdout)["files"]}
    assert {n: v["status"] for n, v in verdicts.items()} == {
        "k3_gru_ra.keras": "pass", "k2_gru_ra.h5": "pass", "k3_simplernn.h5": "pass",
        "crashes.keras": "error", "hangs.keras": "error"}
    assert "crashed (SIGSEGV)" in verdicts["crashes.keras"]["error"]
    assert "longer than 3 s" in verdicts["hangs.keras"]["error"]


def test_inspect_of_a_crashing_file_is_one_line_and_exit_2(monkeypatch):
    import lstm_inspect.api as api

    monkeypatch.setattr(api, "open_model", lambda path: _segfault())
    result = CliRunner().invoke(cli, ["inspect", str(FIXTURES / "k3_gru_ra.keras")])
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"lstm-inspect: error: {FIXTURES / 'k3_gru_ra.keras'}: the reader crashed "
                                     "(SIGSEGV) on this file: it is corrupt or hostile (or needs more memory than "
                                     "--max-memory)")


def test_no_isolation_reads_in_process():
    result = CliRunner().invoke(cli, ["--no-isolation", "inspect", "--no-stats", str(FIXTURES / "k3_gru_ra.keras")])
    assert result.exit_code == 0 and "Total params" in result.stdout


def test_max_memory_option_bounds_the_reader(tmp_path):
    """A legitimate file with a 100 MB float32 kernel (compressed on disk): read in bounded chunks, its statistics
    fit in a 40 MB --max-memory with --chunk-size 4M; with a chunk larger than the array (read whole, 100 MB) the
    reader needs more than the limit and the error names --max-memory, its value and what to raise."""
    import h5py

    path = tmp_path / "big.h5"
    shutil.copy(FIXTURES / "k2_classic.h5", path)
    with h5py.File(path, "r+") as f:
        group = f["model_weights/dense_2/dense_2"]
        del group["kernel:0"]
        pattern = np.random.default_rng(0).normal(size=5000).astype("float32")
        group.create_dataset("kernel:0", data=np.tile(pattern, (5000, 1)), compression="gzip", chunks=(500, 5000))
    refused = CliRunner().invoke(cli, ["--max-memory", "40M", "--chunk-size", "512M", "inspect", "--layer", "dense_2",
                                       str(path)])
    assert refused.exit_code == 2
    assert "--max-memory 40 MiB" in refused.stderr and "raise --max-memory" in refused.stderr
    read = CliRunner().invoke(cli, ["--max-memory", "40M", "--chunk-size", "4M", "inspect", "--json", "--layer",
                                    "dense_2", str(path)])
    assert read.exit_code == 0, read.stderr
    entry = json.loads(read.stdout)["layers"][0]
    assert entry["params"] == 5000 * 5000 + 1
    assert entry["weights"][0]["stats"]["max"] == float(pattern.max())


def test_a_real_libhdf5_hang_found_by_fuzzing_is_cut_off(tmp_path):
    """tests/fixtures/hostile/atheris-hang-keras-version-attr.h5 is an input atheris found: reading its
    keras_version attribute loops inside libhdf5 (no Python code runs, so nothing in-process can stop it).
    Beside two good files, `check` gives it an error verdict at the timeout and the others pass."""
    hostile = Path(__file__).parent / "fixtures" / "hostile" / "atheris-hang-keras-version-attr.h5"
    for name in ("k3_gru_ra.keras", "k2_gru_ra.h5"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    shutil.copy(hostile, tmp_path / hostile.name)
    result = CliRunner().invoke(cli, ["--timeout", "3", "check", "--format", "json", str(tmp_path)])
    assert result.exit_code == 2
    verdicts = {Path(r["file"]).name: r for r in json.loads(result.stdout)["files"]}
    assert verdicts[hostile.name]["status"] == "error" and "longer than 3 s" in verdicts[hostile.name]["error"]
    assert verdicts["k3_gru_ra.keras"]["status"] == verdicts["k2_gru_ra.h5"]["status"] == "pass"

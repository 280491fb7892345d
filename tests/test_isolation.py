"""Isolation: a crash, hang or runaway allocation while reading one file becomes an error for that file only."""
from __future__ import annotations

import os
import signal
import time

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

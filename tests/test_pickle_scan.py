"""The pickle disassembler (readers/pickle_scan.py) on streams written by Python's own pickle (and a few hand-built
opcode sequences, labelled): it names every import outside the allow-list, follows STACK_GLOBAL's operands through
the memo, and fails closed on what it cannot resolve or past its budgets. Nothing here is ever unpickled."""
from __future__ import annotations

import os
import pickle

import pytest

from lstm_inspect.readers import pickle_scan


class Exec:
    def __reduce__(self):
        return exec, ("print('hi')",)


class System:
    def __reduce__(self):
        return os.system, ("true",)


def whats(data):
    return [f.what for f in pickle_scan.scan_bytes(data, "p").findings]


@pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
def test_every_protocol_names_the_callables(protocol):
    data = pickle.dumps({"a": [Exec()], "b": System()}, protocol=protocol)
    assert whats(data) == ["builtins.exec", f"{os.name == 'posix' and 'posix' or 'nt'}.system"]


def test_offsets_point_at_the_import():
    data = pickle.dumps(System(), protocol=2)
    finding, = pickle_scan.scan_bytes(data, "member.pkl").findings
    offset = int(finding.where.rsplit(" ", 1)[1])
    assert finding.where.startswith("member.pkl @ byte ") and data[offset:offset + 1] == b"c"  # GLOBAL


def test_clean_data_has_no_findings():
    import collections
    data = pickle.dumps(collections.OrderedDict(a=[1, 2.5, "x", b"y", None, True, (3,), {4}]), protocol=4)
    scanned = pickle_scan.scan_bytes(data, "p")
    assert scanned.findings == [] and scanned.complete and [name for _, name in scanned.globals] == ["collections.OrderedDict"]


# Hand-built opcode sequences (protocol 4), as an attacker would write them to dodge a naive scanner.
PROTO = b"\x80\x04"


def short(s):
    return b"\x8c" + bytes([len(s)]) + s.encode()


def test_stack_global_operands_through_the_memo():
    # "os" and "system" are memoised, the stack is disturbed, then both come back from the memo
    data = PROTO + short("os") + b"\x94" + short("system") + b"\x94" + b"0" + b"0" + b"N0" + b"h\x00h\x01\x93" + b"."
    assert whats(data) == ["os.system"]


def test_stack_global_with_a_computed_operand_is_a_finding():
    # the module name is the result of a call (getattr on a builtins string): not resolvable by reading
    data = PROTO + short("builtins") + short("getattr") + b"\x93" + b"\x8c\x02osN\x86R" + short("system") + b"\x93."
    found = whats(data)
    assert found[0] == "builtins.getattr" and "not resolvable" in found[1]


def test_extension_registry_codes_are_findings():
    assert "copyreg extension registry" in whats(PROTO + b"\x82\x01.")[0]


def test_opcode_budget_is_a_finding():
    data = PROTO + b"N0" * 1000 + b"."
    scanned = pickle_scan.scan_bytes(data, "p", max_ops=100)
    assert not scanned.complete and "not checked" in scanned.findings[0].what


def test_byte_budget_is_a_finding():
    data = PROTO + b"\x8e" + (10 ** 12).to_bytes(8, "little") + b"x" * 100  # BINBYTES8 of a terabyte
    import io
    scanned = pickle_scan.scan(io.BytesIO(data), "p", max_bytes=64)
    assert not scanned.complete and "longer than 64 bytes" in scanned.findings[0].what


def test_truncated_stream_is_incomplete_not_a_crash():
    data = pickle.dumps(System(), protocol=2)
    scanned = pickle_scan.scan_bytes(data[:20], "p")
    assert not scanned.complete and scanned.error


def test_inst_and_obj_of_protocol_0_and_1():
    data = b"(ios\nsystem\nS'true'\ntp0\n."  # INST: imports and calls os.system
    assert whats(data) == ["os.system"]

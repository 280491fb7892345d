"""CRC-32C (Castagnoli), as TensorFlow checks its checkpoints, in numpy: no compiled extension needed.

Small inputs go through the classic table loop. Large ones are cut into K equal chunks whose CRCs are computed
side by side (one vectorised table step per byte column), then joined: a CRC with a zero start is linear, so
``crc(A + B) = shift(crc(A), len(B)) ^ crc(B)``, where the shift by n zero bytes is a 32×32 bit matrix built by
repeated squaring. TensorFlow stores CRCs *masked* (`mask`), so that a CRC of data holding CRCs stays well spread.
"""
from __future__ import annotations

import functools

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_SMALL = 1 << 16  # below this many bytes the plain loop is as fast as the set-up of the vectorised one


def _table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table[n] = c
    return table


TABLE = _table()
_TABLE_LIST = [int(v) for v in TABLE]


def _raw_loop(register: int, data: bytes | memoryview) -> int:
    table = _TABLE_LIST
    for byte in bytes(data):
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _apply(op: list[int], value: int) -> int:
    out, bit = 0, 0
    while value:
        if value & 1:
            out ^= op[bit]
        value >>= 1
        bit += 1
    return out


def _compose(a: list[int], b: list[int]) -> list[int]:
    """The operator a∘b (b first)."""
    return [_apply(a, column) for column in b]


_POWERS: list[list[int]] = []  # _POWERS[k]: the shift by 2**k zero bytes, built on first use


@functools.lru_cache(maxsize=256)
def _shift_operator(nbytes: int) -> list[int]:
    """The linear map that a zero-start CRC register undergoes when `nbytes` zero bytes follow."""
    if not _POWERS:
        _POWERS.append([_raw_loop(1 << bit, b"\0") for bit in range(32)])
    result = [1 << bit for bit in range(32)]
    k = 0
    while nbytes:
        while len(_POWERS) <= k:
            _POWERS.append(_compose(_POWERS[-1], _POWERS[-1]))
        if nbytes & 1:
            result = _compose(_POWERS[k], result)
        nbytes >>= 1
        k += 1
    return result


def _apply_many(op: list[int], values: np.ndarray) -> np.ndarray:
    out = np.zeros_like(values)
    for bit, column in enumerate(op):
        out ^= np.where((values >> np.uint32(bit)) & np.uint32(1), np.uint32(column), np.uint32(0))
    return out


def _raw_zero_start(data: np.ndarray) -> int:
    """CRC register after `data` from a zero start, without the final inversion."""
    n = data.size
    if n < _SMALL:
        return _raw_loop(0, data.tobytes())
    chunks = 1 << max(12, (n // 4096).bit_length() - 1)  # about 4,096 columns, at least 4,096 chunks
    length = n // chunks
    columns = np.ascontiguousarray(data[: chunks * length].reshape(chunks, length).T)
    register = np.zeros(chunks, dtype=np.uint32)
    for column in columns:
        register = TABLE[(register ^ column) & 0xFF] ^ (register >> np.uint32(8))
    span = length
    while register.size > 1:  # join neighbours: crc(A + B) = shift(crc(A), len(B)) ^ crc(B)
        register = _apply_many(_shift_operator(span), register[0::2]) ^ register[1::2]
        span *= 2
    return _raw_loop(int(register[0]), data[chunks * length:].tobytes())


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """The standard CRC-32C of `data` (initial value and final xor 0xFFFFFFFF)."""
    array = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1).view(np.uint8)
    if array.size < _SMALL:
        return _raw_loop(0xFFFFFFFF, array.tobytes()) ^ 0xFFFFFFFF
    # the 0xFFFFFFFF start is the zero-start CRC plus that start shifted through every byte
    return _raw_zero_start(array) ^ _apply(_shift_operator(array.size), 0xFFFFFFFF) ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """TensorFlow's (and LevelDB's) masked CRC: rotate right by 15 bits, add a constant."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF

"""Heatmaps as PNG bytes with numpy and zlib alone: the colour maps, max-|w| pooling and a minimal PNG writer.

The HTML report embeds its heatmaps as ``data:image/png`` URIs made here, so that `report` needs no plotting
library. The image has one pixel per (pooled) value; the page enlarges it with ``image-rendering: pixelated``.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

#: ColorBrewer RdBu (11 classes) from blue (negative) through near-white (0) to red (positive).
DIVERGING = ("#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
             "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f")
#: viridis, sampled at ten points: for values in [0, 1] (sigmoid gates).
SEQUENTIAL = ("#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
              "#b5de2b", "#fde725")
#: Non-finite values (NaN, ±Inf) are drawn in this colour, which neither map contains.
NON_FINITE = (255, 0, 255)
MAX_SIDE = 512


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def lookup_table(anchors: tuple[str, ...], size: int = 256) -> np.ndarray:
    """(size, 3) uint8 colours interpolated linearly between the anchors."""
    points = np.array([_rgb(c) for c in anchors], dtype=np.float64)
    where = np.linspace(0, len(anchors) - 1, size)
    channels = [np.interp(where, np.arange(len(anchors)), points[:, k]) for k in range(3)]
    return np.round(np.stack(channels, axis=1)).astype(np.uint8)


def as_matrix(values: np.ndarray) -> np.ndarray:
    """A block as a 2-D matrix: vectors become one row; ConvLSTM kernels (kh, kw, in, units) become
    (kh·kw·in, units)."""
    values = np.asarray(values)
    if values.ndim == 0:
        return values.reshape(1, 1)
    if values.ndim == 1:
        return values.reshape(1, -1)
    return values.reshape(-1, values.shape[-1])


def pool_factors(shape: tuple[int, int], max_side: int = MAX_SIDE) -> tuple[int, int]:
    return tuple(max(1, -(-n // max_side)) for n in shape)  # type: ignore[return-value]


def pool(matrix: np.ndarray, max_side: int = MAX_SIDE) -> tuple[np.ndarray, tuple[int, int]]:
    """Max-|w| pooling to at most `max_side` × `max_side`: each cell keeps the value of largest magnitude in its
    window (sign kept), so one outlier in a large block stays visible. Non-finite values win their window.
    Returns the pooled float64 matrix and the (rows, cols) window."""
    return pool_by(matrix, pool_factors(matrix.shape, max_side))


def pool_by(matrix: np.ndarray, window: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
    """`pool` with a given (rows, cols) window: a matrix pooled in row chunks whose lengths are multiples of the
    window's rows gives the rows of the whole matrix's pooling."""
    fr, fc = window
    if fr == 1 and fc == 1:
        return matrix.astype(np.float64), (1, 1)
    rows, cols = matrix.shape
    out_r, out_c = -(-rows // fr), -(-cols // fc)
    padded = np.zeros((out_r * fr, out_c * fc), dtype=np.float64)
    padded[:rows, :cols] = matrix
    windows = padded.reshape(out_r, fr, out_c, fc).transpose(0, 2, 1, 3).reshape(out_r, out_c, fr * fc)
    magnitude = np.abs(windows)
    magnitude[~np.isfinite(windows)] = np.inf
    pick = magnitude.argmax(axis=2)
    return np.take_along_axis(windows, pick[..., None], axis=2)[..., 0], (fr, fc)


def colour_indices(matrix: np.ndarray, low: float, high: float) -> np.ndarray:
    """(rows, cols) uint8 palette indices: values mapped linearly from [low, high] onto 0..254 (clipped); 255 marks
    a non-finite value."""
    span = high - low if high > low else 1.0
    finite = np.isfinite(matrix)
    position = np.clip((np.where(finite, matrix, low) - low) / span, 0.0, 1.0)
    indices = np.round(position * 254).astype(np.uint8)
    indices[~finite] = 255
    return indices


def palette(anchors: tuple[str, ...]) -> np.ndarray:
    """The 256 colours of an indexed heatmap: the map in 255 steps, then the non-finite colour."""
    return np.concatenate([lookup_table(anchors, 255), np.array([NON_FINITE], dtype=np.uint8)])


def heatmap_png(matrix: np.ndarray, low: float, high: float, anchors: tuple[str, ...]) -> bytes:
    """An indexed-colour PNG of a matrix (one byte per pixel before compression: a third of truecolour)."""
    return encode_png(colour_indices(matrix, low, high), palette(anchors))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(pixels: np.ndarray, colours: np.ndarray | None = None) -> bytes:
    """An 8-bit PNG: truecolour from an (rows, cols, 3) uint8 array, or indexed from (rows, cols) uint8 indices
    into `colours` (n, 3)."""
    indexed = colours is not None
    rows, cols = pixels.shape[:2]
    width = cols if indexed else cols * 3
    raw = np.zeros((rows, 1 + width), dtype=np.uint8)  # filter byte 0 (None) before each row
    raw[:, 1:] = np.ascontiguousarray(pixels, dtype=np.uint8).reshape(rows, width)
    header = struct.pack(">IIBBBBB", cols, rows, 8, 3 if indexed else 2, 0, 0, 0)
    chunks = _chunk(b"IHDR", header)
    if indexed:
        chunks += _chunk(b"PLTE", np.ascontiguousarray(colours, dtype=np.uint8).tobytes())
    return (b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IDAT", zlib.compress(raw.tobytes(), 6))
            + _chunk(b"IEND", b""))


def colour_bar(anchors: tuple[str, ...], width: int = 256) -> bytes:
    """A one-pixel-high PNG of the colour map, left (low) to right (high)."""
    return encode_png(lookup_table(anchors, width)[None, :, :])

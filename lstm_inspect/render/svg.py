"""Small inline SVG charts for the HTML report: line charts (bias profiles, singular-value spectra), overlaid
histograms and saturation bars. Plain strings, no library; every text is escaped, every number formatted here.
"""
from __future__ import annotations

import math
from html import escape
from typing import Sequence

import numpy as np

#: One colour per gate position (i f c o / z r h), the same on every chart of the page.
GATE_COLOURS = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2")
AXIS, GRID, TEXT = "#8a8f98", "#e6e8eb", "#3c4048"
MAX_POINTS = 1024


def number(value: float) -> str:
    """A short label for an axis tick or a value: 3 significant digits."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else str(value)
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{value:.3g}"


class _Frame:
    """The plotting area of a chart and its data → pixel mapping."""

    def __init__(self, width: int, height: int, x_range: tuple[float, float], y_range: tuple[float, float],
                 log_y: bool = False):
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = 52, 10, 20, 30
        self.x0, self.x1 = x_range if x_range[1] > x_range[0] else (x_range[0], x_range[0] + 1)
        low, high = y_range
        if log_y:
            low, high = math.log10(low), math.log10(high)
        if not high > low:
            low, high = low - 1, high + 1
        self.y0, self.y1, self.log_y = low, high, log_y

    def x(self, value: float) -> float:
        span = self.width - self.left - self.right
        return self.left + (value - self.x0) / (self.x1 - self.x0) * span

    def y(self, value: float) -> float:
        if self.log_y:
            value = math.log10(value)
        span = self.height - self.top - self.bottom
        return self.top + (1 - (value - self.y0) / (self.y1 - self.y0)) * span

    def axes(self, x_label: str, y_label: str, y_ticks: Sequence[float], x_ticks: Sequence[float]) -> list[str]:
        parts = []
        bottom, right = self.height - self.bottom, self.width - self.right
        placed: list[float] = []
        for tick in sorted(y_ticks, key=lambda t: t != 0):  # 0 first; a tick too close to a placed one is left out
            y = self.y(tick)
            if any(abs(y - other) < 11 for other in placed):
                continue
            placed.append(y)
            parts.append(f'<line x1="{self.left}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{GRID}"/>')
            parts.append(f'<text x="{self.left - 4}" y="{y + 3.5:.1f}" text-anchor="end">{escape(number(tick))}</text>')
        for tick in x_ticks:
            x = self.x(tick)
            parts.append(f'<text x="{x:.1f}" y="{bottom + 13}" text-anchor="middle">{escape(number(tick))}</text>')
        parts.append(f'<path d="M{self.left} {self.top}V{bottom}H{right}" fill="none" stroke="{AXIS}"/>')
        parts.append(f'<text x="{(self.left + right) / 2:.1f}" y="{self.height - 3}" text-anchor="middle">'
                     f'{escape(x_label)}</text>')
        parts.append(f'<text transform="translate(11 {(self.top + bottom) / 2:.1f}) rotate(-90)" '
                     f'text-anchor="middle">{escape(y_label)}</text>')
        return parts


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{escape(label, quote=True)}" font-size="10" '
            f'font-family="system-ui, sans-serif" fill="{TEXT}">' + "".join(body) + "</svg>")


def _thin(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """At most MAX_POINTS points per line: a profile over 4096 units keeps its shape at 1024 (every k-th)."""
    step = max(1, -(-len(xs) // MAX_POINTS))
    return xs[::step], ys[::step]


def line_chart(series: Sequence[tuple[str, str, np.ndarray]], x_label: str, y_label: str, width: int = 300,
               height: int = 170, y_range: tuple[float, float] | None = None, log_y: bool = False,
               zero_line: bool = True, legend: bool = True) -> str:
    """Lines of y over 0..n-1, one per (label, colour, ys); non-finite points are left out."""
    finite = [np.asarray(ys, dtype=np.float64) for _, _, ys in series]
    values = np.concatenate([v[np.isfinite(v)] for v in finite]) if finite else np.zeros(0)
    if log_y:
        values = values[values > 0]
    if y_range is None:
        y_range = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if not log_y:
            y_range = (min(y_range[0], 0.0), max(y_range[1], 0.0)) if zero_line else y_range
    longest = max((len(v) for v in finite), default=1)
    frame = _Frame(width, height, (0, max(longest - 1, 1)), y_range, log_y)
    low, high = y_range
    ticks = [low, high] if log_y else sorted({low, high, 0.0} if low < 0 < high else {low, high})
    body = frame.axes(x_label, y_label, ticks, [0, longest - 1])
    for (label, colour, _), ys in zip(series, finite):
        xs = np.arange(len(ys), dtype=np.float64)
        keep = np.isfinite(ys) & ((ys > 0) if log_y else True)
        xs, ys = _thin(xs[keep], ys[keep])
        if not len(xs):
            continue
        points = " ".join(f"{frame.x(x):.1f},{frame.y(y):.1f}" for x, y in zip(xs, ys))
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.4">'
                    f'<title>{escape(label)}</title></polyline>')
    if legend:
        body.extend(_legend(series, width))
    return _svg(width, height, body, f"{y_label} over {x_label}")


def _legend(series: Sequence[tuple[str, str, object]], width: int) -> list[str]:
    parts = []
    x = width - 10
    for label, colour, _ in reversed(series):
        text = escape(label)
        parts.append(f'<text x="{x}" y="10" text-anchor="end" fill="{colour}" font-weight="600">{text}</text>')
        x -= 7 * len(label) + 10
    return parts


def histogram_chart(edges: np.ndarray, series: Sequence[tuple[str, str, np.ndarray]], x_label: str,
                    width: int = 300, height: int = 170) -> str:
    """Overlaid step outlines of each series' share of values per bin, on shared bins."""
    shares = [np.asarray(c, dtype=np.float64) / max(float(np.sum(c)), 1.0) for _, _, c in series]
    top = max((float(s.max()) for s in shares if s.size), default=1.0) or 1.0
    frame = _Frame(width, height, (float(edges[0]), float(edges[-1])), (0.0, top))
    body = frame.axes(x_label, "share of values", [0.0, top], [float(edges[0]), 0.0, float(edges[-1])])
    for (label, colour, _), share in zip(series, shares):
        path = [f"M{frame.x(edges[0]):.1f} {frame.y(0):.1f}"]
        for left, right, value in zip(edges[:-1], edges[1:], share):
            path.append(f"V{frame.y(value):.1f}H{frame.x(right):.1f}")
        path.append(f"V{frame.y(0):.1f}")
        body.append(f'<path d="{"".join(path)}" fill="{colour}" fill-opacity="0.10" stroke="{colour}" '
                    f'stroke-width="1.3"><title>{escape(label)}</title></path>')
    body.extend(_legend(series, width))
    return _svg(width, height, body, f"histogram of {x_label}")


def saturation_chart(rows: Sequence[tuple[str, str, float, float]], width: int = 300) -> str:
    """One horizontal bar per gate: the share of values near 0 (left part) and near 1 (right part)."""
    bar, gap, left = 16, 8, 60
    height = 24 + len(rows) * (bar + gap)
    span = width - left - 60
    body = [f'<text x="{left}" y="11">near 0</text>',
            f'<text x="{width - 60}" y="11" text-anchor="end">near 1</text>']
    for n, (label, colour, low, high) in enumerate(rows):
        y = 20 + n * (bar + gap)
        body.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end" font-weight="600">{escape(label)}</text>')
        body.append(f'<rect x="{left}" y="{y}" width="{span}" height="{bar}" fill="{GRID}"/>')
        body.append(f'<rect x="{left}" y="{y}" width="{span * low:.1f}" height="{bar}" fill="{colour}" '
                    f'fill-opacity="0.55"/>')
        body.append(f'<rect x="{left + span * (1 - high):.1f}" y="{y}" width="{span * high:.1f}" height="{bar}" '
                    f'fill="{colour}"/>')
        body.append(f'<text x="{left + span + 6}" y="{y + 12}">{low:.0%} | {high:.0%}</text>')
    return _svg(width, height, body, "share of saturated gate values")

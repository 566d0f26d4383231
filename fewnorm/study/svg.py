"""Small self-contained SVG figures for the HTML report (no matplotlib, no fonts or scripts to fetch)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

WIDTH = 560
_FONT = 'font-family="sans-serif" font-size="11"'
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About ``count`` round values spanning [low, high]."""
    if not high > low:
        return [low]
    step = 10 ** math.floor(math.log10((high - low) / count))
    for factor in (1, 2, 5, 10):
        if (high - low) / (step * factor) <= count:
            step *= factor
            break
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _range(values: Sequence[float], pad: float = 0.05) -> tuple[float, float]:
    low, high = min(values), max(values)
    span = high - low or abs(high) or 1.0
    return low - pad * span, high + pad * span


def colors_for(labels: Sequence[str]) -> dict[str, str]:
    """One colour per label, in order, so that a normalizer looks the same in every figure."""
    return {label: _PALETTE[i % len(_PALETTE)] for i, label in enumerate(labels)}


def interval_chart(
    rows: Sequence[tuple[str, float, float]],
    title: str,
    x_label: str,
    reference: float | None = None,
    colors: Mapping[str, str] | None = None,
) -> str:
    """Horizontal dot-and-whisker chart: one row per ``(label, value, half_width)``."""
    left, right, top, row_h = 150, 20, 28, 20
    height = top + row_h * len(rows) + 40
    values = [v - h for _, v, h in rows] + [v + h for _, v, h in rows] + ([reference] if reference else [])
    low, high = _range(values or [0.0, 1.0])
    plot_w = WIDTH - left - right

    def x(value: float) -> float:
        return left + plot_w * (value - low) / (high - low)

    parts = [
        f'<text x="{WIDTH / 2}" y="16" text-anchor="middle" {_FONT} font-weight="bold">{escape(title)}</text>'
    ]
    bottom = top + row_h * len(rows)
    for t in _ticks(low, high):
        parts.append(f'<line x1="{x(t):.1f}" y1="{top}" x2="{x(t):.1f}" y2="{bottom}" stroke="#ddd"/>')
        parts.append(f'<text x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle" {_FONT}>{t:.3g}</text>')
    if reference is not None:
        parts.append(
            f'<line x1="{x(reference):.1f}" y1="{top}" x2="{x(reference):.1f}" y2="{bottom}" '
            'stroke="#888" stroke-dasharray="4 3"/>'
        )
    for i, (label, value, half) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        color = (colors or {}).get(label, _PALETTE[i % len(_PALETTE)])
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {_FONT}>{escape(label)}</text>')
        parts.append(
            f'<line x1="{x(value - half):.1f}" y1="{y:.1f}" x2="{x(value + half):.1f}" y2="{y:.1f}" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts.append(f'<circle cx="{x(value):.1f}" cy="{y:.1f}" r="4" fill="{color}"/>')
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{bottom + 30}" text-anchor="middle" {_FONT}>'
        f"{escape(x_label)}</text>"
    )
    return _svg(height, parts, title)


def scatter(
    points: Sequence[tuple[str, float, float]],
    title: str,
    x_label: str,
    y_label: str,
    *,
    log_x: bool = False,
    colors: Mapping[str, str] | None = None,
) -> str:
    """Points ``(label, x, y)``, each labelled; ``log_x`` plots log10 of positive x values."""
    width, height, left, bottom_pad, top = WIDTH // 2 + 20, 260, 50, 40, 28
    plot_w, plot_h = width - left - 15, height - top - bottom_pad
    xs = [math.log10(p[1]) if log_x and p[1] > 0 else p[1] for p in points]
    ys = [100 * p[2] for p in points]
    x_low, x_high = _range(xs or [0.0, 1.0], 0.12)
    y_low, y_high = _range(ys or [0.0, 100.0], 0.12)

    def px(v: float) -> float:
        return left + plot_w * (v - x_low) / (x_high - x_low)

    def py(v: float) -> float:
        return top + plot_h * (1 - (v - y_low) / (y_high - y_low))

    parts = [
        f'<text x="{width / 2}" y="16" text-anchor="middle" {_FONT} font-weight="bold">'
        f"{escape(title)}</text>",
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>',
    ]
    for t in _ticks(x_low, x_high, 4):
        parts.append(
            f'<text x="{px(t):.1f}" y="{top + plot_h + 13}" text-anchor="middle" {_FONT}>'
            f"{(10**t if log_x else t):.3g}</text>"
        )
    for t in _ticks(y_low, y_high, 4):
        parts.append(f'<text x="{left - 4}" y="{py(t) + 4:.1f}" text-anchor="end" {_FONT}>{t:.3g}</text>')
    for i, ((label, _, _), xv, yv) in enumerate(zip(points, xs, ys, strict=True)):
        color = (colors or {}).get(label, _PALETTE[i % len(_PALETTE)])
        right_half = px(xv) > left + plot_w / 2  # label on the inner side: never cut at the edge
        anchor, dx = ("end", -5) if right_half else ("start", 5)
        parts.append(f'<circle cx="{px(xv):.1f}" cy="{py(yv):.1f}" r="3.5" fill="{color}"/>')
        parts.append(
            f'<text x="{px(xv) + dx:.1f}" y="{py(yv) - 4:.1f}" text-anchor="{anchor}" {_FONT} fill="{color}">'
            f"{escape(label)}</text>"
        )
    axis = f"{x_label} (log scale)" if log_x else x_label
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle" {_FONT}>{escape(axis)}</text>'
    )
    parts.append(
        f'<text transform="translate(12 {top + plot_h / 2}) rotate(-90)" text-anchor="middle" {_FONT}>'
        f"{escape(y_label)}</text>"
    )
    return _svg(height, parts, title, width)


def _svg(height: float, parts: list[str], title: str, width: int = WIDTH) -> str:
    body = "\n".join(parts)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="figure" width="{width}" height="{height:.0f}" '
        f'viewBox="0 0 {width} {height:.0f}" role="img" aria-label="{escape(title)}">\n{body}\n</svg>'
    )

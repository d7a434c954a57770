"""A small, plain SVG stacked-bar chart for the benchmarks' results.

No plotting library is installed on the lab machine, and the figures are
few: one bar per group, stacked segments, a legend, a y axis with round
ticks and an optional dashed goal line. Called by bench scripts (e.g.
`bench/mttr_lab.py`); writes nothing itself, returns the SVG text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from xml.sax.saxutils import escape

COLORS = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948")
WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 60, 170, 40, 50


def nice_step(top: float, ticks: int = 5) -> float:
    """A round tick step (1, 2 or 5 times a power of ten) covering `top`."""
    raw = max(top, 1e-9) / ticks
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _text(x: float, y: float, body: str, anchor: str = "start", size: int = 12) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif">{escape(body)}</text>')


def _axis(top: float, plot_h: float) -> tuple[list[str], float]:
    """The y axis with its ticks and grid; returns the parts and the scale top."""
    step = nice_step(top)
    ymax = step * math.ceil(top / step)
    parts, value = [], 0.0
    while value <= ymax + 1e-9:
        y = TOP + plot_h - value / ymax * plot_h
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                     'stroke="#ddd"/>')
        parts.append(_text(LEFT - 6, y + 4, f"{value:g}", "end", 11))
        value += step
    return parts, ymax


def stacked_bars(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                 unit: str = "s", goal: tuple[float, str] | None = None) -> str:
    """SVG text: one bar per group, series stacked bottom-up in order;
    `goal` = (value, label) draws a dashed horizontal line."""
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    totals = [sum(values[i] for _, values in series) for i in range(len(groups))]
    top = max([*totals, goal[0] if goal else 0.0, 1e-9])
    parts, ymax = _axis(top, plot_h)
    slot = plot_w / max(len(groups), 1)
    bar_w = slot * 0.55
    for i, group in enumerate(groups):
        x, base = LEFT + slot * i + (slot - bar_w) / 2, 0.0
        for k, (name, values) in enumerate(series):
            h = values[i] / ymax * plot_h
            y = TOP + plot_h - (base + values[i]) / ymax * plot_h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                         f'fill="{COLORS[k % len(COLORS)]}"><title>{escape(group)} {escape(name)}'
                         f' {values[i]:.2f} {unit}</title></rect>')
            base += values[i]
        parts.append(_text(x + bar_w / 2, TOP + plot_h - base / ymax * plot_h - 4,
                           f"{totals[i]:.1f} {unit}", "middle", 11))
        parts.append(_text(x + bar_w / 2, TOP + plot_h + 18, group, "middle"))
    if goal:
        y = TOP + plot_h - goal[0] / ymax * plot_h
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
                     'stroke="#333" stroke-dasharray="6 4"/>')
        parts.append(_text(WIDTH - RIGHT + 6, y + 4, goal[1], size=10))
    parts.extend(_legend(title, [name for name, _ in series], unit))
    return _svg(WIDTH, HEIGHT, parts)


def _legend(title: str, names: Sequence[str], unit: str) -> list[str]:
    parts = []
    for k, name in enumerate(names):
        y = TOP + 10 + 20 * k
        parts.append(f'<rect x="{WIDTH - RIGHT + 10}" y="{y - 10}" width="12" height="12" '
                     f'fill="{COLORS[k % len(COLORS)]}"/>')
        parts.append(_text(WIDTH - RIGHT + 28, y, name))
    parts.append(_text(LEFT - 45, TOP - 12, unit, size=11))
    parts.append(_text(WIDTH / 2, 22, title, "middle", 14))
    return parts


def grouped_bars(title: str, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float]]],
                 unit: str = "") -> str:
    """SVG text: for each group, one bar per series side by side (series
    named in a legend), each bar labelled with its value."""
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    top = max([v for _, values in series for v in values] + [1e-9])
    parts, ymax = _axis(top, plot_h)
    slot = plot_w / max(len(groups), 1)
    bar_w = slot * 0.8 / max(len(series), 1)
    for i, group in enumerate(groups):
        x0 = LEFT + slot * i + slot * 0.1
        for k, (name, values) in enumerate(series):
            x, h = x0 + k * bar_w, values[i] / ymax * plot_h
            parts.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" '
                         f'height="{h:.1f}" fill="{COLORS[k % len(COLORS)]}"><title>'
                         f'{escape(group)} {escape(name)} {values[i]:g} {unit}</title></rect>')
            parts.append(_text(x + bar_w / 2, TOP + plot_h - h - 4, f"{values[i]:.3g}",
                               "middle", 9))
        parts.append(_text(LEFT + slot * i + slot / 2, TOP + plot_h + 18, group, "middle"))
    parts.extend(_legend(title, [name for name, _ in series], unit))
    return _svg(WIDTH, HEIGHT, parts)


def _svg(width: float, height: float, parts: Sequence[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(parts) + "\n</svg>\n")


def grid(charts: Sequence[str], columns: int = 2) -> str:
    """Several charts of this module (same size) in one SVG, `columns` wide."""
    rows = math.ceil(len(charts) / columns)
    parts = []
    for i, chart in enumerate(charts):
        x, y = (i % columns) * WIDTH, (i // columns) * HEIGHT
        parts.append(f'<g transform="translate({x},{y})">{chart}</g>')
    return _svg(WIDTH * columns, HEIGHT * rows, parts)

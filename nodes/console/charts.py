"""Server-rendered SVG charts for the console: spend over time with axes, dates and a legend.

Why SVG written here and not a plotting library or a script: the console's
Content-Security-Policy allows nothing from outside and no script, and an
inline ``<svg>`` needs neither; a chart of a few step lines is a hundred lines
of code with no dependency, and tests can read its labels as text.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

from nodes.console.pages import esc

__all__ = ["PALETTE", "nice_ticks", "spend_chart"]

PALETTE = ("#1d3b53", "#c2410c", "#15803d", "#7c3aed", "#0e7490", "#a16207", "#be185d", "#4b5563")
"""Line colours, in legend order (distinct in grey-scale print too, by dash pattern)."""
_DASHES = ("", "6 3", "2 3", "8 3 2 3")

Point = tuple[dt.datetime, float]


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``top`` (1, 2 or 5 times a power of ten apart).

    >>> nice_ticks(4.21)
    [0.0, 2.0, 4.0, 6.0]
    >>> nice_ticks(0.0)
    [0.0, 1.0]
    """
    if not top > 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    n = math.ceil(top / step - 1e-9)
    return [float(round(i * step, 12)) for i in range(n + 1)]


def _time_label(t: dt.datetime, span: dt.timedelta) -> str:
    """Days over a long axis, minutes over a day or so, seconds within an hour."""
    if span >= dt.timedelta(days=4):
        return t.strftime("%Y-%m-%d")
    if span >= dt.timedelta(hours=2):
        return t.strftime("%m-%d %H:%M")
    return t.strftime("%H:%M:%S")


def spend_chart(
    series: Mapping[str, Sequence[Point]],
    *,
    chart_id: str,
    y_label: str,
    rules: Mapping[str, float] | None = None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    width: int = 640,
    height: int = 240,
) -> str:
    """Cumulative spend as step lines over dated axes, with horizontal rules and a legend.

    Args:
        series: Legend label -> (time, cumulative amount) points, in time order.
        chart_id: The ``id`` of the ``<svg>`` (tests and links find it by this).
        y_label: What the vertical axis counts (e.g. ``epsilon spent``).
        rules: Legend label -> a level drawn dashed across the chart (a budget).
        start: Where the time axis begins (default: the first point's time).
        end: Where it ends (default: the last point's time).
        width: Width of the drawing, pixels.
        height: Height of the plot and its axes, pixels (the legend adds rows below).
    """
    rules = dict(rules or {})
    times = [t for pts in series.values() for t, _ in pts]
    t0 = start or (min(times) if times else dt.datetime.now(dt.UTC))
    t1 = end or (max(times) if times else t0)
    if t1 - t0 < dt.timedelta(minutes=1):  # one instant (or nothing): the minute up to it
        t0 = t1 - dt.timedelta(minutes=1)
    top = max([*rules.values(), *(v for pts in series.values() for _, v in pts), 0.0])
    ticks = nice_ticks(top)
    y_max = ticks[-1]
    left, right, above, below = 60, 44, 14, 44
    legend_h = 18 * math.ceil((len(series) + len(rules)) / 3) if (series or rules) else 0
    plot_w, plot_h = width - left - right, height - above - below
    total_h = height + legend_h

    def x(t: dt.datetime) -> float:
        return left + plot_w * (t - t0).total_seconds() / (t1 - t0).total_seconds()

    def y(v: float) -> float:
        return above + plot_h * (1 - v / y_max)

    parts = [
        f'<svg id="{esc(chart_id)}" width="{width}" height="{total_h}" viewBox="0 0 {width} '
        f'{total_h}" role="img" aria-label="{esc(y_label)} over time" '
        'font-family="system-ui,sans-serif" font-size="11">'
    ]
    for v in ticks:  # horizontal grid and value labels
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            'stroke="#e3e8ee"/>'
            f'<text class="y-tick" x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
    span = t1 - t0
    for i in range(5):  # dated ticks along the time axis
        t = t0 + span * (i / 4)
        parts.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{above + plot_h}" '
            f'y2="{above + plot_h + 4}" stroke="#1d2730"/>'
            f'<text class="x-tick" x="{x(t):.1f}" y="{above + plot_h + 16}" '
            f'text-anchor="middle">{esc(_time_label(t, span))}</text>'
        )
    parts.append(  # the axes and their titles
        f'<line x1="{left}" x2="{left}" y1="{above}" y2="{above + plot_h}" stroke="#1d2730"/>'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{above + plot_h}" y2="{above + plot_h}" '
        'stroke="#1d2730"/>'
        f'<text x="14" y="{above + plot_h / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {above + plot_h / 2:.1f})">{esc(y_label)}</text>'
        f'<text x="{left + plot_w / 2:.1f}" y="{above + plot_h + 34}" text-anchor="middle">'
        "time (UTC)</text>"
    )
    legend: list[tuple[str, str, str]] = []
    for i, (label, level) in enumerate(sorted(rules.items())):
        colour = "#b42318"
        dash = "4 3" if i % 2 == 0 else "1 3"
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
            f'stroke="{colour}" stroke-dasharray="{dash}"/>'
        )
        legend.append((f"{label} ({level:g})", colour, dash))
    for i, (label, pts) in enumerate(series.items()):
        colour, dash = PALETTE[i % len(PALETTE)], _DASHES[(i // len(PALETTE)) % len(_DASHES)]
        coords = [(x(t0), y(0.0))]
        for t, v in pts:  # a step line: spend jumps at each charge
            coords += [(x(t), coords[-1][1]), (x(t), y(v))]
        coords.append((x(t1), coords[-1][1]))
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2"{extra} points="{line}"/>'
        )
        last = pts[-1][1] if pts else 0.0
        legend.append((f"{label} ({last:.4g})", colour, dash))
    for i, (label, colour, dash) in enumerate(legend):
        lx, ly = left + (i % 3) * (plot_w / 3), height + 18 * (i // 3) + 4
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<g class="legend"><line x1="{lx:.1f}" x2="{lx + 22:.1f}" y1="{ly:.1f}" '
            f'y2="{ly:.1f}" stroke="{colour}" stroke-width="2"{extra}/>'
            f'<text x="{lx + 28:.1f}" y="{ly + 4:.1f}">{esc(label)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)

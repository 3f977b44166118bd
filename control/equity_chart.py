"""A backtest's picture: one self-contained HTML file (inline SVG and CSS; no script, no font or
file from the network) with the equity curve, its drawdowns shaded under the running peak, each
trade marked where it closed (green won, red lost; hover for the trade), the drawdown below it,
and the per-slot table: what a person reads at a glance instead of the report's numbers.

Reads a backtest report (kernel/backtest: `equity` [(ms, equity_usd)] at each change, `trade_list`,
`slots`, the totals) by attribute, so any object of that shape draws. Pure: `render` returns
the page; `write` puts it where the CLI says (var/backtests/<id>/equity.html).
"""

from __future__ import annotations

import bisect
import datetime as dt
import html
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The plot's geometry in SVG user units (the SVG scales to the page's width).
WIDTH = 1000
HEIGHT = 360
DD_HEIGHT = 110
LEFT, RIGHT, TOP, BOTTOM = 72, 16, 14, 26
# Above this many points a series is thinned to the first, lowest, highest and last point of
# each pixel column: the picture is the same (every peak and trough stays), the file is not
# megabytes for a month of 5 s ticks.
MAX_POINTS = 4 * WIDTH
# Trades marked one by one up to this many; past it they would be a smear, and the table says.
MAX_MARKS = 2000
UP, DOWN, INK, GRID, DD = "#1a7f37", "#cf222e", "#24292f", "#d0d7de", "#cf222e"


def _usd(x: float, sign: bool = False) -> str:
    s = f"{abs(x):,.2f}"
    if sign:
        return ("+$" if x >= 0 else "−$") + s
    return ("−$" if x < 0 else "$") + s


def _when(ms: int, with_date: bool = True) -> str:
    t = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return t.strftime("%Y-%m-%d %H:%M" if with_date else "%H:%M")


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round values spanning [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def thin(
    points: Sequence[tuple[int, float]], from_ms: int, to_ms: int, columns: int
) -> list[tuple[int, float]]:
    """At most about 4 points per column of `columns` over [from_ms, to_ms]: each column's first,
    lowest, highest and last, in time order (the extremes a line would draw are all kept)."""
    if len(points) <= 4 * columns:
        return list(points)
    span = max(1, to_ms - from_ms)
    out: list[tuple[int, float]] = []
    col: list[tuple[int, float]] = []
    cur = None
    for p in points:
        c = (p[0] - from_ms) * columns // span
        if c != cur and col:
            out.extend(_extremes(col))
            col = []
        cur = c
        col.append(p)
    out.extend(_extremes(col))
    return out


def _extremes(col: list[tuple[int, float]]) -> list[tuple[int, float]]:
    keep = {0, len(col) - 1}
    keep.add(min(range(len(col)), key=lambda i: col[i][1]))
    keep.add(max(range(len(col)), key=lambda i: col[i][1]))
    return [col[i] for i in sorted(keep)]


def drawdown(points: Sequence[tuple[float, float]]) -> tuple[list[float], float, int, int]:
    """(running peak at each point, max drawdown in $, index of its peak, index of its trough)."""
    peaks: list[float] = []
    peak, worst, wp, wt, pi = -math.inf, 0.0, 0, 0, 0
    for i, (_, v) in enumerate(points):
        if v > peak:
            peak, pi = v, i
        peaks.append(peak)
        if peak - v > worst:
            worst, wp, wt = peak - v, pi, i
    return peaks, worst, wp, wt


class _Axes:
    """Data (ms, $) to SVG coordinates for one panel."""

    def __init__(self, from_ms: int, to_ms: int, lo: float, hi: float, top: float, height: float) -> None:
        self.from_ms, self.span_ms = from_ms, max(1, to_ms - from_ms)
        pad = (hi - lo) * 0.06 or max(abs(hi) * 0.01, 1.0)
        self.lo, self.hi = lo - pad, hi + pad
        self.top, self.height = top, height
        self.w = WIDTH - LEFT - RIGHT

    def x(self, ms: float) -> float:
        return LEFT + (ms - self.from_ms) / self.span_ms * self.w

    def y(self, v: float) -> float:
        return self.top + (self.hi - v) / (self.hi - self.lo) * self.height

    def ms_of(self, x: float) -> float:
        """Inverse of x (the tests read the picture back with it)."""
        return self.from_ms + (x - LEFT) / self.w * self.span_ms

    def value_of(self, y: float) -> float:
        return self.hi - (y - self.top) / self.height * (self.hi - self.lo)


def _steps(points: Sequence[tuple[int, float]], end_ms: int) -> list[tuple[float, float]]:
    """The equity as it was: a value holds until the next change (a step line), to `end_ms`."""
    out: list[tuple[float, float]] = []
    for i, (ms, v) in enumerate(points):
        if i:
            out.append((ms, points[i - 1][1]))
        out.append((ms, v))
    if points and end_ms > points[-1][0]:
        out.append((end_ms, points[-1][1]))
    return out


def _path(ax: _Axes, pts: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{ax.x(m):.1f},{ax.y(v):.2f}" for m, v in pts)


def _time_ticks(from_ms: int, to_ms: int) -> list[int]:
    span_s = max(1, (to_ms - from_ms) // 1000)
    step_s = next(
        (s for s in (60, 300, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400) if span_s / s <= 8),
        86400 * max(1, math.ceil(span_s / 86400 / 8)),
    )
    first = -(-from_ms // (step_s * 1000)) * step_s * 1000
    return list(range(first, to_ms + 1, step_s * 1000))


def _panel_grid(
    ax: _Axes, ticks: list[float], ms_ticks: list[int], with_labels: bool, multi_day: bool
) -> list[str]:
    out = []
    bottom = ax.top + ax.height
    for v in ticks:
        y = ax.y(v)
        if ax.top - 0.5 <= y <= bottom + 0.5:
            out.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
            out.append(f'<text class="ylab" x="{LEFT - 6}" y="{y + 4:.1f}">{html.escape(_usd(v))}</text>')
    for ms in ms_ticks:
        x = ax.x(ms)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{ax.top}" y2="{bottom}"/>')
        if with_labels:
            label = _when(ms, with_date=multi_day and ms % 86_400_000 == 0)
            out.append(f'<text class="xlab" x="{x:.1f}" y="{bottom + 17}">{label}</text>')
    return out


def chart_svg(report: Any) -> str:
    """The two panels (equity with drawdowns shaded and trades marked; drawdown below) as one SVG."""
    from_ms, to_ms = int(report.from_ms), int(report.to_ms)
    start = float(getattr(report, "start_cash_usd", 0.0))
    raw = [(int(m), float(v)) for m, v in report.equity] or [(from_ms, start)]
    if raw[0][0] > from_ms:
        raw.insert(0, (from_ms, start if hasattr(report, "start_cash_usd") else raw[0][1]))
    pts = thin(raw, from_ms, to_ms, WIDTH - LEFT - RIGHT)
    steps = _steps(pts, to_ms)
    peaks, worst, _, _ = drawdown(steps)
    lo = min(v for _, v in steps)
    hi = max(v for _, v in steps)
    ax = _Axes(from_ms, to_ms, lo, hi, TOP, HEIGHT - TOP - BOTTOM)
    multi_day = to_ms - from_ms > 86_400_000
    ms_ticks = _time_ticks(from_ms, to_ms)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT + DD_HEIGHT}" '
        f'role="img" aria-label="equity curve">'
    ]
    parts += _panel_grid(ax, nice_ticks(ax.lo, ax.hi), ms_ticks, False, multi_day)
    # Drawdown: the area between the running peak and the equity, wherever it is below the peak.
    under = [(m, p) for (m, _), p in zip(steps, peaks, strict=True)]
    area = _path(ax, under) + " " + _path(ax, list(reversed(steps)))
    parts.append(
        f'<polygon class="dd" points="{area}"><title>drawdown below the running peak</title></polygon>'
    )
    base_y = ax.y(start) if hasattr(report, "start_cash_usd") else None
    if base_y is not None and TOP <= base_y <= HEIGHT - BOTTOM:
        parts.append(
            f'<line class="base" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{base_y:.1f}" y2="{base_y:.1f}"/>'
        )
    parts.append(f'<polyline class="equity" points="{_path(ax, steps)}"/>')
    parts += _marks(ax, report, raw)
    # The drawdown panel, sharing the time axis.
    dd_top = HEIGHT + 4
    dax = _Axes(from_ms, to_ms, -max(worst, 0.01), 0.0, dd_top, DD_HEIGHT - BOTTOM - 8)
    dax.lo, dax.hi = -max(worst, 0.01) * 1.05, 0.0
    parts += _panel_grid(dax, nice_ticks(dax.lo, 0.0, 2), ms_ticks, True, multi_day)
    dd_line = [(m, v - p) for (m, v), p in zip(steps, peaks, strict=True)]
    zero = [(m, 0.0) for m, _ in reversed(dd_line)]
    parts.append(f'<polygon class="ddfill" points="{_path(dax, dd_line)} {_path(dax, zero)}"/>')
    parts.append(
        f'<text class="panel" x="{LEFT + 6}" y="{dd_top + 12}">'
        f"drawdown (max {html.escape(_usd(worst))})</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def _marks(ax: _Axes, report: Any, raw: list[tuple[int, float]]) -> list[str]:
    trades = list(getattr(report, "trade_list", ()) or ())
    if not trades or len(trades) > MAX_MARKS:
        return []
    times = [m for m, _ in raw]
    out = ['<g class="trades">']
    for t in trades:
        ms = int(getattr(t, "closed_ms", 0) or getattr(t, "opened_ms", 0))
        pnl = float(getattr(t, "pnl_usd", 0.0))
        i = bisect.bisect_right(times, ms) - 1
        v = raw[max(i, 0)][1]
        won = getattr(t, "won", None)
        cls = "win" if (won if won is not None else pnl > 0) else "loss"
        tip = (
            f"{getattr(t, 'slot', '')} {getattr(t, 'side', '')} {_when(int(getattr(t, 'opened_ms', ms)))}"
            f"–{_when(ms, False)} UTC: {_usd(pnl, sign=True)} ({getattr(t, 'end', '')})"
        )
        out.append(
            f'<circle class="{cls}" cx="{ax.x(ms):.1f}" cy="{ax.y(v):.2f}" r="3.2" '
            f'data-ms="{ms}" data-pnl="{pnl:.6f}"><title>{html.escape(tip)}</title></circle>'
        )
    out.append("</g>")
    return out


def _slot_rows(report: Any) -> list[str]:
    slots = dict(getattr(report, "slots", {}) or {})

    def get(s: Any, name: str) -> Any:
        return s.get(name, 0) if isinstance(s, dict) else getattr(s, name, 0)

    biggest = max((abs(float(get(s, "pnl_usd"))) for s in slots.values()), default=0.0) or 1.0
    rows = []
    for sid in sorted(slots, key=lambda k: -float(get(slots[k], "pnl_usd"))):
        s = slots[sid]
        pnl = float(get(s, "pnl_usd"))
        w = abs(pnl) / biggest * 120
        bar = (
            f'<svg class="bar" viewBox="0 0 242 12" width="242" height="12"><line x1="121" x2="121" y1="0" '
            f'y2="12" stroke="{GRID}"/><rect x="{121 if pnl >= 0 else 121 - w:.1f}" y="2" width="{w:.1f}" '
            f'height="8" fill="{UP if pnl >= 0 else DOWN}"/></svg>'
        )
        trades = int(get(s, "trades"))
        rows.append(
            f"<tr><td>{html.escape(str(sid))}</td><td>{trades}</td><td>{int(get(s, 'wins'))}</td>"
            f"<td>{float(get(s, 'win_rate')) * 100:.0f}%</td>"
            f'<td class="{"pos" if pnl >= 0 else "neg"}">{html.escape(_usd(pnl, sign=True))}</td>'
            f"<td>{html.escape(_usd(float(get(s, 'fees_usd'))))}</td><td>{int(get(s, 'evaluations')):,}</td>"
            f"<td>{int(get(s, 'unfilled'))}</td><td>{int(get(s, 'refused'))}</td><td>{bar}</td></tr>"
        )
    return rows


CSS = f"""
body {{ font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: {INK};
  margin: 24px auto; max-width: 1080px; padding: 0 16px; }}
h1 {{ font-size: 20px; margin: 0 0 4px; }} .sub {{ color: #57606a; margin: 0 0 16px; }}
.cards {{ display: flex; flex-wrap: wrap; gap: 10px; margin: 0 0 14px; }}
.card {{ border: 1px solid {GRID}; border-radius: 6px; padding: 8px 12px; min-width: 110px; }}
.card b {{ display: block; font-size: 18px; }} .card span {{ color: #57606a; font-size: 12px; }}
svg {{ width: 100%; height: auto; }} svg.bar {{ width: 242px; }}
.grid {{ stroke: {GRID}; stroke-width: 0.6; }} .base {{ stroke: #8c959f; stroke-dasharray: 4 3; }}
.ylab {{ font-size: 11px; fill: #57606a; text-anchor: end; }}
.xlab {{ font-size: 11px; fill: #57606a; text-anchor: middle; }} .panel {{ font-size: 11px; fill: #57606a; }}
.equity {{ fill: none; stroke: #0969da; stroke-width: 1.6; stroke-linejoin: round; }}
.dd {{ fill: {DD}; fill-opacity: 0.16; stroke: none; }} .ddfill {{ fill: {DD}; fill-opacity: 0.35; }}
.win {{ fill: {UP}; stroke: white; stroke-width: 0.8; }}
.loss {{ fill: {DOWN}; stroke: white; stroke-width: 0.8; }}
table {{ border-collapse: collapse; margin-top: 14px; width: 100%; }}
th, td {{ text-align: right; padding: 3px 8px; border-bottom: 1px solid #eaeef2; white-space: nowrap; }}
th:first-child, td:first-child {{ text-align: left; }} .pos {{ color: {UP}; }} .neg {{ color: {DOWN}; }}
.note {{ color: #57606a; font-size: 12px; margin-top: 14px; }}
"""


def title(report: Any) -> str:
    """The page's title line: strategy, range and PnL."""
    return (
        f"{report.strategy} · {_when(int(report.from_ms))} → {_when(int(report.to_ms))} UTC · "
        f"PnL {_usd(float(report.pnl_usd), sign=True)}"
    )


def render(report: Any) -> str:
    """The whole page, self-contained."""
    pnl = float(report.pnl_usd)
    cards = [
        (_usd(pnl, sign=True), "PnL", "pos" if pnl >= 0 else "neg"),
        (f"{int(report.trades):,}", "trades", ""),
        (f"{float(report.win_rate) * 100:.1f}%", "win rate", ""),
        (_usd(-float(report.max_drawdown_usd)), "max drawdown", "neg" if report.max_drawdown_usd > 0 else ""),
        (_usd(float(getattr(report, "fees_usd", 0.0))), "fees", ""),
        (f"{int(getattr(report, 'evaluations', 0)):,}", "evaluations", ""),
    ]
    if hasattr(report, "start_cash_usd") and hasattr(report, "end_cash_usd"):
        cards.append((f"{_usd(report.start_cash_usd)} → {_usd(report.end_cash_usd)}", "cash", ""))
    trades = list(getattr(report, "trade_list", ()) or ())
    notes = []
    if len(trades) > MAX_MARKS:
        notes.append(f"{len(trades):,} trades: too many to mark one by one (the table has them per slot).")
    if getattr(report, "unresolved", 0):
        notes.append(
            f"{report.unresolved} position(s) could not be resolved from the candles: not in the PnL."
        )
    fm = getattr(report, "fill_model", None)
    if fm is not None:
        notes.append(f"fill model: {html.escape(str(fm))}")
    for p in list(getattr(report, "problems", ()) or ())[:10]:
        notes.append(f"problem: {html.escape(str(p))}")
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "slot",
            "trades",
            "wins",
            "win rate",
            "PnL",
            "fees",
            "evaluations",
            "unfilled",
            "refused",
            "",
        )
    )
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{html.escape(title(report))}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(title(report))}</h1>",
            f'<p class="sub">backtest of <b>{html.escape(str(report.strategy))}</b> '
            f"on {len(report.slots)} slot(s), "
            f"tick {int(getattr(report, 'tick_ms', 0))} ms; equity = cash + open positions at cost; "
            "shaded: below the running peak; dots: trades where they closed (hover for each).</p>",
            '<div class="cards">'
            + "".join(
                f'<div class="card"><b class="{c}">{html.escape(v)}</b><span>{k}</span></div>'
                for v, k, c in cards
            )
            + "</div>",
            chart_svg(report),
            f"<table><thead><tr>{head}</tr></thead><tbody>",
            *_slot_rows(report),
            "</tbody></table>",
            *(f'<p class="note">{n}</p>' for n in notes),
            "</body></html>",
        ]
    )


def write(report: Any, path: Path) -> Path:
    """Write the page to `path` (its directory made), atomically; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(path)
    return path

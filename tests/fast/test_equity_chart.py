"""The backtest's picture (control/equity_chart.py): the page is self-contained, and what it draws
is the report's series read back from the SVG: the equity's vertices at the right times and
values, the drawdown shaded as deep as the worst one, a mark per trade in the colour of its
result, the title and a row per slot."""

from __future__ import annotations

import random
import re
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

from control import equity_chart as ec

FROM_MS = 1_796_083_200_000  # 2026-12-01T00:00:00Z
TO_MS = FROM_MS + 86_400_000
NS = {"s": "http://www.w3.org/2000/svg"}


def report(n: int = 300, seed: int = 5, trades: int = 40) -> SimpleNamespace:
    rng = random.Random(seed)
    equity, v = [], 1000.0
    times = sorted(rng.sample(range(FROM_MS + 1000, TO_MS - 1000, 1000), n))
    for ms in times:
        v += rng.gauss(0.0, 3.0)
        equity.append((ms, round(v, 6)))
    tl = [
        SimpleNamespace(
            slot=f"btc-{(i % 2 and '5m') or '15m'}",
            side="up",
            opened_ms=ms - 30_000,
            closed_ms=ms,
            pnl_usd=pnl,
            won=pnl > 0,
            end="settled",
        )
        for i, (ms, pnl) in enumerate((t, rng.choice([-2.5, 1.5])) for t in rng.sample(times, trades))
    ]
    slots = {
        "btc-15m": SimpleNamespace(
            trades=25,
            wins=14,
            win_rate=0.56,
            pnl_usd=12.34,
            fees_usd=0.8,
            evaluations=1728,
            unfilled=2,
            refused=0,
        ),
        "<b>eth-5m</b>": SimpleNamespace(
            trades=15,
            wins=5,
            win_rate=1 / 3,
            pnl_usd=-7.5,
            fees_usd=0.4,
            evaluations=5184,
            unfilled=0,
            refused=1,
        ),
    }
    return SimpleNamespace(
        strategy="snipe",
        from_ms=FROM_MS,
        to_ms=TO_MS,
        tick_ms=5000,
        trades=trades,
        wins=19,
        pnl_usd=4.84,
        win_rate=19 / 40,
        max_drawdown_usd=0.0,
        fees_usd=1.2,
        start_cash_usd=1000.0,
        end_cash_usd=1004.84,
        slots=slots,
        equity=equity,
        evaluations=6912,
        trade_list=tl,
        problems=[],
        unresolved=0,
    )


def svg_of(page: str) -> ET.Element:
    m = re.search(r'<svg xmlns="http://www.w3.org/2000/svg".*?</svg>', page, re.S)
    assert m, "no inline SVG"
    return ET.fromstring(m.group(0))


def points(attr: str) -> list[tuple[float, float]]:
    return [(float(a), float(b)) for a, b in (p.split(",") for p in attr.split())]


def test_the_equity_line_is_the_reports_series_as_steps_at_the_right_times_and_values():
    rep = report()
    page = ec.render(rep)
    svg = svg_of(page)
    [line] = svg.findall("s:polyline[@class='equity']", NS)
    pts = points(line.get("points"))
    series = [(FROM_MS, 1000.0), *rep.equity]
    # A step line: each change is a vertical segment, then the value holds to the next one.
    assert len(pts) == 2 * len(series) - 1 + 1
    w = ec.WIDTH - ec.LEFT - ec.RIGHT
    xs = [ec.LEFT + (ms - FROM_MS) / (TO_MS - FROM_MS) * w for ms, _ in series]
    assert [round(x, 1) for x, _ in pts[0::2]] == [round(x, 1) for x in xs]
    assert pts[-1] == (ec.WIDTH - ec.RIGHT, pts[-2][1])  # the last value holds to the end
    # y is one affine function of the equity at every vertex (the same scale throughout).
    ys = [y for _, y in pts[0::2]]
    vals = [v for _, v in series]
    i_lo, i_hi = vals.index(min(vals)), vals.index(max(vals))
    a = (ys[i_hi] - ys[i_lo]) / (vals[i_hi] - vals[i_lo])
    assert a < 0  # up is more money
    for y, v in zip(ys, vals, strict=True):
        assert y == pytest.approx(ys[i_lo] + a * (v - vals[i_lo]), abs=0.02)


def test_drawdowns_are_shaded_down_to_the_worst_trough_and_the_panel_says_how_deep():
    rep = report()
    page = ec.render(rep)
    svg = svg_of(page)
    [dd] = svg.findall("s:polygon[@class='dd']", NS)
    [line] = svg.findall("s:polyline[@class='equity']", NS)
    eq = points(line.get("points"))
    shade = points(dd.get("points"))
    # The shaded area's lower edge is the equity line itself (reversed), its upper the running peak.
    assert shade[len(eq) :] == list(reversed(eq))
    peak_y = [y for _, y in shade[: len(eq)]]
    assert all(p <= e + 1e-9 for p, (_, e) in zip(peak_y, eq, strict=True))
    vals = [1000.0] + [v for _, v in rep.equity]
    worst, peak = 0.0, -1e18
    for v in vals:
        peak = max(peak, v)
        worst = max(worst, peak - v)
    assert f"drawdown (max ${worst:,.2f})" in page


def test_each_trade_is_marked_where_it_closed_in_the_colour_of_its_result():
    rep = report()
    svg = svg_of(ec.render(rep))
    marks = svg.findall("s:g[@class='trades']/s:circle", NS)
    assert len(marks) == len(rep.trade_list)
    got = sorted((int(c.get("data-ms")), c.get("class")) for c in marks)
    want = sorted((t.closed_ms, "win" if t.pnl_usd > 0 else "loss") for t in rep.trade_list)
    assert got == want
    assert all(c.find("s:title", NS).text.startswith("btc-") for c in marks)


def test_the_page_is_self_contained_with_the_title_and_a_row_per_slot_escaped(tmp_path):
    rep = report()
    path = ec.write(rep, tmp_path / "bt" / "equity.html")
    page = path.read_text()
    assert "<script" not in page and "https://" not in page and " src=" not in page and "@import" not in page
    assert set(re.findall(r"http://[^\"']+", page)) == {"http://www.w3.org/2000/svg"}
    assert "<title>snipe · 2026-12-01 00:00 → 2026-12-02 00:00 UTC · PnL +$4.84</title>" in page
    rows = re.findall(r"<tr><td>(.*?)</td>", page)
    assert rows == ["btc-15m", "&lt;b&gt;eth-5m&lt;/b&gt;"]  # best first, names escaped
    assert "−$7.50" in page and "+$12.34" in page


def test_a_month_of_ticks_is_thinned_keeping_every_extreme():
    rep = report(n=0, trades=0)
    rng = random.Random(9)
    v, eq = 1000.0, []
    for i in range(200_000):
        v += rng.gauss(0, 1)
        eq.append((FROM_MS + i * 5000, v))
    rep.to_ms = eq[-1][0] + 5000
    rep.equity = eq
    page = ec.render(rep)
    svg = svg_of(page)
    [line] = svg.findall("s:polyline[@class='equity']", NS)
    pts = points(line.get("points"))
    assert len(pts) < 2 * 4 * (ec.WIDTH - ec.LEFT - ec.RIGHT) + 4
    assert len(page) < 600_000
    ys = [y for _, y in pts]
    i_hi = max(range(len(eq)), key=lambda i: eq[i][1])
    i_lo = min(range(len(eq)), key=lambda i: eq[i][1])
    # The highest and lowest equity are still the line's top and bottom.
    assert min(ys) == pytest.approx(
        ec._Axes(FROM_MS, rep.to_ms, eq[i_lo][1], eq[i_hi][1], ec.TOP, ec.HEIGHT - ec.TOP - ec.BOTTOM).y(
            eq[i_hi][1]
        ),
        abs=0.02,
    )


def test_an_empty_backtest_still_draws_a_flat_line():
    rep = report(n=0, trades=0)
    rep.slots = {}
    svg = svg_of(ec.render(rep))
    [line] = svg.findall("s:polyline[@class='equity']", NS)
    pts = points(line.get("points"))
    assert len(pts) == 2 and pts[0][1] == pts[1][1]

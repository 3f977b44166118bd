"""docs/strategies.md's complete minimal strategy is a strategy: it loads, passes the reload
check, and does what the guide says it does."""

from __future__ import annotations

import re
import types
from pathlib import Path

from kernel.strategy_api import BookSide, Buy, Exit, Holding, Pass, SlotInput
from kernel.strategy_check import dry_evaluate, sample_inputs

GUIDE = Path(__file__).resolve().parents[3] / "docs" / "strategies.md"
START = 1_700_000_100_000


def minimal_example() -> types.ModuleType:
    text = GUIDE.read_text()
    section = text.split("## A complete minimal strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    module = types.ModuleType("above_open")
    exec(compile(code.group(1), str(GUIDE), "exec"), module.__dict__)
    return module


def inp(last: float, position: Holding | None = None, up_bid: float = 0.53) -> SlotInput:
    return SlotInput(
        slot_id="above-open",
        asset="btc",
        timeframe="5m",
        now_ms=START + 60_000,
        window_start_ms=START,
        window_end_ms=START + 300_000,
        open_price=100.0,
        last_price=last,
        closes=(100.0, last),
        stake_usd=2.0,
        params={},
        api=2,
        up_book=BookSide(bids=((up_bid, 50.0),), asks=((0.55, 50.0),)),
        down_book=BookSide(bids=((0.45, 50.0),), asks=((0.47, 50.0),)),
        position=position,
        entered=position is not None,
    )


def test_the_minimal_example_buys_above_the_open_and_sells_at_five_cents_up():
    m = minimal_example()
    assert (m.API, m.EXITS) == (2, True)
    d = m.evaluate(inp(100.2))
    assert isinstance(d, Buy) and (d.side, d.limit_price, d.stake_usd) == ("up", 0.55, 2.0)
    assert isinstance(m.evaluate(inp(99.9)), Pass)
    held = Holding(side="up", shares=3.6, cost_usd=1.98, avg_price=0.55, opened_ms=START)
    assert isinstance(m.evaluate(inp(100.2, held, up_bid=0.58)), Pass)
    d = m.evaluate(inp(100.2, held, up_bid=0.61))
    assert isinstance(d, Exit) and d.limit_price == 0.61 and d.shares == 0.0


def test_the_minimal_example_passes_the_reload_check():
    dry_evaluate(minimal_example(), sample_inputs())

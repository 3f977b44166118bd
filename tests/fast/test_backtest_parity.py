"""The backtest runs the live tick's path: over the same candles, a strategy is asked at the same
ticks, for the same slots, with the same inputs (prices, closes, bars, windows, stake,
parameters, cash and room) as the live tick (the rig: kernel/tick.py TickRunner on fakeredis
with the feed's candles) asks it. Only the books differ: the sim's maker's there, the
backtest's model's here."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import msgspec
import pytest

from kernel.backtest import engine
from kernel.backtest.fills import FillParams, RecordedBooks
from kernel.backtest.types import BacktestConfig, SlotSpec
from kernel.input_stream import read_batches
from kernel.strategy_api import Buy, SlotInput
from sim.markets import MIN_ORDER_SIZE
from state.structs import MICROS, Candle
from worker.lifecycle import configured_slots

TICKS = 40


def recorder(seen: list[SlotInput]) -> type:
    """A strategy that never trades, awake at every tick, reading 5 s bars; `seen` gets each
    input it is given."""

    class Recorder:
        API = 2
        CANDLES = MappingProxyType({"5s": 4})

        @staticmethod
        def evaluate(inp: SlotInput) -> None:
            seen.append(inp)

    return Recorder


def _config(rig: Any, first_s: int, ticks: int) -> BacktestConfig:
    """The rig's slots, settings and paper cash as a backtest's configuration."""
    slots = tuple(
        SlotSpec(id=s.id, asset=s.asset, timeframe=s.timeframe, stake_usd=s.stake_usd, params=dict(s.params))
        for s in configured_slots(rig.settings, {"edge": 0.0})
    )
    return BacktestConfig(
        strategy="snipe",  # the rig's slots' strategy name, answered by the test's strategy
        from_ms=first_s * 1000,
        to_ms=(first_s + ticks) * 1000,
        slots=slots,
        tick_ms=rig.settings.tick_ms,
        cash_usd=1000.0,
        max_stake_usd=rig.settings.max_stake_usd,
        max_exposure_usd=rig.settings.max_exposure_usd,
        daily_loss_limit_usd=rig.settings.daily_loss_limit_usd,
        stale_after_ms=rig.settings.stale_after_ms,
        fills=FillParams(min_order_shares=MIN_ORDER_SIZE),
        # The rig's feed writes the candle closing at a tick before that tick reads (the live
        # feed writes it some ms after): the backtest is held to the rig's feed here.
        feed_delay_ms=0,
    )


def _candles(rig: Any, first_s: int, ticks: int) -> dict[str, list[Candle]]:
    """The 1 s candles of the rig's price model, as its feed writes them."""
    return {
        a: [
            Candle(sec * 1000, *rig.model.candle(a, sec), 1.0, True)
            for sec in range(first_s - 120, first_s + ticks + 60)
        ]
        for a in rig.settings.assets
    }


def _comparable(inp: SlotInput) -> dict[str, Any]:
    out = msgspec.to_builtins(inp)
    for books in ("up_book", "down_book", "up_ask", "down_ask"):
        out.pop(books)
    return out


async def test_the_backtest_asks_what_the_live_tick_asks_on_the_same_candles(rig: Any) -> None:
    live: list[SlotInput] = []
    rig.resolver = lambda name: recorder(live)
    first_s = rig.clock.now_ms() // 1000 + 1
    await rig.run_ticks(TICKS)
    assert len(live) >= TICKS  # four slots at every tick but a window's first

    config = _config(rig, first_s, TICKS)
    candles = _candles(rig, first_s, TICKS)
    backtested: list[SlotInput] = []
    report = engine.run(config, candles, recorder(backtested))

    def key(i: SlotInput) -> tuple[int, str]:
        return (i.now_ms, i.slot_id)

    assert report.evaluations == len(backtested)
    assert sorted(map(key, backtested)) == sorted(map(key, live))
    by_key = {key(i): i for i in backtested}
    for inp in live:
        assert _comparable(by_key[key(inp)]) == _comparable(inp), key(inp)
    assert {i.cash_usd for i in live} == {1000.0} and any(i.bars["5s"] for i in live)


def taker(order_type: str = "FOK") -> type:
    """Buys the side the window is moving to in the window's last 8 s: at its best ask (FOK),
    or resting a cent under it (GTC)."""

    class Taker:
        API = 2

        @staticmethod
        def quotes_from_ms(start_ms: int, end_ms: int, params: dict[str, float]) -> int:
            return end_ms - 8000

        @staticmethod
        def evaluate(inp: SlotInput) -> Buy | None:
            side = "up" if inp.last_price >= inp.open_price else "down"
            ask = inp.up_ask if side == "up" else inp.down_ask
            if inp.entered or ask is None or not 0.05 <= ask <= 0.95:
                return None
            price = ask if order_type == "FOK" else round(ask - 0.01, 2)
            return Buy(
                side=side, limit_price=price, stake_usd=5.0, reason="with the move", order_type=order_type
            )

    return Taker


# FOK only: an order that rests fills later against books the input log did not record (the
# slot, entered, is not evaluated again), which the backtest models (docs/evaluate.md).
@pytest.mark.parametrize("order_type", ["FOK"])
async def test_over_a_paper_run_with_its_recorded_books_the_backtest_makes_its_trades(
    rig: Any, order_type: str
) -> None:
    rig.resolver = lambda name: taker(order_type)
    first_s = rig.clock.now_ms() // 1000 + 1
    await rig.run_ticks(62)  # four windows of 15 s on four assets
    await rig.runner.entries.notes.flush()
    paper = sorted(
        (p.slot, p.window_start_s, p.side, p.shares_micros, p.cost_micros, p.pnl_micros)
        for p in await rig.store.read_positions()
        if p.status == "settled"
    )
    assert len(paper) >= 4

    # The input log as the paper run wrote it (read by stream order: its ids are the real
    # clock's, the rig's ticks a virtual one's).
    # A reply holds about a page of bytes (state/inputs.py PAGE_BYTES): read to the end.
    logged, after = [], "0-0"
    while page := read_batches(rig.sync, rig.store.k, after, 0, 1000):
        logged += [e for _, _, _, batch in page for e in batch]
        after = page[-1][0]
    assert logged
    books = RecordedBooks(
        (e.input.asset, e.input.timeframe, e.window_start_s, e.at_ms, e.input.up_book, e.input.down_book)
        for e in logged
    )
    report = engine.run(_config(rig, first_s, 62), _candles(rig, first_s, 62), taker(order_type), books)
    assert report.books_modelled == 0  # every evaluation saw the book the paper run saw
    backtest = sorted(
        (
            t.slot,
            t.window_start_s,
            t.side,
            round(t.shares * MICROS),
            round(t.cost_usd * MICROS),
            round(t.pnl_usd * MICROS),
        )
        for t in report.trade_list
        if t.end == "settled"
    )
    assert backtest == paper

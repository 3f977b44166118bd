"""The backtest runs the live tick's path: over the same candles, a strategy is asked at the same
ticks, for the same slots, with the same inputs (prices, closes, bars, windows, stake,
parameters, cash and room) as the live tick (the rig: kernel/tick.py TickRunner on fakeredis
with the feed's candles) asks it. Only the books differ: the sim's maker's there, the
backtest's model's here."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import msgspec

from kernel.backtest import engine
from kernel.backtest.types import BacktestConfig, SlotSpec
from kernel.strategy_api import SlotInput
from state.structs import Candle
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

    slots = tuple(
        SlotSpec(id=s.id, asset=s.asset, timeframe=s.timeframe, stake_usd=s.stake_usd, params=dict(s.params))
        for s in configured_slots(rig.settings, {"edge": 0.0})
    )
    candles = {
        a: [
            Candle(sec * 1000, *rig.model.candle(a, sec), 1.0, True)
            for sec in range(first_s - 120, first_s + TICKS + 60)
        ]
        for a in {s.asset for s in slots}
    }
    config = BacktestConfig(
        strategy="snipe",  # the rig's slots' strategy name, answered by the recorder
        from_ms=first_s * 1000,
        to_ms=(first_s + TICKS) * 1000,
        slots=slots,
        tick_ms=rig.settings.tick_ms,
        cash_usd=1000.0,
        max_stake_usd=rig.settings.max_stake_usd,
        max_exposure_usd=rig.settings.max_exposure_usd,
        daily_loss_limit_usd=rig.settings.daily_loss_limit_usd,
        stale_after_ms=rig.settings.stale_after_ms,
    )
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

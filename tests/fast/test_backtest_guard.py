"""The backtest refuses a strategy that reads the future: its inputs hold only candles closed by
their time, and strategy code that reaches past its input (a file, the caller's frames, the
heap) stops the backtest with an error naming the strategy and what it did."""

from __future__ import annotations

import gc
import sys
import types
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest

from baton.errors import LookAheadError
from kernel.backtest import engine
from kernel.backtest.guard import Guard, check_input
from kernel.strategy_api import Bar, Buy, SlotInput
from state.structs import Candle
from tests.fast.backtest_rig import config, history


@cache
def _history() -> dict[str, list[Candle]]:
    return history(assets=("btc",), hours=0.5)


def _run(evaluate: Any, name: str = "peeker") -> Any:
    strat = types.SimpleNamespace(evaluate=evaluate, API=2)
    return engine.run(config(name, hours=0.5, assets=("btc",)), _history(), strat)


def _future_close(candles: Any, now_ms: int) -> float | None:
    for c in candles:
        if c.open_ms == now_ms + 60_000:
            return float(c.close)
    return None


def test_a_strategy_that_opens_the_history_file_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "btc.csv"
    store.write_text("\n".join(f"{c.open_ms},{c.close}" for c in _history()["btc"]))

    def evaluate(inp: SlotInput) -> Buy | None:
        with open(store) as f:  # the history on disk: tomorrow's prices are in it
            rows = dict(line.split(",") for line in f)
        future = float(rows[str(inp.now_ms + 60_000)])
        side = "up" if future >= inp.open_price else "down"
        return Buy(side=side, limit_price=0.5, stake_usd=5.0, reason="I know")

    with pytest.raises(LookAheadError, match=r"strategy 'peeker' opened a file \(.*btc\.csv"):
        _run(evaluate)


def test_a_strategy_that_walks_the_frames_to_the_engines_candles_is_refused() -> None:
    def evaluate(inp: SlotInput) -> Buy | None:
        f = sys._getframe(1)
        while f is not None:
            run = f.f_locals.get("self")
            if run is not None and hasattr(run, "hist"):
                future = _future_close(run.hist["btc"].candles_between(0, len(run.hist["btc"])), inp.now_ms)
                if future is not None:
                    side = "up" if future >= inp.open_price else "down"
                    return Buy(side=side, limit_price=0.5, stake_usd=5.0, reason="I peeked")
            f = f.f_back
        return None

    with pytest.raises(LookAheadError, match=r"strategy 'peeker' walked the call stack \(sys._getframe\)"):
        _run(evaluate)


def test_a_traceback_is_no_way_up_the_stack_either() -> None:
    def evaluate(inp: SlotInput) -> None:
        try:
            raise RuntimeError
        except RuntimeError as e:
            tb = e.__traceback__
            assert tb is not None
            tb.tb_frame.f_back  # noqa: B018
        return None

    with pytest.raises(LookAheadError, match=r"strategy 'peeker' reached for traceback.tb_frame"):
        _run(evaluate)


def test_a_strategy_that_searches_the_heap_is_refused() -> None:
    def evaluate(inp: SlotInput) -> None:
        for o in gc.get_objects():
            if type(o).__name__ == "AssetHistory":
                return None
        return None

    with pytest.raises(LookAheadError, match=r"strategy 'peeker' walked the heap \(gc.get_objects\)"):
        _run(evaluate)


def test_swallowing_the_refusal_does_not_hide_it(tmp_path: Path) -> None:
    def evaluate(inp: SlotInput) -> None:
        try:  # noqa: SIM105 (the shape a strategy that hides an error has)
            open(tmp_path / "anything", "w").close()
        except Exception:
            pass  # "it did not work, never mind"
        return None

    with pytest.raises(LookAheadError, match="opened a file"):
        _run(evaluate)


def test_the_guard_is_off_outside_a_backtests_strategy_calls(tmp_path: Path) -> None:
    g = Guard("calm")
    assert g.call(lambda x: x + 1, 1) == 2
    (tmp_path / "f").write_text("still works")  # the audit hook is installed, not armed
    assert sys._getframe(0) is not None
    assert g.refused == ""


def test_an_honest_strategy_is_not_refused() -> None:
    def evaluate(inp: SlotInput) -> Buy | None:
        if inp.entered or inp.up_ask is None or inp.remaining_s > 20:
            return None
        side = "up" if inp.last_price >= inp.open_price else "down"
        ask = inp.up_ask if side == "up" else inp.down_ask
        return Buy(side=side, limit_price=ask or 0.5, stake_usd=5.0, reason="momentum of the window")

    assert _run(evaluate).trades > 0


def _input(now_ms: int, **kw: Any) -> SlotInput:
    base: dict[str, Any] = {
        "slot_id": "btc-5m",
        "asset": "btc",
        "timeframe": "5m",
        "now_ms": now_ms,
        "window_start_ms": 0,
        "window_end_ms": 300_000,
        "open_price": 1.0,
        "last_price": 1.0,
        "closes": (1.0,),
        "stake_usd": 5.0,
        "params": {},
    }
    base.update(kw)
    return SlotInput(**base)


def test_every_input_is_checked_for_data_from_after_its_time() -> None:
    check_input(_input(10_000), newest_open_ms=9_000, open_ms=0)
    with pytest.raises(LookAheadError, match="candle opening at 9500, which closes after"):
        check_input(_input(10_000), newest_open_ms=9_500, open_ms=0)
    with pytest.raises(LookAheadError, match="first candle \\(opening at 9500\\) had not closed"):
        check_input(_input(10_000), newest_open_ms=9_000, open_ms=9_500)
    with pytest.raises(LookAheadError, match="had not closed"):
        check_input(_input(10_000, window_start_ms=20_000), newest_open_ms=9_000, open_ms=20_000)
    late_bar = {"1m": (Bar(60_000, 1, 1, 1, 1, 1),)}
    with pytest.raises(LookAheadError, match="1m bar opening at 60000"):
        check_input(_input(10_000, bars=late_bar), newest_open_ms=9_000, open_ms=0)


def test_the_engine_hands_the_input_builder_only_closed_candles() -> None:
    seen: list[tuple[int, float, dict[str, Any]]] = []

    def evaluate(inp: SlotInput) -> None:
        seen.append((inp.now_ms, inp.last_price, msgspec.to_builtins(inp.bars)))
        return None

    strat = types.SimpleNamespace(evaluate=evaluate, API=2, CANDLES={"1m": 3})
    engine.run(config("peeker", hours=0.25, assets=("btc",)), _history(), strat)
    by_open = {c.open_ms: c for c in _history()["btc"]}
    assert seen
    for now, last, bars in seen:
        assert last == by_open[now - 1000].close  # the candle that closed at the tick
        assert all(b[0] <= now for b in bars["1m"])
        assert bars["1m"][-1][4] == by_open[now - 1000].close  # the forming bar ends there

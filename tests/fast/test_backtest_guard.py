"""The backtest refuses a strategy that reads the future: its inputs hold only candles closed by
their time, and strategy code that reaches past its input (a file, the caller's frames, the
heap) stops the backtest with an error naming the strategy and what it did."""

from __future__ import annotations

import gc
import sys
import types
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import msgspec
import pytest

from baton.errors import LookAheadError
from kernel.backtest import engine
from kernel.backtest.guard import Guard, check_input, guarded
from kernel.raised import Raised
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
        # The candle closing on the tick's boundary is not written yet (feed_delay_ms): the
        # newest one the tick sees closed a second before.
        assert last == by_open[now - 2000].close
        assert all(b[0] <= now - 2000 for b in bars["1m"])
        assert bars["1m"][-1][4] == by_open[now - 2000].close  # the forming bar ends there


# --- strategy code the kernel runs outside evaluate (review finding 2) ---------------------------


def _learn_the_future(known: dict[tuple[str, int], bool]) -> None:
    """Walk up the stack to the engine's history and note every 5-minute window's result."""
    f = sys._getframe(2)
    while f is not None and not known:
        run = f.f_locals.get("self")
        hist = getattr(run, "hist", None) if run is not None else None
        if isinstance(hist, dict) and hist:
            for asset, h in hist.items():
                by_open = {c.open_ms: c for c in h.candles_between(0, len(h))}
                first = h.open_ms[0] // 300_000 * 300_000
                for ms in range(first, h.open_ms[-1], 300_000):
                    a, b = by_open.get(ms), by_open.get(ms + 300_000 - 1000)
                    if a and b:
                        known[(f"{asset}-5m", ms)] = b.close >= a.open
        f = f.f_back


def _knowing(known: dict[tuple[str, int], bool], otherwise: Any = None) -> Any:
    def evaluate(inp: SlotInput) -> Buy | None:
        won = known.get((inp.slot_id, inp.window_start_ms))
        if won is None:
            if otherwise is not None:
                raise otherwise()
            return None
        ask = inp.up_ask if won else inp.down_ask
        if ask is None or ask >= 0.99:
            return None
        return Buy(side="up" if won else "down", limit_price=ask, stake_usd=5.0, reason="I know")

    return evaluate


def test_a_strategy_whose_exception_repr_reads_the_future_is_refused() -> None:
    """The kernel formats a strategy's exception after evaluate returned: its __repr__ is
    strategy code, and must run under the guard (the engine takes its text there)."""
    known: dict[tuple[str, int], bool] = {}

    class Peek(Exception):
        def __repr__(self) -> str:
            _learn_the_future(known)
            return "Peek()"

    strat = types.SimpleNamespace(evaluate=_knowing(known, Peek), API=2)
    with pytest.raises(LookAheadError, match=r"strategy 'peeker' walked the call stack"):
        rep = engine.run(config("peeker", hours=1.0, assets=("btc",)), history(assets=("btc",)), strat)
        print("trades", rep.trades, "win rate", rep.win_rate, "pnl", rep.pnl_usd)


def test_a_strategy_whose_candles_declaration_reads_the_future_is_refused() -> None:
    """CANDLES is read by the engine (its look-back) and the input builder: a Mapping whose
    items() walks the stack is strategy code too; the declarations are read once, guarded."""
    known: dict[tuple[str, int], bool] = {}

    class Declared(Mapping[str, int]):
        def __getitem__(self, k: str) -> int:
            raise KeyError(k)

        def __len__(self) -> int:
            return 0

        def __iter__(self) -> Iterator[str]:
            return iter(())

        def items(self) -> Any:
            _learn_the_future(known)
            return iter(())

    strat = types.SimpleNamespace(evaluate=_knowing(known), API=2, CANDLES=Declared())
    with pytest.raises(LookAheadError, match=r"strategy 'peeker' walked the call stack"):
        rep = engine.run(config("peeker", hours=1.0, assets=("btc",)), history(assets=("btc",)), strat)
        print("trades", rep.trades, "win rate", rep.win_rate, "pnl", rep.pnl_usd)


def test_an_answer_made_of_subclasses_reaches_the_kernel_as_plain_values() -> None:
    """A float subclass in a Buy is strategy code the kernel would run later (its comparisons,
    its repr): the answer is rebuilt of plain values while the guard is on."""
    known: dict[tuple[str, int], bool] = {}

    class Sneaky(float):
        def __lt__(self, other: object) -> bool:
            _learn_the_future(known)
            return float(self) < other  # type: ignore[operator]

    def evaluate(inp: SlotInput) -> Buy | None:
        return Buy(side="up", limit_price=Sneaky(0.5), stake_usd=Sneaky(5.0), reason="x")

    strat, _ = guarded(types.SimpleNamespace(evaluate=evaluate, API=2), "peeker")
    got = strat.evaluate(None)
    assert type(got) is Buy and type(got.limit_price) is float and type(got.stake_usd) is float
    assert got == Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="x")
    assert got.limit_price < 1.0 and not known  # the subclass's code never runs


def test_an_exception_reaches_the_kernel_as_its_text_taken_under_the_guard() -> None:
    class Odd(Exception):
        def __repr__(self) -> str:
            return "Odd('mine')"

    def evaluate(inp: SlotInput) -> None:
        raise Odd()

    strat, _ = guarded(types.SimpleNamespace(evaluate=evaluate, needs_quotes=lambda inp: 1), "odd")
    with pytest.raises(Raised) as got:
        strat.evaluate(None)
    assert repr(got.value) == "Odd('mine')" and got.value.__context__ is None
    assert strat.needs_quotes(None) is True


def test_declarations_are_read_once_as_plain_values() -> None:
    class Key(str):
        def __hash__(self) -> int:
            return str.__hash__(self)

    class Count(int):
        pass

    strat, _ = guarded(
        types.SimpleNamespace(evaluate=lambda inp: None, CANDLES={Key("1m"): Count(30)}, EXITS=1, API=2),
        "decl",
    )
    assert strat.CANDLES == {"1m": 30} and strat.EXITS is False and strat.API == 2
    [(k, n)] = strat.CANDLES.items()
    assert type(k) is str and type(n) is int

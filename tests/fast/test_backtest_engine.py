"""The backtest engine (kernel/backtest/): the kernel's tick path on a virtual clock over candle
history, its fill model and its account."""

from __future__ import annotations

import types
from functools import cache

import msgspec
import pytest

from baton.errors import BacktestError
from kernel.backtest import engine
from kernel.backtest.fills import FillParams, Match, RecordedBooks, ladder, match, model_books
from kernel.backtest.history import AssetHistory
from kernel.backtest.types import BacktestReport
from kernel.fees import taker_fee_usd
from kernel.strategy_api import BookSide, Buy, Exit, Pass, SlotInput
from state.structs import Candle
from tests.fast.backtest_rig import DAY0_S, config, history
from worker.strategies import momentum, snipe


@cache
def _history() -> dict[str, list[Candle]]:
    return history(hours=1.0)


def _same(a: BacktestReport, b: BacktestReport, *ignore: str) -> None:
    da, db = msgspec.to_builtins(a), msgspec.to_builtins(b)
    for k in ("wall_s", *ignore):
        da.pop(k), db.pop(k)
    assert da == db


def test_a_backtest_of_snipe_trades_and_its_sums_add_up() -> None:
    # A maker 4 s late (staler than the sim's old one, 3 s, since the tick sees the second
    # before it): snipe trades in most windows, 15-minute ones too.
    r = engine.run(config("snipe", fills=FillParams(lag_ms=4000)), _history(), snipe)
    assert r.trades > 0 and r.evaluations > 0
    assert r.ticks == 720 and 0 < r.ticks_run < r.ticks  # snipe sleeps most of each window
    assert r.pnl_usd == pytest.approx(sum(s.pnl_usd for s in r.slots.values()), abs=1e-6)
    assert r.trades == sum(s.trades for s in r.slots.values())
    assert r.end_cash_usd == pytest.approx(r.start_cash_usd + r.pnl_usd, abs=1e-6)
    assert r.equity[0] == (r.from_ms, r.start_cash_usd)
    assert r.equity[-1][1] == pytest.approx(r.end_cash_usd)
    assert r.fees_usd > 0  # 15-minute windows pay the taker fee
    assert r.slots["btc-5m"].fees_usd == 0  # 5-minute ones do not
    assert r.books_modelled == r.evaluations and r.books_recorded == 0
    # Every trade held to resolution won $1 a share or nothing.
    for t in r.trade_list:
        assert t.end == "settled"
        assert t.payout_usd in (0.0, pytest.approx(t.shares))


def test_the_same_inputs_give_the_same_report() -> None:
    a = engine.run(config("momentum"), _history(), momentum)
    b = engine.run(config("momentum"), _history(), momentum)
    _same(a, b)


@pytest.mark.parametrize("strategy", [snipe, momentum])
def test_skipping_idle_ticks_changes_no_answer(strategy: types.ModuleType) -> None:
    name = strategy.__name__.rsplit(".", 1)[-1]
    fast = engine.run(config(name), _history(), strategy)
    every = engine.run(config(name, skip_idle=False), _history(), strategy)
    assert every.ticks_run == every.ticks
    _same(fast, every, "ticks_run")


def test_momentum_exits_are_booked_as_sales() -> None:
    r = engine.run(config("momentum"), _history(), momentum)
    sold = [t for t in r.trade_list if t.proceeds_usd > 0]
    assert sold and sum(s.exits for s in r.slots.values()) > 0
    for t in sold:
        assert t.pnl_usd == pytest.approx(t.proceeds_usd + t.payout_usd - t.cost_usd, abs=1e-6)


def test_a_window_resolves_up_when_it_closes_at_or_above_its_open() -> None:
    c = [Candle(t, 10.0, 10.0, 10.0, 10.0, 1.0, True) for t in range(0, 300_000, 1000)]
    h = AssetHistory("x", c)
    assert h.resolve(0, 300_000) is True  # equal: Up
    c[-1] = Candle(299_000, 10.0, 10.0, 9.0, 9.99, 1.0, True)
    assert AssetHistory("x", c).resolve(0, 300_000) is False
    assert AssetHistory("x", c).resolve(0, 600_000) is None  # no candle at its end


def test_a_windows_first_candle_is_its_open_once_it_has_closed() -> None:
    c = [Candle(1000, 10.0, 12.0, 9.0, 11.0, 1.0, True)]
    h = AssetHistory("x", c)
    assert h.window_open(1000, 1000) is None  # forming at the tick: the live feed has not written it
    assert h.window_open(1000, 2000) == c[0]
    assert h.closed_by(1999) == 0 and h.closed_by(2000) == 1


def test_the_model_book_quotes_the_spread_around_the_fair_value_on_the_tick() -> None:
    assert ladder(0.5, 0.02, 3) == ([49, 48, 47], [51, 52, 53])
    up, down = model_books(0.7, FillParams(spread=0.04, levels=2, depth_shares=100, depth_step_shares=50))
    assert up.asks == ((0.72, 100.0), (0.73, 150.0)) and up.bids == ((0.68, 100.0), (0.67, 150.0))
    assert down.best_ask == 0.32 and down.best_bid == 0.28


def test_orders_take_the_levels_best_first_up_to_their_limit() -> None:
    book = BookSide(bids=((0.48, 10.0), (0.47, 10.0)), asks=((0.5, 10.0), (0.51, 10.0), (0.6, 100.0)))
    assert match(book, True, 0.51, 15_000_000) == Match(15_000_000, 5_000_000 + 2_550_000)
    assert match(book, True, 0.51, 30_000_000).shares_micro == 20_000_000  # what is there
    assert match(book, False, 0.48, 15_000_000).shares_micro == 10_000_000
    assert match(book, True, 0.49, 1_000_000).shares_micro == 0
    # A resting order fills at its own price (the maker's).
    assert match(book, True, 0.55, 10_000_000, at_price=0.55).usd_micro == 5_500_000


def test_recorded_books_are_used_at_most_their_age_after_they_were_seen() -> None:
    b = BookSide(asks=((0.4, 10.0),))
    rec = RecordedBooks([("btc", "5m", 100, 10_000, b, None)], max_age_ms=5000)
    assert rec.books("btc", "5m", 100, 10_000) == (b, None)
    assert rec.books("btc", "5m", 100, 15_000) == (b, None)
    assert rec.books("btc", "5m", 100, 15_001) is None
    assert rec.books("btc", "5m", 100, 9_999) is None  # never a book from after the tick
    assert rec.books("btc", "15m", 100, 10_000) is None


def _one_shot(answer_for: object, exits: bool = False, api: int = 2) -> types.SimpleNamespace:
    """A strategy that answers `answer_for(inp)` (awake from each window's start)."""
    return types.SimpleNamespace(evaluate=answer_for, API=api, EXITS=exits)


def _cfg(**kw: object) -> object:
    return config("probe", hours=1.0, assets=("btc",), **kw)


def test_a_fok_the_book_cannot_fill_is_unfilled_and_the_window_counts_as_entered() -> None:
    calls: list[int] = []

    def evaluate(inp: SlotInput) -> Buy | Pass:
        calls.append(inp.now_ms)
        if inp.entered:
            return Pass(reason="in")
        # 5,000 shares at the best ask: more than the model book's five levels hold.
        return Buy(side="up", limit_price=inp.up_ask or 0.5, stake_usd=20.0, reason="big")

    fp = FillParams(depth_shares=1.0, depth_step_shares=0.0)
    r = engine.run(_cfg(fills=fp), {"btc": _history()["btc"]}, _one_shot(evaluate))
    s = r.slots["btc-5m"]
    assert s.entries == s.unfilled == 12 and s.trades == 0  # one a window, none filled
    assert r.trades == 0 and r.end_cash_usd == r.start_cash_usd


def test_a_gtc_rests_and_fills_later_as_the_maker_without_a_fee() -> None:
    def evaluate(inp: SlotInput) -> Buy | None:
        if inp.entered or inp.up_book is None:
            return None
        # A bid a cent under the best ask: rests until the asks come down to it (or the
        # window ends and the rest is cancelled).
        bid = round((inp.up_book.best_ask or 0.5) - 0.01, 2)
        return Buy(side="up", limit_price=bid, stake_usd=5.0, reason="rest", order_type="GTC")

    r = engine.run(_cfg(), {"btc": _history()["btc"]}, _one_shot(evaluate))
    filled = [t for t in r.trade_list if t.slot == "btc-15m"]
    assert filled, "some resting bids filled"
    assert all(t.fees_usd == 0 for t in filled)  # made, not taken: no fee on a 15m market
    assert r.slots["btc-15m"].entries == 4


def test_taker_fees_follow_the_venue_formula() -> None:
    def evaluate(inp: SlotInput) -> Buy | None:
        if inp.entered or inp.up_ask is None:
            return None
        return Buy(side="up", limit_price=inp.up_ask, stake_usd=5.0, reason="take")

    r = engine.run(_cfg(), {"btc": _history()["btc"]}, _one_shot(evaluate))
    t = next(t for t in r.trade_list if t.slot == "btc-15m")
    price = (t.cost_usd - t.fees_usd) / t.shares
    assert t.fees_usd == pytest.approx(taker_fee_usd(t.shares, price, 0.072, 1.0), abs=1e-6)


def test_the_daily_loss_limit_halts_until_the_next_utc_day() -> None:
    def evaluate(inp: SlotInput) -> Buy | None:
        if inp.entered or inp.up_ask is None:
            return None
        return Buy(side="up", limit_price=0.99, stake_usd=5.0, reason="always")  # loses when Down

    h = history(assets=("btc",), hours=26.0)
    cfg = config("probe", hours=26.0, assets=("btc",), daily_loss_limit_usd=10.0)
    r = engine.run(cfg, h, _one_shot(evaluate))
    assert r.halts >= 1
    days = {(t.opened_ms // 1000 - DAY0_S) // 86_400 for t in r.trade_list}
    assert days == {0, 1}  # it traded again the next day


def test_an_exit_sells_what_is_held_and_books_its_pnl() -> None:
    def evaluate(inp: SlotInput) -> Buy | Exit | None:
        if inp.position is not None:
            bid = inp.up_book.best_bid if inp.up_book else None
            return Exit(limit_price=bid, reason="out") if bid else None
        if inp.entered or inp.up_ask is None:
            return None
        return Buy(side="up", limit_price=inp.up_ask, stake_usd=5.0, reason="in")

    r = engine.run(_cfg(), {"btc": _history()["btc"]}, _one_shot(evaluate, exits=True))
    assert r.trade_list and all(t.end == "sold" for t in r.trade_list)
    for t in r.trade_list:
        assert t.payout_usd == 0 and t.pnl_usd == pytest.approx(t.proceeds_usd - t.cost_usd, abs=1e-6)
    # Bought at the ask, sold at the bid a tick later: the spread, lost on the whole.
    assert sum(t.pnl_usd for t in r.trade_list) < 0


def test_a_backtest_without_candles_of_a_slots_asset_says_which() -> None:
    with pytest.raises(BacktestError, match="no candles of eth"):
        engine.run(config("snipe", assets=("btc", "eth")), {"btc": _history()["btc"]}, snipe)


def test_the_model_makers_noise_is_seeded_the_same_noise_for_the_same_inputs() -> None:
    noisy = config("snipe", fills=FillParams(noise=0.02))
    a = engine.run(noisy, _history(), snipe)
    _same(a, engine.run(noisy, _history(), snipe))
    quiet = engine.run(config("snipe"), _history(), snipe)
    assert msgspec.to_builtins(a.trade_list) != msgspec.to_builtins(quiet.trade_list)


def test_candles_that_are_not_klines_are_left_out_and_counted() -> None:
    good = [Candle(t, 10.0, 10.5, 9.5, 10.0, 1.0, True) for t in (3000, 1000, 2000)]
    junk = [Candle(4000, 10.0, 9.0, 9.5, 10.0, 1.0, True), Candle(5000, float("nan"), 1, 1, 1, 1, True)]
    h = AssetHistory("x", [*good, *junk, Candle(2000, 10.0, 11.0, 9.0, 10.2, 1.0, True)])
    assert h.refused == 2
    # Sorted, and the last given of an open time wins.
    assert list(h.open_ms) == [1000, 2000, 3000] and list(h.closes) == [10.0, 10.2, 10.0]


def test_the_model_maker_reads_the_price_its_lag_ago_between_whole_seconds() -> None:
    from kernel.backtest.fills import PriceSeries

    s = PriceSeries([0, 1000, 2000], [10.0, 11.0, 13.0])  # closes at 1 s, 2 s, 3 s
    i = s.last_closed(2500)
    assert i == 1 and s.price_at(i, 2500, 3000) == 12.0  # half way from 11 to 13
    assert s.price_at(i, 2500, 2999) == 11.0  # the next close is not known yet at 2.999 s
    assert s.price_at(s.last_closed(3000), 3000, 3000) == 13.0  # no lag: the last close


def test_the_sims_maker_quotes_with_the_kernels_ladder_on_the_same_tick() -> None:
    """sim/book.py quotes with kernel.backtest.fills.ladder: one rule for paper and backtest."""
    from kernel.backtest import fills
    from sim import book
    from sim.markets import Window

    assert (fills.TICKS_PER_UNIT, fills.MIN_TICK, fills.MAX_TICK) == (
        book.TICKS_PER_UNIT,
        book.MIN_TICK,
        book.MAX_TICK,
    )

    class Fair:
        def fair_up(self, *args: object) -> float:
            return 0.537

    w = Window("s", "btc", "5m", 0, 300, "c", "u", "d")
    params = book.BookParams(spread=0.02, levels=3, noise=0.0)
    bids, asks = book.book(Fair(), w, "u", 100_000, params, 1)  # type: ignore[arg-type]
    assert (
        ([t for t, _ in bids], [t for t, _ in asks])
        == fills.ladder(0.537, 0.02, 3)
        == ([52, 51, 50], [55, 56, 57])
    )

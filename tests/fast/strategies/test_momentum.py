"""momentum on plain inputs: entries on a move measured on bars, exits on the bid."""

from __future__ import annotations

import random

import pytest

from kernel.strategy_api import MAX_EXIT_LEGS, Bar, BookSide, Buy, Exit, Holding, Pass, SlotInput
from worker.strategies import momentum

START = 1_700_000_100_000  # a window's start
WINDOW_MS = 900_000  # 15 minutes
BAR_MS = 15_000


def bars(*closes: float, first_open: float = 100.0) -> tuple[Bar, ...]:
    """15 s bars ending before START + 120 s, each opening at the previous close."""
    out = []
    prev = first_open
    t0 = START + 120_000 - BAR_MS * len(closes)
    for i, c in enumerate(closes):
        out.append(Bar(t0 + i * BAR_MS, prev, max(prev, c), min(prev, c), c, 1.0))
        prev = c
    return tuple(out)


RISING = bars(100.02, 100.05, 100.04, 100.08, 100.1, 100.13, 100.15, 100.2)  # +20 bps, 7/8 up
FALLING = bars(99.98, 99.95, 99.96, 99.92, 99.9, 99.87, 99.85, 99.8)  # -20 bps, 7/8 down
FLAT = bars(*([100.0] * 8))


def book(bid: float | None, ask: float | None, depth: float = 100.0) -> BookSide:
    return BookSide(
        bids=((bid, depth),) if bid is not None else (),
        asks=((ask, depth),) if ask is not None else (),
    )


def inp(
    *,
    at_s: float = 120.0,
    series: tuple[Bar, ...] = RISING,
    up: BookSide | None = None,
    down: BookSide | None = None,
    position: Holding | None = None,
    entered: bool = False,
    window_ms: int = WINDOW_MS,
    **params: float,
) -> SlotInput:
    return SlotInput(
        slot_id="btc-mom",
        asset="btc",
        timeframe="15m",
        now_ms=START + int(at_s * 1000),
        window_start_ms=START,
        window_end_ms=START + window_ms,
        open_price=100.0,
        last_price=series[-1].close if series else 100.0,
        closes=(100.0,) * 60,
        stake_usd=5.0,
        params=params,
        api=2,
        strategy="momentum",
        bars={"15s": series},
        up_book=book(0.53, 0.55) if up is None else up,
        down_book=book(0.45, 0.47) if down is None else down,
        position=position,
        entered=entered or position is not None,
        cash_usd=100.0,
        exposure_room_usd=50.0,
        open_ref_price=100.0,
    )


def holding(side: str = "up", avg: float = 0.50, shares: float = 10.0, **kw) -> Holding:
    return Holding(
        side=side,  # type: ignore[arg-type]
        shares=shares,
        cost_usd=avg * shares,
        avg_price=avg,
        opened_ms=START + 60_000,
        **kw,
    )


# --- entries ------------------------------------------------------------------------------


def test_a_steady_rise_buys_up_at_its_ask_fill_or_kill():
    d = momentum.evaluate(inp())
    assert isinstance(d, Buy)
    assert (d.side, d.limit_price, d.stake_usd, d.order_type) == ("up", 0.55, 5.0, "FOK")
    assert "+20.0 bps" in d.reason and "88%" in d.reason


def test_a_steady_fall_buys_down_at_its_ask():
    d = momentum.evaluate(inp(series=FALLING))
    assert isinstance(d, Buy) and (d.side, d.limit_price) == ("down", 0.47)
    assert d.p_up == pytest.approx(0.53)  # the market's view of up, read off the down ask


def test_a_flat_price_passes_and_says_how_little_it_moved():
    d = momentum.evaluate(inp(series=FLAT))
    assert isinstance(d, Pass) and "+0.0 bps" in d.reason and "under 10" in d.reason


def test_the_move_threshold_is_a_parameter():
    assert isinstance(momentum.evaluate(inp(min_move_bps=25.0)), Pass)
    assert isinstance(momentum.evaluate(inp(min_move_bps=15.0)), Buy)


def test_a_move_made_by_one_jump_is_not_momentum():
    # +20 bps, but in one bar of eight: 1/8 agree.
    jump = bars(100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.2)
    d = momentum.evaluate(inp(series=jump))
    assert isinstance(d, Pass) and "only 12% of 8 bars agree" in d.reason
    assert isinstance(momentum.evaluate(inp(series=jump, min_agree=0.5)), Pass)


def test_only_the_last_lookback_bars_count():
    # An old fall, then four rising bars: over 4 bars it is a rise, over 8 a fall.
    series = bars(99.9, 99.8, 99.7, 99.6, 99.65, 99.7, 99.75, 99.8)
    assert isinstance(momentum.evaluate(inp(series=series, lookback=4)), Buy)
    d = momentum.evaluate(inp(series=series, lookback=8))
    assert not isinstance(d, Buy) or d.side == "down"


def test_too_few_bars_pass_with_how_many_there_are():
    d = momentum.evaluate(inp(series=RISING[-3:]))
    assert isinstance(d, Pass) and d.reason == "3 bars of 15s, 8 needed"


def test_a_version_1_input_without_bars_passes():
    v1 = SlotInput(
        slot_id="btc-15m",
        asset="btc",
        timeframe="15m",
        now_ms=START + 60_000,
        window_start_ms=START,
        window_end_ms=START + WINDOW_MS,
        open_price=100.0,
        last_price=100.3,
        closes=(100.0,) * 60,
        stake_usd=5.0,
        params={},
        up_ask=0.55,
        down_ask=0.47,
    )
    assert isinstance(momentum.evaluate(v1), Pass)
    assert momentum.needs_quotes(v1) is False


def test_without_a_book_the_version_1_asks_are_used():
    i = inp()
    d = momentum.evaluate(
        SlotInput(**{**{f: getattr(i, f) for f in i.__struct_fields__}, "up_book": None, "up_ask": 0.6})
    )
    assert isinstance(d, Buy) and d.limit_price == 0.6


@pytest.mark.parametrize("ask", [0.05, 0.8, 0.99])
def test_an_ask_outside_the_price_range_is_not_bought(ask):
    d = momentum.evaluate(inp(up=book(ask - 0.02, ask)))
    assert isinstance(d, Pass) and f"up ask {ask:.2f} outside 0.10..0.75" == d.reason


def test_no_ask_no_entry():
    d = momentum.evaluate(inp(up=book(0.5, None)))
    assert isinstance(d, Pass) and d.reason == "no ask for up"


def test_a_wide_spread_is_not_bought():
    d = momentum.evaluate(inp(up=book(0.40, 0.55)))
    assert isinstance(d, Pass) and "spread 0.15 over 0.06" in d.reason
    assert isinstance(momentum.evaluate(inp(up=book(0.40, 0.55), max_spread=0.2)), Buy)


def test_a_thin_best_ask_is_bought_through_to_the_level_that_holds_the_stake():
    # 5 USD at 0.55 is 9.09 shares: 4 at 0.55 are not enough, 4 + 6 at 0.56 are.
    asks = BookSide(bids=((0.53, 50.0),), asks=((0.55, 4.0), (0.56, 6.0), (0.60, 100.0)))
    d = momentum.evaluate(inp(up=asks))
    assert isinstance(d, Buy) and d.limit_price == 0.56 and "buy up at 0.56" in d.reason


def test_asks_too_thin_within_the_slippage_pass():
    asks = BookSide(bids=((0.53, 50.0),), asks=((0.55, 4.0), (0.60, 100.0)))
    d = momentum.evaluate(inp(up=asks))
    assert isinstance(d, Pass) and d.reason == "up asks up to 0.57 hold less than 5 USD"
    d = momentum.evaluate(inp(up=asks, entry_slippage=0.05))
    assert isinstance(d, Buy) and d.limit_price == 0.60


def test_the_slippage_never_pays_over_max_price():
    asks = BookSide(bids=((0.73, 50.0),), asks=((0.74, 1.0), (0.76, 100.0)))
    assert isinstance(momentum.evaluate(inp(up=asks)), Pass)


def test_buy_price_for():
    asks = ((0.5, 2.0), (0.52, 10.0))
    assert momentum.buy_price_for(asks, 1.0, 0.6) == 0.5  # 2 shares at 0.5 hold 1 USD
    assert momentum.buy_price_for(asks, 2.0, 0.6) == 0.52
    assert momentum.buy_price_for(asks, 2.0, 0.51) is None
    assert momentum.buy_price_for(asks, 100.0, 0.6) is None
    assert momentum.buy_price_for((), 1.0, 0.6) is None


def test_no_entry_in_the_windows_last_minute():
    assert isinstance(momentum.evaluate(inp(at_s=839)), Buy)
    d = momentum.evaluate(inp(at_s=841))
    assert isinstance(d, Pass) and "no entries in the last 60s" in d.reason


def test_a_short_window_keeps_its_first_two_thirds_for_entries():
    # A 1-minute window: the last 20 s (a third) are closed to entries, not the whole minute.
    assert isinstance(momentum.evaluate(inp(at_s=39, window_ms=60_000)), Buy)
    assert isinstance(momentum.evaluate(inp(at_s=41, window_ms=60_000)), Pass)


def test_once_entered_it_does_not_enter_again():
    d = momentum.evaluate(inp(entered=True))
    assert isinstance(d, Pass) and d.reason == "entered this window already"
    assert momentum.needs_quotes(inp(entered=True)) is False


# --- exits --------------------------------------------------------------------------------


def test_a_position_below_its_targets_is_held_and_the_reason_says_where_they_are():
    d = momentum.evaluate(inp(position=holding(avg=0.50), up=book(0.53, 0.55)))
    assert isinstance(d, Pass)
    assert d.reason == "holding: up bid 0.53 vs cost 0.500, take profit at 0.58, stop at 0.42"


def test_take_profit_sells_everything_at_the_target_or_better():
    d = momentum.evaluate(inp(position=holding(avg=0.50), up=book(0.60, 0.62)))
    assert isinstance(d, Exit)
    assert (d.limit_price, d.shares, d.order_type) == (0.58, 0.0, "FAK")
    assert d.reason.startswith("take profit")


def test_a_take_profit_target_between_ticks_is_rounded_up_not_down():
    # cost 0.503 + 0.08 = 0.583: selling at 0.58 would be under the target.
    d = momentum.evaluate(inp(position=holding(avg=0.503), up=book(0.59, 0.61)))
    assert isinstance(d, Exit) and d.limit_price == 0.59


def test_stop_loss_sells_into_the_bids_as_deep_as_the_shares_need():
    bids = BookSide(bids=((0.41, 4.0), (0.40, 4.0), (0.39, 10.0), (0.30, 100.0)), asks=((0.43, 50.0),))
    d = momentum.evaluate(inp(position=holding(avg=0.50, shares=10.0), up=bids))
    assert isinstance(d, Exit) and d.reason.startswith("stop loss")
    assert d.limit_price == 0.39  # 4 + 4 + 10 >= 10 shares


def test_a_stop_never_sells_further_than_its_slippage_under_the_best_bid():
    bids = BookSide(bids=((0.41, 1.0), (0.30, 100.0)), asks=())
    d = momentum.evaluate(inp(position=holding(avg=0.50, shares=10.0), up=bids))
    assert isinstance(d, Exit) and d.limit_price == 0.38  # 0.41 - 0.03; the rest is another leg
    d = momentum.evaluate(inp(position=holding(avg=0.50, shares=10.0), up=bids, stop_slippage=0.2))
    assert isinstance(d, Exit) and d.limit_price == 0.30


def test_a_down_position_is_judged_on_the_down_book():
    d = momentum.evaluate(inp(position=holding("down", avg=0.40), up=book(0.10, 0.12), down=book(0.49, 0.51)))
    assert isinstance(d, Exit) and d.limit_price == 0.48 and "down bid 0.49" in d.reason


def test_no_bid_no_exit():
    d = momentum.evaluate(inp(position=holding(avg=0.5), up=book(None, 0.6)))
    assert isinstance(d, Pass) and "no bid to sell into" in d.reason


def test_an_exit_still_working_is_not_doubled():
    d = momentum.evaluate(inp(position=holding(avg=0.5, exit_pending=True), up=book(0.7, 0.72)))
    assert isinstance(d, Pass) and d.reason == "an exit order is still working"


def test_when_the_exit_legs_are_used_up_the_rest_is_held():
    pos = holding(avg=0.5, exits=MAX_EXIT_LEGS)
    d = momentum.evaluate(inp(position=pos, up=book(0.7, 0.72)))
    assert isinstance(d, Pass) and "to resolution" in d.reason


def test_after_a_partial_exit_what_is_left_is_sold_as_the_next_leg():
    d = momentum.evaluate(inp(position=holding(avg=0.5, shares=3.0, exits=1), up=book(0.6, 0.62)))
    assert isinstance(d, Exit) and d.shares == 0.0


def test_flat_sells_what_is_left_at_the_end_only_when_asked():
    late = {"at_s": 880.0, "up": book(0.52, 0.54)}
    assert isinstance(momentum.evaluate(inp(position=holding(avg=0.5), **late)), Pass)
    d = momentum.evaluate(inp(position=holding(avg=0.5), flat_s=30.0, **late))
    assert isinstance(d, Exit) and d.reason.startswith("20s left, flat") and d.limit_price == 0.52
    assert isinstance(momentum.evaluate(inp(position=holding(avg=0.5), flat_s=10.0, **late)), Pass)


def test_a_held_slot_always_wants_quotes():
    assert momentum.needs_quotes(inp(position=holding(), at_s=899.0)) is True


# --- the helpers, the declarations ----------------------------------------------------------


def test_sell_price_walks_the_bids_down_to_the_floor():
    bids = ((0.5, 2.0), (0.49, 3.0), (0.45, 10.0))
    assert momentum.sell_price_for(bids, 2.0, 0.4) == 0.5
    assert momentum.sell_price_for(bids, 4.0, 0.4) == 0.49
    assert momentum.sell_price_for(bids, 15.0, 0.4) == 0.45
    assert momentum.sell_price_for(bids, 100.0, 0.4) == 0.4  # the book runs out: the floor
    assert momentum.sell_price_for(bids, 4.0, 0.5) == 0.5  # the floor stops it
    assert momentum.sell_price_for((), 1.0, 0.3) == 0.3


def test_move_is_measured_from_the_first_bars_open_to_the_last_close():
    bps, up_share = momentum.move(RISING, 8)
    assert bps == pytest.approx(20.0) and up_share == 7 / 8
    bps, _ = momentum.move(RISING, 2)
    assert bps == pytest.approx((100.2 / 100.13 - 1) * 1e4)


def test_check_params():
    ok = dict(momentum.DEFAULTS)
    assert momentum.check_params(ok) == ""
    assert "below max_price" in momentum.check_params({**ok, "min_price": 0.8})
    assert "whole number" in momentum.check_params({**ok, "lookback": 4.5})


def test_the_lookback_bound_fits_in_the_bars_declared():
    assert momentum.PARAM_BOUNDS["lookback"][1] <= momentum.CANDLES[momentum.INTERVAL]


def test_random_inputs_give_orders_the_kernel_accepts():
    """Whatever the book and the path, an order's price is a tick in (0, 1) and an entry is
    only made when the books are asked for (needs_quotes says yes)."""
    rng = random.Random(25)
    for _ in range(3000):
        closes = [100.0]
        for _ in range(rng.randint(0, 20)):
            closes.append(closes[-1] * (1 + rng.gauss(0, 0.001)))
        series = bars(*closes[1:]) if len(closes) > 1 else ()
        bid = round(rng.uniform(0.01, 0.98), 2)
        ask = min(0.99, round(bid + rng.choice((0.01, 0.02, 0.1)), 2))
        side = rng.choice(("up", "down"))
        pos = holding(side, avg=round(rng.uniform(0.05, 0.95), 3), shares=rng.uniform(1, 50))
        i = inp(
            at_s=rng.uniform(0, 900),
            series=series,
            up=book(bid, ask, rng.uniform(0.1, 20)),
            down=book(round(1 - ask, 2), round(1 - bid, 2)),
            position=pos if rng.random() < 0.5 else None,
        )
        d = momentum.evaluate(i)
        assert isinstance(d, Buy | Exit | Pass)
        if isinstance(d, Buy | Exit):
            assert 0.01 <= d.limit_price <= 0.99 and round(d.limit_price, 2) == d.limit_price, d
            assert momentum.needs_quotes(i), d
        if isinstance(d, Buy):
            assert i.position is None and d.stake_usd == 5.0
        assert momentum.evaluate(i) == d  # the same input, the same answer

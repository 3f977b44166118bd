"""What the kernel makes of a strategy's answer before any order (kernel/decide.py): plain
inputs, no Redis."""

from __future__ import annotations

from fractions import Fraction

import msgspec
import pytest

from kernel.decide import ENTERED_ALREADY, NO_POSITION, answer_problem, exit_size, record
from kernel.executor import order_size
from kernel.snapshot import SlotRef
from kernel.strategy_api import GTD_MIN_AHEAD_MS, Buy, Exit, Holding, Pass, SlotInput
from state.slots import _JSON
from tests.factories import position

NOW = 1_700_000_000_000
END = NOW + 900_000

INP = SlotInput(
    slot_id="btc-15m",
    asset="btc",
    timeframe="15m",
    now_ms=NOW,
    window_start_ms=NOW - 60_000,
    window_end_ms=END,
    open_price=1.0,
    last_price=1.0,
    closes=(1.0,),
    stake_usd=5.0,
    params={},
)
# The same input while the slot holds 9.09 shares (tests.factories.position).
HELD = msgspec.structs.replace(
    INP, entered=True, position=Holding(side="up", shares=9.09, cost_usd=5.0, avg_price=0.55, opened_ms=NOW)
)


@pytest.mark.parametrize(
    ("order_type", "expires_ms", "problem"),
    [
        ("FOK", 0, ""),
        ("FAK", 0, ""),
        ("GTC", 0, ""),
        ("GTD", NOW + GTD_MIN_AHEAD_MS, ""),
        ("GTD", END, ""),
        ("GTD", NOW + GTD_MIN_AHEAD_MS - 1, "ahead"),
        ("GTD", 0, "ahead"),
        ("GTD", END + 1, "after the window's end"),
        ("FOK", END, "for GTD orders only"),
        ("IOC", 0, "not one of FOK, FAK, GTC, GTD"),
    ],
)
def test_order_types_and_gtd_expiries(order_type, expires_ms, problem):
    buy = Buy(
        side="up", limit_price=0.5, stake_usd=5.0, reason="r", order_type=order_type, expires_ms=expires_ms
    )
    got = answer_problem(buy, INP, None, False)
    assert (problem in got) if problem else got == ""


@pytest.mark.parametrize(
    ("shares", "held_micros", "size"),
    [(0.0, 9_090_000, 9.09), (0.0, 9_099_999, 9.09), (5.0, 9_090_000, 5.0), (0.29, 9_090_000, 0.29),
     (100.0, 9_090_000, 9.09), (0.004, 9_090_000, 0.0), (0.0, 9_999, 0.0), (1e308, 9_090_000, 9.09)],
)  # fmt: skip
def test_an_exit_sells_what_it_asks_never_more_than_held_down_to_a_hundredth(shares, held_micros, size):
    assert exit_size(shares, held_micros) == size


def test_answers_the_kernel_refuses_and_why():
    held = position()
    buy = Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="r")
    sell = Exit(limit_price=0.5, reason="r")
    assert answer_problem(None, INP, None, False) == ""
    assert answer_problem(Pass(reason="wait"), HELD, held, True) == ""
    assert answer_problem(buy, INP, None, False) == ""
    assert answer_problem(buy, HELD, held, True) == ENTERED_ALREADY
    assert answer_problem(sell, HELD, held, True) == ""
    assert answer_problem(sell, INP, None, True) == NO_POSITION
    assert "strictly between 0 and 1" in answer_problem(Exit(limit_price=1.0, reason="r"), HELD, held, True)
    assert "strictly between 0 and 1" in answer_problem(
        Buy(side="up", limit_price=float("nan"), stake_usd=5.0, reason="r"), INP, None, False
    )
    assert ">= 0" in answer_problem(Exit(limit_price=0.5, reason="r", shares=-1.0), HELD, held, True)
    assert "less than 0.01 share" in answer_problem(
        Exit(limit_price=0.5, reason="r", shares=0.001), HELD, held, True
    )
    assert "side 'left' is not" in answer_problem(
        Buy(side="left", limit_price=0.5, stake_usd=5.0, reason="r"), INP, None, False
    )  # type: ignore[arg-type]
    assert "expected None or a kernel.strategy_api Buy" in answer_problem({"side": "up"}, INP, None, False)


def test_a_huge_exit_or_a_tiny_price_sizes_to_what_is_held_or_nothing_never_raises():
    # Raised out of the tick, either stopped every slot's orders at every tick.
    assert answer_problem(Exit(limit_price=0.5, reason="r", shares=1e308), HELD, position(), True) == ""
    assert order_size(5.0, 1e-320, 5.0) == 0.0


def test_a_refused_answer_with_junk_numbers_is_still_a_record_the_tick_can_write():
    ref = SlotRef("btc-15m", "btc", "15m", NOW // 1000 - 60, END // 1000)
    junk = Buy(side="up", limit_price=Fraction(1, 2), stake_usd=Fraction(5), reason="r", p_up=Fraction(1, 3))  # type: ignore[arg-type]
    why = answer_problem(junk, INP, None, False)
    assert "strictly between 0 and 1" in why
    _JSON.encode(record(ref, 1, NOW, INP, junk, f"refused: {why}"))
    _JSON.encode(record(ref, 1, NOW, HELD, Exit(limit_price=Fraction(1, 2), reason="r"), "refused"))  # type: ignore[arg-type]

"""What the kernel makes of a strategy's answer for one slot, before any order: the rules an
answer must obey to become an intent (prices, order types and GTD expiries, one entry per
window, exits only of a position held), the size of an exit, the account the risk checks go
by, and the slot's last-decision record (keys.decisions()). Pure functions of their inputs.
"""

from __future__ import annotations

import math
from typing import Any

from kernel.snapshot import SlotRef
from kernel.strategy_api import GTD_MIN_AHEAD_MS, ORDER_TYPES, Buy, Exit, Pass, SlotInput
from state.structs import (
    MICROS,
    DecisionRecord,
    EntryRecord,
    ExitRecord,
    PassRecord,
    Position,
    StrategyErrorRecord,
)

ENTERED_ALREADY = "entered already: one entry per slot-window"
NO_POSITION = "no position to exit in this window"


def order_problem(order_type: Any, expires_ms: Any, now_ms: int, window_end_ms: int) -> str:
    """Why an order type (and a GTD expiry) cannot be posted now ("" when it can): a GTD
    order must expire at least GTD_MIN_AHEAD_MS ahead (the venue refuses sooner) and no later
    than the window's end (nothing is traded past it)."""
    if order_type not in ORDER_TYPES:
        return f"order type {order_type!r} is not one of {', '.join(ORDER_TYPES)}"
    if order_type != "GTD":
        return ""
    if not isinstance(expires_ms, int) or expires_ms < now_ms + GTD_MIN_AHEAD_MS:
        return f"GTD expires_ms {expires_ms!r} is less than {GTD_MIN_AHEAD_MS} ms ahead of {now_ms}"
    if expires_ms > window_end_ms:
        return f"GTD expires_ms {expires_ms} is after the window's end {window_end_ms}"
    return ""


def _price_problem(price: Any) -> str:
    if not isinstance(price, int | float) or not math.isfinite(price) or not 0 < price < 1:
        return f"limit_price {price!r} is not in (0, 1)"
    return ""


def answer_problem(answer: Any, inp: SlotInput, held: Position | None, entered: bool) -> str:
    """Why this answer cannot become an intent ("" when it can, or when it is a pass); the
    risk checks of an entry come after (kernel/risk.py)."""
    if answer is None or isinstance(answer, Pass):
        return ""
    if isinstance(answer, Buy):
        if entered:
            return ENTERED_ALREADY
        if answer.side not in ("up", "down"):
            return f"side {answer.side!r} is not up or down"
        return _price_problem(answer.limit_price) or order_problem(
            answer.order_type, answer.expires_ms, inp.now_ms, inp.window_end_ms
        )
    if isinstance(answer, Exit):
        if held is None:
            return NO_POSITION
        shares = answer.shares
        if not isinstance(shares, int | float) or not math.isfinite(shares) or shares < 0:
            return f"shares {shares!r} is not a number >= 0"
        if exit_size(shares, held.shares_micros) <= 0:
            return f"less than 0.01 share to sell ({shares:g} asked, {held.shares_micros / MICROS:g} held)"
        return _price_problem(answer.limit_price) or order_problem(
            answer.order_type, answer.expires_ms, inp.now_ms, inp.window_end_ms
        )
    return f"answer {type(answer).__name__} is not a Buy, Exit, Pass or None"


def exit_size(shares: float, held_micros: int) -> float:
    """Shares an exit sells: what it asks (0: all held), never more than held, rounded down
    to the venue's 0.01 share step (in integer micro-shares: no float floor surprises)."""
    want = held_micros if shares <= 0 else min(round(shares * MICROS), held_micros)
    return (want // 10_000) / 100


def record(ref: SlotRef, tick: int, now_ms: int, inp: SlotInput, answer: Any, outcome: str) -> DecisionRecord:
    """The slot's last decision as the dashboard and `baton slots` read it (keys.decisions()):
    an entry's, an exit's, or a pass's (with the asks it saw); a refusal is the entry's or
    exit's record with "refused: <why>" as its outcome (a risk refusal's says "risk refused")."""
    if isinstance(answer, Buy):
        return EntryRecord(
            tick=tick,
            at_ms=now_ms,
            window_start_s=ref.window_start_s,
            side=str(answer.side),
            price=answer.limit_price,
            stake_usd=answer.stake_usd,
            p_up=round(answer.p_up, 4) if isinstance(answer.p_up, int | float) else 0.0,
            reason=str(answer.reason)[:200],
            outcome=outcome,
        )
    if isinstance(answer, Exit):
        held = inp.position
        return ExitRecord(
            tick=tick,
            at_ms=now_ms,
            window_start_s=ref.window_start_s,
            action="sell",
            side=held.side if held is not None else "",
            price=answer.limit_price,
            shares=answer.shares,
            order_type=str(answer.order_type),
            reason=str(answer.reason)[:200],
            outcome=outcome,
        )
    if isinstance(answer, BaseException) or outcome.startswith("refused"):
        return StrategyErrorRecord(
            tick=tick,
            at_ms=now_ms,
            window_start_s=ref.window_start_s,
            outcome="error",
            reason=(repr(answer) if isinstance(answer, BaseException) else outcome)[:200],
        )
    return PassRecord(
        tick=tick,
        at_ms=now_ms,
        window_start_s=ref.window_start_s,
        outcome="pass",
        up_ask=inp.up_ask,
        down_ask=inp.down_ask,
    )

"""The decision log's entries: one per evaluation of a slot (a buy, an exit, a pass, a refusal
or a strategy's exception), built from what the strategy saw and answered, so that a trader
can later read why each tick did what it did (`baton decisions`, the dashboard).

Pure: the kernel builds entries while it evaluates and appends them once per tick
(state/decisions.py `Store.append_decisions`).
"""

from __future__ import annotations

import math
from typing import Protocol

from kernel.strategy_api import Buy, Exit, Pass, SlotInput
from state.structs import DecisionAction, DecisionLogEntry

# A reason or an exception's repr is cut to this many characters: a strategy's message is for
# people, and a long one would be kept BATON_DECISION_LOG_LEN times per slot.
REASON_MAX = 200
NO_DECISION = "no decision"
ERROR = "error"

Answer = Buy | Exit | Pass | BaseException | None


class SlotWindow(Protocol):
    """What an entry needs of a slot: kernel/snapshot.py SlotRef has it."""

    @property
    def id(self) -> str: ...

    @property
    def window_start_s(self) -> int: ...


def entry(
    tick: int,
    ref: SlotWindow,
    at_ms: int,
    strategy: str,
    inp: SlotInput | None,
    answer: Answer,
    outcome: str = "",
    intent_id: str = "",
) -> DecisionLogEntry:
    """The log entry of one evaluation. `outcome` is what the kernel made of the answer
    ("intent", "refused: <why>", ...); an exception's is always "error" (action "pass", the
    reason its repr), since no order came of it. `inp` is None when the input could not be
    built (then no figures)."""
    action: DecisionAction = "pass"
    side = order_type = ""
    price = stake_usd = shares = 0.0
    if isinstance(answer, BaseException):
        reason, outcome = repr(answer), ERROR
    elif isinstance(answer, Buy):
        action, reason = "buy", answer.reason
        side, price, stake_usd, order_type = (
            answer.side,
            answer.limit_price,
            answer.stake_usd,
            answer.order_type,
        )
    elif isinstance(answer, Exit):
        action, reason, price, order_type = "sell", answer.reason, answer.limit_price, answer.order_type
        held = inp.position if inp is not None else None
        side = held.side if held is not None else ""
        # 0 asks for all that is held: the log says how many that was.
        shares = answer.shares or (held.shares if held is not None else 0.0)
    elif isinstance(answer, Pass):
        reason = answer.reason
    else:
        reason = NO_DECISION
    return DecisionLogEntry(
        slot=ref.id,
        at_ms=at_ms,
        tick=tick,
        window_start_s=ref.window_start_s,
        strategy=strategy,
        action=action,
        reason=_cut(reason),
        outcome=_cut(outcome),
        side=str(side),  # str(): a junk answer's must not break the log's encoding
        price=number(price),
        stake_usd=number(stake_usd),
        shares=number(shares),
        order_type=str(order_type),
        intent_id=intent_id,
        figures=figures(inp) if inp is not None else {},
    )


def figures(inp: SlotInput) -> dict[str, float]:
    """The input's key figures, those it has (a v1 input has no bids, holding or cash)."""
    out: dict[str, float] = {
        "last_price": inp.last_price,
        "open_price": inp.open_price,
        "remaining_s": round(inp.remaining_s, 3),
    }
    candidates: dict[str, float | None] = {
        "up_ask": inp.up_ask,
        "down_ask": inp.down_ask,
        "up_bid": inp.up_book.best_bid if inp.up_book is not None else None,
        "down_bid": inp.down_book.best_bid if inp.down_book is not None else None,
        "held_shares": inp.position.shares if inp.position is not None else None,
        # Filled in from version 2 on; a v1 input's 0.0 is "unknown", not "broke".
        "cash_usd": inp.cash_usd if inp.api >= 2 else None,
    }
    out.update({name: v for name, v in candidates.items() if v is not None})
    return {name: number(v) for name, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def number(v: object) -> float:
    """Six decimals (micro-dollars, micro-shares): enough, and a short field in Redis; a value
    that is not a finite number (a strategy's mistake) logs as 0 rather than break the JSON."""
    if type(v) is float:  # the common case, without the float() call
        return round(v, 6) if math.isfinite(v) else 0.0
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return round(f, 6) if math.isfinite(f) else 0.0


def _cut(text: str) -> str:
    text = str(text)
    return text if len(text) <= REASON_MAX else text[: REASON_MAX - 1] + "…"

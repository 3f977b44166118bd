"""What the kernel makes of a strategy's answer for one slot, before any order: whether it may
become an intent (the rules of kernel/strategy_check.py, one entry per window, exits only of
a position held), the size of an exit, and the slot's last-decision record
(keys.decisions()). Pure functions of their inputs; the account the risk checks go by is
kernel/inputs.py's.
"""

from __future__ import annotations

from typing import Any

from kernel.decision_log import number
from kernel.snapshot import SlotRef
from kernel.strategy_api import Buy, Exit, Pass, SlotInput
from kernel.strategy_check import decision_problem
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


def answer_problem(answer: Any, inp: SlotInput, held: Position | None, entered: bool) -> str:
    """Why this answer cannot become an intent ("" when it can, or when it is a pass): the
    rules the dry evaluation applies too (kernel/strategy_check.py decision_problem: prices,
    stakes, order types and GTD expiries; an exit of more than is held sells what is held),
    and what depends on the slot's window: one entry, exits only of a position held, at least
    0.01 share. The risk checks of an entry come after (kernel/risk.py)."""
    if answer is None:
        return ""
    if type(answer) is Buy:  # the common answer: the checks an entry needs, and no more
        return ENTERED_ALREADY if entered else decision_problem(answer, inp, sell_at_most_held=True)
    if isinstance(answer, Pass):
        return ""
    if isinstance(answer, Buy) and entered:
        return ENTERED_ALREADY
    if isinstance(answer, Exit) and held is None:
        return NO_POSITION
    why = decision_problem(answer, inp, sell_at_most_held=True)
    if why or not isinstance(answer, Exit) or held is None:
        return why
    if exit_size(answer.shares, held.shares_micros) <= 0:
        return f"less than 0.01 share to sell ({answer.shares:g} asked, {held.shares_micros / MICROS:g} held)"
    return ""


def exit_size(shares: float, held_micros: int) -> float:
    """Shares an exit sells: what it asks (0: all held), never more than held, rounded down
    to the venue's 0.01 share step (in integer micro-shares: no float floor surprises)."""
    # Compared before scaling: a huge `shares` (1e308) would overflow round() and raise out
    # of the tick, stopping every slot's orders, not just this one's.
    want = held_micros if shares <= 0 or shares * MICROS >= held_micros else round(shares * MICROS)
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
            # number(): a refused answer's junk (a Fraction, NaN) is recorded too, and a value
            # the encoder cannot write would raise out of the tick at every tick.
            price=number(answer.limit_price),
            stake_usd=number(answer.stake_usd),
            p_up=round(number(answer.p_up), 4),
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
            price=number(answer.limit_price),
            shares=number(answer.shares),
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


def record_outcome(answer: Any, outcome: str) -> str:
    """The last-decision record's outcome, as it read before the decision log: "entry",
    "risk refused: <why>", "exit"; other refusals as the log says them."""
    if outcome == "intent":
        return "exit" if isinstance(answer, Exit) else "entry"
    if outcome.startswith("refused: risk: "):
        return "risk refused: " + outcome.removeprefix("refused: risk: ")
    return outcome

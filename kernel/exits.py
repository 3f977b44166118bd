"""Exit legs: which slots sell this tick, the legs' numbers, and their intents.

A slot whose strategy declares EXITS and that holds an open position in its window is
evaluated every tick (kernel/entries.py), unless an exit leg of it still works at the venue.
Each sale is an intent of its own, `slot:window:exit-<n>` (n = legs committed in the
slot-window so far + 1, at most MAX_EXIT_LEGS), fenced and committed at most once as an
entry is; a leg that never reached the venue is failed by reconciliation and its number is
spent, never re-sent.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from kernel.decide import exit_size, record
from kernel.executor import expires_s
from kernel.snapshot import SlotRef, Snapshot
from kernel.strategy_api import MAX_EXIT_LEGS, Exit
from state.store import Store
from state.structs import DecisionRecord, Intent, Position, exit_leg


def exits_on(strategy: Any) -> bool:
    """The strategy declares EXITS = True (kernel/strategy_api.py)."""
    return getattr(strategy, "EXITS", False) is True


def exit_intent_id(ref: SlotRef, n: int) -> str:
    return f"{ref.id}:{ref.window_start_s}:{exit_leg(n)}"


class Holdings:
    """The tick's open positions by slot, and the slot-windows with an exit leg still open
    (not final) at the venue: built once per tick from the snapshot, only when there are any."""

    def __init__(self, snap: Snapshot) -> None:
        self.by_slot: dict[str, Position] = {}
        for p in snap.open_positions:
            if p.status == "open" and p.shares_micros > 0:
                got = self.by_slot.get(p.slot)
                if got is None or p.window_start_s > got.window_start_s:
                    self.by_slot[p.slot] = p
        self.exiting = {(i.slot, i.window_start_s) for i in snap.open_intents if i.is_exit}
        self._positions = snap.open_positions

    @cached_property
    def by_id(self) -> dict[str, Position]:
        """The open positions by id (what exit legs sell from): built when a tick posts."""
        return {p.id: p for p in self._positions}

    def held(self, ref: SlotRef) -> Position | None:
        """The slot's open position in its current window, if any (kernel/entries.py inlines
        this in its loop over every slot)."""
        p = self.by_slot.get(ref.id) if self.by_slot else None
        return p if p is not None and p.window_start_s == ref.window_start_s else None

    def exit_pending(self, ref: SlotRef) -> bool:
        return (ref.id, ref.window_start_s) in self.exiting


class ExitLegs:
    """How many exit legs each slot has committed in its current window: remembered as this
    worker commits them, asked of Redis (one HMGET for every slot that needs it) when not
    known (a new worker, a takeover). Only saves work: intent_commit.lua refuses a leg id
    committed before (a DUPLICATE: the memory then learns that leg, and the next tick tries
    the one after)."""

    def __init__(self) -> None:
        # slot id -> (window start, legs committed in it)
        self.known: dict[str, tuple[int, int]] = {}

    def count(self, ref: SlotRef) -> int | None:
        got = self.known.get(ref.id)
        return got[1] if got is not None and got[0] == ref.window_start_s else None

    async def counts(self, store: Store, refs: list[SlotRef]) -> dict[str, int]:
        """Legs committed per slot of `refs` in its window: one HMGET for those not known."""
        out: dict[str, int] = {}
        ask: list[SlotRef] = []
        for r in refs:
            n = self.count(r)
            if n is None:
                ask.append(r)
            else:
                out[r.id] = n
        if ask:
            ids = [exit_intent_id(r, n) for r in ask for n in range(1, MAX_EXIT_LEGS + 1)]
            there = await store.committed(ids)
            for k, r in enumerate(ask):
                legs = there[k * MAX_EXIT_LEGS : (k + 1) * MAX_EXIT_LEGS]
                n = max((j + 1 for j, x in enumerate(legs) if x), default=0)
                self.known[r.id] = (r.window_start_s, n)
                out[r.id] = n
        return out

    def committed(self, intent: Intent) -> None:
        """Redis holds this exit leg now (committed, or found committed before)."""
        n = int(intent.leg.rsplit("-", 1)[1])
        got = self.known.get(intent.slot)
        if got is None or got[0] != intent.window_start_s or got[1] < n:
            self.known[intent.slot] = (intent.window_start_s, n)


def make_exit_intent(ref: SlotRef, p: Position, d: Exit, n: int, epoch: int, now_ms: int) -> Intent:
    """Exit leg `n` of the slot-window: a SELL of the position's token (kernel/decide.py
    checked the answer, and that there is at least 0.01 share to sell). It stakes nothing:
    no cash is held back for it (kernel/decide.py account)."""
    return Intent(
        id=exit_intent_id(ref, n),
        slot=ref.id,
        asset=ref.asset,
        window_start_s=ref.window_start_s,
        window_end_s=ref.window_end_s,
        leg=exit_leg(n),
        side=p.side,
        limit_price=d.limit_price,
        size=exit_size(d.shares, p.shares_micros),
        stake_usd=0.0,
        epoch=epoch,
        created_ms=now_ms,
        token_id=p.token_id,
        condition_id=p.condition_id,
        updated_ms=now_ms,
        order_type=d.order_type,
        expires_s=expires_s(d.order_type, d.expires_ms),
    )


async def exit_intents(
    legs: ExitLegs,
    store: Store,
    exits: list[tuple[SlotRef, Position, Any, Exit, int, float]],
    logs: list[list[Any]],
    decisions: dict[str, DecisionRecord],
    tick: int,
    epoch: int,
    now_ms: int,
) -> list[Intent]:
    """The exit legs of a tick's exits, (slot, position, input, answer, index of its
    evaluation in `logs`, the market's minimum order size) each, numbered after the legs each
    slot-window has committed (one HMGET for the slots this worker does not know of); an exit
    past MAX_EXIT_LEGS, or of fewer shares than the market's minimum order, is refused (its
    evaluation and its record in `decisions` say so)."""
    out: list[Intent] = []
    fit = []
    for ref, held, inp, answer, k, min_size in exits:
        size = exit_size(answer.shares, held.shares_micros)
        if size < min_size:
            why = f"refused: {size:g} shares to sell, under the market's minimum order of {min_size:g}"
            logs[k][4] = why
            decisions[ref.id] = record(ref, tick, now_ms, inp, answer, why)
        else:
            fit.append((ref, held, inp, answer, k))
    if not fit:
        return out
    counts = await legs.counts(store, [ref for ref, *_ in fit])
    for ref, held, inp, answer, k in fit:
        n = counts[ref.id] + 1
        if n > MAX_EXIT_LEGS:
            why = f"refused: {MAX_EXIT_LEGS} exit legs used in this window already"
            logs[k][4] = why
            decisions[ref.id] = record(ref, tick, now_ms, inp, answer, why)
            continue
        intent = make_exit_intent(ref, held, answer, n, epoch, now_ms)
        logs[k][5] = intent.id
        out.append(intent)
    return out

"""Settlement of closed windows: ask the venue who won, then book the payout with a fenced,
idempotent script. A window the venue has not resolved yet is simply asked again next tick."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec

from state.store import Store
from state.structs import Position

# Resolution look-ups per tick: a backlog (after an outage) drains over a few ticks
# instead of stretching one tick past its boundary.
MAX_PER_TICK = 16


def settled(p: Position, up_won: bool, now_ms: int) -> Position:
    won = (p.side == "up") == up_won
    payout = p.shares_micros if won else 0
    return msgspec.structs.replace(
        p,
        status="settled",
        won=won,
        payout_micros=payout,
        pnl_micros=payout - p.cost_micros,
        settled_ms=now_ms,
    )


async def settle_ended(
    store: Store, venue: Any, epoch: int, open_positions: list[Position], now_ms: int
) -> tuple[int, list[str]]:
    due = sorted(
        (p for p in open_positions if p.window_end_s * 1000 <= now_ms), key=lambda p: p.window_end_s
    )[:MAX_PER_TICK]
    if not due:
        return 0, []
    answers = await asyncio.gather(
        *(asyncio.to_thread(venue.resolution, p.condition_id) for p in due), return_exceptions=True
    )
    problems: list[str] = []
    ready = []
    for p, a in zip(due, answers, strict=True):
        if isinstance(a, BaseException):
            problems.append(f"resolution of {p.id}: {a}")
        elif a is not None:
            ready.append(settled(p, bool(a), now_ms))
    if not ready:
        return 0, problems
    verdicts = await store.run_pipeline(
        lambda pipe: [store.settle_position(epoch, p, pipe=pipe) for p in ready]
    )
    done = 0
    for p, v in zip(ready, verdicts, strict=True):
        if v == "OK":
            done += 1
        elif v != "ALREADY":
            problems.append(f"settling {p.id}: {v}")
    return done, problems

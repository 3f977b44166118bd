"""From decisions to venue orders: commit intents (fenced, one round trip), submit the
committed ones concurrently, and record what the venue answered.

A venue error never raises out of here: it is recorded on the intent with the venue's
message and reported to the tick, so that one bad answer cannot stop the worker.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import msgspec

from kernel.snapshot import ENTRY_LEG, SlotRef
from kernel.strategy_api import Decision
from state.store import Store
from state.structs import MICROS, Intent, Market, Position

# Venue order statuses (lower-cased): still in progress, or final.
PENDING_STATUSES = frozenset({"live", "delayed"})
# "dry_run": live dry-run mode signed the order and did not post it (BATON_DRY_RUN).
FINAL_STATUSES = frozenset({"matched", "filled", "canceled", "cancelled", "unmatched", "rejected", "dry_run"})


def order_size(stake_usd: float, price: float, min_size: float) -> float:
    """Shares bought for a stake at a price, rounded down to the venue's 0.01 share step."""
    size = math.floor(stake_usd / price * 100) / 100
    return size if size >= min_size else 0.0


def make_intent(ref: SlotRef, m: Market, d: Decision, epoch: int, now_ms: int) -> Intent:
    return Intent(
        id=ref.entry_intent_id,
        slot=ref.id,
        window_start_s=ref.window_start_s,
        window_end_s=ref.window_end_s,
        leg=ENTRY_LEG,
        side=d.side,
        limit_price=d.limit_price,
        size=order_size(d.stake_usd, d.limit_price, m.min_size),
        stake_usd=d.stake_usd,
        epoch=epoch,
        created_ms=now_ms,
        token_id=m.up_token if d.side == "up" else m.down_token,
        condition_id=m.condition_id,
        updated_ms=now_ms,
    )


def _position(intent: Intent, size: float, price: float, now_ms: int) -> Position:
    asset = intent.slot.split("-", 1)[0]
    return Position(
        id=f"{intent.slot}:{intent.window_start_s}",
        slot=intent.slot,
        asset=asset,
        window_start_s=intent.window_start_s,
        window_end_s=intent.window_end_s,
        side=intent.side,
        token_id=intent.token_id,
        condition_id=intent.condition_id,
        shares_micros=round(size * MICROS),
        cost_micros=round(size * price * MICROS),
        opened_ms=now_ms,
        intent_id=intent.id,
    )


async def _sign(venue: Any, intent: Intent) -> Any:
    return await asyncio.to_thread(venue.sign_buy, intent.token_id, intent.limit_price, intent.size)


class HaltedBeforePost(Exception):
    """The halt closed the gate between this intent's commit and its post: never sent."""


async def _post(venue: Any, signed: Any, gate: Any) -> Any:
    # The gate (kernel/halt.py) is checked here, at the last moment: an intent committed
    # just before a halt is never sent, and a post already on its way is waited for before
    # the halt is acknowledged.
    if gate is not None and not gate.begin_post():
        raise HaltedBeforePost("halted before it was posted: never sent to the venue")
    try:
        return await asyncio.to_thread(venue.post, signed, "FOK")
    finally:
        if gate is not None:
            gate.end_post()


async def commit_and_submit(
    store: Store, venue: Any, epoch: int, intents: list[Intent], gate: Any = None
) -> tuple[int, list[str]]:
    """Sign, commit, post: returns (orders sent to the venue, problems).

    The order is signed before the intent is committed, so the intent carries the id the
    venue will know the order by: whoever finds the intent open after a crash looks that id
    up at the venue instead of guessing whether it was posted (kernel/reconcile.py).
    """
    problems = [f"{i.id}: stake buys less than the minimum size" for i in intents if i.size <= 0]
    intents = [i for i in intents if i.size > 0]
    if not intents:
        return 0, problems
    signed_all = await asyncio.gather(*(_sign(venue, i) for i in intents), return_exceptions=True)
    ready: list[tuple[Intent, Any]] = []
    for intent, signed in zip(intents, signed_all, strict=True):
        if isinstance(signed, BaseException):
            problems.append(f"{intent.id}: signing failed, nothing committed: {signed}")
        else:
            ready.append((msgspec.structs.replace(intent, order_id=signed.order_id), signed))
    if not ready:
        return 0, problems
    verdicts = await store.run_pipeline(
        lambda pipe: [store.commit_intent(epoch, i, pipe=pipe) for i, _ in ready]
    )
    committed: list[tuple[Intent, Any]] = []
    for (intent, signed), v in zip(ready, verdicts, strict=True):
        if v == "OK":
            committed.append((intent, signed))
        elif v != "DUPLICATE":  # a duplicate is the uniqueness rule doing its job, silently
            problems.append(f"{intent.id}: commit refused: {v}")
    results = await asyncio.gather(
        *(_post(venue, signed, gate) for _, signed in committed), return_exceptions=True
    )
    now_ms = max((i.created_ms for i, _ in committed), default=0)

    def record(pipe: Any) -> None:
        for (intent, _), res in zip(committed, results, strict=True):
            if isinstance(res, HaltedBeforePost):
                problems.append(f"{intent.id}: {res}")
                store.update_intent(
                    epoch, msgspec.structs.replace(intent, status="failed", error=str(res)), pipe=pipe
                )
            elif isinstance(res, BaseException):
                # The order may or may not have reached the venue: the intent stays open,
                # with the error, for reconciliation against the venue by its order id.
                problems.append(f"{intent.id}: venue error: {res}")
                store.update_intent(epoch, msgspec.structs.replace(intent, error=str(res)[:300]), pipe=pipe)
            else:
                record_result(store, epoch, intent, res, now_ms, pipe, problems)

    if committed:
        for v in await store.run_pipeline(record):
            if v not in ("OK", "ALREADY"):
                problems.append(f"recording a venue answer: {v}")
    sent = sum(not isinstance(res, HaltedBeforePost) for res in results)
    return sent, problems


def record_result(
    store: Store, epoch: int, intent: Intent, res: Any, now_ms: int, pipe: Any, problems: list[str]
) -> None:
    """Queue the fenced write for what the venue said of an order: a fill opens the position;
    anything else that is final marks the intent rejected with the venue's message."""
    if res.status in PENDING_STATUSES or (res.status not in FINAL_STATUSES and res.size_matched <= 0):
        # The venue still works on it ("live", "delayed", or a status we do not know): not
        # final; reconciliation asks again by order id until it is.
        store.update_intent(
            epoch,
            msgspec.structs.replace(
                intent, status="posted", order_id=res.order_id or intent.order_id, error=""
            ),
            pipe=pipe,
        )
        return
    if res.status in ("matched", "filled") and res.size_matched > 0:
        price = res.avg_price or res.price or intent.limit_price
        done = msgspec.structs.replace(
            intent,
            status="filled",
            order_id=res.order_id or intent.order_id,
            filled_size=res.size_matched,
            avg_price=price,
            error="",
        )
        store.record_fill(epoch, done, _position(done, res.size_matched, price, now_ms), pipe=pipe)
    else:
        if res.status != "dry_run":
            problems.append(f"{intent.id}: order {res.status}: {res.error}")
        store.update_intent(
            epoch,
            msgspec.structs.replace(
                intent,
                status="rejected",
                order_id=res.order_id or intent.order_id,
                error=(res.error or res.status)[:300],
            ),
            pipe=pipe,
        )

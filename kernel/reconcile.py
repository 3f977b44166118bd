"""Reconciliation of in-flight intents against the venue, by the order id they carry.

A worker that takes the lease over (after a crash, a handover, or a Redis blip that left
a post's answer unrecorded) finds intents that are committed but not final. Each carries
the id of its signed order (kernel/executor.py signs before it commits), so the venue can
say what became of it: filled (open the position), dead (mark it rejected), or unknown
(it never arrived: mark it failed). Nothing is ever re-sent from here: an intent that did
not reach the venue is given up, and the slot-window stays entered, so the worst a crash
costs is one missed entry, never a duplicate order. Exit legs alike: a sale that filled is
booked against its position, one that never arrived is failed, and its leg number is spent.

Orders that rest at the venue (GTC, GTD) are asked after each tick until they are final;
one still resting when its window has ended is cancelled first, and what matched of it is
booked (kernel/outcomes.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec

from kernel import outcomes
from kernel.blocking import EntryBlocks
from state.store import Store
from state.structs import FINAL_INTENT_STATUSES, Intent, Position

log = logging.getLogger("baton.reconcile")

# Orders the venue still works on (GTC resting, or matched but not yet mined): look again later.
PENDING_STATUSES = outcomes.PENDING_STATUSES


async def reconcile_open(
    store: Store,
    venue: Any,
    epoch: int,
    now_ms: int,
    intents: list[Intent] | None = None,
    unknown_grace_ms: int = 0,
    blocks: EntryBlocks | None = None,
    positions: dict[str, Position] | None = None,
    tally: outcomes.Tally | None = None,
) -> tuple[int, list[str]]:
    """Settle the fate of every open intent; returns (intents resolved, problems).
    A venue that cannot be asked leaves the intent open, to be asked again next time. An
    order the venue does not know is given up only `unknown_grace_ms` after its intent was
    committed: a post still in flight (a slow request, a stalled old holder) may yet land.
    `positions` (by id: the snapshot's open ones) are what exit legs sold from; `tally`
    counts the orders the book could not fill."""
    if intents is None:
        intents = await store.read_intents(open_only=True)
    todo = [i for i in intents if i.status not in FINAL_INTENT_STATUSES]
    if not todo:
        return 0, []
    problems: list[str] = []

    async def ask(i: Intent) -> Any:
        if not i.order_id:
            return None
        ans = await asyncio.to_thread(venue.order, i.order_id)
        if ans is not None and ans.status in PENDING_STATUSES and i.window_end_s * 1000 <= now_ms:
            # Still resting after its window ended: nothing is traded past the window (an exit
            # then would sell what settlement pays out). Cancelled, then asked again, so that
            # what matched before the cancel is booked.
            cancelled = await asyncio.to_thread(venue.cancel, i.order_id)
            log.info("reconcile %s: resting past its window, cancelled: %s", i.id, cancelled)
            ans = await asyncio.to_thread(venue.order, i.order_id)
        return ans

    answers = await asyncio.gather(*(ask(i) for i in todo), return_exceptions=True)
    # Decide first, then write: run_pipeline may build the pipeline twice (NOSCRIPT retry).
    updates: list[Intent] = []
    results: list[tuple[Intent, Any]] = []
    for intent, ans in zip(todo, answers, strict=True):
        if isinstance(ans, BaseException):
            problems.append(f"reconcile {intent.id}: venue lookup of {intent.order_id} failed: {ans}")
        elif ans is None and now_ms - intent.created_ms < unknown_grace_ms:
            continue  # not at the venue yet; asked again on a later tick
        elif ans is None:
            why = (
                "no order id (committed before signing existed)"
                if not intent.order_id
                else f"order {intent.order_id[:18]}... is unknown to the venue "
                "(never posted, or killed unfilled): not re-sent"
            )
            log.warning("reconcile %s: %s", intent.id, why)
            updates.append(msgspec.structs.replace(intent, status="failed", error=why, updated_ms=now_ms))
        elif ans.status in PENDING_STATUSES:
            if intent.status != "posted":
                updates.append(msgspec.structs.replace(intent, status="posted", updated_ms=now_ms))
        else:
            log.info(
                "reconcile %s: the venue says %s (%.2f matched)", intent.id, ans.status, ans.size_matched
            )
            results.append((intent, ans))
    if not updates and not results:
        return 0, problems
    resolved = sum(1 for u in updates if u.status == "failed") + len(results)
    fills: list[tuple[Intent, Position]] = []
    sells: list[Intent] = []
    for intent, ans in results:
        outcomes.outcome(intent, ans, now_ms, updates, fills, problems, sells, tally)
    refused = await outcomes.write_outcomes(store, epoch, updates, fills, blocks, sells, positions)
    problems += [p.replace("recording a venue answer", "reconcile write refused") for p in refused]
    return resolved, problems

"""Taking over trading: what a worker does between getting the lease and its first tick.
The opening deposit, the predecessor's in-flight intents settled with the venue, and the
count of boundaries at which nobody traded. Called by the `Worker` (worker/lifecycle.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from baton.errors import UnreadableValue
from baton.settings import Settings
from kernel import reconcile
from kernel.clock import Clock, wall_ms
from state.primary import read_primary_id
from state.store import Store
from state.structs import usd_to_micros

log = logging.getLogger("baton.worker")


async def open_books(s: Settings, store: Store, venue: Any, epoch: int, clock: Clock) -> None:
    """The ledger's opening deposit: live, the venue's collateral; paper, the configured cash.
    Booked once (the ledger ref makes later activations a no-op)."""
    try:
        if s.live:
            await _deposit_live_balance(store, venue, epoch, clock)
        elif s.paper_cash_usd > 0:
            await store.deposit(
                epoch, "deposit:paper-initial", usd_to_micros(s.paper_cash_usd), clock.now_ms()
            )
    except UnreadableValue as e:
        # Nothing was booked; the tick's read finds the same value and blocks entries until it
        # is repaired, and the next activation books the deposit then. Never a reason to stop.
        msg = f"opening deposit not booked, waiting for a repair: {e}"
        log.error(msg)
        await store.record_errors("worker", [msg], now_ms=clock.now_ms())


async def _deposit_live_balance(store: Store, venue: Any, epoch: int, clock: Clock) -> None:
    # Live, the ledger starts from the account's collateral at the venue (booked once:
    # the ledger ref makes later activations a no-op). Without it the risk checks see no
    # cash and refuse entries: safe, and said in the log and the error journal.
    try:
        micros = await asyncio.to_thread(venue.collateral_micros)
    except Exception as e:
        msg = f"live: could not read the collateral balance at the venue: {e}"
        log.error(msg)
        await store.record_errors("worker", [msg], now_ms=clock.now_ms())
        return
    await store.deposit(epoch, "deposit:live-initial", micros, clock.now_ms())


async def adopt_orders(
    runner: Any, store: Store, epoch: int, clock: Clock, owed: str, grace_ms: int = 0
) -> None:
    """Before the first tick: which Redis primary this holder starts on (a later change owes
    a sweep), and, unless the lease came by a planned handover (`owed` empty: the predecessor
    finished its tick, and the intents it wrote are ours to read), the sweep for orders the
    venue has and no intent knows (kernel/adopt.py). A sweep that cannot be done now holds
    the slots it could not cover, and each tick tries again. A predecessor that may still
    have been posting (`grace_ms` > 0: its lease expired, it was not seen dead) gets a second
    sweep once that grace has passed, for a post of its that reached the venue late."""
    runner.adopter.primary = await read_primary_id(store.r)
    if not owed:
        return
    runner.adopter.owe(owed)
    if grace_ms > 0:
        runner.adopter.owe_later(clock.now_ms() + grace_ms, f"{owed}, once more after its posts' grace")
    _, problems = await runner.adopter.settle(epoch, clock.now_ms())
    await store.record_errors("adopt", problems, now_ms=wall_ms())


async def reconcile_in_flight(store: Store, venue: Any, epoch: int, clock: Clock, grace_ms: int) -> None:
    """Intents left in flight by the previous holder are settled with the venue before this
    worker does anything else with their slots; unknown orders wait `grace_ms` first."""
    done, problems = await reconcile.reconcile_open(
        store, venue, epoch, clock.now_ms(), unknown_grace_ms=grace_ms
    )
    if done or problems:
        log.info("reconciled %d in-flight intent(s)", done)
    await store.record_errors("reconcile", problems, now_ms=wall_ms())


async def takeover_gap(store: Store, first_tick: int, now_ms: int) -> int:
    """Boundaries at which nobody traded, between the previous holder's last journaled
    tick and our first one: after a crash, and after a worker was stopped or restarted
    by hand (a planned handover has none: we start at the next tick). Only the downtime
    of the whole runtime, stopped with `baton stop`, is not counted.

    A stop mark that cannot be read is reported, never a reason to stop: an unreadable
    last tick is taken from the journal's newest entry instead (stats.last_tick is a copy of
    it), an unreadable clean-stop mark is cleared by this holder as it starts."""
    problems: list[str] = []
    last, _clean = await store.read_stop_marks(problems)
    if problems:
        log.error("takeover: %s", "; ".join(problems))
        await store.record_errors("journal", problems, now_ms=now_ms)
        if last is None:
            last = await store.newest_journaled_tick()
    if last is None or await store.stack_was_stopped():
        return 0
    return max(0, first_tick - last - 1)

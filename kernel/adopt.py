"""Adoption: orders the venue has and no intent in Redis knows, recorded before their slots
trade again.

Redis replication is asynchronous. An intent is acknowledged by a replica before its order is
posted (state/replication.py), but a failover may still promote another replica, or the
primary may restart without its last second: the intent of an order at the venue, or the
booking of its fill, can be gone. Its slot-window would then look unentered, and the next
tick would post a second order. So after a takeover that was not a planned handover, and
whenever the Redis primary's replication id changes (state/primary.py, read with the tick's
snapshot), the lease holder asks the venue for this account's orders in the markets of the
slots' open windows (and the windows just before them, whose fills settlement still books)
and records every order no intent knows as its slot-window's entry intent: the window counts
as entered, a fill is booked once (the ledger's ref `buy:<intent id>`), and the adoption is
journaled (source `adopted`, counted as `errors_adopted`). A SELL no intent knows is an exit
leg whose intent was lost: it is adopted as the slot-window's next exit leg (after the legs
Redis holds), its sale booked against the position (ref `sell:<intent id>`), so that
settlement never pays for shares sold. Until a sweep owed has been done
the slots it could not cover open nothing new (a blocker of source `adopt`,
kernel/blocking.py): never trade blind.

This module owns when a sweep is owed and the holds it leaves (`Adopter`); what a sweep does
with the venue's listing is kernel/adopt_orders.py's.
"""

from __future__ import annotations

import asyncio
import logging

from kernel.adopt_orders import HOLD, adopt_listed, not_read, swept_windows
from kernel.blocking import EntryBlocks
from kernel.markets import MarketCache
from kernel.snapshot import SlotRefs
from kernel.venue import AccountOrder
from state.store import Store
from state.structs import Intent

log = logging.getLogger("baton.adopt")


class Adopter:
    """When a sweep is owed, and the holds it leaves (the runner's, kernel/tick.py)."""

    def __init__(
        self, store: Store, markets: MarketCache, refs: SlotRefs, blocks: EntryBlocks, budget_s: float = 2.0
    ) -> None:
        self.store, self.markets, self.refs, self.blocks = store, markets, refs, blocks
        # How long one call waits for the venue's listing (the runner gives half a tick).
        self.budget_s = budget_s
        self._listing: asyncio.Future[list[AccountOrder]] | None = None
        # (from when, why): a sweep owed later (owe_later).
        self.later: tuple[int, str] | None = None
        # Why a sweep is owed ("" while none is): a takeover, a primary change.
        self.owed = ""
        # The primary's replication id as last seen (None: not known yet).
        self.primary: str | None = None
        self.adopted = 0

    def owe(self, why: str) -> None:
        if not self.owed:
            self.owed = why
            log.info("adoption sweep owed: %s", why)

    def owe_later(self, at_ms: int, why: str) -> None:
        """A sweep owed from `at_ms` on (the slots trade meanwhile): after a takeover from a
        holder that may still have been posting, what it sent just before its deadline may
        reach the venue after the takeover's sweep asked."""
        self.later = (at_ms, why)

    def due(self, now_ms: int) -> bool:
        """Whether a sweep is owed now (one owed for later falls due here)."""
        if self.later is not None and now_ms >= self.later[0]:
            self.owe(self.later[1])
            self.later = None
        return bool(self.owed)

    def primary_seen(self, replid: str | None) -> None:
        """The primary's replication id, as a read found it: a change owes a sweep."""
        if not replid:
            return
        if self.primary is not None and replid != self.primary:
            self.owe(f"the Redis primary changed (replication id {self.primary[:8]}… → {replid[:8]}…)")
        self.primary = replid

    async def settle(self, epoch: int, now_ms: int) -> tuple[list[Intent], list[str]]:
        """The sweep owed, if any: (intents adopted, problems). Until it is done, the slots it
        could not cover are held (blockers of source `adopt`); done, the holds are lifted.

        The venue's listing is waited for `budget_s` at most, so that a slow venue costs the
        tick no more than that: still under way, the slots stay held and the next call waits
        for the same listing again (a new one is asked only once it has answered)."""
        if not self.owed:
            return [], []
        refs = self.refs.at(now_ms)
        try:
            if self._listing is None:
                windows = swept_windows(refs)
                since_s = min((r.window_start_s for r in windows), default=now_ms // 1000)
                self._listing = asyncio.ensure_future(
                    asyncio.to_thread(self.markets.venue.account_orders, [], since_s)
                )
            done, _ = await asyncio.wait({self._listing}, timeout=self.budget_s)
            if not done:
                res = not_read(
                    self.store, f"the venue has not listed this account's orders yet ({self.owed})"
                )
            else:
                listing, self._listing = self._listing, None
                failed = listing.exception()
                if failed is not None:
                    why = f"this account's orders could not be read at the venue ({failed})"
                    res = not_read(self.store, why)
                else:
                    res = await adopt_listed(self.store, self.markets, refs, listing.result(), epoch, now_ms)
        except Exception as e:
            # Redis could not be read or written (a restart, garbage in a key the sweep reads):
            # the sweep is owed still, and the slots wait for it.
            res = not_read(self.store, f"the sweep failed: {e!r}")
        self.blocks.found(HOLD, res.held)
        self.adopted += len(res.adopted)
        if res.done:
            log.info(
                "adoption sweep done (%s): %d order(s) at the venue, %d adopted",
                self.owed,
                res.orders,
                len(res.adopted),
            )
            self.owed = ""
        return res.adopted, res.problems

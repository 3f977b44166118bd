"""The markets of the slots' windows: kept in process memory until their window is an hour
gone (a market's tokens never change), read from Redis's market cache when not known here,
discovered at the venue when not there either (and then written to Redis's cache).
"""

from __future__ import annotations

from typing import Any

from baton.errors import SnapshotError
from kernel import lanes
from kernel.clock import Clock
from kernel.snapshot import SlotRef, decode_reported
from state.store import Store
from state.structs import MARKET, Market


class MarketCache:
    def __init__(self, store: Store, venue: Any, clock: Clock, floor: int) -> None:
        self.store = store
        self.venue = venue
        self.clock = clock
        # The map's size under which it is never pruned (a few windows of every slot).
        self.floor = floor
        # slug -> (market, window end s): markets seen, kept in memory (they never change).
        self.known: dict[str, tuple[Market, int]] = {}
        # Its size at which the next look for markets an hour gone is made (remember).
        self._cap = 0

    async def cached(
        self, refs: list[SlotRef], problems: list[str], intents_of: list[SlotRef] | None = None
    ) -> tuple[dict[str, Market], list[Any]]:
        """The markets of `refs` known in memory or in Redis's market cache, and the raw entry
        intents of `intents_of` (read here to share the round trip): one round trip, none
        when there is nothing to read."""
        k = self.store.k
        unknown = [r for r in refs if r.slug not in self.known]
        raw_intents: list[Any] = []
        if unknown or intents_of:

            def build(pipe: Any) -> None:
                if intents_of:
                    pipe.hmget(k.intents(), [r.entry_intent_id for r in intents_of])
                if unknown:
                    pipe.mget([k.market(r.slug) for r in unknown])

            res = await self.store.run_pipeline(build)
            for x in res:
                if isinstance(x, Exception):
                    raise SnapshotError(f"reading entry intents and markets: {x}") from x
            if intents_of:
                raw_intents = res.pop(0)
            for r, raw in zip(unknown, res[0] if unknown else [], strict=True):
                m = decode_reported(MARKET, raw, f"market {r.slug}", problems)
                if m is not None:
                    self.remember(r, m)
        found = {r.slug: self.known[r.slug][0] for r in refs if r.slug in self.known}
        return found, raw_intents

    def remember(self, ref: SlotRef, m: Market) -> None:
        known = self.known
        if len(known) > max(self._cap, self.floor):
            cutoff_s = self.clock.now_ms() // 1000 - 3600
            known = self.known = {s: v for s, v in known.items() if v[1] > cutoff_s}
            # Short windows put more than the floor's worth of markets in an hour: the next
            # look waits until the map has doubled, or every new market would copy the map
            # (at 1,024 slots on 15 s windows that was most of the worker's CPU).
            self._cap = 2 * len(known)
        known[ref.slug] = (m, ref.window_end_s)

    async def save(self, fresh: list[tuple[SlotRef, Market]]) -> None:
        """Markets found at the venue, into Redis's cache (one command), for whoever reads
        them next (this worker's successor, the other colour's readiness check)."""
        if fresh:
            now_s = self.clock.now_ms() // 1000
            await self.store.cache_markets([(m, max(60, r.window_end_s - now_s + 3600)) for r, m in fresh])

    async def discover(
        self, cached: dict[str, Market], refs: list[SlotRef], problems: list[str]
    ) -> dict[str, Market]:
        """The markets of `refs`: those in `cached`, the others asked of the venue (in lanes,
        at once) and remembered; a market the venue does not list is a problem."""
        found = {r.slug: m for r in refs if (m := cached.get(r.slug)) is not None}
        missing = [r for r in refs if r.slug not in found]

        fresh: list[tuple[SlotRef, Market]] = []
        answers = await lanes.in_lanes(lambda r: self.venue.discover(r.slug), missing)
        for r, answer in zip(missing, answers, strict=True):
            if isinstance(answer, BaseException):
                problems.append(f"discover {r.slug}: {answer}")
            elif answer is None:
                problems.append(f"discover {r.slug}: no such market at the venue")
            else:
                found[r.slug] = answer
                self.remember(r, answer)
                fresh.append((r, answer))
        await self.save(fresh)
        return found

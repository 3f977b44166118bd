"""The markets of the slots' windows: kept in process memory until their window is an hour
gone (a market's tokens never change), read from Redis's market cache when not known here,
discovered at the venue when not there either (and then written to Redis's cache).

A cached market that cannot be read, or that is not the market of its key (another slug,
token ids that are not the venue's decimal ids), is never traded nor discovered past: its slot
waits (a `Blocker`, kernel/blocking.py) until the key is repaired or deleted, or its window
ends.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis.exceptions import ResponseError

from baton.errors import SnapshotError
from kernel import lanes
from kernel.clock import Clock
from kernel.snapshot import SlotRef, cannot_decode
from state.store import Store
from state.structs import MARKET, Blocker, Market


def market_problem(m: Market, slug: str) -> str:
    """Why a cached market cannot be the one of `slug` ('' when it can)."""
    if m.slug != slug:
        return f"holds the market of {m.slug[:80]!r}"
    for name, t in (("up_token", m.up_token), ("down_token", m.down_token)):
        if not (t.isascii() and t.isdigit()):
            return f"{name} {t[:80]!r} is not a decimal token id"
    if m.up_token == m.down_token:
        return "up_token and down_token are the same"
    if not m.condition_id:
        return "no condition_id"
    return ""


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
        # slug -> (blocker, window end s): cached markets found unreadable, until read again.
        self.bad: dict[str, tuple[Blocker, int]] = {}

    def blockers(self, now_ms: int) -> list[Blocker]:
        """The slots whose cached market is garbage (until their window ends)."""
        now_s = now_ms // 1000
        for slug in [s for s, (_, end_s) in self.bad.items() if end_s <= now_s]:
            del self.bad[slug]
        return [b for b, _ in self.bad.values()]

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
            if intents_of and isinstance(res[0], ResponseError) and str(res[0]).startswith("WRONGTYPE"):
                # The intents hash of another type: whether a slot-window was entered cannot be
                # told, so these slots wait (intent_commit.lua would refuse them anyway) until
                # their window ends and a later read tries again; the tick goes on.
                why = f"not a hash: {res[0]}: whether a slot-window was entered cannot be read"
                for r in intents_of:
                    b = Blocker(
                        key=k.intents(), field=r.entry_intent_id, problem=why, slot=r.id, source="markets"
                    )
                    self.bad[f"intents {r.id}"] = (b, r.window_end_s)
                res[0] = [why] * len(intents_of)  # read as entered: nothing is tried for them
                problems.append(f"{k.intents()}: {why}")
            for x in res:
                if isinstance(x, Exception):
                    raise SnapshotError(f"reading entry intents and markets: {x}") from x
            if intents_of:
                raw_intents = res.pop(0)
            for r, raw in zip(unknown, res[0] if unknown else [], strict=True):
                self.bad.pop(r.slug, None)
                m, why = None, ""
                if raw is not None:
                    try:
                        m = MARKET.decode(raw)
                        why = market_problem(m, r.slug)
                    except msgspec.DecodeError as e:
                        why = cannot_decode(raw, e)
                if why:
                    b = Blocker(key=k.market(r.slug), problem=why, slot=r.id, source="markets")
                    self.bad[r.slug] = (b, r.window_end_s)
                elif m is not None:
                    self.remember(r, m)
        found = {r.slug: self.known[r.slug][0] for r in refs if r.slug in self.known}
        return found, raw_intents

    def remember(self, ref: SlotRef, m: Market) -> None:
        self.bad.pop(ref.slug, None)
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

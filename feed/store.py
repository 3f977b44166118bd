"""What the feed writes: candle windows, feed status, counters and the error journal
(written through state/candles.py).

Owns the order rules (a closed candle is final; nothing older than the last closed candle is
written, except into a known hole) and batches everything one batch of frames produces into a
single round trip. It finds the holes in a candle window (missing closed candles between two
stored ones, whether the stream skipped them or an earlier run left them) for the feed to fill
over REST. Its memory is only a cache of Redis, reloaded on every (re)connect.
"""

from __future__ import annotations

import bisect
import logging
from collections import Counter
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis

from state.candles import CandlesRepo
from state.keys import Keys
from state.structs import CANDLE, FUTURE_TOLERANCE_MS, Candle, FeedStatus
from venues.binance import INTERVAL_MS

log = logging.getLogger("feed")

# Closed candles remembered per asset, to tell a replayed candle (a duplicate, as after a
# reconnect whose backfill got there first) from a stale one (out of order).
RECENT_CLOSED = 300


def per_asset(asset: str) -> str:
    """The feed:stats field counting the candle updates written for one asset (from the stream
    and from backfill), so that /metrics can show a rate per asset; it rides the batch's
    counters, so it costs no extra round trip."""
    return f"candles:{asset}"


class Batch:
    """Everything one round trip writes; filled by `CandleStore.accept` and `bad_frame`."""

    def __init__(self) -> None:
        # (asset, open_ms) -> candle: later updates of the same candle replace earlier ones,
        # so a burst of in-progress updates costs one write.
        self.candles: dict[tuple[str, int], Candle] = {}
        self.counts: Counter[str] = Counter()
        self.errors: list[dict[str, str | int]] = []

    def __bool__(self) -> bool:
        return bool(self.candles or self.counts or self.errors)

    def bad_frame(self, error: str, sample: str, at_ms: int) -> None:
        self.counts["bad_frames"] += 1
        self.errors.append({"source": "feed", "error": error, "sample": sample, "at_ms": at_ms})


class CandleStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        *,
        interval: str,
        retention_s: int,
        clock_ms: Callable[[], int],
        interval_ms: int | None = None,
        host: str = "",
    ) -> None:
        self.redis = redis
        # The feeds of several hosts write the same windows and counters: each counter is
        # also kept per feed, as '<name>@<host>' ('' : not labelled).
        self.host = host
        self.keys = keys
        self.interval = interval
        self.interval_ms = interval_ms or INTERVAL_MS[interval]
        self.candles = CandlesRepo(redis, keys)
        self.retention_ms = retention_s * 1000
        self.clock_ms = clock_ms
        # asset -> open_ms -> closed candle, oldest first; the last one is the last closed.
        self._closed: dict[str, dict[int, Candle]] = {}
        self._newest: dict[str, Candle] = {}
        # asset -> [(first, last)] open times of closed candles missing inside the window,
        # found and not yet handed to the feed to fetch (`take_holes`).
        self.holes: dict[str, list[tuple[int, int]]] = {}
        # Called with each batch once Redis has it (bench/feed_ingest.py measures by it).
        self.on_written: Callable[[Batch], None] | None = None

    def last_closed(self, asset: str) -> Candle | None:
        recent = self._closed.get(asset)
        return recent[next(reversed(recent))] if recent else None

    def _remember(self, asset: str, candle: Candle) -> None:
        recent = self._closed.setdefault(asset, {})
        if recent and candle.open_ms < next(reversed(recent)):
            # A hole filled behind the last closed candle: keep oldest-first order.
            if candle.open_ms < next(iter(recent)) and len(recent) >= RECENT_CLOSED:
                return
            recent[candle.open_ms] = candle
            self._closed[asset] = recent = dict(sorted(recent.items()))
        else:
            recent[candle.open_ms] = candle
        if len(recent) > RECENT_CLOSED:
            del recent[next(iter(recent))]

    def _hole(self, asset: str, first_ms: int, last_ms: int) -> None:
        self.holes.setdefault(asset, []).append((first_ms, last_ms))

    def take_holes(self) -> dict[str, list[tuple[int, int]]]:
        """The holes found since the last call, per asset, sorted; the caller fills them
        (`fill`) or gives back those it could not fetch (`give_back`)."""
        holes, self.holes = self.holes, {}
        return {a: sorted(hs) for a, hs in holes.items()}

    def give_back(self, asset: str, holes: list[tuple[int, int]]) -> None:
        self.holes.setdefault(asset, []).extend(holes)

    async def load(self, assets: tuple[str, ...]) -> None:
        """Refresh the cache from Redis, which another run of the feed may have written, and
        find the holes in each window (a whole window is a few thousand short members)."""
        windows = await self.candles.read_windows(assets, self.interval)
        for a in assets:
            self._closed.pop(a, None)
            self._newest.pop(a, None)
            self.holes.pop(a, None)
        horizon = self.clock_ms() + FUTURE_TOLERANCE_MS
        for a, candles in zip(assets, windows, strict=True):
            future = [c for c in candles if c.open_ms > horizon]
            if future:
                # Garbage from the future (written by hand): as the newest candle it would move
                # the retention cutoff past every real one, and as the last closed one it
                # would refuse every real one as out of order. Workers never read it.
                log.error(
                    "candles %s: %d candle(s) dated in the future, ignored (first opens at %d)",
                    a,
                    len(future),
                    future[0].open_ms,
                )
                candles = [c for c in candles if c.open_ms <= horizon]
            if candles:
                self._newest[a] = candles[-1]
            prev: int | None = None
            for c in candles:
                if not c.closed:
                    continue
                if prev is not None and c.open_ms - prev > self.interval_ms:
                    self._hole(a, prev + self.interval_ms, c.open_ms - self.interval_ms)
                prev = c.open_ms
            for c in [c for c in candles if c.closed][-RECENT_CLOSED:]:
                self._remember(a, c)

    async def still_missing(self, asset: str, holes: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The parts of `holes` (sorted open-time ranges) that Redis still lacks: the feed of
        another host may have filled them meanwhile. The closed candles found are remembered."""
        key = self.keys.candles(asset, self.interval)
        async with self.redis.pipeline(transaction=False) as pipe:
            for first, last in holes:
                pipe.zrange(key, first, last, byscore=True)
            found = await pipe.execute()
        missing: list[tuple[int, int]] = []
        for (first, last), members in zip(holes, found, strict=True):
            have = set()
            for m in members:
                try:
                    c = CANDLE.decode(m)
                except msgspec.DecodeError:
                    continue  # garbage: the fetched candle replaces it
                if c.closed:
                    have.add(c.open_ms)
                    self._remember(asset, c)
            start: int | None = None
            t = first
            while t <= last + self.interval_ms:
                if t <= last and t not in have:
                    start = t if start is None else start
                elif start is not None:
                    missing.append((start, t - self.interval_ms))
                    start = None
                t += self.interval_ms
        return missing

    def future(self, batch: Batch, asset: str, candle: Candle) -> bool:
        """True (counted, journaled, logged) when `candle` opens beyond now and the tolerance
        for clocks that disagree: it would become "the last price" until that date."""
        now_ms = self.clock_ms()
        if candle.open_ms <= now_ms + FUTURE_TOLERANCE_MS:
            return False
        batch.counts["future_candles"] += 1
        error = f"candle of {asset} dated in the future refused: opens at {candle.open_ms}, now {now_ms}"
        batch.errors.append({"source": "feed", "error": error, "sample": repr(candle)[:200], "at_ms": now_ms})
        log.error("%s", error)
        return True

    def accept(self, batch: Batch, asset: str, candle: Candle, counter: str = "candles") -> bool:
        """Queue `candle` for writing unless it is stale, a repeat or dated in the future;
        counts either way."""
        if self.future(batch, asset, candle):
            return False
        last = self.last_closed(asset)
        if last is not None and candle.open_ms <= last.open_ms:
            if candle.closed and self._closed[asset].get(candle.open_ms) == candle:
                batch.counts["duplicates"] += 1
            else:
                # Older than the last closed candle, or an update of a candle already final.
                batch.counts["out_of_order"] += 1
            return False
        if candle.closed and last is not None and candle.open_ms > last.open_ms + self.interval_ms:
            # Closed candles went missing in between (a stream that skipped, a backfill that
            # stopped short): a hole for the feed to fill over REST.
            self._hole(asset, last.open_ms + self.interval_ms, candle.open_ms - self.interval_ms)
            batch.counts["holes"] += 1
        batch.candles[(asset, candle.open_ms)] = candle
        batch.counts[counter] += 1
        batch.counts[per_asset(asset)] += 1
        if candle.closed:
            self._remember(asset, candle)
        newest = self._newest.get(asset)
        if newest is None or candle.open_ms >= newest.open_ms:
            self._newest[asset] = candle
        return True

    def fill(self, batch: Batch, asset: str, candle: Candle, holes: list[tuple[int, int]]) -> bool:
        """Queue a closed candle fetched for one of `holes` (sorted, as `take_holes` gives
        them), behind the last closed candle; anything else is left alone."""
        if not candle.closed or self.future(batch, asset, candle):
            return False
        i = bisect.bisect_right(holes, (candle.open_ms, float("inf"))) - 1
        if i < 0 or candle.open_ms > holes[i][1]:
            return False
        batch.candles[(asset, candle.open_ms)] = candle
        batch.counts["backfilled"] += 1
        batch.counts[per_asset(asset)] += 1
        self._remember(asset, candle)
        return True

    async def write(self, batch: Batch) -> None:
        """One round trip, one command (state/lua/feed_write.lua), atomic so that a reader
        never sees a candle removed but not yet re-added. Client-side cost per command and per
        argument is what limits ingest (bench/feed_ingest.py): hence one script call, with each
        window's candles as one JSON array encoded in one go."""
        if not batch:
            return
        now_ms = self.clock_ms()
        by_asset: dict[str, list[Candle]] = {}
        for (asset, _), c in batch.candles.items():
            by_asset.setdefault(asset, []).append(c)
        windows = []
        for asset, candles in by_asset.items():
            newest = self._newest[asset]
            # Retention is measured from the newest candle, not the wall clock, so that a
            # stalled stream does not wipe the history a restarted one still needs.
            cutoff = newest.open_ms - self.retention_ms
            windows.append((asset, cutoff, FeedStatus(now_ms, newest.open_ms, newest.close), candles))
        counters = self.labelled([(name, n) for name, n in sorted(batch.counts.items()) if n])
        errors = batch.errors
        if self.host:  # each feed journals what it saw itself: say which
            errors = [{**e, "error": f"{self.host}: {e['error']}"} for e in errors]
        horizon_ms = now_ms + FUTURE_TOLERANCE_MS
        await self.candles.write_batch(self.interval, windows, counters, errors, horizon_ms, host=self.host)
        if self.on_written is not None:
            self.on_written(batch)

    def labelled(self, counters: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """The counters summed over every feed, and again as this feed's own."""
        if not self.host:
            return counters
        return counters + [(f"{name}@{self.host}", n) for name, n in counters]

    async def count(self, name: str, n: int = 1) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for field, k in self.labelled([(name, n)]):
                self.candles.count(field, k, pipeline=pipe)
            await pipe.execute()

"""The feed's Redis writes: candle windows, feed status, counters and the error journal.

Owns the order rules (a closed candle is final; nothing older than the last closed candle is
written) and batches everything one batch of frames produces into a single round trip.
Its memory is only a cache of Redis, reloaded on every (re)connect.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import redis.asyncio as aioredis

from state.keys import Keys
from state.structs import CANDLE, FEED_STATUS, Candle, FeedStatus

log = logging.getLogger("feed")

JOURNAL_MAXLEN = 1000
# Closed candles remembered per asset, to tell a replayed candle (a duplicate, as after a
# reconnect whose backfill got there first) from a stale one (out of order).
RECENT_CLOSED = 300


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
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.interval = interval
        self.retention_ms = retention_s * 1000
        self.clock_ms = clock_ms
        # asset -> open_ms -> closed candle, oldest first; the last one is the last closed.
        self._closed: dict[str, dict[int, Candle]] = {}
        self._newest: dict[str, Candle] = {}

    def last_closed(self, asset: str) -> Candle | None:
        recent = self._closed.get(asset)
        return recent[next(reversed(recent))] if recent else None

    def _remember(self, asset: str, candle: Candle) -> None:
        recent = self._closed.setdefault(asset, {})
        recent[candle.open_ms] = candle
        if len(recent) > RECENT_CLOSED:
            del recent[next(iter(recent))]

    async def load(self, assets: tuple[str, ...]) -> None:
        """Refresh the cache from Redis, which another run of the feed may have written."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for a in assets:
                pipe.zrange(
                    self.keys.candles(a, self.interval),
                    "+inf",
                    "-inf",
                    desc=True,
                    byscore=True,
                    offset=0,
                    num=RECENT_CLOSED + 1,
                )
            tails = await pipe.execute()
        self._closed.clear()
        self._newest.clear()
        for a, members in zip(assets, tails, strict=True):
            candles = [CANDLE.decode(m) for m in reversed(members)]
            if candles:
                self._newest[a] = candles[-1]
            for c in candles:
                if c.closed:
                    self._remember(a, c)

    def accept(self, batch: Batch, asset: str, candle: Candle, counter: str = "candles") -> bool:
        """Queue `candle` for writing unless it is stale or a repeat; counts either way."""
        last = self.last_closed(asset)
        if last is not None and candle.open_ms <= last.open_ms:
            if candle.closed and self._closed[asset].get(candle.open_ms) == candle:
                batch.counts["duplicates"] += 1
            else:
                # Older than the last closed candle, or an update of a candle already final.
                batch.counts["out_of_order"] += 1
            return False
        batch.candles[(asset, candle.open_ms)] = candle
        batch.counts[counter] += 1
        if candle.closed:
            self._remember(asset, candle)
        newest = self._newest.get(asset)
        if newest is None or candle.open_ms >= newest.open_ms:
            self._newest[asset] = candle
        return True

    async def write(self, batch: Batch) -> None:
        """One round trip. MULTI/EXEC so that a reader never sees a candle removed but not
        yet re-added."""
        if not batch:
            return
        now_ms = self.clock_ms()
        k = self.keys
        async with self.redis.pipeline(transaction=True) as pipe:
            assets: set[str] = set()
            for (asset, open_ms), c in batch.candles.items():
                key = k.candles(asset, self.interval)
                pipe.zremrangebyscore(key, open_ms, open_ms)
                pipe.zadd(key, {CANDLE.encode(c): open_ms})
                assets.add(asset)
            for asset in sorted(assets):
                newest = self._newest[asset]
                # Retention is measured from the newest candle, not the wall clock, so that a
                # stalled stream does not wipe the history a restarted one still needs.
                cutoff = newest.open_ms - self.retention_ms
                pipe.zremrangebyscore(k.candles(asset, self.interval), "-inf", f"({cutoff}")
                status = FeedStatus(now_ms, newest.open_ms, newest.close)
                pipe.hset(k.feed_status(), f"{asset}:{self.interval}", FEED_STATUS.encode(status))
            for name, n in sorted(batch.counts.items()):
                if n:
                    pipe.hincrby(k.feed_stats(), name, n)
            for fields in batch.errors:
                pipe.xadd(k.journal_errors(), fields, maxlen=JOURNAL_MAXLEN, approximate=True)
            await pipe.execute()

    async def count(self, name: str, n: int = 1) -> None:
        await self.redis.hincrby(self.keys.feed_stats(), name, n)

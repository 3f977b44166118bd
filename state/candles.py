"""Candle windows, written by the feed (with its status, counters and bad frames, in one
script call: state/lua/feed_write.lua) and read back whole when it (re)connects. The
worker's reads go through state/lua/candles_read.lua in the tick's snapshot pipeline."""

from __future__ import annotations

from typing import Any

import msgspec

from state.journal import ERRORS_MAXLEN
from state.repo import Repo
from state.structs import CANDLE, FEED_STATUS, Candle, FeedStatus

# A list of candles as one JSON array; each element is byte for byte what CANDLE.encode gives.
_CANDLES = msgspec.json.Encoder()


class CandlesRepo(Repo):
    async def read_windows(self, assets: tuple[str, ...], interval: str) -> list[list[Candle]]:
        """Each asset's whole window, oldest first (scored by open time), in one round trip."""
        async with self.r.pipeline(transaction=False) as pipe:
            for a in assets:
                pipe.zrange(self.k.candles(a, interval), 0, -1)
            windows = await pipe.execute()
        return [[CANDLE.decode(m) for m in members] for members in windows]

    def write_batch(
        self,
        interval: str,
        windows: list[tuple[str, int, FeedStatus, list[Candle]]],
        counters: list[tuple[str, int]],
        errors: list[dict[str, str | int]],
        horizon_ms: int,
        host: str = "",
        pipeline: Any = None,
    ) -> Any:
        """One command (feed_write.lua), atomic so that a reader never sees a candle removed
        but not yet re-added: each window is (asset, retention cutoff in ms, its feed status,
        its candles), written as one JSON array encoded in one go; then the counters to add
        to feed:stats and the bad frames for the error journal. A stored candle opening after
        `horizon_ms` is garbage from the future, which the script's rules ignore. `host` labels
        the counters the script keeps itself (`same`, `stale`: several feeds write the same
        windows)."""
        k = self.k
        args: list[str | bytes | int] = [len(counters), len(errors), ERRORS_MAXLEN, host, horizon_ms]
        for asset, cutoff_ms, status, candles in windows:
            args += (cutoff_ms, f"{asset}:{interval}", FEED_STATUS.encode(status), _CANDLES.encode(candles))
        for name, n in counters:
            args += (name, n)
        for e in errors:
            args += (e["source"], e["error"], e["sample"], e["at_ms"])
        keys = [k.feed_status(), k.feed_stats(), k.journal_errors(), k.candle_marks()]
        keys += [k.candles(asset, interval) for asset, _, _, _ in windows]
        return self._call(self.scripts.feed_write, keys=keys, args=args, pipeline=pipeline)

    def count(self, name: str, n: int = 1, pipeline: Any = None) -> Any:
        """Add to one of the feed's counters (feed:stats)."""
        return (self.r if pipeline is None else pipeline).hincrby(self.k.feed_stats(), name, n)

    def try_claim(self, name: str, holder: str, ttl_ms: int) -> Any:
        """Claim one piece of the feeds' shared work (a backfill of one window) for `ttl_ms`
        (SET NX PX): true when the claim is `holder`'s now (new, or its own already)."""
        return self.scripts.feed_claim(keys=[self.k.feed_claim(name)], args=[holder, ttl_ms])

    def release_claim(self, name: str, holder: str) -> Any:
        """Give a claim back early, if it is still `holder`'s (the others' stay)."""
        return self.scripts.feed_claim(keys=[self.k.feed_claim(name)], args=[holder, 0])

"""The feed's REST backfill: the closed candles missed since the last one stored (after each
(re)connect), and the holes found inside a candle window (the stream skipped candles, or an
earlier run left a gap), fetched from Binance's klines endpoint within the venue's budget.

The feeds of several hosts write the same windows: after a Redis failover or a venue drop
they all reconnect at once and find the same gap. A short claim per window in Redis
(`feed:claim:<asset>:<interval>`, state/lua/feed_claim.lua) lets one of them fetch it; the
others skip the tail, and before fetching a hole read again what Redis holds of it, so that
what another feed filled is not fetched twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
from redis.exceptions import RedisError

from baton.errors import BackfillError, BadFrame, RateLimited
from feed.backoff import Backoff
from feed.store import Batch, CandleStore
from state.candles import CandlesRepo
from state.structs import Candle
from venues.binance import parse_rows, sample, symbol, used_weight_1m
from venues.budgets import BINANCE_REST_WEIGHT, klines_weight

log = logging.getLogger("feed")

BACKFILL_LIMIT = 1000  # Binance's maximum rows per klines request
# Venue budgets (venues/budgets.py, shared in Redis with every process): the feed can wait
# at most one minute of REST weight.
REST_MAX_WAIT_MS = 60_000
# Retrying the fill of a hole whose klines request failed, within one connection.
FILL_RETRY_INITIAL_S = 1.0
FILL_RETRY_MAX_S = 30.0
# How long a backfill claim holds: a few klines requests and their budget waits. A feed that
# dies holding it delays the others' fetch by at most this (they release it when done).
CLAIM_TTL_MS = 30_000


class Claims:
    """This feed's claims on the windows' backfills (see the module's docstring); `holder`
    names this feed (host and pid)."""

    def __init__(self, repo: CandlesRepo, interval: str, holder: str) -> None:
        self.repo = repo
        self.interval = interval
        self.holder = holder

    async def take(self, asset: str) -> bool:
        return bool(await self.repo.try_claim(f"{asset}:{self.interval}", self.holder, CLAIM_TTL_MS))

    async def release(self, asset: str) -> None:
        await self.repo.release_claim(f"{asset}:{self.interval}", self.holder)


class Backfill:
    """Fetches what the stream did not deliver and writes it through the feed's `CandleStore`;
    `take` waits for a venue budget (the feed's, shared with its connects)."""

    def __init__(
        self,
        store: CandleStore,
        take: Callable[[str, float, int], Awaitable[None]],
        *,
        assets: tuple[str, ...],
        rest_url: str,
        interval: str,
        interval_ms: int,
        retention_ms: int,
        clock_ms: Callable[[], int],
        claims: Claims | None = None,
        align: Callable[[int], Awaitable[object]] | None = None,
    ) -> None:
        self.store = store
        # The venue's count of the IP's REST weight this minute, from its last answer, and what
        # brings the shared budget down to it (Feed.align_weight) when it says more is used.
        self.venue_used_weight_1m: int | None = None
        self.align = align
        self.claims = claims
        self.take = take
        self.assets = assets
        self.rest_url = rest_url
        self.interval = interval
        self.interval_ms = interval_ms
        self.retention_ms = retention_ms
        self.clock_ms = clock_ms

    async def since_last_stored(self, http: aiohttp.ClientSession) -> None:
        """Fetch closed candles missing since the last one stored, at most `retention` back.
        Failures are logged and journaled; the next reconnect tries again."""
        now_ms = self.clock_ms()
        floor_ms = now_ms - self.retention_ms
        started = time.monotonic()
        filled: dict[str, int] = {}
        failed: list[str] = []
        for asset in self.assets:
            start_ms = self._tail_start(asset, floor_ms)
            if start_ms > now_ms - self.interval_ms:
                continue
            if self.claims is not None:
                if not await self.claims.take(asset):
                    # Another host's feed is fetching it; what this one's stream then writes
                    # past it shows as a hole, read again before anything is fetched.
                    log.info("backfill %s from %d left to the feed that claimed it", asset, start_ms)
                    continue
                # The claim's holder before this one may have fetched it: read the window again.
                try:
                    await self.store.load((asset,))
                except BaseException:
                    await self.claims.release(asset)
                    raise
                start_ms = self._tail_start(asset, floor_ms)
                if start_ms > now_ms - self.interval_ms:
                    await self.claims.release(asset)
                    continue
            try:
                filled[asset] = await self._fetch(http, asset, start_ms, now_ms)
            except (aiohttp.ClientError, TimeoutError, BadFrame, BackfillError, RateLimited) as e:
                msg = f"backfill {asset} from {start_ms}: {type(e).__name__}: {e}"
                log.warning("%s (retried at the next reconnect)", msg)
                failed.append(asset)
                batch = Batch()
                batch.counts["backfill_errors"] += 1
                batch.errors.append({"source": "feed", "error": msg, "sample": "", "at_ms": now_ms})
                await self.store.write(batch)
            finally:
                if self.claims is not None:
                    await self.claims.release(asset)
        if filled or failed:
            log.info(
                "backfill: %d candles (%s) in %.2f s%s",
                sum(filled.values()),
                ", ".join(f"{a}={n}" for a, n in filled.items()) or "-",
                time.monotonic() - started,
                f"; failed: {', '.join(failed)}" if failed else "",
            )
        # Holes inside the stored windows (found by the load, or by the tail just fetched);
        # those that fail stay pending for the session's filler, which retries them.
        await self.fill_holes_once(http)

    def _saw_weight(self, used: int) -> None:
        self.venue_used_weight_1m = used

    def _tail_start(self, asset: str, floor_ms: int) -> int:
        last = self.store.last_closed(asset)
        return floor_ms if last is None else max(last.open_ms + self.interval_ms, floor_ms)

    async def fill_holes(self, http: aiohttp.ClientSession) -> None:
        """Fill the pending holes, retrying failed fetches with backoff while the session lasts."""
        retry = Backoff(FILL_RETRY_INITIAL_S, FILL_RETRY_MAX_S)
        while self.store.holes:
            try:
                ok = await self.fill_holes_once(http)
            except RedisError as e:
                log.warning("filling holes: redis unavailable (%s); retried", e)
                ok = False
            if ok:
                retry.reset()
                await asyncio.sleep(0)  # never starve the reader (and its pings), whatever happens
            else:
                await asyncio.sleep(retry.next_s())

    async def fill_holes_once(self, http: aiohttp.ClientSession) -> bool:
        """One attempt at every pending hole; False if a fetch failed (its holes are given
        back). Candles the venue does not have (an exchange outage) are counted as
        `unfillable` and not asked for again until the next connection."""
        ok = True
        floor_ms = self.clock_ms() - self.retention_ms
        pending = self.store.take_holes()
        try:
            while pending:
                asset = next(iter(pending))
                ok = await self._fill_asset_holes(http, asset, pending[asset], floor_ms) and ok
                del pending[asset]
        finally:
            for asset, holes in pending.items():  # left undone by an exception (Redis)
                self.store.give_back(asset, holes)
        return ok

    async def _fill_asset_holes(
        self, http: aiohttp.ClientSession, asset: str, holes: list[tuple[int, int]], floor_ms: int
    ) -> bool:
        """Fetch the candles of one asset's holes; False if the fetch failed (the holes are
        given back for a retry)."""
        holes = [(max(a, floor_ms), b) for a, b in holes if b >= floor_ms]
        if not holes:
            return True
        if self.claims is not None:
            if not await self.claims.take(asset):
                self.store.give_back(asset, holes)  # asked again later: filled by then, or not
                return False
            try:
                return await self._fill_claimed(http, asset, holes)
            finally:
                await self.claims.release(asset)
        return await self._fill_claimed(http, asset, holes)

    async def _fill_claimed(
        self, http: aiohttp.ClientSession, asset: str, holes: list[tuple[int, int]]
    ) -> bool:
        if self.claims is not None:
            holes = await self.store.still_missing(asset, holes)
            if not holes:
                return True
        wanted = sum((b - a) // self.interval_ms + 1 for a, b in holes)
        now_ms = self.clock_ms()
        try:
            got = await self._fetch(http, asset, holes[0][0], now_ms, holes=holes)
        except (aiohttp.ClientError, TimeoutError, BadFrame, BackfillError, RateLimited) as e:
            msg = f"fill {asset} holes {holes[0][0]}..{holes[-1][1]}: {type(e).__name__}: {e}"
            log.warning("%s (retried)", msg)
            batch = Batch()
            batch.counts["backfill_errors"] += 1
            batch.errors.append({"source": "feed", "error": msg, "sample": "", "at_ms": now_ms})
            await self.store.write(batch)
            self.store.give_back(asset, holes)
            return False
        log.info("filled %d of %d missing %s candles in %d hole(s)", got, wanted, asset, len(holes))
        if got < wanted:
            batch = Batch()
            batch.counts["unfillable"] += wanted - got
            await self.store.write(batch)
        return True

    async def _fetch(
        self,
        http: aiohttp.ClientSession,
        asset: str,
        start_ms: int,
        now_ms: int,
        holes: list[tuple[int, int]] | None = None,
    ) -> int:
        """Closed candles from `start_ms` to the present; or, given `holes` (sorted open-time
        ranges behind the last closed candle), only those inside them."""
        written = 0
        end_ms = now_ms if holes is None else holes[-1][1]
        while start_ms <= (now_ms - self.interval_ms if holes is None else end_ms):
            await self.take(BINANCE_REST_WEIGHT, klines_weight(BACKFILL_LIMIT), REST_MAX_WAIT_MS)
            candles = await get_klines(
                http, self.rest_url, asset, self.interval, start_ms, end_ms, now_ms,
                on_used_weight=self._saw_weight,
            )  # fmt: skip
            if self.align is not None and self.venue_used_weight_1m is not None:
                await self.align(self.venue_used_weight_1m)
            batch = Batch()
            for c in candles:
                # The candle in progress is left to the stream, which has fresher updates.
                if not c.closed or c.open_ms < start_ms:
                    continue
                if holes is None:
                    self.store.accept(batch, asset, c, counter="backfilled")
                else:
                    self.store.fill(batch, asset, c, holes)
            await self.store.write(batch)
            written += len(batch.candles)
            if len(candles) < BACKFILL_LIMIT:
                break
            next_ms = candles[-1].open_ms + self.interval_ms
            if next_ms <= start_ms:
                break
            start_ms = next_ms
        return written


async def get_klines(
    http: aiohttp.ClientSession,
    rest_url: str,
    asset: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    limit: int = BACKFILL_LIMIT,
    on_used_weight: Callable[[int], None] | None = None,
) -> list[Candle]:
    """One GET /api/v3/klines: up to `limit` candles opening in [start_ms, end_ms], oldest
    first (the caller takes the request's budget first). Shared by the feed's backfill and
    `baton history fetch` (feed/history.py). Raises BackfillError with the HTTP status (and
    the venue's Retry-After) when the answer is not rows, BadFrame when the rows are garbage.
    `on_used_weight` hears the venue's own count of the IP's weight this minute, when the
    answer carries it (X-MBX-USED-WEIGHT-1M)."""
    params: dict[str, str | int] = {
        "symbol": symbol(asset),
        "interval": interval,
        "startTime": start_ms,
        "endTime": end_ms,
        "limit": limit,
    }
    async with http.get(f"{rest_url}/api/v3/klines", params=params) as resp:
        body = await resp.read()
        used = used_weight_1m(resp.headers)
        if used is not None and on_used_weight is not None:
            on_used_weight(used)
        if resp.status != 200:
            try:
                retry_s = float(resp.headers.get("Retry-After", "0"))
            except ValueError:
                retry_s = 0.0
            raise BackfillError(f"HTTP {resp.status}: {sample(body)}", resp.status, retry_s)
    return parse_rows(body, now_ms)

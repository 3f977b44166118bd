"""The feed's connection loop: Binance combined kline stream -> batches -> `CandleStore`.

Owns connecting, reconnecting with backoff, the REST backfill after each (re)connect and of
every hole found inside a candle window (the stream skipped candles, or an earlier run left a
gap), and stopping. It holds no state that matters: what was stored is read back from Redis.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from baton.errors import BackfillError, BadFrame, RateLimited
from baton.settings import CANDLE_INTERVAL, Settings
from feed.store import Batch, CandleStore
from kernel.clock import wall_ms
from state.keys import Keys
from state.ratelimit import AsyncLimiter
from venues.binance import (
    INTERVAL_MS,
    ServerShutdown,
    parse_frame,
    parse_rows,
    sample,
    stream_url,
    symbol,
)
from venues.budgets import BINANCE_REST_WEIGHT, BINANCE_WS_CONNECT, BUDGETS, klines_weight

log = logging.getLogger("feed")

# Binance ends every connection at 24 h; leaving on our own terms a little before avoids
# losing the frames in flight when it does.
MAX_CONNECTION_AGE_S = 23.5 * 3600
# A connection that lived this long was healthy: the next drop starts the backoff afresh.
STABLE_AFTER_S = 30.0
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
# Frames written per round trip at most; a backlog larger than this takes several.
MAX_BATCH = 1000
# Frames held between the socket and the writer. Reading eagerly keeps websockets' own queue
# short, so that its keepalive pings are answered even while a backfill runs.
QUEUE_MAX = 100_000
BACKFILL_LIMIT = 1000  # Binance's maximum rows per klines request
# Venue budgets (venues/budgets.py, shared in Redis with every process): the feed can wait,
# at most one refill of the connection budget, or one minute of REST weight.
CONNECT_MAX_WAIT_MS = 300_000
REST_MAX_WAIT_MS = 60_000
# Retrying the fill of a hole whose klines request failed, within one connection.
FILL_RETRY_INITIAL_S = 1.0
FILL_RETRY_MAX_S = 30.0
HTTP_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
PING_INTERVAL_S = 20.0

T = TypeVar("T")


# How long a cancelled task may go on before it is cancelled again (see `_cancel_and_wait`):
# longer than a session's own clean-up on cancel (a closing handshake of at most CLOSE_TIMEOUT_S),
# so that only a lost cancellation is repeated.
CANCEL_REPEAT_S = CLOSE_TIMEOUT_S + 1.0


async def _cancel_and_wait(task: asyncio.Task[Any]) -> BaseException | None:
    """Cancel `task` and wait until it has ended; returns the exception it ended with, if any
    other than the cancellation. The cancellation is repeated while the task goes on: Python
    3.11's asyncio.wait_for (which redis-py and fakeredis use around socket I/O) swallows one
    that comes as the awaited operation completes, and a stop would then wait forever."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_REPEAT_S)
    return None if task.cancelled() else task.exception()


class Backoff:
    """Exponential backoff with jitter: delay n is uniform in [d/2, d], d = initial * 2**n."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random):
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng
        self.attempt = 0

    def next_s(self) -> float:
        d = min(self.max_s, self.initial_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return d / 2 + self.rng() * d / 2

    def reset(self) -> None:
        self.attempt = 0


class _Closed:
    """Queued by the reader when the socket closes, behind the frames that came before."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


Inbox = asyncio.Queue[str | bytes | _Closed]


class Feed:
    """`await Feed(redis, ...).run()` until `stop()`; tests run it in-process."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        assets: tuple[str, ...] | list[str],
        ws_url: str,
        rest_url: str,
        prefix: str = "baton:",
        retention_s: int = 3600,
        interval: str = CANDLE_INTERVAL,
        max_connection_age_s: float = MAX_CONNECTION_AGE_S,
        backoff_initial_s: float = BACKOFF_INITIAL_S,
        backoff_max_s: float = BACKOFF_MAX_S,
        stable_after_s: float = STABLE_AFTER_S,
        clock_ms: Callable[[], int] = wall_ms,
        limiter: AsyncLimiter | None = None,
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"unsupported interval {interval!r}")
        self.assets = tuple(assets)
        self._asset_set = frozenset(self.assets)
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.url = stream_url(ws_url, self.assets, interval)
        self.rest_url = rest_url.rstrip("/")
        self.retention_ms = retention_s * 1000
        self.max_connection_age_s = max_connection_age_s
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.stable_after_s = stable_after_s
        self.clock_ms = clock_ms
        self.store = CandleStore(
            redis,
            Keys(prefix),
            interval=interval,
            retention_s=retention_s,
            clock_ms=clock_ms,
            interval_ms=self.interval_ms,
        )
        self.limiter = limiter or AsyncLimiter(redis, Keys(prefix), budgets=BUDGETS, clock_ms=wall_ms)
        self.connections = 0
        self._filler: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @classmethod
    def from_settings(cls, s: Settings, redis: aioredis.Redis, **kw: object) -> Feed:
        limiter = AsyncLimiter(
            redis, Keys(s.prefix), scale=s.rate_limit_scale, budgets=BUDGETS, clock_ms=wall_ms
        )
        kw.setdefault("limiter", limiter)
        return cls(
            redis,
            assets=s.assets,
            ws_url=s.binance_ws_url,
            rest_url=s.binance_rest_url,
            prefix=s.prefix,
            retention_s=s.candle_retention_s,
            **kw,  # type: ignore[arg-type]
        )

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    reason = await self._until_stopped(self._session(http))
                except RedisError as e:
                    reason = f"redis unavailable: {type(e).__name__}: {e}"
                except (OSError, WebSocketException, TimeoutError, RateLimited) as e:
                    reason = f"{type(e).__name__}: {e}"
                except Exception as e:  # a bug ends this connection, never the feed
                    log.exception("unexpected error in the feed session")
                    reason = f"unexpected {type(e).__name__}: {e}"
                if self._stop.is_set():
                    break
                lived_s = time.monotonic() - started
                if lived_s >= self.stable_after_s:
                    self.backoff.reset()
                # Also after a connection that succeeded then dropped: websockets itself
                # would reconnect at once, and a server that accepts and drops would spin us.
                delay_s = self.backoff.next_s()
                log.warning(
                    "disconnected after %.1f s (%s); reconnecting in %.2f s",
                    lived_s,
                    reason,
                    delay_s,
                )
                await self._until_stopped(asyncio.sleep(delay_s))
        log.info("feed stopped")

    async def _until_stopped(self, aw: Awaitable[T]) -> T | None:
        """Await `aw` unless stop() comes first, in which case it is cancelled."""
        task = asyncio.ensure_future(aw)
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                await _cancel_and_wait(task)
        return None if task.cancelled() else task.result()

    async def _session(self, http: aiohttp.ClientSession) -> str:
        """One connection, from connect to drop; returns why it ended."""
        await self._take(BINANCE_WS_CONNECT, 1, CONNECT_MAX_WAIT_MS)
        async with connect(
            self.url,
            open_timeout=OPEN_TIMEOUT_S,
            close_timeout=CLOSE_TIMEOUT_S,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_INTERVAL_S,
        ) as ws:
            self.connections += 1
            log.info("connected to %s (connection %d)", self.url, self.connections)
            queue: Inbox = asyncio.Queue(QUEUE_MAX)
            reader = asyncio.create_task(self._read(ws, queue))
            try:
                if self.connections > 1:
                    await self.store.count("reconnects")
                await self.store.load(self.assets)
                await self._backfill(http)
                age = asyncio.timeout(self.max_connection_age_s)
                try:
                    async with age:
                        return await self._consume(queue, http)
                except TimeoutError:
                    if age.expired():
                        return "connection age limit: reconnecting before the venue drops us"
                    raise
            except asyncio.CancelledError:
                # Stopping: say goodbye with a normal closure rather than 1011.
                await ws.close()
                raise
            finally:
                await _cancel_and_wait(reader)
                if self._filler is not None:
                    # Holes it did not get to are found again by the next session's load.
                    failed = await _cancel_and_wait(self._filler)
                    if failed is not None:
                        log.error("the hole filler failed", exc_info=failed)
                    self._filler = None

    async def _take(self, budget: str, cost: float, max_wait_ms: int) -> None:
        """Wait for the venue's budget before a request; RateLimited if it would take longer.
        Without Redis the request goes ahead: the reconnect backoff alone keeps the attempts far
        below the venue's limits, and the feed must not stop trying to reconnect."""
        try:
            waited_ms = await self.limiter.take(budget, cost, max_wait_ms)
        except RedisError as e:
            log.warning("rate limit %s not checked: redis unavailable (%s)", budget, e)
            return
        if waited_ms:
            log.info("waited %d ms for the %s budget", waited_ms, budget)

    async def _read(self, ws: ClientConnection, queue: Inbox) -> None:
        try:
            async for message in ws:
                await queue.put(message)
            reason = f"closed by server (code {ws.close_code})"
        except ConnectionClosed as e:
            reason = f"connection lost ({e})"
        await queue.put(_Closed(reason))

    async def _consume(self, queue: Inbox, http: aiohttp.ClientSession) -> str:
        """Write frames in batches: whatever is queued by the time the last write is done."""
        while True:
            items = [await queue.get()]
            while len(items) < MAX_BATCH and not queue.empty():
                items.append(queue.get_nowait())
            batch = Batch()
            now_ms = self.clock_ms()
            end: str | None = None
            for item in items:
                if isinstance(item, _Closed):
                    end = end or item.reason
                    break
                batch.counts["frames"] += 1
                try:
                    update = parse_frame(item, self._asset_set, self.interval)
                except BadFrame as e:
                    s = sample(item)
                    log.warning("bad frame skipped: %s; sample=%r", e, s)
                    batch.bad_frame(str(e), s, now_ms)
                    continue
                if isinstance(update, ServerShutdown):
                    # Frames already received are still good: write them, then leave.
                    end = end or "serverShutdown from the venue"
                    batch.counts["server_shutdowns"] += 1
                    continue
                self.store.accept(batch, update.asset, update.candle)
            await self.store.write(batch)
            if self.store.holes and (self._filler is None or self._filler.done()):
                # Only after the write that revealed it: the fill lands behind it, never under it.
                self._filler = asyncio.create_task(self._fill_holes(http))
            if end is not None:
                return end

    async def _backfill(self, http: aiohttp.ClientSession) -> None:
        """Fetch closed candles missing since the last one stored, at most `retention` back.
        Failures are logged and journaled; the next reconnect tries again."""
        now_ms = self.clock_ms()
        floor_ms = now_ms - self.retention_ms
        started = time.monotonic()
        filled: dict[str, int] = {}
        failed: list[str] = []
        for asset in self.assets:
            last = self.store.last_closed(asset)
            start_ms = floor_ms if last is None else max(last.open_ms + self.interval_ms, floor_ms)
            if start_ms > now_ms - self.interval_ms:
                continue
            try:
                filled[asset] = await self._backfill_asset(http, asset, start_ms, now_ms)
            except (aiohttp.ClientError, TimeoutError, BadFrame, BackfillError, RateLimited) as e:
                msg = f"backfill {asset} from {start_ms}: {type(e).__name__}: {e}"
                log.warning("%s (retried at the next reconnect)", msg)
                failed.append(asset)
                batch = Batch()
                batch.counts["backfill_errors"] += 1
                batch.errors.append({"source": "feed", "error": msg, "sample": "", "at_ms": now_ms})
                await self.store.write(batch)
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
        await self._fill_holes_once(http)

    async def _fill_holes(self, http: aiohttp.ClientSession) -> None:
        """Fill the pending holes, retrying failed fetches with backoff while the session lasts."""
        retry = Backoff(FILL_RETRY_INITIAL_S, FILL_RETRY_MAX_S)
        while self.store.holes:
            try:
                ok = await self._fill_holes_once(http)
            except RedisError as e:
                log.warning("filling holes: redis unavailable (%s); retried", e)
                ok = False
            if ok:
                retry.reset()
                await asyncio.sleep(0)  # never starve the reader (and its pings), whatever happens
            else:
                await asyncio.sleep(retry.next_s())

    async def _fill_holes_once(self, http: aiohttp.ClientSession) -> bool:
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
        wanted = sum((b - a) // self.interval_ms + 1 for a, b in holes)
        now_ms = self.clock_ms()
        try:
            got = await self._backfill_asset(http, asset, holes[0][0], now_ms, holes=holes)
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

    async def _backfill_asset(
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
            params: dict[str, str | int] = {
                "symbol": symbol(asset),
                "interval": self.interval,
                "startTime": start_ms,
                "endTime": end_ms,
                "limit": BACKFILL_LIMIT,
            }
            await self._take(BINANCE_REST_WEIGHT, klines_weight(BACKFILL_LIMIT), REST_MAX_WAIT_MS)
            async with http.get(f"{self.rest_url}/api/v3/klines", params=params) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise BackfillError(f"HTTP {resp.status}: {sample(body)}")
            candles = parse_rows(body, now_ms)
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

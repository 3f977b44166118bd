"""The feed's connection loop: Binance combined kline stream -> batches -> `CandleStore`.

Owns connecting, reconnecting with backoff, batching frames into Redis, starting the REST
backfill (feed/backfill.py) after each (re)connect and whenever a write reveals a hole, and
stopping. It holds no state that matters: what was stored is read back from Redis.

A write that Redis refuses for a while (a failover: connections dropped, READONLY from a
demoted primary, NOREPLICAS under min-replicas-to-write) is retried with the same frames,
the socket kept open and read meanwhile; once a write goes through again the windows are read
back and backfilled, since the new primary may lack the last writes the old one answered. A
client that follows the Sentinels rides out a failover inside one slow write instead of an
error: a write that took longer than SLOW_WRITE_S is followed by the same read-back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from baton.errors import BadFrame, RateLimited, UnreadableValue
from baton.settings import CANDLE_INTERVAL, Settings
from feed.assets import SLOTS_POLL_S, slot_assets
from feed.backfill import Backfill, Claims
from feed.backoff import Backoff
from feed.store import Batch, CandleStore
from kernel.clock import wall_ms
from state.keys import Keys
from state.primary import read_primary_id
from state.ratelimit import AsyncLimiter
from venues.binance import (
    INTERVAL_MS,
    ServerShutdown,
    parse_frame,
    sample,
    stream_url,
)
from venues.budgets import BINANCE_WS_CONNECT, BUDGETS, align_rest_weight

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
# Venue budgets (venues/budgets.py, shared in Redis with every process): the feed can wait
# at most one refill of the connection budget.
CONNECT_MAX_WAIT_MS = 300_000
HTTP_TIMEOUT_S = 10.0
OPEN_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0
PING_INTERVAL_S = 20.0
# A batch Redis refuses for a while (a failover) is written again this often, for at most this
# long; past it the connection ends, and the next one backfills what was not written.
WRITE_RETRY_INITIAL_S = 0.1
WRITE_RETRY_MAX_S = 1.0
WRITE_RETRY_FOR_S = 60.0
# How often the feed asks which server it writes to (a replication id: state/primary.py).
PRIMARY_CHECK_S = 1.0
# A write takes milliseconds; one that took this long waited for a new primary (the Sentinel
# client reconnects inside the call), which may lack the old one's last writes.
SLOW_WRITE_S = 1.0
# Errors of a Redis that is changing primaries, or briefly unable to take writes.
TRANSIENT_REPLIES = ("NOREPLICAS", "READONLY", "MASTERDOWN", "LOADING", "TRYAGAIN")


def transient(e: RedisError) -> bool:
    """True for a Redis error that a retry a moment later can get past (a failover)."""
    if isinstance(e, RedisConnectionError | RedisTimeoutError | ReadOnlyError):
        return True
    return isinstance(e, ResponseError) and str(e).startswith(TRANSIENT_REPLIES)


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
        host: str = "",
        write_retry_for_s: float = WRITE_RETRY_FOR_S,
        follow_slots: bool = False,
        slots_poll_s: float = SLOTS_POLL_S,
    ) -> None:
        if interval not in INTERVAL_MS:
            raise ValueError(f"unsupported interval {interval!r}")
        self.assets = tuple(assets)
        self._asset_set = frozenset(self.assets)
        # Stream the slots' assets (feed/assets.py) rather than `assets`, which stand only
        # while the slots hash holds none; the tests' feeds stream what they are given.
        self.configured_assets = self.assets
        self.follow_slots = follow_slots
        self.slots_poll_s = slots_poll_s
        self._reconnect_now = False
        self.ws_url = ws_url
        self.interval = interval
        self.interval_ms = INTERVAL_MS[interval]
        self.url = stream_url(ws_url, self.assets, interval)
        self.rest_url = rest_url.rstrip("/")
        self.retention_ms = retention_s * 1000
        self.max_connection_age_s = max_connection_age_s
        self.backoff = Backoff(backoff_initial_s, backoff_max_s)
        self.stable_after_s = stable_after_s
        self.clock_ms = clock_ms
        self.redis = redis
        self.write_retry_for_s = write_retry_for_s
        self.store = CandleStore(
            redis,
            Keys(prefix),
            interval=interval,
            retention_s=retention_s,
            clock_ms=clock_ms,
            interval_ms=self.interval_ms,
            host=host,
        )
        holder = f"{host or socket.gethostname()}:{os.getpid()}"
        self.limiter = limiter or AsyncLimiter(redis, Keys(prefix), budgets=BUDGETS, clock_ms=wall_ms)
        self.backfill = Backfill(
            self.store,
            self._take,
            assets=self.assets,
            rest_url=self.rest_url,
            interval=interval,
            interval_ms=self.interval_ms,
            retention_ms=self.retention_ms,
            clock_ms=clock_ms,
            claims=Claims(self.store.candles, interval, holder),
            align=lambda used: align_rest_weight(self.limiter, used),
        )
        self.keys = Keys(prefix)
        self.connections = 0
        self.attempts = 0  # sessions begun, whether or not they reached Redis and the venue
        self._filler: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        # The replication id of the server last written to (_primary_changed), and when to
        # ask again.
        self._primary: str | None = None
        self._primary_next = 0.0

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
            host=s.host,
            follow_slots=True,
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
                    if self.follow_slots:
                        self._set_assets(
                            await slot_assets(self.redis, self.keys, self.configured_assets, self.assets)
                        )
                    reason = await self._until_stopped(self._session(http))
                except RedisError as e:
                    reason = f"redis unavailable: {type(e).__name__}: {e}"
                except UnreadableValue as e:
                    # One of the feed's own keys holds garbage (feed_write.lua wrote nothing):
                    # like Redis being away, the session ends and backs off; once it is
                    # repaired the reconnect backfills what was not written.
                    log.error("feed: a write refused, waiting for a repair: %s", e)
                    reason = f"redis holds garbage: {e}"
                except (OSError, WebSocketException, TimeoutError, RateLimited) as e:
                    reason = f"{type(e).__name__}: {e}"
                except Exception as e:  # a bug ends this connection, never the feed
                    log.exception("unexpected error in the feed session")
                    reason = f"unexpected {type(e).__name__}: {e}"
                if self._stop.is_set():
                    break
                lived_s = time.monotonic() - started
                if self._reconnect_now:  # the assets changed: not a failure to back off from
                    self._reconnect_now = False
                    log.info("reconnecting: %s", reason)
                    continue
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
        # Without Redis nothing read could be written: no connection is spent on the venue's
        # budget (a RedisError ends the session here, and the next one asks again).
        self.attempts += 1
        await self.redis.ping()
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
            watcher = asyncio.create_task(self._watch_assets(queue)) if self.follow_slots else None
            try:
                if self.connections > 1:
                    await self.store.count("reconnects")
                await self.store.load(self.assets)
                await self.backfill.since_last_stored(http)
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
                if watcher is not None:
                    await _cancel_and_wait(watcher)
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

    async def _write(self, batch: Batch) -> bool:
        """Write `batch`, retrying while Redis refuses it for a reason that passes (a failover);
        True when it took a retry or a long time (the windows are then read back: `_resync`).
        Raises the error when it persists past `write_retry_for_s`, or is not of that kind."""
        retry = Backoff(WRITE_RETRY_INITIAL_S, WRITE_RETRY_MAX_S)
        failing_since: float | None = None
        while True:
            started = time.monotonic()
            try:
                await self.store.write(batch)
                took_s = time.monotonic() - started
                if failing_since is None and took_s > SLOW_WRITE_S:
                    log.warning("a write took %.1f s (a new primary?): reading the windows back", took_s)
                    return True
            except RedisError as e:
                if not transient(e):
                    raise
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                    log.warning(
                        "redis refused a write (%s: %s); retrying with the same frames", type(e).__name__, e
                    )
                elif now - failing_since > self.write_retry_for_s:
                    raise
                await asyncio.sleep(retry.next_s())
                continue
            if failing_since is not None:
                log.info("redis took the write again after %.1f s", time.monotonic() - failing_since)
            return failing_since is not None or await self._primary_changed()

    async def _primary_changed(self) -> bool:
        """Whether the server the feed writes to is another one than at the last look (at most
        once a second; one INFO round trip after a write, never before one). Writes a killed
        primary answered, or a restarted one took before Sentinel demoted it, are gone from the
        promoted replica without any write failing or waiting: only a new replication id says
        so, and then the windows are read back and backfilled (_resync)."""
        now = time.monotonic()
        if now < self._primary_next:
            return False
        self._primary_next = now + PRIMARY_CHECK_S
        try:
            pid = await read_primary_id(self.redis)
        except RedisError as e:
            log.warning("could not ask which server is the primary: %s", e)
            return False
        if pid is None:
            return False
        before, self._primary = self._primary, pid
        if before is not None and pid != before:
            log.warning(
                "the redis primary changed (replication id %s… -> %s…): reading the windows back",
                before[:8],
                pid[:8],
            )
            return True
        return False

    async def _resync(self, http: aiohttp.ClientSession) -> None:
        """After Redis refused writes for a while: read the windows back (a promoted replica may
        lack the old primary's last writes) and backfill what they miss, as a reconnect does."""
        if self._filler is not None:
            await _cancel_and_wait(self._filler)
            self._filler = None
        await self.store.count("redis_recoveries")
        await self.store.load(self.assets)
        await self.backfill.since_last_stored(http)

    def _set_assets(self, assets: tuple[str, ...]) -> None:
        if assets == self.assets:
            return
        log.info("streaming assets %s (were %s)", ",".join(assets), ",".join(self.assets))
        self.assets = self.backfill.assets = assets
        self._asset_set = frozenset(assets)
        self.url = stream_url(self.ws_url, assets, self.interval)

    async def _watch_assets(self, queue: Inbox) -> None:
        """Every few seconds, the slots' assets: when they changed, the session ends behind the
        frames queued so far, and the next one streams the new set (and backfills it)."""
        while True:
            await asyncio.sleep(self.slots_poll_s)
            try:
                wanted = await slot_assets(self.redis, self.keys, self.configured_assets, self.assets)
            except RedisError as e:  # the writes notice Redis away; the set stands meanwhile
                log.warning("slots not read (%s): streaming %s still", e, ",".join(self.assets))
                continue
            if wanted != self.assets:
                self._reconnect_now = True
                await queue.put(_Closed(f"the slots' assets changed to {','.join(wanted)}"))
                return

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
            if await self._write(batch):
                await self._resync(http)
            if self.store.holes and (self._filler is None or self._filler.done()):
                # Only after the write that revealed it: the fill lands behind it, never under it.
                self._filler = asyncio.create_task(self.backfill.fill_holes(http))
            if end is not None:
                return end

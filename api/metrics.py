"""GET /metrics: the system in Prometheus text format (version 0.0.4).

Two sources, one private registry (never prometheus_client's global one, so that nothing
else in the process leaks into the scrape and tests can build as many as they like):

- Histograms of tick duration and start jitter, and counters of control actions, kept in
  this process by `follow_journal`: it follows `journal:ticks` and `audit` with XREAD BLOCK
  from their ends at startup. Starting from the end, not from the last N entries, is on
  purpose: these are counters, and a restarted api that replayed old ticks would show a
  burst of ticks that never happened in `rate()`. The newest tick is also exported as
  plain gauges (`baton_last_tick_*`), so a fresh process still has something to show.
- Everything else is read from Redis at scrape time by `RedisCollector` (api/metrics_redis.py):
  one pipeline, one round trip, whatever the number of slots, and O(1) in the history kept (the
  counts of state/counts.py, not the intents themselves). Redis is the ground truth; these
  counters survive an api restart because Redis holds them. Scrapes within RENDER_SHARED_S of
  a render share it (`SharedRender`), so that many scrapers cost one read.

The collector never raises: an unreadable value is skipped and counted in
`baton_metrics_problems{part="scrape"}`, and with Redis unreachable the scrape answers
`baton_redis_up 0` and nothing else read from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, cast

import redis
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from redis.typing import KeyT, StreamIdT

from api.auth import metrics_door
from api.context import ApiContext, ctx_of, stop_if_cancelled
from api.metrics_redis import RedisCollector, text
from api.spec import route
from baton.settings import Settings
from kernel.clock import wall_ms
from state.keys import Keys

log = logging.getLogger("baton.api.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Milliseconds, for a 5 s tick: a healthy tick takes tens of ms and starts a few ms late; the
# top buckets catch the slow ones and +Inf the overruns.
BUCKETS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# Per XREAD: a burst after a stall is read in chunks of this many entries.
READ_COUNT = 500
# Audit actions and results become label values: only well-formed ones, so that garbage in
# the stream cannot create unbounded series.
_LABEL = re.compile(r"[a-z][a-z0-9_]{0,31}")
AUDIT_RESULTS = ("ok", "refused")
METRICS_KEY = "metrics"


class Metrics:
    """The registry of one api process: the followed histograms and counters, and the
    collector that reads Redis at scrape time."""

    def __init__(
        self,
        s: Settings,
        r: redis.Redis,
        *,
        programs: Callable[[], Mapping[str, str]] | None = None,
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.registry = CollectorRegistry()
        self.tick_duration = Histogram(
            "baton_tick_duration_ms",
            "Duration of each tick, from the tick journal (ms).",
            ["color"],
            buckets=BUCKETS_MS,
            registry=self.registry,
        )
        self.tick_jitter = Histogram(
            "baton_tick_jitter_ms",
            "How late each tick started after its wall-clock boundary, from the tick journal (ms).",
            ["color"],
            buckets=BUCKETS_MS,
            registry=self.registry,
        )
        self.control_actions = Counter(
            "baton_control_actions",
            "Control actions from the audit stream (every door: api, cli, file), by action and result.",
            ["action", "result"],
            registry=self.registry,
        )
        self.followed_problems = 0
        self.collector = RedisCollector(
            s, r, followed_problems=lambda: self.followed_problems, programs=programs, clock_ms=clock_ms
        )
        self.registry.register(self.collector)

    def observe_tick(self, fields: Mapping[Any, Any]) -> bool:
        f = {text(k): text(v) for k, v in fields.items()}
        try:
            duration, jitter = int(f["duration_ms"]), int(f["jitter_ms"])
        except (KeyError, ValueError):
            return False
        color = f.get("color", "")
        if not _LABEL.fullmatch(color):
            return False
        self.tick_duration.labels(color).observe(duration)
        self.tick_jitter.labels(color).observe(jitter)
        return True

    def observe_audit(self, fields: Mapping[Any, Any]) -> bool:
        f = {text(k): text(v) for k, v in fields.items()}
        action, result = f.get("action", ""), f.get("result", "")
        if not _LABEL.fullmatch(action) or result not in AUDIT_RESULTS:
            return False
        self.control_actions.labels(action, result).inc()
        return True

    def render(self) -> bytes:
        """The scrape body. Synchronous (it reads Redis): call it from a thread."""
        return generate_latest(self.registry)


# --- the journal follower ---------------------------------------------------------------------
async def _ends(r: Any, streams: list[str]) -> dict[KeyT, StreamIdT]:
    """The id of each stream's newest entry ("0-0" when empty): where following starts."""
    async with r.pipeline(transaction=False) as pipe:
        for name in streams:
            pipe.xrevrange(name, count=1)
        lasts = await pipe.execute()
    return {name: (last[0][0] if last else "0-0") for name, last in zip(streams, lasts, strict=True)}


async def follow_journal(
    ctx: ApiContext,
    metrics: Metrics,
    stop: asyncio.Event,
    *,
    block_ms: int = 5000,
    retry_s: float = 1.0,
    ready: asyncio.Event | None = None,
) -> None:
    """Observe every tick journal and audit entry written after the start, until `stop` is set
    (or the task is cancelled); `ready` is set once the start is fixed (what is written after
    it is observed). Redis down: log once, retry every `retry_s`, never die."""
    k = Keys(ctx.s.prefix)
    journal, audit = k.journal_ticks(), k.audit()
    ids: dict[KeyT, StreamIdT] | None = None
    down = False
    while not stop.is_set():
        stop_if_cancelled()
        try:
            if ids is None:
                ids = await _ends(ctx.redis, [journal, audit])
                stop_if_cancelled()
                if ready is not None:
                    ready.set()
            got = cast(
                list[tuple[str | bytes, list[tuple[str | bytes, dict[Any, Any]]]]],
                await ctx.redis.xread(ids, block=block_ms, count=READ_COUNT),
            )
        except (redis.RedisError, OSError) as e:
            if not down:
                log.warning("metrics: cannot follow the tick journal: %s; retrying", e)
                down = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), retry_s)
            continue
        if down:
            log.info("metrics: following the tick journal again")
            down = False
        for stream, entries in got or []:
            name = text(stream)
            observe = metrics.observe_tick if name == journal else metrics.observe_audit
            for entry_id, fields in entries:
                if not observe(fields):
                    metrics.followed_problems += 1
                ids[name] = entry_id


# --- wiring -----------------------------------------------------------------------------------
# Scrapes that arrive within this long of a render share it: one Redis read and one encoding
# however many scrapers there are (several Prometheus servers, 50 dashboards' panels).
RENDER_SHARED_S = 1.0
RENDER_KEY = "metrics_render"


class SharedRender:
    """The last render and when it was made; concurrent scrapes wait for one render."""

    def __init__(self, ttl_s: float = RENDER_SHARED_S) -> None:
        self.ttl_s = ttl_s
        self.body = b""
        self.at = -float("inf")
        self.lock = asyncio.Lock()

    async def get(self, render: Callable[[], Any]) -> bytes:
        if time.monotonic() - self.at < self.ttl_s:
            return self.body
        async with self.lock:
            if time.monotonic() - self.at >= self.ttl_s:  # not made while this one waited
                self.body = await render()
                self.at = time.monotonic()
            return self.body


def metrics_of(ctx: ApiContext) -> Metrics:
    """This process's Metrics, made on first use. It reads through the operations' Redis
    client (decode_responses=True), the same Redis the control calls see."""
    m = ctx.extra.get(METRICS_KEY)
    if m is None:
        m = ctx.extra[METRICS_KEY] = Metrics(ctx.s, ctx.ops.r, programs=ctx.ops.programs)
    return m


def setup(app: web.Application, ctx: ApiContext) -> None:
    """Run the journal follower for the app's lifetime."""

    async def follower(_app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(follow_journal(ctx, metrics_of(ctx), stop), name="metrics-follower")
        yield
        stop.set()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(follower)


@route(
    "GET",
    "/metrics",
    public=True,
    content_type="text/plain; version=0.0.4",
    errors=(401, 403),
    summary="Prometheus metrics: ticks, orders, positions, PnL, feed staleness, control actions. "
    "BATON_METRICS_AUTH: loopback clients only (default, 403 to others), a bearer token (401), or open",
    tags=("observability",),
)
async def metrics(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    metrics_door(request, ctx)
    shared = ctx.extra.setdefault(RENDER_KEY, SharedRender())
    body = await shared.get(lambda: ctx.call(metrics_of(ctx).render))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

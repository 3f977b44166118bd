"""The feed's use of the venue request budgets (state/ratelimit.py, venues/budgets.py): it
waits for a token before each connection attempt, its backfill takes each request's weight
first, and it takes the budgets' scale from the settings."""

from __future__ import annotations

import asyncio
import contextlib
import time

import fakeredis
import pytest

from baton import settings
from feed.client import Feed
from kernel.clock import wall_ms
from state.keys import Keys
from state.ratelimit import AsyncLimiter, BucketSpec, Budget
from tests.fast.feed_loop.fakes import DROP, kline, running
from venues.budgets import BINANCE_REST_WEIGHT, BINANCE_WS_CONNECT

KEYS = Keys("baton:")


@pytest.fixture
async def redis(server):
    """Decoded, for reading the buckets (the feed_loop fixture of that name is bytes)."""
    r = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    yield r
    await r.aclose()


class Recording(AsyncLimiter):
    """Records every take: (budget, cost, ms waited)."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.taken: list[tuple[str, float, int]] = []

    async def take(self, budget, cost=1, max_wait_ms=0):
        waited = await super().take(budget, cost, max_wait_ms)
        self.taken.append((budget if isinstance(budget, str) else budget.name, cost, waited))
        return waited


def tiny(connect: BucketSpec, weight: BucketSpec) -> dict[str, Budget]:
    return {
        BINANCE_WS_CONNECT: Budget(BINANCE_WS_CONNECT, (connect,)),
        BINANCE_REST_WEIGHT: Budget(BINANCE_REST_WEIGHT, (weight,)),
    }


@contextlib.asynccontextmanager
async def feed_running(redis, binance, rest, limiter):
    feed = Feed(
        redis,
        assets=("btc", "eth"),
        ws_url=binance.url,
        rest_url=rest.url,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        limiter=limiter,
    )
    async with running(feed):
        yield feed


@pytest.fixture
async def raw(server):
    """The feed's client: bytes, as in production."""
    r = fakeredis.FakeAsyncRedis(server=server)
    yield r
    await r.aclose()


async def wait_until(cond, what: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def consuming(redis) -> None:
    """Until the feed has taken the frame sent: its session is set up and reading frames.
    (Stopping it before that could land in a fakeredis call, which can swallow a cancel.)"""

    async def one_frame():
        return int(await redis.hget(KEYS.feed_stats(), "frames") or 0) >= 1

    await wait_until(one_frame, "the feed to take a frame")


async def test_the_feed_waits_for_the_connection_budget(raw, redis, binance, rest):
    lim = Recording(
        raw,
        KEYS,
        budgets=tiny(BucketSpec("test:connect", 1, 2), BucketSpec("test:weight", 1000, 1000)),
        clock_ms=wall_ms,
    )
    t = (int(time.time()) - 60) * 1000
    # The first two connections are dropped at once; the third gets a frame.
    binance.send(DROP, DROP, kline("btc", t))
    async with feed_running(raw, binance, rest, lim):
        await consuming(raw)
        assert float(await redis.hget(KEYS.ratelimit("test:connect"), "tokens")) < 1
    connects = [t for t in lim.taken if t[0] == BINANCE_WS_CONNECT]
    assert len(connects) == len(binance.paths) == 3 and connects[0][2] == 0
    # One attempt per 500 ms: the reconnects, 10-20 ms of backoff apart, waited for a token.
    assert all(waited > 100 for _, _, waited in connects[1:])


async def test_the_feed_backfill_takes_its_weight_and_waits_for_it(raw, redis, binance, rest):
    now_s = int(time.time())
    rest.rows_from_ms = (now_s - 20) * 1000
    # One klines request (weight 2) at once, then one per second.
    lim = Recording(
        raw,
        KEYS,
        budgets=tiny(BucketSpec("test:connect", 10, 10), BucketSpec("test:weight", 2, 2)),
        clock_ms=wall_ms,
    )
    binance.send(kline("btc", (now_s - 10) * 1000))  # a candle the backfill also has
    async with feed_running(raw, binance, rest, lim):
        await consuming(raw)
        assert float(await redis.hget(KEYS.ratelimit("test:weight"), "tokens")) <= 0
    weights = [t for t in lim.taken if t[0] == BINANCE_REST_WEIGHT]
    assert len(weights) >= len(rest.requests) >= 2  # every request took its weight first
    assert all(cost == 2 for _, cost, _ in weights)
    assert weights[0][2] == 0 and weights[1][2] > 300


async def test_the_feed_takes_its_scale_from_settings(redis):
    s = settings.load({"BATON_RATE_LIMIT_SCALE": "0", "BATON_PREFIX": "t9:"})
    feed = Feed.from_settings(s, redis)
    assert not feed.limiter.enabled and feed.limiter.keys.p == "t9:"

"""The feed against the sim's Binance server (sim/binance.py): the stream and the REST
backfill agree, and the stored candles are the sim's price model, second by second."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import fakeredis
import pytest
from aiohttp import web

from feed.client import Feed
from sim.binance import BinanceSim, create_app
from sim.model import PriceModel
from state.keys import Keys
from state.structs import CANDLE, Candle

KEYS = Keys("baton:")
ASSETS = ("btc", "eth")


def now_s() -> int:
    return int(time.time())


async def candles(redis, asset: str) -> list[Candle]:
    return [CANDLE.decode(m) for m in await redis.zrange(KEYS.candles(asset, "1s"), 0, -1)]


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[int]:
    """The sim's app on a free local port, over a real socket: yields the port."""
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def feed_on(redis, port: int, **kw) -> Feed:
    url = f"127.0.0.1:{port}"
    return Feed(redis, assets=ASSETS, ws_url=f"ws://{url}", rest_url=f"http://{url}", retention_s=60, **kw)


async def closed_after(redis, t_s: int) -> bool:
    """Every asset has a closed candle opening at `t_s` or later."""
    for asset in ASSETS:
        closed = [c for c in await candles(redis, asset) if c.closed]
        if not closed or closed[-1].open_ms < t_s * 1000:
            return False
    return True


async def stats(redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(KEYS.feed_stats())).items()}


async def wait_for(cond, what: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_the_feed_keeps_up_with_the_sim_binance_server():
    sim_binance = pytest.importorskip("sim.binance")  # another engineer's module

    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    model = PriceModel(seed=7)
    async with serving(sim_binance.create_app(sim_binance.BinanceSim(model, ASSETS))) as port:
        connected_s = now_s()
        feed = feed_on(redis, port)
        task = asyncio.create_task(feed.run())
        try:
            # Generous: this runs beside a loaded end-to-end stack on 2-core CI machines.
            await wait_for(lambda: closed_after(redis, connected_s + 1), "live closed candles", timeout_s=30)
        finally:
            feed.stop()
            await asyncio.wait_for(task, 30)

    for asset in ASSETS:
        got = [c for c in await candles(redis, asset) if c.closed]
        opens = [c.open_ms for c in got]
        assert opens == list(range(opens[0], opens[-1] + 1, 1000)), "a second is missing"
        assert len(got) >= 55  # the backfilled minute, then the stream
        for c in got[-5:]:
            o, h, lo, cl = model.candle(asset, c.open_ms // 1000)
            assert (c.open, c.high, c.low, c.close) == pytest.approx((o, h, lo, cl), rel=1e-9)
    s = await stats(redis)
    assert s.get("bad_frames", 0) == 0 and s["backfilled"] >= 110 and s["candles"] >= 2
    await redis.aclose()


async def test_a_stream_dropped_mid_window_reconnects_and_backfills_with_no_hole():
    """The sim cuts the socket in the middle of a (6 s) window and refuses reconnects for
    2 s: the feed reconnects with backoff and backfills, so that every second of the window
    is in Redis, with the model's prices."""

    window_s, refuse_ms = 6, 2000
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    model = PriceModel(seed=11)
    sim = BinanceSim(model, ASSETS)
    async with serving(create_app(sim)) as port:
        feed = feed_on(redis, port, backoff_initial_s=0.1, backoff_max_s=0.5)
        connected_s = now_s()
        task = asyncio.create_task(feed.run())
        try:
            await wait_for(lambda: closed_after(redis, connected_s + 1), "the live stream", timeout_s=30)
            # Drop 1.5-3 s into a window, so that candles of the window come before and after it.
            while not 1.5 <= time.time() % window_s < 3:
                await asyncio.sleep(0.05)
            drop_s = now_s()
            window = drop_s - drop_s % window_s
            before = await stats(redis)
            assert sim.drop_streams(refuse_ms=refuse_ms) == 1
            # The window's last second, from the stream or the backfill: the window is complete.
            await wait_for(
                lambda: closed_after(redis, window + window_s - 1), "the window's end", timeout_s=45
            )
        finally:
            feed.stop()
            await asyncio.wait_for(task, 30)

    for asset in ASSETS:
        got = [c for c in await candles(redis, asset) if c.closed]
        opens = [c.open_ms for c in got]
        assert opens == list(range(opens[0], opens[-1] + 1, 1000)), f"{asset}: a second is missing"
        in_window = [c for c in got if window * 1000 <= c.open_ms < (window + window_s) * 1000]
        assert [c.open_ms // 1000 for c in in_window] == list(range(window, window + window_s))
        for c in in_window:
            o, h, lo, cl = model.candle(asset, c.open_ms // 1000)
            assert (c.open, c.high, c.low, c.close) == pytest.approx((o, h, lo, cl), rel=1e-9)
    after = await stats(redis)
    assert after.get("reconnects", 0) >= 1
    # The seconds the stream missed came from REST: at least the refused ones.
    assert after.get("backfilled", 0) - before.get("backfilled", 0) >= 2 * len(ASSETS)
    assert after.get("bad_frames", 0) == 0
    await redis.aclose()


async def test_the_backfill_never_stores_the_candle_still_open_as_closed():
    """The sim's klines end with the candle still open, as Binance's do: the backfill stores
    the closed ones, each as the model closed it, and leaves the open one to the stream."""
    import aiohttp

    at_ms = (now_s() - 30) * 1000 + 600  # 600 ms into a second, on both clocks
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    model = PriceModel(seed=5)
    async with serving(create_app(BinanceSim(model, ASSETS, clock_ms=lambda: at_ms))) as port:
        feed = feed_on(redis, port, clock_ms=lambda: at_ms)
        async with aiohttp.ClientSession() as http:
            await feed.store.load(ASSETS)
            await feed.backfill.since_last_stored(http)
    open_ms = at_ms // 1000 * 1000
    for asset in ASSETS:
        got = await candles(redis, asset)
        assert got and all(c.closed for c in got)
        assert got[-1].open_ms == open_ms - 1000  # the last closed; the open one is not stored
        for c in got[-3:]:
            assert (c.open, c.high, c.low, c.close) == pytest.approx(
                model.candle(asset, c.open_ms // 1000), rel=1e-9
            )
    await redis.aclose()


async def test_the_backfill_reads_the_venues_used_weight_and_aligns_the_budget_with_it():
    """Binance's answers say how much weight the IP used this minute (X-MBX-USED-WEIGHT-1M):
    weight spent outside the shared budget (another program on the same address) brings the
    budget down to what the venue has left."""
    import aiohttp

    from venues.budgets import BINANCE_REST_WEIGHT, BINANCE_REST_WEIGHT_1M, BINANCE_REST_WEIGHT_LIMIT_1M

    at_ms = (now_s() - 30) * 1000 + 600
    redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    sim = BinanceSim(PriceModel(seed=5), ASSETS, clock_ms=lambda: at_ms)
    sim.use_weight("127.0.0.1", 5000)  # another program behind this address
    async with serving(create_app(sim)) as port:
        feed = feed_on(redis, port, clock_ms=lambda: at_ms)
        async with aiohttp.ClientSession() as http:
            await feed.store.load(ASSETS)
            await feed.backfill.since_last_stored(http)
    used = feed.backfill.venue_used_weight_1m
    assert used == 5000 + 2 * len(ASSETS)  # the sim's count, read by the backfill
    level = (await feed.limiter.levels(BINANCE_REST_WEIGHT))[BINANCE_REST_WEIGHT_1M.name]
    assert level <= BINANCE_REST_WEIGHT_LIMIT_1M - used + 1  # the budget leaves no more than the venue
    await redis.aclose()

"""Feeds of several hosts on one Redis (tests/fast/feed_loop/fakes.py): a gap they all find
after a reconnect is fetched over REST by one of them (a claim per window), and a feed whose
writes Redis refuses for a while (a failover) keeps its frames and writes them afterwards."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, ResponseError
from websockets.asyncio.server import serve

from feed.backfill import CLAIM_TTL_MS, Claims
from feed.client import SLOW_WRITE_S, transient
from feed.store import CandleStore
from state.candles import CandlesRepo
from tests.fast.feed_loop.fakes import (
    ASSETS,
    KEYS,
    FakeBinance,
    candles,
    expected,
    kline,
    make_feed,
    now_s,
    running,
    stats,
    wait_for,
)


@contextlib.asynccontextmanager
async def venue() -> AsyncIterator[FakeBinance]:
    """One more kline stream: each feed has its own connection to the venue."""
    fake = FakeBinance()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield fake


async def test_a_claim_is_one_feeds_until_it_gives_it_back_or_it_expires(redis):
    repo = CandlesRepo(redis, KEYS)
    h1, h2 = Claims(repo, "1s", "h1:10"), Claims(repo, "1s", "h2:20")
    assert await h1.take("btc") and await h1.take("btc")  # its own: renewed
    assert not await h2.take("btc")
    assert await h2.take("eth")  # one claim per window
    await h2.release("btc")  # not h2's: left alone
    assert await redis.get(KEYS.feed_claim("btc:1s")) == b"h1:10"
    assert 0 < await redis.pttl(KEYS.feed_claim("btc:1s")) <= CLAIM_TTL_MS
    await h1.release("btc")
    assert await h2.take("btc")


async def test_three_feeds_reconnecting_at_once_backfill_each_window_once(redis, binance, rest):
    """Three feeds start together on a window that stopped a minute ago (as after a failover):
    each window's gap is fetched by one of them, not three times."""
    t = (now_s() - 60) * 1000
    for a in ASSETS:
        store = CandleStore(redis, KEYS, interval="1s", retention_s=3600, clock_ms=lambda: t + 1000)
        await store.load((a,))
        batch = store_batch(store, a, t)
        await store.write(batch)
    rest.rows_from_ms = t
    async with venue() as b2, venue() as b3:
        feeds = [make_feed(redis, v, rest, host=h) for v, h in ((binance, "h1"), (b2, "h2"), (b3, "h3"))]
        async with running(feeds[0]), running(feeds[1]), running(feeds[2]):

            async def complete():
                return all([len(await candles(redis, a)) >= 55 for a in ASSETS])

            await wait_for(complete, "the gap filled")
            # Each feed's stream then writes the candle of the present: behind it, their caches
            # see the gap, which they read again from Redis instead of fetching it.
            now = now_s() * 1000
            for v in (binance, b2, b3):
                v.send(kline("btc", now), kline("eth", now))

            async def written():
                s = await stats(redis)
                return all([s.get(f"candles@{h}", 0) >= 2 for h in ("h1", "h2", "h3")])

            await wait_for(written, "each feed's write of the present candle")
            got = await candles(redis, "btc")
            assert [c.open_ms for c in got if c.open_ms <= now - 1000] == list(range(t, now, 1000))
    tail_asks = [q for q in rest.requests if int(q["startTime"]) <= t + 1000]
    assert sorted(q["symbol"] for q in tail_asks) == ["BTCUSDT", "ETHUSDT"], rest.requests


def store_batch(store: CandleStore, asset: str, t: int):
    from feed.store import Batch

    batch = Batch()
    store.accept(batch, asset, expected(asset, t))
    return batch


def test_the_errors_of_a_failover_are_retried_and_others_are_not():
    assert transient(RedisConnectionError("Connection refused"))
    assert transient(ReadOnlyError("You can't write against a read only replica."))
    assert transient(ResponseError("NOREPLICAS Not enough good replicas to write."))
    assert transient(ResponseError("LOADING Redis is loading the dataset in memory"))
    assert not transient(ResponseError("BADARG counters: not an integer"))
    assert not transient(ResponseError("WRONGTYPE Operation against a key holding the wrong kind"))


async def test_a_feed_keeps_its_frames_while_redis_refuses_writes_and_writes_them_after(
    redis, binance, rest, monkeypatch
):
    """Redis answers NOREPLICAS, then READONLY, then drops the connection (a primary losing its
    replicas, demoted, then gone); the feed keeps the socket and its frames, and once a write
    goes through it reads the windows back: nothing is lost and no reconnect was needed."""
    t = (now_s() - 30) * 1000
    feed = make_feed(redis, binance, rest, host="h1")
    refusals = [
        ResponseError("NOREPLICAS Not enough good replicas to write."),
        ReadOnlyError("You can't write against a read only replica."),
        RedisConnectionError("Connection closed by server."),
    ]
    real_write = feed.store.write
    refusing = False

    async def write(batch):
        if refusing and refusals and batch.candles:
            raise refusals.pop(0)
        await real_write(batch)

    monkeypatch.setattr(feed.store, "write", write)
    async with running(feed):
        binance.send(kline("btc", t))

        async def first():
            return len(await candles(redis)) == 1

        await wait_for(first, "the first candle")
        refusing = True
        binance.send(*(kline("btc", t + i * 1000) for i in range(1, 6)))

        async def all_six():
            return len(await candles(redis)) == 6

        await wait_for(all_six, "the frames sent while Redis refused writes")
    assert refusals == []
    assert await candles(redis) == [expected("btc", t + i * 1000) for i in range(6)]
    assert len(binance.paths) == 1, "the feed reconnected instead of retrying the write"
    assert (await stats(redis))["redis_recoveries"] == 1


async def test_a_write_that_waited_for_a_new_primary_reads_back_what_it_lost(
    redis, binance, rest, monkeypatch
):
    """Through Sentinel a failover is one slow write, not an error; the new primary may lack
    the old one's last writes: the feed reads the window back and fills what is missing."""
    t = (now_s() - 30) * 1000
    feed = make_feed(redis, binance, rest, host="h1")
    real_write = feed.store.write
    failover = False

    async def write(batch):
        nonlocal failover
        if failover and batch.candles:
            failover = False
            # The old primary answered t+1 and t+2, then died; the replica promoted lacks them.
            await redis.zremrangebyscore(KEYS.candles("btc", "1s"), t + 1000, t + 2000)
            await asyncio.sleep(SLOW_WRITE_S + 0.1)
        await real_write(batch)

    monkeypatch.setattr(feed.store, "write", write)
    async with running(feed):
        binance.send(*(kline("btc", t + i * 1000) for i in range(3)))

        async def first():
            return len(await candles(redis)) == 3

        await wait_for(first, "the first candles")
        rest.rows_from_ms = t
        failover = True
        binance.send(kline("btc", t + 3000))

        async def whole():
            return [c.open_ms for c in await candles(redis)][:4] == [t + i * 1000 for i in range(4)]

        await wait_for(whole, "the window whole again")
    assert (await stats(redis))["redis_recoveries"] == 1
    assert len(binance.paths) == 1


class NoRest:
    """The REST stand-in a Feed is built with, never called here."""

    url = "http://127.0.0.1:9"


async def test_the_feeds_of_three_hosts_take_from_one_venue_budget(server):
    """The Binance buckets are keyed by nothing of a host's: what one feed spends, the others
    no longer have (one IP's budget for the three of them: the cautious side)."""
    import fakeredis

    from venues.budgets import BINANCE_REST_WEIGHT, BINANCE_REST_WEIGHT_1M

    r = fakeredis.FakeAsyncRedis(server=server)
    try:
        feeds = [make_feed(r, FakeBinance(), NoRest(), host=h) for h in ("h1", "h2", "h3")]
        for f in feeds:
            await f.limiter.take(BINANCE_REST_WEIGHT, 100)
        levels = await feeds[0].limiter.levels(BINANCE_REST_WEIGHT)
        assert levels[BINANCE_REST_WEIGHT_1M.name] == pytest.approx(
            BINANCE_REST_WEIGHT_1M.capacity - 300, abs=5
        )
    finally:
        await r.aclose()

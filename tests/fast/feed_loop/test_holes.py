"""Holes in the feed's candles filled over REST (tests/fast/feed_loop/fakes.py): in the stream
without reconnecting, left in Redis by an earlier run, retried when the fill fails; candles
the venue does not have are not asked for again; a failing backfill is not fatal."""

from __future__ import annotations

import asyncio

from state.structs import CANDLE
from tests.fast.feed_loop.fakes import (
    ASSETS,
    KEYS,
    candles,
    expected,
    kline,
    make_feed,
    now_s,
    running,
    stats,
    wait_for,
)


async def test_a_failing_backfill_is_journaled_and_not_fatal(redis, binance, rest):
    rest.status = 500
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(kline("btc", t))

        async def stored():
            return len(await candles(redis)) == 1

        await wait_for(stored, "frames despite the failed backfill")

    s = await stats(redis)
    assert s["backfill_errors"] == len(ASSETS)
    entries = await redis.xrange(KEYS.journal_errors())
    assert b"HTTP 500" in entries[0][1][b"error"]


async def test_a_hole_in_the_stream_is_filled_over_rest_without_reconnecting(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(*(kline("btc", t + i * 1000) for i in range(3)))

        async def first_three():
            return len(await candles(redis)) == 3

        await wait_for(first_three, "the candles before the hole")
        rest.rows_from_ms = t
        # The stream skips three seconds (a stalled venue does: see sim/binance.py's pump).
        binance.send(kline("btc", t + 6000), kline("btc", t + 7000))

        async def filled():
            return len(await candles(redis)) == 8

        await wait_for(filled, "the hole filled")

    assert await candles(redis) == [expected("btc", t + i * 1000) for i in range(8)]
    hole_asks = [q for q in rest.requests if q["symbol"] == "BTCUSDT" and q["startTime"] == str(t + 3000)]
    assert len(hole_asks) == 1 and hole_asks[0]["endTime"] == str(t + 5000)
    s = await stats(redis)
    assert (s["holes"], s["backfilled"], s["candles"]) == (1, 3, 5)
    assert len(binance.paths) == 1 and "reconnects" not in s and "unfillable" not in s


async def test_candles_the_venue_does_not_have_are_counted_and_not_asked_for_again(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        # An exchange outage: REST has no rows for the seconds the stream skipped.
        binance.send(kline("btc", t), kline("btc", t + 3000))

        async def counted():
            return (await stats(redis)).get("unfillable") == 2

        await wait_for(counted, "the unfillable candles counted")
        asked = len(rest.requests)
        binance.send(kline("btc", t + 4000), kline("btc", t + 5000))

        async def stored():
            return len(await candles(redis)) == 4

        await wait_for(stored, "the stream going on")
        await asyncio.sleep(0.2)

    assert len(rest.requests) == asked
    assert [c.open_ms for c in await candles(redis)] == [t, t + 3000, t + 4000, t + 5000]


async def test_a_failed_hole_fill_is_retried_within_the_connection(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(kline("btc", t))

        async def first():
            return len(await candles(redis)) == 1

        await wait_for(first, "the first candle")
        rest.status = 500
        binance.send(kline("btc", t + 4000))

        async def failed():
            return (await stats(redis)).get("backfill_errors", 0) >= 1

        await wait_for(failed, "a failed fill")
        rest.status, rest.rows_from_ms = 200, t

        async def filled():
            return len(await candles(redis)) == 5

        await wait_for(filled, "the hole filled on a retry")

    assert await candles(redis) == [expected("btc", t + i * 1000) for i in range(5)]
    assert len(binance.paths) == 1
    entries = await redis.xrange(KEYS.journal_errors())
    assert any(b"fill btc holes" in f[b"error"] and b"HTTP 500" in f[b"error"] for _, f in entries)


async def test_holes_left_in_redis_by_an_earlier_run_are_filled_at_connect(redis, binance, rest):
    t = (now_s() - 60) * 1000
    present = [0, 1, 2, 5, 6, 8, 9]
    await redis.zadd(
        KEYS.candles("btc", "1s"),
        {CANDLE.encode(expected("btc", t + i * 1000)): t + i * 1000 for i in present},
    )
    rest.rows_from_ms = t
    async with running(make_feed(redis, binance, rest)):

        async def filled():
            opens = {c.open_ms for c in await candles(redis)}
            return {t + i * 1000 for i in range(10)} <= opens

        await wait_for(filled, "the holes filled")

    got = await candles(redis)
    opens = [c.open_ms for c in got]
    assert opens == list(range(t, opens[-1] + 1, 1000)), "a second is missing"
    assert got == [expected("btc", o) for o in opens]
    # One request covers both holes; only the candles inside them were taken from it.
    hole_asks = [q for q in rest.requests if q["symbol"] == "BTCUSDT" and q["startTime"] == str(t + 3000)]
    assert len(hole_asks) == 1 and hole_asks[0]["endTime"] == str(t + 7000)
    assert len(binance.paths) == 1


async def test_writes_a_new_primary_never_got_are_read_back_and_backfilled(redis, binance, rest, monkeypatch):
    """A killed primary that answered writes it never replicated (or one restarted and written
    to before Sentinel demoted it) fails no write: only the server's new replication id says the
    last candles may be gone, and then the feed reads its windows back and backfills them."""
    from feed import client as feed_client

    ids = ["replid-a"]

    async def primary(_r: object) -> str:
        return ids[0]

    monkeypatch.setattr(feed_client, "read_primary_id", primary)
    monkeypatch.setattr(feed_client, "PRIMARY_CHECK_S", 0.0)
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(*(kline("btc", t + i * 1000) for i in range(3)))

        async def first_three():
            return len(await candles(redis)) == 3

        await wait_for(first_three, "the first candles")
        # The promoted replica has the first candle only; the feed's memory has all three.
        await redis.zremrangebyrank(KEYS.candles("btc", "1s"), 1, -1)
        ids[0] = "replid-b"
        rest.rows_from_ms = t
        binance.send(kline("btc", t + 3000))

        async def restored():
            got = [c.open_ms for c in await candles(redis)]
            return all(t + i * 1000 in got for i in range(4))

        await wait_for(restored, "the candles the new primary lacked, backfilled")

    got = {c.open_ms: c for c in await candles(redis)}
    assert [got[t + i * 1000] for i in range(4)] == [expected("btc", t + i * 1000) for i in range(4)]
    assert (await stats(redis))["redis_recoveries"] >= 1

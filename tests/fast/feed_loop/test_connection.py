"""The feed loop's connection (tests/fast/feed_loop/fakes.py): it reconnects after a drop or a
server's shutdown event, renews before the age limit, answers pings while busy, rides out a
Redis outage, and stops at any point."""

from __future__ import annotations

import asyncio
import json
import random

from websockets.asyncio.server import serve
from websockets.protocol import State

from feed.client import Feed
from tests.fast.feed_loop.fakes import (
    ASSETS,
    DEADLINE_S,
    DROP,
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


async def test_a_dropped_connection_reconnects_and_the_backfill_fills_the_hole(redis, binance, rest):
    base = (now_s() - 30) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(*(kline("btc", base + i * 1000) for i in range(5)))

        async def first_five():
            return len(await candles(redis)) == 5

        await wait_for(first_five, "the candles before the drop")
        rest.rows_from_ms = base
        # The socket dies; after it, the stream resumes 20 s further on.
        binance.send(DROP, *(kline("btc", base + i * 1000) for i in range(25, 30)))

        async def resumed():
            s = await stats(redis)
            return s.get("reconnects") == 1 and s.get("duplicates", 0) == 5

        await wait_for(resumed, "the reconnect, backfill, and the resumed stream")

    got = await candles(redis)
    opens = [c.open_ms for c in got]
    assert opens == list(range(base, opens[-1] + 1, 1000)), "a second is missing"
    assert opens[-1] >= base + 29_000
    assert got == [expected("btc", t) for t in opens]
    # The backfill asked from the first missing candle; eth had none stored, so it asked
    # from the retention floor.
    btc_asks = [q for q in rest.requests if q["symbol"] == "BTCUSDT"]
    assert btc_asks[-1]["startTime"] == str(base + 5000)
    assert btc_asks[-1]["interval"] == "1s" and btc_asks[-1]["limit"] == "1000"
    s = await stats(redis)
    assert s["backfilled"] >= 20 and len(binance.paths) == 2


async def test_a_server_shutdown_event_triggers_a_reconnect(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(
            kline("btc", t),
            json.dumps({"stream": "btcusdt@kline_1s", "data": {"e": "serverShutdown", "E": 1}}),
        )

        async def reconnected():
            return len(binance.paths) == 2 and (await stats(redis)).get("reconnects") == 1

        await wait_for(reconnected, "a reconnect after serverShutdown")
        # A bare event, without the combined-stream wrapper, is obeyed too. The kline goes
        # first: one received after the notice may be left behind with the connection (the
        # backfill, empty here, is what recovers those).
        binance.send(kline("btc", t + 1000), json.dumps({"e": "serverShutdown"}))

        async def again():
            return len(binance.paths) == 3 and len(await candles(redis)) == 2

        await wait_for(again, "a second reconnect")

    assert binance.closed_by_client >= 2
    s = await stats(redis)
    assert s["server_shutdowns"] == 2 and s.get("bad_frames", 0) == 0


async def test_a_connection_is_renewed_before_the_age_limit(redis, binance, rest):
    async with running(make_feed(redis, binance, rest, max_connection_age_s=0.2)):

        async def renewed():
            return len(binance.paths) >= 3

        await wait_for(renewed, "proactive reconnects")
    assert binance.closed_by_client >= 2


async def test_a_redis_outage_is_retried_until_redis_returns(redis, server, binance, rest):
    server.connected = False
    t = (now_s() - 60) * 1000
    feed = make_feed(redis, binance, rest)
    async with running(feed):

        async def retried():
            return feed.attempts >= 3

        await wait_for(retried, "session attempts during the outage")
        # Nothing read could be written: no venue connection was spent meanwhile.
        assert binance.paths == []
        server.connected = True

        # A session connects to the venue only once it has reached Redis.
        async def redis_back():
            return len(binance.paths) >= 1

        await wait_for(redis_back, "a session that reached Redis")
        binance.send(kline("btc", t))

        async def stored():
            return len(await candles(redis)) == 1

        await wait_for(stored, "the frame after Redis came back")


async def test_a_stopped_feed_exits_while_the_venue_is_unreachable(redis, rest):
    feed = Feed(redis, assets=ASSETS, ws_url="ws://127.0.0.1:9", rest_url=rest.url, backoff_initial_s=0.05)
    task = asyncio.create_task(feed.run())
    await asyncio.sleep(0)
    feed.stop()
    await asyncio.wait_for(task, DEADLINE_S)


async def test_pings_are_answered_while_a_slow_backfill_runs_and_frames_pour_in(redis, rest):
    """websockets answers pings only while its own queue (16 messages) has room: the feed's
    reader drains it into a larger one even while the backfill holds up the writer."""
    fake = FakeBinance()
    async with serve(fake.handler, "127.0.0.1", 0, ping_interval=0.1, ping_timeout=0.5) as server:
        fake.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        rest.delay_s = 1.5  # per request: one per asset, so the backfill takes ~3 s
        t = (now_s() - 600) * 1000
        async with running(make_feed(redis, fake, rest)):
            fake.send(*(kline("btc", t + i * 1000) for i in range(40)))

            async def stored():
                return len(await candles(redis)) == 40

            await wait_for(stored, "every frame sent during the backfill")
            # A missed pong makes the server fail the connection (1011), though the close
            # may take a while to reach the feed: look at the server's side.
            assert fake.conns[0].state is State.OPEN, "the server gave up on our pongs"
    assert len(rest.requests) >= 2
    assert len(fake.paths) == 1 and "reconnects" not in await stats(redis)


async def test_a_stop_at_any_point_of_a_session_ends_the_feed(redis, binance, rest):
    """Stopped at random points of connecting, loading, backfilling and consuming, the feed
    always ends: a cancellation swallowed on the way (Python 3.11's asyncio.wait_for, inside
    redis-py and fakeredis, can lose one) is repeated rather than waited on forever."""
    rng = random.Random(4)
    t = (now_s() - 60) * 1000
    # 40 stops spread over the session's first 30 ms: each costs a quarter second of teardown,
    # and a hundred took a minute of the suite under CI load for no more of the session covered.
    for i in range(40):
        feed = make_feed(redis, binance, rest)
        task = asyncio.create_task(feed.run())
        binance.send(kline("btc", t + i * 1000))
        await asyncio.sleep(rng.random() * 0.03)
        feed.stop()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert done, f"stop #{i} did not end the feed"
        task.result()


async def test_a_garbage_feed_key_ends_the_session_quietly_and_the_feed_resumes_once_repaired(
    redis, binance, rest, caplog
):
    """feed_write.lua refuses a batch when a key of the feed's own is of another type (nothing
    written): the session ends as on a Redis outage, without a traceback, and the feed writes
    again once the key is repaired."""
    await redis.set("baton:feed:status", "garbage")
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):

        async def connected():
            return len(binance.paths) >= 1

        await wait_for(connected, "a connection")
        binance.send(kline("btc", t))

        async def refused():
            return "waiting for a repair" in caplog.text

        await wait_for(refused, "the refused write")
        assert "unexpected error" not in caplog.text
        assert await candles(redis) == []
        await redis.delete("baton:feed:status")
        binance.send(kline("btc", t + 1000))

        async def stored():
            return len(await candles(redis)) >= 1

        await wait_for(stored, "candles once the key is repaired")

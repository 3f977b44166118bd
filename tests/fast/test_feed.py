"""The feed loop end to end, in-process: a local websockets server stands in for Binance's
kline stream, a local aiohttp app for its klines REST, fakeredis for Redis."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import fakeredis
import pytest
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from feed.client import Feed
from state.keys import Keys
from state.structs import CANDLE, FEED_STATUS, Candle

KEYS = Keys("baton:")
ASSETS = ("btc", "eth")
BASE = {"btc": 95_000.0, "eth": 3_500.0}
DROP = "<drop>"  # outbox marker: abort the socket, as a network failure would
# Generous: these run beside a loaded end-to-end stack on 2-core CI machines.
DEADLINE_S = 30.0


def prices(asset: str, open_ms: int) -> tuple[float, float, float, float]:
    s = open_ms // 1000
    o, c = BASE[asset] + s % 50, BASE[asset] + (s + 1) % 50
    return o, max(o, c) + 1, min(o, c) - 1, c


def kline(asset: str, open_ms: int, closed: bool = True, close: float | None = None) -> str:
    o, h, lo, c = prices(asset, open_ms)
    if close is not None:
        c, h, lo = close, max(h, close), min(lo, close)
    sym = f"{asset.upper()}USDT"
    return json.dumps(
        {
            "stream": f"{sym.lower()}@kline_1s",
            "data": {
                "e": "kline",
                "E": open_ms + 500,
                "s": sym,
                "k": {
                    "t": open_ms,
                    "T": open_ms + 999,
                    "s": sym,
                    "i": "1s",
                    "f": 1,
                    "L": 2,
                    "o": str(o),
                    "c": str(c),
                    "h": str(h),
                    "l": str(lo),
                    "v": "1.5",
                    "n": 2,
                    "x": closed,
                    "q": "0",
                    "V": "0",
                    "Q": "0",
                    "B": "0",
                },
            },
        }
    )


def expected(asset: str, open_ms: int) -> Candle:
    o, h, lo, c = prices(asset, open_ms)
    return Candle(open_ms, o, h, lo, c, 1.5, True)


class FakeBinance:
    """Sends what the test puts in `outbox`, in order, across connections.

    Only the newest connection sends, and a message leaves the outbox only once it is sent,
    so that none is lost to a connection that is closing."""

    def __init__(self) -> None:
        self.outbox: collections.deque[str] = collections.deque()
        self._more = asyncio.Event()
        self._sender: asyncio.Task[bool] | None = None
        self.paths: list[str] = []
        self.conns: list[ServerConnection] = []
        self.closed_by_client = 0
        self.url = ""

    async def handler(self, ws: ServerConnection) -> None:
        self.paths.append(ws.request.path if ws.request else "")
        self.conns.append(ws)
        if self._sender is not None:
            self._sender.cancel()
        sender = self._sender = asyncio.create_task(self._send(ws))
        await ws.wait_closed()
        sender.cancel()
        try:
            dropped = await sender
        except asyncio.CancelledError:
            dropped = False
        if not dropped:
            self.closed_by_client += 1

    async def _send(self, ws: ServerConnection) -> bool:
        """Returns True after a DROP, False once the connection closes."""
        while True:
            while not self.outbox:
                self._more.clear()
                await self._more.wait()
            if ws.state is not State.OPEN:
                return False
            msg = self.outbox[0]
            if msg == DROP:
                self.outbox.popleft()
                ws.transport.abort()
                return True
            try:
                await ws.send(msg)
            except ConnectionClosed:
                return False
            self.outbox.popleft()

    def send(self, *msgs: str) -> None:
        self.outbox.extend(msgs)
        self._more.set()


class FakeRest:
    """GET /api/v3/klines: rows from `rows_from_ms` on (none while it is None)."""

    def __init__(self) -> None:
        self.rows_from_ms: int | None = None
        self.status = 200
        self.delay_s = 0.0
        self.requests: list[dict[str, str]] = []
        self.url = ""

    async def klines(self, request: web.Request) -> web.Response:
        q = dict(request.query)
        self.requests.append(q)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status != 200:
            return web.Response(status=self.status, text="venue unavailable")
        if self.rows_from_ms is None:
            return web.json_response([])
        asset = q["symbol"].removesuffix("USDT").lower()
        start = max(int(q["startTime"]), self.rows_from_ms)
        start += -start % 1000
        rows = []
        for t in range(start, int(q["endTime"]) + 1, 1000)[: int(q["limit"])]:
            o, h, lo, c = prices(asset, t)
            rows.append([t, str(o), str(h), str(lo), str(c), "1.5", t + 999, "0", 2, "0", "0", "0"])
        return web.json_response(rows)


@pytest.fixture
async def binance() -> AsyncIterator[FakeBinance]:
    fake = FakeBinance()
    async with serve(fake.handler, "127.0.0.1", 0) as server:
        fake.url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        yield fake


@pytest.fixture
async def rest() -> AsyncIterator[FakeRest]:
    fake = FakeRest()
    app = web.Application()
    app.router.add_get("/api/v3/klines", fake.klines)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield fake
    await runner.cleanup()


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def redis(server: fakeredis.FakeServer) -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    r = fakeredis.FakeAsyncRedis(server=server)
    yield r
    await r.aclose()


def make_feed(redis, binance: FakeBinance, rest: FakeRest, **kw) -> Feed:
    kw.setdefault("backoff_initial_s", 0.02)
    kw.setdefault("backoff_max_s", 0.2)
    return Feed(redis, assets=ASSETS, ws_url=binance.url, rest_url=rest.url, **kw)


@contextlib.asynccontextmanager
async def running(feed: Feed) -> AsyncIterator[Feed]:
    task = asyncio.create_task(feed.run())
    try:
        yield feed
    finally:
        feed.stop()
        await asyncio.wait_for(task, DEADLINE_S)


async def wait_for(cond: Callable[[], Awaitable[bool]], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def candles(redis, asset: str = "btc") -> list[Candle]:
    return [CANDLE.decode(m) for m in await redis.zrange(KEYS.candles(asset, "1s"), 0, -1)]


async def stats(redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(KEYS.feed_stats())).items()}


def now_s() -> int:
    return int(time.time())


async def test_frames_become_candles_and_feed_status(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(kline("btc", t, closed=False, close=BASE["btc"] + 0.5))

        async def in_progress_stored():
            return [c.closed for c in await candles(redis)] == [False]

        await wait_for(in_progress_stored, "the in-progress candle")
        binance.send(kline("btc", t), kline("btc", t + 1000, closed=False), kline("eth", t))

        async def all_stored():
            return len(await candles(redis)) == 2 and len(await candles(redis, "eth")) == 1

        await wait_for(all_stored, "three candles")

    assert binance.paths == ["/stream?streams=btcusdt@kline_1s/ethusdt@kline_1s"]
    btc = await candles(redis)
    # The closed candle replaced the in-progress one of the same open time.
    assert btc[0] == expected("btc", t)
    assert btc[1].open_ms == t + 1000 and not btc[1].closed
    # Members are readable JSON arrays, scored by open time.
    raw = await redis.zrange(KEYS.candles("btc", "1s"), 0, 0, withscores=True)
    assert json.loads(raw[0][0])[0] == t and raw[0][1] == t
    assert json.loads(raw[0][0])[-1] is True
    status = FEED_STATUS.decode(await redis.hget(KEYS.feed_status(), "btc:1s"))
    assert (status.last_open_ms, status.last_close) == (t + 1000, btc[1].close)
    # The wall clock of the write, not the candle's open time (a minute old).
    assert abs(status.updated_ms - time.time() * 1000) < 30_000
    assert await redis.hget(KEYS.feed_status(), "eth:1s") is not None
    s = await stats(redis)
    assert s["frames"] == 4 and s["candles"] == 4
    assert s.get("bad_frames", 0) == 0


async def test_malformed_frames_are_counted_journaled_and_skipped(redis, binance, rest):
    t = (now_s() - 60) * 1000
    good = json.loads(kline("btc", t))
    bad_price = json.loads(kline("btc", t))
    bad_price["data"]["k"]["c"] = "12,5"
    unknown = json.loads(kline("btc", t))
    unknown["data"]["s"] = unknown["data"]["k"]["s"] = "FOOUSDT"
    trade = {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1, "s": "BTCUSDT"}}
    missing = json.loads(kline("btc", t))
    del missing["data"]["k"]["o"]
    nan_price = json.loads(kline("btc", t))
    nan_price["data"]["k"]["h"] = "NaN"
    bad = [
        "this is not json",
        "[1, 2, 3]",
        json.dumps(bad_price),
        json.dumps(unknown),
        json.dumps(trade),
        json.dumps(missing),
        json.dumps(nan_price),
        json.dumps({"stream": "btcusdt@kline_1s"}),
    ]
    async with running(make_feed(redis, binance, rest)):
        binance.send(*bad, json.dumps(good), kline("btc", t + 1000))

        async def good_stored():
            return len(await candles(redis)) == 2

        await wait_for(good_stored, "the good frames after the bad ones")

    assert await candles(redis) == [expected("btc", t), expected("btc", t + 1000)]
    s = await stats(redis)
    assert s["bad_frames"] == len(bad) and s["frames"] == len(bad) + 2
    # Skipped, not fatal: one connection took them all.
    assert len(binance.paths) == 1 and "reconnects" not in s
    entries = await redis.xrange(KEYS.journal_errors())
    assert len(entries) == len(bad)
    fields = [{k.decode(): v.decode() for k, v in f.items()} for _, f in entries]
    assert all(f["source"] == "feed" and int(f["at_ms"]) > 0 for f in fields)
    assert [f["sample"] for f in fields] == [b[:200] for b in bad]
    errors = [f["error"] for f in fields]
    assert errors[0].startswith("not JSON")
    assert "$.data.k.c" in errors[2]
    assert "FOOUSDT" in errors[3]
    assert "trade" in errors[4]
    assert "`o`" in errors[5]


async def test_out_of_order_and_duplicate_frames_are_counted_and_skipped(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):
        binance.send(
            kline("btc", t),
            kline("btc", t + 1000),
            kline("btc", t + 1000),  # duplicate
            kline("btc", t),  # an older one replayed: duplicate too
            # Older, and not what is stored. (Closes are whole offsets from BASE, so +0.5
            # can never equal the stored close, whatever second `t` is.)
            kline("btc", t, close=prices("btc", t)[3] + 0.5),
            kline("btc", t + 1000, closed=False),  # an update of a final candle
            kline("btc", t + 2000),
        )

        async def last_stored():
            return len(await candles(redis)) == 3

        await wait_for(last_stored, "the frame after the skipped ones")

    assert await candles(redis) == [expected("btc", t + i * 1000) for i in range(3)]
    s = await stats(redis)
    assert (s["duplicates"], s["out_of_order"], s["candles"], s["frames"]) == (2, 2, 3, 7)
    assert len(binance.paths) == 1 and "reconnects" not in s and "holes" not in s


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


async def test_candles_older_than_the_retention_are_trimmed(redis, binance, rest):
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest, retention_s=10)):
        binance.send(*(kline("btc", t + i * 1000) for i in range(21)))

        async def last_stored():
            got = await candles(redis)
            return bool(got) and got[-1].open_ms == t + 20_000

        await wait_for(last_stored, "the last candle")

    opens = [c.open_ms for c in await candles(redis)]
    assert opens == list(range(t + 10_000, t + 21_000, 1000))


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


async def test_a_redis_outage_is_retried_until_redis_returns(redis, server, binance, rest):
    server.connected = False
    t = (now_s() - 60) * 1000
    async with running(make_feed(redis, binance, rest)):

        async def retried():
            return len(binance.paths) >= 3

        await wait_for(retried, "reconnect attempts during the outage")
        server.connected = True

        # A connection whose Redis calls already failed may still take a frame, then drop it
        # with the session; send only once a session got through to Redis (its first call
        # counts the reconnect), which then keeps every frame it receives.
        async def redis_back():
            return (await stats(redis)).get("reconnects", 0) >= 1

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
    for i in range(100):
        feed = make_feed(redis, binance, rest)
        task = asyncio.create_task(feed.run())
        binance.send(kline("btc", t + i * 1000))
        await asyncio.sleep(rng.random() * 0.03)
        feed.stop()
        done, _ = await asyncio.wait({task}, timeout=DEADLINE_S)
        assert done, f"stop #{i} did not end the feed"
        task.result()

"""The feed's pure parts (frame and row decoding, backoff) and the `python -m feed` process's
clean exit on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest

from baton.errors import BadFrame
from deploy.ports import free_port
from feed.backoff import Backoff
from feed.store import Batch, CandleStore
from state.keys import Keys
from state.structs import CANDLE, FEED_STATUS, Candle
from venues.binance import (
    CandleUpdate,
    ServerShutdown,
    parse_frame,
    parse_rows,
    sample,
    stream_url,
)

ASSETS = frozenset({"btc", "eth"})
REPO = Path(__file__).resolve().parents[2]


def frame(**k_overrides: object) -> dict:
    k = {
        "t": 1000,
        "T": 1999,
        "s": "BTCUSDT",
        "i": "1s",
        "o": "10.5",
        "c": "11.0",
        "h": "11.5",
        "l": "10.0",
        "v": "2.25",
        "x": True,
        "n": 3,
        "q": "0",
    }
    k.update(k_overrides)
    return {"stream": "btcusdt@kline_1s", "data": {"e": "kline", "E": 1500, "s": k["s"], "k": k}}


def test_a_kline_frame_becomes_a_candle_update():
    got = parse_frame(json.dumps(frame()), ASSETS, "1s")
    assert got == CandleUpdate("btc", Candle(1000, 10.5, 11.5, 10.0, 11.0, 2.25, True))
    assert parse_frame(json.dumps(frame()).encode(), ASSETS, "1s") == got


def test_server_shutdown_is_recognised_wrapped_or_bare():
    wrapped = {"stream": "x", "data": {"e": "serverShutdown", "E": 5}}
    assert isinstance(parse_frame(json.dumps(wrapped), ASSETS, "1s"), ServerShutdown)
    assert isinstance(parse_frame('{"e":"serverShutdown"}', ASSETS, "1s"), ServerShutdown)


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("{", "not JSON"),
        ("[]", "wrong shape: Expected `object`"),
        (json.dumps(frame(c="abc")), "$.data.k.c"),
        (json.dumps(frame(o="inf")), "$.data.k.o"),
        (json.dumps(frame(v="-1")), "$.data.k.v"),
        (json.dumps(frame(s="SOLUSDT")), "unknown symbol 'SOLUSDT'"),
        (json.dumps(frame(i="1m")), "interval '1m'"),
        (json.dumps(frame(h="10.1")), "inconsistent kline"),
        (json.dumps({"data": {"e": "24hrTicker", "E": 1}}), "Invalid value '24hrTicker'"),
        (json.dumps({"e": "kline"}), "no `data`"),
    ],
)
def test_a_bad_frame_says_what_was_wrong(raw: str, says: str):
    with pytest.raises(BadFrame) as info:
        parse_frame(raw, ASSETS, "1s")
    assert says in str(info.value)


def test_rest_rows_become_candles_closed_once_their_close_time_passed():
    rows = [
        [1000, "1", "2", "0.5", "1.5", "3", 1999, "0", 5, "0", "0", "0"],
        [2000, "1.5", "2", "1", "1.8", "1", 2999, "0", 1, "0", "0", "0"],
    ]
    got = parse_rows(json.dumps(rows).encode(), now_ms=2500)
    assert got == [Candle(1000, 1.0, 2.0, 0.5, 1.5, 3.0, True), Candle(2000, 1.5, 2.0, 1.0, 1.8, 1.0, False)]
    with pytest.raises(BadFrame):
        parse_rows(b'{"code": -1121, "msg": "Invalid symbol."}', now_ms=0)


def test_the_stream_url_names_every_asset():
    assert stream_url("ws://h:1/", ["btc", "xrp"], "1s") == (
        "ws://h:1/stream?streams=btcusdt@kline_1s/xrpusdt@kline_1s"
    )
    assert sample(b"\xff" + b"a" * 300) == "\ufffd" + "a" * 199


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets():
    b = Backoff(0.2, 5.0, rng=lambda: 1.0)
    assert [b.next_s() for _ in range(7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    b.reset()
    assert b.next_s() == 0.2
    low = Backoff(0.2, 5.0, rng=lambda: 0.0)
    assert low.next_s() == 0.1


@pytest.mark.timeout(90)
async def test_python_m_feed_exits_0_on_sigterm_even_while_retrying():
    # Nothing listens on either port: the feed is in its retry loop when the signal comes.
    env = dict(os.environ)
    env.update(
        {
            "BATON_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "BATON_BINANCE_WS_URL": f"ws://127.0.0.1:{free_port()}",
            "BATON_BINANCE_REST_URL": f"http://127.0.0.1:{free_port()}",
            "BATON_ASSETS": "btc,eth",
            "PYTHONUNBUFFERED": "1",
        }
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feed",
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not any("disconnected" in line for line in lines):
                line = (await proc.stdout.readline()).decode()
                assert line, f"feed exited early: {lines}"
                lines.append(line)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            rest = (await proc.stdout.read()).decode()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert code == 0, [*lines, rest]
    assert "feed stopped" in rest
    assert "Traceback" not in "".join(lines) + rest


def test_the_store_finds_a_hole_and_fills_it_behind_the_last_closed_candle():
    import fakeredis

    redis = fakeredis.FakeAsyncRedis()
    store = CandleStore(redis, Keys("baton:"), interval="1s", retention_s=60, clock_ms=lambda: 10_000)

    def c(i: int, closed: bool = True) -> Candle:
        return Candle(i * 1000, 1.0, 2.0, 0.5, 1.5, 1.0, closed)

    b = Batch()
    assert store.accept(b, "btc", c(1)) and store.accept(b, "btc", c(2))
    assert store.accept(b, "btc", c(5, closed=False))  # in progress: not yet a hole
    assert store.holes == {}
    assert store.accept(b, "btc", c(6))
    assert b.counts["holes"] == 1
    holes = store.take_holes()
    assert holes == {"btc": [(3000, 5000)]} and store.holes == {}
    fb = Batch()
    assert not store.fill(fb, "btc", c(2), holes["btc"])  # not in the hole
    assert not store.fill(fb, "btc", c(4, closed=False), holes["btc"])
    assert all(store.fill(fb, "btc", c(i), holes["btc"]) for i in (3, 4, 5))
    assert sorted(fb.candles) == [("btc", 3000), ("btc", 4000), ("btc", 5000)]
    assert fb.counts["backfilled"] == 3
    # The last closed candle is still the newest one; a replay of a filled one is a duplicate.
    assert store.last_closed("btc") == c(6)
    rb = Batch()
    assert not store.accept(rb, "btc", c(4))
    assert rb.counts == {"duplicates": 1}
    assert store.accept(rb, "btc", c(7)) and "holes" not in rb.counts


async def test_the_store_writes_each_candle_as_its_own_readable_member():
    """One script call per batch, but the members are what CANDLE.encode gives, one per open
    time: an update replaces the member of its open time; retention trims from the newest."""
    import fakeredis

    redis = fakeredis.FakeAsyncRedis()
    keys = Keys("baton:")
    store = CandleStore(redis, keys, interval="1s", retention_s=3, clock_ms=lambda: 99_000)
    odd = [0.1, 1e-7, 123456789.123456789, 3.0]
    b = Batch()
    for i, x in enumerate(odd):
        store.accept(b, "btc", Candle(i * 1000, x, x * 2, x / 2, x, 1e-9 + i, True))
    store.accept(b, "eth", Candle(5000, 2.0, 2.0, 2.0, 2.0, 0.0, False))
    b.bad_frame("not JSON: x", "{", 7)
    await store.write(b)
    members = await redis.zrange(keys.candles("btc", "1s"), 0, -1, withscores=True)
    want = [Candle(i * 1000, x, x * 2, x / 2, x, 1e-9 + i, True) for i, x in enumerate(odd)]
    assert members == [(CANDLE.encode(c), float(c.open_ms)) for c in want]
    b2 = Batch()
    store.accept(b2, "eth", Candle(5000, 2.0, 2.5, 1.5, 2.25, 1.0, True))
    store.accept(b2, "btc", Candle(9000, 3.0, 3.0, 3.0, 3.0, 0.0, False))
    await store.write(b2)
    assert await redis.zrange(keys.candles("eth", "1s"), 0, -1) == [
        CANDLE.encode(Candle(5000, 2.0, 2.5, 1.5, 2.25, 1.0, True))
    ]
    # Newest btc candle opens at 9000 with 3 s retention: those before 6000 are gone.
    assert await redis.zrange(keys.candles("btc", "1s"), 0, -1, withscores=True) == [
        (CANDLE.encode(Candle(9000, 3.0, 3.0, 3.0, 3.0, 0.0, False)), 9000.0)
    ]
    status = FEED_STATUS.decode(await redis.hget(keys.feed_status(), "btc:1s"))
    assert (status.updated_ms, status.last_open_ms, status.last_close) == (99_000, 9000, 3.0)
    stats = await redis.hgetall(keys.feed_stats())
    # `candles` counts every update written; `candles:<asset>` the same, per asset (/metrics).
    assert stats == {b"candles": b"7", b"bad_frames": b"1", b"candles:btc": b"5", b"candles:eth": b"2"}
    [(_, fields)] = await redis.xrange(keys.journal_errors())
    assert fields == {b"source": b"feed", b"error": b"not JSON: x", b"sample": b"{", b"at_ms": b"7"}


async def test_the_store_refuses_candles_dated_in_the_future_and_ignores_those_in_redis():
    """A candle opening past now (and the tolerance for clocks) would become the last price
    until its date: refused, counted, journaled. One already in Redis (written by hand) is
    neither the newest candle (its retention cutoff would trim every real one) nor the last
    closed one (every real one would be refused as out of order)."""
    import fakeredis

    redis = fakeredis.FakeAsyncRedis()
    keys = Keys("baton:")
    now = [100_000]
    store = CandleStore(redis, keys, interval="1s", retention_s=60, clock_ms=lambda: now[0])
    b = Batch()
    assert store.accept(b, "btc", Candle(99_000, 1.0, 1.0, 1.0, 1.0, 1.0, True))
    assert store.accept(b, "btc", Candle(101_000, 1.0, 1.0, 1.0, 1.0, 1.0, False))  # within tolerance
    assert not store.accept(b, "btc", Candle(100_000 + 3_600_000, 9e9, 9e9, 9e9, 9e9, 1.0, True))
    assert not store.fill(b, "btc", Candle(200_000, 9e9, 9e9, 9e9, 9e9, 1.0, True), [(0, 10**9)])
    assert b.counts["future_candles"] == 2
    await store.write(b)
    stats = await redis.hgetall(keys.feed_stats())
    assert stats[b"future_candles"] == b"2"
    errors = [f[b"error"].decode() for _, f in await redis.xrange(keys.journal_errors())]
    assert len(errors) == 2 and all("dated in the future refused" in e for e in errors)
    assert [CANDLE.decode(m).open_ms for m in await redis.zrange(keys.candles("btc", "1s"), 0, -1)] == [
        99_000,
        101_000,
    ]

    future = Candle(10**13, 9e9, 9e9, 9e9, 9e9, 1.0, True)
    await redis.zadd(keys.candles("btc", "1s"), {CANDLE.encode(future): future.open_ms})
    await store.load(("btc",))
    assert store.last_closed("btc").open_ms == 99_000
    now[0] = 103_000
    b = Batch()
    assert store.accept(b, "btc", Candle(102_000, 2.0, 2.0, 2.0, 2.0, 1.0, True))
    await store.write(b)
    kept = [CANDLE.decode(m).open_ms for m in await redis.zrange(keys.candles("btc", "1s"), 0, -1)]
    assert kept[:3] == [99_000, 101_000, 102_000]

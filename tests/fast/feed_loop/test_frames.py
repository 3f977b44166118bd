"""The feed loop end to end (tests/fast/feed_loop/fakes.py): stream frames become candles and
the feed's status; malformed, out-of-order and duplicate frames are counted and skipped; old
candles are trimmed."""

from __future__ import annotations

import json
import time

from state.structs import FEED_STATUS
from tests.fast.feed_loop.fakes import (
    BASE,
    KEYS,
    candles,
    expected,
    kline,
    make_feed,
    now_s,
    prices,
    running,
    stats,
    wait_for,
)


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

"""Several feeds (one per host) writing the same candle windows at once (state/lua/feed_write.lua):
the writes are idempotent and a candle never regresses — a lagging feed's older or partial frame
does not overwrite a newer one, a closed candle stays closed, the status is not set back — and
each feed's counters are kept under its host as well as summed."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import fakeredis
import pytest

from feed.store import Batch, CandleStore
from state.keys import Keys
from state.structs import CANDLE, FEED_STATUS, Candle

K = Keys("baton:")
T0 = 1_000_000_000_000
HOSTS = ("h1", "h2", "h3")


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    r = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    yield r
    await r.aclose()


def store(redis, host: str, now_ms: int = T0 + 600_000) -> CandleStore:
    return CandleStore(redis, K, interval="1s", retention_s=3600, clock_ms=lambda: now_ms, host=host)


def update(open_ms: int, step: int, closed: bool = False) -> Candle:
    """The stream's `step`-th update of the candle opening at `open_ms` (volume grows with it)."""
    return Candle(open_ms, 100.0, 100.0 + step, 99.0, 100.0 + step / 2, float(step), closed)


async def write(s: CandleStore, *candles: Candle, asset: str = "btc") -> Batch:
    batch = Batch()
    for c in candles:
        s.accept(batch, asset, c)
    await s.write(batch)
    return batch


async def window(redis, asset: str = "btc") -> dict[int, Candle]:
    return {
        c.open_ms: c for c in (CANDLE.decode(m) for m in await redis.zrange(K.candles(asset, "1s"), 0, -1))
    }


async def stats(redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in (await redis.hgetall(K.feed_stats())).items()}


async def test_three_feeds_writing_the_same_frames_store_each_candle_once(redis) -> None:
    feeds = [store(redis, h) for h in HOSTS]
    frames = [update(T0 + i * 1000, 3, closed=True) for i in range(5)]
    for f in feeds:
        await write(f, *frames)
    got = await window(redis)
    assert list(got.values()) == frames
    mark_after_first = (await redis.hget(K.candle_marks(), "btc:1s")).decode()
    assert mark_after_first.split(":")[1] == "1", "the second and third feeds changed nothing"
    s = await stats(redis)
    assert s["same"] == 10 and s["same@h2"] == 5 and s["same@h3"] == 5 and "same@h1" not in s
    # Each feed's own count, and the sum over all three (what each was sent, not what was written).
    assert s["candles@h1"] == s["candles@h2"] == s["candles@h3"] == 5 and s["candles"] == 15


async def test_a_closed_candle_stays_closed_whatever_a_lagging_feed_sends(redis) -> None:
    ahead, behind = store(redis, "h1"), store(redis, "h2")
    final = update(T0, 9, closed=True)
    await write(ahead, final, update(T0 + 1000, 1))
    # The lagging feed still sees T0 in progress, with less volume, then closed with other values.
    await write(behind, update(T0, 4))
    await write(behind, update(T0, 12))
    await write(behind, Candle(T0, 1.0, 1.0, 1.0, 1.0, 1.0, True))
    got = await window(redis)
    assert got[T0] == final
    assert (await stats(redis))["stale@h2"] == 3


async def test_an_unclosed_candle_never_loses_volume_nor_lands_behind_the_newest(redis) -> None:
    a, b = store(redis, "h1"), store(redis, "h2")
    await write(a, update(T0, 5))
    await write(b, update(T0, 3))  # b lags: an older update of the same candle
    assert (await window(redis))[T0] == update(T0, 5)
    await write(b, update(T0, 7))  # b caught up: a newer update is written
    assert (await window(redis))[T0] == update(T0, 7)
    # a moves on to the next candle without the close of T0 (the stream lost it): a partial
    # T0 from b now would put an unfinished candle behind the newest one.
    await write(a, update(T0 + 2000, 1))
    b2 = store(redis, "h2")
    await write(b2, update(T0 + 1000, 2))
    got = await window(redis)
    assert T0 + 1000 not in got, "a partial candle behind the newest one was written"
    # The closed one (from a backfill, or the stream) is welcome.
    await write(store(redis, "h3"), update(T0 + 1000, 4, closed=True))
    assert (await window(redis))[T0 + 1000].closed


async def test_the_status_is_set_only_by_a_feed_at_the_front(redis) -> None:
    ahead, behind = store(redis, "h1", now_ms=T0 + 10_000), store(redis, "h2", now_ms=T0 + 11_000)
    await write(ahead, update(T0, 5, closed=True), update(T0 + 1000, 2))
    first = FEED_STATUS.decode(await redis.hget(K.feed_status(), "btc:1s"))
    assert first.last_open_ms == T0 + 1000
    await write(behind, update(T0, 5, closed=True))  # behind: T0 only, already there
    assert FEED_STATUS.decode(await redis.hget(K.feed_status(), "btc:1s")) == first
    await write(behind, update(T0 + 1000, 2))  # reached the front, as it is: fresh again
    now = FEED_STATUS.decode(await redis.hget(K.feed_status(), "btc:1s"))
    assert now.last_open_ms == T0 + 1000 and now.updated_ms == T0 + 11_000


async def test_a_refused_write_leaves_the_mark_alone_so_readers_keep_their_copy(redis) -> None:
    a, b = store(redis, "h1"), store(redis, "h2")
    await write(a, *(update(T0 + i * 1000, 2, closed=True) for i in range(3)))
    mark = await redis.hget(K.candle_marks(), "btc:1s")
    await write(b, update(T0 + 1000, 1), update(T0, 2, closed=True))
    assert await redis.hget(K.candle_marks(), "btc:1s") == mark


@pytest.mark.parametrize("seed", range(8))
async def test_any_interleaving_of_three_lagging_feeds_never_regresses_a_candle(redis, seed: int) -> None:
    """The same stream (in-progress updates, then the close, for each candle) reaches three
    feeds, each at its own pace; after every write no candle went back (a closed one changed,
    an open one lost volume or reopened), and in the end the window is the stream's last word."""
    rng = random.Random(seed)
    stream: list[Candle] = []
    for i in range(12):
        steps = rng.randrange(1, 5)
        stream += [update(T0 + i * 1000, s) for s in range(1, steps)]
        stream.append(update(T0 + i * 1000, steps, closed=True))
    feeds = [store(redis, h) for h in HOSTS]
    pos = [0, 0, 0]
    seen: dict[int, Candle] = {}
    while min(pos) < len(stream):
        i = rng.choice([j for j in range(3) if pos[j] < len(stream)])
        n = rng.randrange(1, 4)
        await write(feeds[i], *stream[pos[i] : pos[i] + n])
        pos[i] += n
        now = await window(redis)
        for t, c in now.items():
            before = seen.get(t)
            if before is not None:
                assert not (before.closed and c != before), f"closed candle {t} changed: {before} -> {c}"
                assert c.volume >= before.volume, f"candle {t} lost volume: {before} -> {c}"
            seen[t] = c
            assert c.closed or t == max(now), f"an unclosed candle {t} behind the newest"
    final = {c.open_ms: c for c in stream if c.closed}
    assert await window(redis) == final


async def test_each_feed_journals_a_bad_frame_under_its_own_host(redis) -> None:
    for h in ("h1", "h2"):
        batch = Batch()
        batch.bad_frame("not JSON: x", "{", 7)
        await store(redis, h).write(batch)
    errors = [f[b"error"] for _, f in await redis.xrange(K.journal_errors())]
    assert errors == [b"h1: not JSON: x", b"h2: not JSON: x"]
    s = await stats(redis)
    assert (s["bad_frames"], s["bad_frames@h1"], s["bad_frames@h2"]) == (2, 1, 1)


async def test_a_garbage_candle_from_the_future_holds_back_no_real_one(redis) -> None:
    """A candle dated hours ahead (written by hand) is never read; the rules ignore it too:
    the stream's unclosed candle and the status are written as if it were not there."""
    await redis.zadd(K.candles("btc", "1s"), {CANDLE.encode(update(T0 + 3_600_000, 1)): T0 + 3_600_000})
    s = store(redis, "h1", now_ms=T0 + 1500)
    await write(s, update(T0, 2, closed=True), update(T0 + 1000, 1))
    got = await window(redis)
    assert got[T0 + 1000] == update(T0 + 1000, 1)
    await write(s, update(T0 + 1000, 3))
    assert (await window(redis))[T0 + 1000] == update(T0 + 1000, 3)
    assert FEED_STATUS.decode(await redis.hget(K.feed_status(), "btc:1s")).last_open_ms == T0 + 1000

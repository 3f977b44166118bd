"""The worker's candle cache (kernel/candle_cache.py) must always give what a whole read of
Redis gives, whatever is written meanwhile: by the feed (appends, updates of an unclosed
candle, backfilled holes, trims) or by anyone else (a member added or removed by hand, a key
deleted, the marks reset). Checked by a seeded random walk against a read without a cache;
so are the bars kept between reads (kernel/inputs.py BarMemo) against bars built afresh."""

from __future__ import annotations

import random
import zlib

import pytest

from kernel.candle_cache import CandleCache
from kernel.inputs import BarMemo, bars_from_candles
from kernel.snapshot import DecodeMemo, read_snapshot, slot_refs
from state.scripts import scripts_for
from state.structs import CANDLE, SLOT, Candle, Slot

ASSETS = ("btc", "eth", "sol")
LOOKBACK_S = 10


def _candle(open_ms: int, rng: random.Random, closed: bool = True) -> Candle:
    px = round(rng.uniform(90.0, 110.0), 2)
    close = round(rng.uniform(90.0, 110.0), 2)
    return Candle(open_ms, px, max(px, close) + 1, min(px, close) - 1, close, 1.0, closed)


async def _feed_write(store, asset: str, candles: list[Candle], cutoff_ms: int) -> None:
    """One window of one feed batch, exactly as feed/store.py sends it to feed_write.lua."""
    k = store.k
    script = scripts_for(store.r).feed_write
    body = b"[" + b",".join(CANDLE.encode(c) for c in candles) + b"]"
    await script(
        keys=[k.feed_status(), k.feed_stats(), k.journal_errors(), k.candle_marks(), k.candles(asset, "1s")],
        args=[0, 0, 100, "", 10**14, cutoff_ms, f"{asset}:1s", "{}", body],
    )


async def _read(store, now_ms: int, cache: CandleCache | None):
    refs = slot_refs([(f"{a}-15s", a, "15s") for a in ASSETS], now_ms)
    snap = await read_snapshot(store, refs, now_ms, None, LOOKBACK_S, cache)
    return snap


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
async def test_cached_reads_equal_whole_reads_under_any_writes(store, seed: int) -> None:
    rng = random.Random(seed)
    cache = CandleCache(full_every_ms=10**12)  # never refreshed by age: the checks alone
    now = 1_000_000_000_000
    newest = {a: now - 1000 for a in ASSETS}
    for a in ASSETS:
        history = [_candle(t, rng) for t in range(newest[a] - 30_000, newest[a] + 1, 1000)]
        await _feed_write(store, a, history, 0)
    ops = (
        "append",
        "append",
        "append",
        "unclosed",
        "update",
        "backfill",
        "hand-add",
        "hand-remove",
        "delete",
        "reset-marks",
        "trim",
        "garbage",
    )
    kinds_seen = {"new": 0, "whole": 0}
    memo = BarMemo()  # bars kept between reads: always those of the whole read
    for step in range(300):
        if rng.random() < 0.6:
            # A second passes: the feed writes each asset's candle that just closed.
            now += 1000
            for x in ASSETS:
                if newest[x] < now - 1000:
                    newest[x] = now - 1000
                    await _feed_write(store, x, [_candle(newest[x], rng)], 0)
        a = rng.choice(ASSETS)
        key = store.k.candles(a, "1s")
        op = rng.choice(ops)
        if op == "append":
            newest[a] += 1000
            await _feed_write(store, a, [_candle(newest[a], rng)], 0)
        elif op == "unclosed":
            newest[a] += 1000
            await _feed_write(store, a, [_candle(newest[a], rng, closed=False)], 0)
        elif op == "update":
            await _feed_write(store, a, [_candle(newest[a], rng)], 0)
        elif op == "backfill":
            t = newest[a] - rng.randrange(1, 12) * 1000
            await _feed_write(store, a, [_candle(t, rng)], 0)
        elif op == "hand-add":
            t = newest[a] - rng.randrange(0, 12) * 1000 - 500
            await store.r.zadd(key, {CANDLE.encode(_candle(t, rng)).decode(): t})
        elif op == "hand-remove":
            members = await store.r.zrange(key, -8, -1)
            if members:
                await store.r.zrem(key, rng.choice(members))
        elif op == "delete":
            await store.r.delete(key)
        elif op == "reset-marks":
            await store.r.delete(store.k.candle_marks())
        elif op == "trim":
            await _feed_write(store, a, [_candle(newest[a], rng)], newest[a] - rng.randrange(2, 9) * 1000)
        elif op == "garbage":
            await store.r.zadd(key, {"not a candle": newest[a] - 3000})
        before = (cache.stats.new, cache.stats.whole)
        cached = await _read(store, now, cache)
        whole = await _read(store, now, None)
        kinds_seen["new"] += cache.stats.new - before[0]
        kinds_seen["whole"] += cache.stats.whole - before[1]
        for x in ASSETS:
            assert cached.recent[x] == whole.recent[x], (step, op, x)
            assert cached.closes(x) == whole.closes(x), (step, op, x)
            gen = cached.candle_gens.get(x)
            for iv_s, n in ((1, 8), (5, 2), (5, 1)):
                want = bars_from_candles(whole.recent[x], iv_s, n, now)
                assert memo.bars(x, gen, cached.recent[x], iv_s, n, now) == want, (step, op, x, iv_s)
        assert cached.opens == whole.opens, (step, op)
        assert sorted(cached.problems) == sorted(whole.problems), (step, op)
    # The cache did its job (a third of the reads or more, under this storm of foreign writes)
    # and was distrusted when it had to be.
    assert kinds_seen["new"] > 300 and kinds_seen["whole"] > 100, kinds_seen


async def test_an_unchanged_window_decodes_nothing_and_new_candles_once(store) -> None:
    rng = random.Random(9)
    cache = CandleCache()
    now = 1_000_000_000_000
    await _feed_write(store, "btc", [_candle(t, rng) for t in range(now - 30_000, now, 1000)], 0)
    first = await _read(store, now, cache)
    assert len(first.recent["btc"]) == LOOKBACK_S
    decoded = cache.stats.decoded
    await _read(store, now, cache)
    assert cache.stats.decoded == decoded  # nothing new: nothing decoded
    await _feed_write(store, "btc", [_candle(now, rng), _candle(now + 1000, rng)], 0)
    later = await _read(store, now + 2000, cache)
    assert cache.stats.decoded == decoded + 2
    assert later.recent["btc"] == (await _read(store, now + 2000, None)).recent["btc"]


async def test_a_window_without_a_mark_is_read_whole_every_time(store) -> None:
    rng = random.Random(3)
    cache = CandleCache()
    now = 1_000_000_000_000
    key = store.k.candles("btc", "1s")
    for t in range(now - 10_000, now, 1000):
        await store.r.zadd(key, {CANDLE.encode(_candle(t, rng)).decode(): t})
    await _read(store, now, cache)
    await _read(store, now, cache)
    assert cache.stats.whole == 2 * len(ASSETS) and cache.stats.new == 0


async def test_the_copy_is_read_whole_again_after_full_every_ms(store) -> None:
    rng = random.Random(4)
    cache = CandleCache(full_every_ms=5000)
    # The first whole read of an asset is spread by crc32(asset) % full_every_ms: btc's falls
    # 3,308 ms back, so its copy is still young 1 s later and too old 5 s later.
    assert zlib.crc32(b"btc") % 5000 == 3308
    now = 1_000_000_000_000
    await _feed_write(store, "btc", [_candle(t, rng) for t in range(now - 20_000, now, 1000)], 0)
    await _read(store, now, cache)
    assert cache.stats.new == 0
    await _read(store, now + 1000, cache)
    assert cache.stats.new == 1  # btc from its copy (eth and sol have no candles at all)
    await _read(store, now + 5000, cache)
    assert cache.stats.new == 1  # too old: read whole


def test_the_decode_memo_reuses_unchanged_values_and_forgets_unseen_ones() -> None:

    memo = DecodeMemo()
    raw_a = SLOT.encode(Slot("a", "btc", "15m")).decode()
    raw_b = SLOT.encode(Slot("b", "eth", "15m")).decode()
    bad: list[tuple[str, str]] = []
    first = memo.decode(SLOT, raw_a, bad, "a")
    memo.decode(SLOT, raw_b, bad, "b")
    memo.turn()
    assert memo.decode(SLOT, raw_a, bad, "a") is first  # same text: same struct
    memo.turn()  # b was not seen by this read: forgotten
    assert (SLOT, raw_b) not in memo._last and (SLOT, raw_a) in memo._last
    for _ in range(2):  # garbage is found by every read, never remembered
        assert memo.decode(SLOT, "{not json", bad, "c") is None
    assert len(bad) == 2 and all(name == "c" and "cannot decode" in why for name, why in bad)

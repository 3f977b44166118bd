"""Slots sleep until their strategy may want quotes (kernel/wakes.py): asleep, a slot has no
input built and no candles read for it; the candles it slept through, and the periodic whole
reads of awake windows, are read between ticks (kernel/housekeeping.py); a disabled slot
sleeps until enabled again.
"""

from __future__ import annotations

import msgspec

from feed.store import Batch, CandleStore
from kernel import candle_cache, housekeeping
from kernel import tick as tick_mod
from state.structs import SLOT, Candle
from tests.fast.rig import last_five_seconds


async def test_slots_sleep_until_their_strategy_may_want_quotes(rig, monkeypatch):
    """A strategy's quotes_from_ms: before it, the slot's input is not even built."""

    asked: list[int] = []
    LastFiveSeconds = last_five_seconds(asked)
    rig.resolver = lambda name: LastFiveSeconds
    outs = await rig.run_ticks(30)
    awake = [o for o in outs if o.record.started_ms >= (o.record.started_ms // 15_000 + 1) * 15_000 - 5000]
    assert 0 < len(awake) < len(outs)
    assert len(asked) == 4 * len(awake), "a slot was asked outside its last 5 s, or one was skipped in them"
    assert all(0 < left <= 5000 for left in asked)
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]

    # Candle windows are read only where a slot may want them: at each tick of the last 5 s,
    # and at the first tick seen in a window (before its wake-up time is known).
    windows = {o.record.started_ms // 15_000 for o in outs}
    reads = rig.runner.candles.stats.whole + rig.runner.candles.stats.new
    assert reads == 4 * (len(awake) + len(windows)) < 4 * len(outs)

    # A reload that drops the hint (a module's functions change in place) wakes every slot
    # at once: each is asked at every tick, as without a hint.
    del LastFiveSeconds.quotes_from_ms
    asked.clear()
    outs = await rig.run_ticks(5)
    assert len(asked) == 4 * len(outs)


def feed_through_the_feeds_writer(rig, monkeypatch) -> None:
    """The rig's candles written by the feed's own writer (feed/store.py), not by plain ZADDs:
    feed_write.lua keeps the marks the worker's cached copies go by (kernel/candle_cache.py)."""
    store = CandleStore(rig.store.r, rig.store.k, interval="1s", retention_s=3600, clock_ms=rig.clock.now_ms)

    async def feed() -> None:
        now_s = rig.clock.now_ms() // 1000
        batch = Batch()
        for a in rig.settings.assets:
            for sec in range(now_s - 70, now_s):
                o, h, lo, c = rig.model.candle(a, sec)
                store.accept(batch, a, Candle(sec * 1000, o, h, lo, c, 1.0, True))
        await store.write(batch)

    monkeypatch.setattr(rig, "feed", feed)


async def test_slots_about_to_wake_have_their_candles_read_between_ticks(rig, monkeypatch):
    """The tick that wakes sleeping slots reads only the candles written since the gap before
    it, not the ten seconds they slept through: those were read between the ticks."""

    strategy = last_five_seconds([])
    rig.resolver = lambda name: strategy
    feed_through_the_feeds_writer(rig, monkeypatch)
    runner = rig.runner
    decoded: dict[int, int] = {}
    run = runner.run

    async def counted(tick, missed_before=0):
        before = runner.candles.stats.decoded
        out = await run(tick, missed_before)
        decoded[out.record.started_ms // 1000 % 15] = runner.candles.stats.decoded - before
        return out

    monkeypatch.setattr(runner, "run", counted)
    warmed: dict[int, int] = {}
    between = runner.between_ticks

    async def counted_between(next_boundary_ms):
        before = runner.candles.stats.decoded
        out = await between(next_boundary_ms)
        warmed[(next_boundary_ms // 1000 - 1) % 15] = runner.candles.stats.decoded - before
        return out

    monkeypatch.setattr(runner, "between_ticks", counted_between)
    await rig.run_ticks(16)
    # Second 10 of each 15 s window is the first awake one: 4 assets, one new candle each
    # (the feed wrote one more second since the read between the ticks).
    assert decoded[10] <= 4, decoded
    # Asleep ticks read nothing; awake ones a candle per asset (and, now and then, a whole
    # window: the periodic refresh of kernel/candle_cache.py).
    assert all(decoded[s] == 0 for s in range(1, 10)), str(sorted(decoded.items()))
    assert all(decoded[s] >= 4 for s in range(10, 15)), str(sorted(decoded.items()))
    # The seconds the slots slept through were read between the ticks, right before the wake.
    assert warmed[9] >= 4 * 8, str(sorted(warmed.items()))
    assert all(warmed[s] == 0 for s in range(1, 9)), str(sorted(warmed.items()))


async def test_the_periodic_whole_reads_of_awake_windows_are_made_between_ticks(rig, monkeypatch):
    """A window awake at every tick is still read whole every FULL_EVERY_MS (kernel/
    candle_cache.py), but by the gap before the tick it falls due at: after the first one,
    no tick reads a window whole, and every window was read whole again between ticks."""

    class AlwaysAwake:  # no quotes_from_ms: awake at every tick; never trades
        @staticmethod
        def needs_quotes(inp):
            return False

        @staticmethod
        def evaluate(inp):
            return None

    rig.resolver = lambda name: AlwaysAwake
    feed_through_the_feeds_writer(rig, monkeypatch)
    runner = rig.runner
    stats = runner.candles.stats
    in_ticks: list[int] = []
    run, between = runner.run, runner.between_ticks

    async def counted(tick, missed_before=0):
        before = stats.whole
        out = await run(tick, missed_before)
        in_ticks.append(stats.whole - before)
        return out

    between_whole = {"n": 0}

    async def counted_between(next_boundary_ms):
        before = stats.whole
        out = await between(next_boundary_ms)
        between_whole["n"] += stats.whole - before
        return out

    monkeypatch.setattr(runner, "run", counted)
    monkeypatch.setattr(runner, "between_ticks", counted_between)
    n_ticks = candle_cache.FULL_EVERY_MS // 1000 + 5
    await rig.run_ticks(n_ticks)
    assets = len(rig.settings.assets)
    assert in_ticks[0] <= assets and sum(in_ticks[1:]) == 0, in_ticks
    assert between_whole["n"] >= assets, between_whole


async def set_enabled(rig, slot_id: str, enabled: bool) -> None:
    k = rig.store.k.slots()
    slot = SLOT.decode(await rig.store.r.hget(k, slot_id))
    await rig.store.r.hset(k, slot_id, SLOT.encode(msgspec.structs.replace(slot, enabled=enabled)))


async def test_a_disabled_slot_sleeps_and_wakes_when_enabled_again(rig, monkeypatch):
    """A disabled slot runs no strategy, so its asset's candles are not read for it, neither
    by the tick nor between ticks; enabled again, it is awake one tick later."""

    asked: list[str] = []

    class Recording(last_five_seconds([])):
        @staticmethod
        def needs_quotes(inp):
            asked.append(inp.slot_id)
            return False

    rig.resolver = lambda name: Recording
    read: list[set[str]] = []  # per snapshot, and per warm-up between ticks: the assets read
    snapshot, warm = tick_mod.read_snapshot, housekeeping.read_candles

    async def reading_snapshot(*args, candle_assets=None, **kwargs):
        read.append(set(candle_assets or ()))
        return await snapshot(*args, candle_assets=candle_assets, **kwargs)

    async def warming(store, assets, *args, **kwargs):
        read.append(set(assets))
        return await warm(store, assets, *args, **kwargs)

    monkeypatch.setattr(tick_mod, "read_snapshot", reading_snapshot)
    monkeypatch.setattr(housekeeping, "read_candles", warming)
    off = "btc-15s"
    await set_enabled(rig, off, False)
    await rig.run_ticks(1)  # the first tick learns that it is disabled
    read.clear()
    await rig.run_ticks(30)
    assert off not in asked and {"eth-15s", "sol-15s", "xrp-15s"} <= set(asked)
    assert not any("btc" in assets for assets in read), read
    assert any("eth" in assets for assets in read)

    await set_enabled(rig, off, True)
    await rig.run_ticks(16)
    assert off in asked
    assert any("btc" in assets for assets in read)


async def test_each_slots_wake_time_is_written_for_status_when_it_changes(rig, monkeypatch):
    """keys.slot_wakes(): a sleeping slot's wake time in its window, written between ticks,
    one HSET for every change, and not again while it stays the same."""
    rig.resolver = lambda name: last_five_seconds([])
    writes: list[dict[str, int]] = []
    real = rig.store.record_wakes

    def record(wakes, **kw):
        writes.append(dict(wakes))
        return real(wakes, **kw)

    monkeypatch.setattr(rig.store, "record_wakes", record)
    outs = await rig.run_ticks(16)
    wakes = await rig.store.read_wakes()
    last = outs[-1].record.started_ms
    end_ms = (last // 15_000 + 1) * 15_000
    assert wakes == {f"{a}-15s": end_ms - 5000 for a in rig.settings.assets}
    # One write per window seen (its slots' new times together), none while they stand.
    windows = {o.record.started_ms // 15_000 for o in outs} | {(last + 1000) // 15_000}
    assert 1 <= len(writes) <= len(windows)
    assert all(set(w) == set(wakes) for w in writes)


async def test_a_slot_whose_strategy_drops_its_wake_hint_has_its_wake_time_removed(rig):
    Strategy = last_five_seconds([])
    rig.resolver = lambda name: Strategy
    await rig.run_ticks(2)
    assert len(await rig.store.read_wakes()) == len(rig.settings.assets)
    del Strategy.quotes_from_ms  # a reload without the hint: awake at every tick
    await rig.run_ticks(2)
    assert await rig.store.read_wakes() == {}

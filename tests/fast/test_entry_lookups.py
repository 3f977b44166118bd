"""One entry per slot-window (kernel/entries.py): a slot that entered sleeps until the next
window, and whether it entered is looked up between ticks, not by the tick that wakes it;
that look-up holds only while every commit's answer is known and only for its lease epoch.
"""

from __future__ import annotations

import httpx
import msgspec
import pytest

from kernel import executor
from kernel.snapshot import slot_refs
from kernel.tick import Identity
from tests.factories import intent as make_intent
from tests.fast.rig import ASSETS, enter_at_once


def venue_orders(rig) -> list[dict]:
    """Every order the sim's CLOB ever accepted (GET /data/orders, page by page)."""
    out, cursor = [], None
    while True:
        params = {"next_cursor": cursor} if cursor else {}
        page = httpx.get(f"{rig.settings.clob_url}/data/orders", params=params, timeout=5).json()
        out += page["data"]
        cursor = page.get("next_cursor")
        if not page["data"] or not cursor or cursor == "LTE=":
            return out


def watch_entry_lookups(runner, monkeypatch) -> list[int]:
    """Per tick, how many entry intents the tick itself asked Redis for (_entry_state's read;
    the look-up between ticks is not counted)."""
    asked: list[int] = []
    look = runner.markets.cached
    inside = {"tick": False}

    async def cached_markets(refs, problems, intents_of=None):
        if inside["tick"] and intents_of:
            asked[-1] += len(intents_of)
        return await look(refs, problems, intents_of)

    run = runner.run

    async def tick(k, missed_before=0):
        asked.append(0)
        inside["tick"] = True
        try:
            return await run(k, missed_before)
        finally:
            inside["tick"] = False

    monkeypatch.setattr(runner.markets, "cached", cached_markets)
    monkeypatch.setattr(runner, "run", tick)
    return asked


@pytest.mark.stale_maker
async def test_a_slot_that_entered_its_window_sleeps_until_the_next(rig, monkeypatch):
    """One entry per slot-window: after it, the slot is passed by like a sleeping one (no input
    built, its asset's candles not read), and the tick that wakes it does not ask Redis
    whether it entered already: that was looked up between the ticks."""

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    stats = rig.runner.candles.stats
    reads: list[int] = []
    run = rig.runner.run

    async def counted(k, missed_before=0):
        before = stats.whole + stats.new
        out = await run(k, missed_before)
        reads.append(stats.whole + stats.new - before)
        return out

    monkeypatch.setattr(rig.runner, "run", counted)
    # Start right after a window's entry zone: the next window is the first one seen whole.
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 - 1000)
    outs = await rig.run_ticks(31)
    entries = [o for o in outs if o.record.orders]
    assert [o.record.orders for o in entries] == [4, 4], [o.record.orders for o in outs]
    assert all(o.record.started_ms // 1000 % 15 == 10 for o in entries)
    # Each slot was asked once per window, at its first awake tick, and never again.
    assert sorted(asked) == sorted(2 * [f"{a}-15s" for a in ASSETS.split(",")]), asked
    # The ticks that entered asked Redis for no entry intent: the look-up between the ticks
    # before them found none. (The first tick knows nothing yet of its window.)
    assert all(n == 0 for o, n in zip(outs, lookups, strict=True) if o.record.orders), lookups
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]
    # After the entry the rest of the window reads no candle window: every slot of each asset
    # is done with it.
    for o, n in zip(outs, reads, strict=True):
        if o.record.started_ms // 1000 % 15 in (11, 12, 13, 14):
            assert n == 0, (o.record.started_ms // 1000 % 15, reads)
    # One order per slot-window at the venue.
    assert len(venue_orders(rig)) == 8


async def test_an_entry_made_before_this_worker_looked_is_found_between_ticks(rig, monkeypatch):
    """An entry intent already in Redis (a predecessor's) when the slot is about to wake: the
    slot is never evaluated in that window."""

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 + 1000)
    ref = slot_refs([("btc-15s", "btc", "15s")], rig.clock.now_ms())[0]
    await rig.store.r.hset(rig.store.k.intents(), ref.entry_intent_id, '{"written":"by a predecessor"}')
    outs = await rig.run_ticks(13)
    assert sum(o.record.orders for o in outs) == 3
    assert "btc-15s" not in asked and len(asked) == 3, asked
    assert rig.runner.entries.entered["btc-15s"] == ref.window_start_s


@pytest.mark.parametrize("landed", [False, True])
async def test_a_commit_without_an_answer_makes_the_tick_ask_again(rig, monkeypatch, landed):
    """What was looked up between ticks holds only while every commit's answer is known: after
    one that raised, the next tick asks Redis itself. If the commit had landed, it finds the
    intents there and nothing enters again (the orders were never posted); if not, the slots
    enter then."""

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    real = executor.submit_signed
    calls = {"n": 0}

    async def lost_answer(store, venue, epoch, ready, problems, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            if landed:
                await store.commit_intents(epoch, [i for i, _ in ready])
            raise ConnectionError("Redis went away before it answered")
        return await real(store, venue, epoch, ready, problems, **kw)

    monkeypatch.setattr(executor, "submit_signed", lost_answer)
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 15_000 + 1) * 15_000 + 1000)
    outs, asked_by_tick = [], []
    for _ in range(11):
        try:
            outs.extend(await rig.run_ticks(1))
        except ConnectionError:
            outs.append(None)
        asked_by_tick.append(len(asked))
    failed = outs.index(None)
    assert lookups[failed] == 0  # known from between the ticks
    assert rig.runner.entries.absent == {}
    assert lookups[failed + 1] == 4  # asked again: the failed commit might have landed
    assert outs[failed + 1].record.orders == (0 if landed else 4)
    # Either way the slots are known to have entered now: never asked again in the window.
    window = outs[failed + 1].record.started_ms // 15_000
    same = [i for i, o in enumerate(outs) if i > failed + 1 and o.record.started_ms // 15_000 == window]
    assert same and all(asked_by_tick[i] == asked_by_tick[failed + 1] for i in same)
    assert all(rig.runner.entries.entered[f"{a}-15s"] == window * 15 for a in ASSETS.split(","))
    assert len(venue_orders(rig)) == sum(o.record.orders for o in outs if o is not None)


async def test_what_was_looked_up_under_an_older_lease_is_asked_again(rig, monkeypatch):
    """The between-ticks look-up holds only for the epoch it was made under: another holder
    may have entered meanwhile. After the lease went elsewhere and came back, the tick asks
    Redis again, finds that holder's entry and does not enter that slot a second time."""

    asked: list[str] = []
    rig.resolver = lambda name: enter_at_once(asked)
    lookups = watch_entry_lookups(rig.runner, monkeypatch)
    window_ms = (rig.clock.now_ms() // 15_000 + 1) * 15_000
    await rig.clock.sleep_until_ms(window_ms + 1000)
    await rig.run_ticks(8)  # through second 9: the look-up for the waking tick is made
    runner = rig.runner
    assert {runner.entries.absent[f"{a}-15s"] for a in ASSETS.split(",")} == {
        (window_ms // 1000, runner.ident.epoch)
    }

    # The lease lapses; another worker takes it and commits btc's entry; the lease comes back.
    await rig.clock.sleep_until_ms(window_ms + 12_500)
    got, other, _ = await rig.store.acquire_lease("green:t", "green", "test", rig.clock.now_ms(), 100)
    assert got
    ref = slot_refs([("btc-15s", "btc", "15s")], rig.clock.now_ms())[0]
    theirs = msgspec.structs.replace(
        make_intent(ref.entry_intent_id, epoch=other), slot="btc-15s", window_start_s=ref.window_start_s
    )
    assert await rig.store.commit_intent(other, theirs) == "OK"
    await rig.clock.sleep_until_ms(window_ms + 12_700)
    got, ours, _ = await rig.store.acquire_lease("blue:t", "blue", "test", rig.clock.now_ms(), 3000)
    assert got and ours > other
    runner.ident = Identity("blue:t", "blue", "test", ours)  # as the worker does (become_active)

    outs = await rig.run_ticks(1)
    assert lookups[-1] == 4  # asked again, all four
    assert (outs[0].record.orders, outs[0].record.evaluated) == (3, 3)  # btc not evaluated
    assert runner.entries.entered["btc-15s"] == ref.window_start_s

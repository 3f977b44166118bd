"""The tick journal's guard (stats.last_tick) and the stop marks, garbage or from the future:
the journal never falls silent, no worker crash-loops, and no tick index is journaled twice."""

from __future__ import annotations

import pytest

from baton.errors import UnreadableValue
from state.structs import TickRecord
from worker import takeover

TICK_MS = 5000
T0 = 340_000_000  # a tick index of 2023 at 5 s ticks


def rec(tick: int) -> TickRecord:
    return TickRecord(
        tick=tick,
        color="blue",
        release="r1",
        epoch=1,
        started_ms=tick * TICK_MS + 7,
        duration_ms=3,
        jitter_ms=1,
        orders=0,
    )


@pytest.fixture
async def journaled(store):
    """A holder of epoch 1 that journaled tick T0."""
    await store.acquire_lease("blue:1", "blue", "r1", T0 * TICK_MS, 60_000)
    assert await store.append_tick(rec(T0)) == "OK"
    return store


async def ticks(store) -> list[tuple[int, dict[str, str]]]:
    return [(int(f["tick"]), f) for _, f in await store.r.xrange(store.k.journal_ticks())]


async def last_tick(store) -> str:
    return await store.r.hget(store.k.stats(), "last_tick")


@pytest.mark.parametrize("garbage", ["garbage", "", "1e9", str(10**15), str(10**40), str(T0 + 13)])
async def test_a_guard_that_is_garbage_or_ahead_is_rebuilt_and_the_tick_journaled(journaled, garbage):
    """T0 + 13 lies 65 s ahead at 5 s ticks: past what a successor's clock may lag."""
    store = journaled
    await store.r.hset(store.k.stats(), "last_tick", garbage)
    verdict = await store.append_tick(rec(T0 + 1))
    assert verdict.startswith("REBASED ")
    assert garbage[:20] in verdict
    got = await ticks(store)
    assert [t for t, _ in got] == [T0, T0 + 1]
    assert got[-1][1]["last_tick_was"] == garbage[:40]
    assert await last_tick(store) == str(T0 + 1)
    # trusted again from the next tick on
    assert await store.append_tick(rec(T0 + 2)) == "OK"
    assert "last_tick_was" not in (await ticks(store))[-1][1]


async def test_a_guard_a_little_ahead_is_a_duplicate_and_nothing_is_written(journaled):
    """A successor whose clock lags the previous holder's by seconds re-runs a tick index
    already journaled: refused, as before (the worker reports it)."""
    store = journaled
    await store.r.hset(store.k.stats(), "last_tick", T0 + 5)
    before = await ticks(store)
    assert await store.append_tick(rec(T0 + 1)) == "DUPLICATE"
    assert await ticks(store) == before
    assert await store.append_tick(rec(T0)) == "DUPLICATE"


async def test_a_garbage_guard_is_rebuilt_from_the_stream_and_never_journals_a_tick_twice(journaled):
    store = journaled
    assert await store.append_tick(rec(T0 + 1)) == "OK"
    await store.r.hset(store.k.stats(), "last_tick", "garbage")
    assert await store.append_tick(rec(T0 + 1)) == "DUPLICATE"
    assert await last_tick(store) == str(T0 + 1)  # the copy repaired from the stream
    assert [t for t, _ in await ticks(store)] == [T0, T0 + 1]


async def test_a_stream_whose_newest_entry_is_garbage_too_is_not_trusted(journaled):
    store = journaled
    await store.r.xadd(store.k.journal_ticks(), {"tick": str(10**14)})
    await store.r.hset(store.k.stats(), "last_tick", str(10**14))
    assert (await store.append_tick(rec(T0 + 1))).startswith("REBASED ")
    assert await last_tick(store) == str(T0 + 1)


async def test_a_garbage_counter_stops_the_journal_with_an_error_naming_it(journaled):
    store = journaled
    await store.r.hset(store.k.stats(), "ticks_done", "garbage")
    with pytest.raises(UnreadableValue) as e:
        await store.append_tick(rec(T0 + 1))
    assert (e.value.key, e.value.field) == (store.k.stats(), "ticks_done")
    assert [t for t, _ in await ticks(store)] == [T0]
    await store.r.hset(store.k.stats(), "ticks_done", 1)
    assert await store.append_tick(rec(T0 + 1)) == "OK"


@pytest.mark.parametrize("garbage", ["garbage", str(10**40), "-"])
async def test_garbage_stop_marks_are_reported_and_the_gap_taken_from_the_stream(journaled, garbage):
    store = journaled
    await store.r.hset(store.k.stats(), mapping={"last_tick": garbage, "clean_stop_tick": garbage})
    problems: list[str] = []
    assert await store.read_stop_marks(problems) == (None, None)
    assert len(problems) == 2 and all("not a tick index" in p for p in problems)
    # the successor's first tick is T0 + 4: three boundaries went by untraded
    assert await takeover.takeover_gap(store, T0 + 4, now_ms=(T0 + 4) * TICK_MS) == 3
    errors = await store.r.xrange(store.k.journal_errors())
    assert [f["source"] for _, f in errors] == ["journal", "journal"]
    assert "clean_stop_tick" in errors[1][1]["error"]


async def test_a_future_last_tick_counts_no_gap(journaled):
    store = journaled
    await store.r.hset(store.k.stats(), "last_tick", str(10**12))
    assert await takeover.takeover_gap(store, T0 + 4, now_ms=(T0 + 4) * TICK_MS) == 0


async def test_a_ticking_worker_journals_through_a_garbage_guard_and_reports_it(rig):
    await rig.run_ticks(1)
    store = rig.store
    await store.r.hset(store.k.stats(), "last_tick", str(10**15))
    out = await rig.run_ticks(2)
    assert any("guard was rebuilt" in p for p in out[0].problems)
    assert not any("guard" in p for p in out[1].problems)
    # The tick that read the untrustworthy guard opened nothing new; the next one could.
    assert out[0].record.blocked == 1 and out[1].record.blocked == 0
    lines = [
        f["error"] for _, f in await store.r.xrange(store.k.journal_errors()) if f["source"] == "blocked"
    ]
    assert any(x.startswith(f"entries blocked (all): {store.k.stats()} last_tick:") for x in lines), lines
    assert any(x.startswith(f"entries unblocked (all): {store.k.stats()} last_tick") for x in lines), lines
    got = [t for t, _ in await ticks(store)]
    assert len(got) == 3 and got == sorted(set(got))
    errors = [f for _, f in await store.r.xrange(store.k.journal_errors()) if f["source"] == "journal"]
    assert len(errors) == 1 and str(10**15) in errors[0]["error"]


async def test_a_garbage_journal_counter_blocks_entries_until_repaired_and_is_journaled_once(rig):
    await rig.run_ticks(1)
    store = rig.store
    await store.r.hset(store.k.stats(), "ticks_done", "garbage")
    before = len(await ticks(store))
    out = await rig.run_ticks(3)
    assert all(o.record.blocked == 1 for o in out)
    assert len(await ticks(store)) == before  # refused, nothing written
    journal = [f for _, f in await store.r.xrange(store.k.journal_errors()) if f["source"] == "journal"]
    assert len(journal) == 0  # said once, by the blocker line
    assert len(await store.read_blocked()) == 1
    await store.r.hset(store.k.stats(), "ticks_done", 1)
    out = await rig.run_ticks(2)
    assert out[-1].record.blocked == 0
    assert len(await ticks(store)) == before + 2
    assert await store.read_blocked() == []


@pytest.mark.parametrize("garbage", ["epoch", "lease"])
async def test_a_worker_stands_by_over_a_garbage_lease_and_trades_once_repaired(rig, garbage):
    """A garbage epoch counter or a lease key of another type: no lease can be taken safely.
    The worker stands by and says why (heartbeat, error journal) instead of crash-looping,
    and takes the lease once the value is repaired."""
    import asyncio

    from kernel.clock import VirtualClock
    from worker.lifecycle import Worker

    store = rig.store
    await store.release_lease("blue:t", rig.epoch)
    if garbage == "epoch":
        await store.r.set(store.k.lease_epoch(), "garbage")
    else:
        await store.r.set(store.k.lease(), "garbage")
    w = Worker(rig.settings, store, rig.venue, VirtualClock(rig.clock.now_ms() + 60_000), "blue")
    task = asyncio.ensure_future(w.run())
    try:
        for _ in range(200):
            if "lease not taken" in w.error:
                break
            await asyncio.sleep(0.02)
        assert "lease not taken" in w.error and w.state == "ready"
        beat = await store.r.hgetall(store.k.worker("blue"))
        assert "lease not taken" in beat["error"]
        errors = [f["error"] for _, f in await store.r.xrange(store.k.journal_errors())]
        assert any(e.startswith("lease not taken") for e in errors), errors
        if garbage == "epoch":
            await store.r.set(store.k.lease_epoch(), rig.epoch)
        else:
            await store.r.delete(store.k.lease())
        for _ in range(300):
            if w.state == "active":
                break
            await asyncio.sleep(0.02)
        assert w.state == "active" and w.error == "" and not task.done()
    finally:
        w.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


async def test_a_worker_stopped_while_the_lease_is_garbage_stops_cleanly(rig):
    import asyncio

    from kernel.clock import VirtualClock
    from worker.lifecycle import Worker

    store = rig.store
    await store.release_lease("blue:t", rig.epoch)
    await store.r.set(store.k.lease(), "garbage")
    w = Worker(rig.settings, store, rig.venue, VirtualClock(rig.clock.now_ms() + 60_000), "blue")
    task = asyncio.ensure_future(w.run())
    for _ in range(200):
        if "lease not taken" in w.error:
            break
        await asyncio.sleep(0.02)
    w.request_stop()
    assert await asyncio.wait_for(task, 30) == 0
    assert w.state == "stopped"


async def test_a_handover_over_a_garbage_counter_is_refused_with_why_and_the_lease_kept(rig):
    from kernel.clock import VirtualClock
    from worker.lifecycle import Worker

    store = rig.store
    await store.r.hset(store.k.stats(), "handovers", "garbage")
    await store.request_handover("h1", {"to_holder": "green:2", "to_color": "green", "to_release": "r2"})
    w = Worker(rig.settings, store, rig.venue, VirtualClock(rig.clock.now_ms()), "blue")
    w.holder, w.epoch = "blue:t", rig.epoch
    req = await store.r.hgetall(store.k.handover())
    assert await w.hand_over(req, 41) is False
    h = await store.r.hgetall(store.k.handover())
    assert h["state"] == "refused" and "handovers" in h["reason"]
    lease = await store.read_lease()
    assert (lease["holder"], lease["epoch"]) == ("blue:t", str(rig.epoch))

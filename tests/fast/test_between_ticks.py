"""What the worker does between ticks (kernel/housekeeping.py, through TickRunner.between_ticks), garbage
collection off the tick (kernel/gcpolicy.py) and venue calls on lanes (kernel/lanes.py)."""

from __future__ import annotations

import gc
import threading

import pytest

from kernel import gcpolicy, lanes
from kernel.snapshot import slot_refs
from state.structs import MARKET


async def test_markets_of_current_windows_are_found_between_ticks(rig):
    """After one tick, the gap before the next discovers every slot's market of the current
    window (the sim's Gamma over HTTP) and caches it in Redis: the tick that enters later
    finds them all and discovers nothing."""
    (out,) = await rig.run_ticks(1)  # run_ticks calls between_ticks and waits for the prefetch
    now = rig.clock.now_ms()
    refs = slot_refs(rig.runner.configured, now)
    cached = await rig.store.r.mget([rig.store.k.market(r.slug) for r in refs])
    assert all(cached), "every current window's market is cached"
    assert {MARKET.decode(c).slug for c in cached} == {r.slug for r in refs}
    in_tick = {"now": False}
    during_ticks: list[str] = []
    real_discover, real_run = rig.venue.discover, rig.runner.run

    def discover(slug):
        if in_tick["now"]:
            during_ticks.append(slug)
        return real_discover(slug)

    async def run(*a, **kw):
        in_tick["now"] = True
        try:
            return await real_run(*a, **kw)
        finally:
            in_tick["now"] = False

    rig.venue.discover, rig.runner.run = discover, run
    # Ticks until slots enter: their markets come from memory, not from the venue.
    orders = 0
    for _ in range(30):
        (out,) = await rig.run_ticks(1)
        orders += out.record.orders
    assert orders > 0
    assert during_ticks == [], "a tick waited for a discovery the gap before it could have made"


async def test_a_failing_venue_during_prefetch_is_reported_not_raised(rig):
    def broken(slug):
        raise RuntimeError("gamma is down")

    rig.venue.discover = broken
    await rig.run_ticks(1)
    errors = await rig.store.r.xrange(rig.store.k.journal_errors())
    assert any("market prefetch" in f["error"] and "gamma is down" in f["error"] for _, f in errors)
    # and the worker's next tick still runs
    (out,) = await rig.run_ticks(1)
    assert out.record.tick > 0


async def test_the_prefetch_stops_at_the_deadline_and_goes_on_later(rig):
    """No time left before the next boundary: nothing is asked of the venue now."""
    calls = []
    rig.venue.discover = lambda slug: calls.append(slug)
    await rig.runner.between_ticks(rig.clock.now_ms() + 10)
    await rig.runner.wait_prefetch()
    assert calls == []
    await rig.runner.between_ticks(rig.clock.now_ms() + 5000)
    await rig.runner.wait_prefetch()
    assert len(calls) == len(rig.runner.configured)


def test_shares_cut_items_into_contiguous_nearly_equal_ranges():
    for n in range(0, 40):
        for k in (1, 3, 8):
            parts = lanes.shares(n, k)
            assert [i for p in parts for i in p] == list(range(n))
            assert len(parts) == min(n, k)
            assert not parts or max(map(len, parts)) - min(map(len, parts)) <= 1


async def test_lanes_keep_order_and_return_exceptions_in_place():
    seen_threads = set()

    def f(x):
        seen_threads.add(threading.get_ident())
        if x % 5 == 0:
            raise ValueError(x)
        return x * 2

    out = await lanes.in_lanes(f, list(range(1, 41)), lanes=4)
    assert [o if not isinstance(o, ValueError) else "E" for o in out] == [
        "E" if x % 5 == 0 else x * 2 for x in range(1, 41)
    ]
    assert 1 <= len(seen_threads) <= 4  # never more threads than lanes


def test_the_collector_runs_between_ticks_and_gives_gc_back():
    was = gc.isenabled()
    c = gcpolicy.Collector(full_every=3)
    c.start()
    try:
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        c.after_tick(500)
        c.after_tick(500)
        c.after_tick(500)  # the third: a full collection
        c.after_tick(1)  # no time left: skipped
        assert c.collections == {"young": 2, "full": 1, "skipped": 1}
    finally:
        c.stop()
    assert gc.isenabled() == was and gc.get_freeze_count() == 0


@pytest.mark.parametrize("n", [0, 1, 7])
async def test_in_lanes_on_an_executor_of_its_own(n):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        out = await lanes.in_lanes(lambda x: x + 1, list(range(n)), 2, pool)
    assert out == [x + 1 for x in range(n)]


async def test_a_closed_runner_prefetches_again_when_it_ticks_again(rig):
    """A worker that handed over and later takes the lease back ticks with the same runner."""
    calls = []
    rig.venue.discover = lambda slug: calls.append(slug)
    await rig.runner.between_ticks(rig.clock.now_ms() + 5000)
    await rig.runner.wait_prefetch()
    rig.runner.close()
    rig.runner.housekeeping.prefetch_tried.clear()
    await rig.runner.between_ticks(rig.clock.now_ms() + 5000)
    await rig.runner.wait_prefetch()
    assert len(calls) == 2 * len(rig.runner.configured)
    errors = await rig.store.r.xrange(rig.store.k.journal_errors())
    assert not [f for _, f in errors if "prefetch" in f["error"]]

"""The kernel's tick on the rig (tests/fast/rig.py): it trades once per slot-window and settles
each closed window, in a fixed number of round trips; halted, paused, on stale candles or on a
lost lease it places nothing; garbage is reported, and missed ticks are counted.
"""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from baton.errors import LeaseLost, SnapshotError
from kernel.clock import VirtualClock
from kernel.tick import TickRunner
from state.ledger import utc_day
from state.structs import FEED_STATUS, FeedStatus, usd_to_micros
from tests.fast.rig import Rig
from worker.lifecycle import Worker, configured_slots


async def test_ticks_trade_once_per_slot_window_and_settle_each_closed_window(rig):
    outs = await rig.run_ticks(50)
    journal = await rig.store.r.xrange(rig.store.k.journal_ticks())
    ticks = [int(f["tick"]) for _, f in journal]
    assert ticks == [o.record.tick for o in outs] == list(range(ticks[0], ticks[0] + 50))
    intents = await rig.store.read_intents()
    assert intents, "no intent in 50 ticks with edge 0"
    assert len({(i.slot, i.window_start_s) for i in intents}) == len(intents)
    filled = [i for i in intents if i.status == "filled"]
    positions = await rig.store.read_positions()
    assert {p.intent_id for p in positions} == {i.id for i in filled}
    now_s = rig.clock.now_ms() // 1000
    for p in positions:
        # every window that closed before the last tick is settled, with the model's outcome
        if p.window_end_s < now_s:
            assert p.status == "settled"
            up = rig.model.outcome_up(p.asset, p.window_start_s, p.window_end_s)
            assert p.won == ((p.side == "up") == up)
    totals = await rig.store.read_ledger_totals()
    open_cost = sum(p.cost_micros for p in positions if p.status == "open")
    assert totals["cash_micros"] + open_cost == usd_to_micros(1000) + totals.get("realized_pnl_micros", 0)
    assert sum(o.record.orders for o in outs) == len([i for i in intents if i.status != "committed"])


async def test_a_tick_costs_the_same_round_trips_for_4_slots_as_for_64(rig):
    """Halted, so that only Redis is touched: the snapshot (one pipeline with the lease
    renewal riding along) and the fenced journal write."""
    trips = 0
    r = rig.store.r
    real_pipeline, real_command = r.pipeline, r.execute_command

    def pipeline(*a, **kw):
        nonlocal trips
        trips += 1
        return real_pipeline(*a, **kw)

    async def command(*a, **kw):
        nonlocal trips
        trips += 1
        return await real_command(*a, **kw)

    await rig.store.set_halt("count round trips", rig.clock.now_ms())
    many = msgspec.structs.replace(
        rig.settings, assets=tuple(f"x{i}" for i in range(32)), timeframes=("15s", "1m")
    )
    counts = []
    for settings in (rig.settings, many):
        await rig.store.ensure_slots(configured_slots(settings))
        runner = TickRunner(settings, rig.store, rig.venue, rig.clock, rig.runner.ident)
        # A new runner reads the slot list once before its first tick (one round trip more).
        await runner.load_slots()
        assert len(runner.configured) >= len(settings.assets) * len(settings.timeframes)
        await rig.clock.sleep_until_ms(rig.clock.now_ms() + 1000)
        r.pipeline, r.execute_command = pipeline, command
        trips = 0
        await runner.run(rig.clock.now_ms() // 1000)
        r.pipeline, r.execute_command = real_pipeline, real_command
        counts.append(trips)
    assert counts == [2, 2]


async def test_a_halted_worker_keeps_ticking_and_places_nothing(rig):
    await rig.store.set_halt("operator test", rig.clock.now_ms())
    outs = await rig.run_ticks(30)
    assert all(o.record.halted and o.record.orders == 0 for o in outs)
    assert await rig.store.read_intents() == []
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 30


async def test_paused_means_no_new_entries_but_open_positions_still_settle(rig):
    for _ in range(60):
        await rig.run_ticks(1)
        if await rig.store.read_positions(open_only=True):
            break
    assert await rig.store.read_positions(open_only=True), "no position opened"
    n_intents = len(await rig.store.read_intents())
    await rig.store.set_paused(True, rig.clock.now_ms())
    await rig.run_ticks(16)
    assert len(await rig.store.read_intents()) == n_intents
    assert await rig.store.read_positions(open_only=True) == []


async def test_garbage_in_a_control_key_fails_safe_is_reported_and_the_ticks_go_on(rig):
    await rig.store.r.hset(rig.store.k.control(), "paused", "\x00banana")
    outs = await rig.run_ticks(20)
    assert all(o.record.paused for o in outs) and await rig.store.read_intents() == []
    errors = await rig.store.r.xrange(rig.store.k.journal_errors())
    # Journaled when it appeared, not once per tick while it stood.
    assert len([f for _, f in errors if "paused" in f["error"] and "banana" in f["error"]]) == 1


async def test_stale_candles_block_new_entries(rig):
    rig.settings = msgspec.structs.replace(rig.settings, stale_after_ms=100)
    rig.runner = TickRunner(
        rig.settings,
        rig.store,
        rig.venue,
        rig.clock,
        rig.runner.ident,
        settler=rig.settler,
        resolve=rig.resolve,
    )

    async def stale_feed() -> None:
        await Rig.feed(rig)
        for a in rig.settings.assets:
            status = FeedStatus(rig.clock.now_ms() - 5000, 0, 1.0)
            await rig.store.r.hset(rig.store.k.feed_status(), f"{a}:1s", FEED_STATUS.encode(status))

    rig.feed = stale_feed
    outs = await rig.run_ticks(30)
    # Not one strategy call, not one intent committed, nothing at the venue.
    assert await rig.store.read_intents() == []
    assert all(o.record.evaluated == 0 and o.record.orders == 0 for o in outs)
    assert all(not o.record.halted and not o.record.paused for o in outs)
    # The same rig with fresh data does trade: staleness was what blocked it.
    del rig.feed
    for _ in range(60):
        await rig.run_ticks(1)
        if await rig.store.read_intents():
            break
    assert await rig.store.read_intents(), "no entry in 60 ticks once the data was fresh"


async def test_reaching_the_daily_loss_limit_halts_with_a_reason(rig):

    day = rig.store.k.ledger_day(utc_day(rig.clock.now_ms()))
    await rig.store.r.hset(day, "realized_pnl_micros", -usd_to_micros(100))
    await rig.run_ticks(2)
    flags = await rig.store.read_control()
    assert flags.halted and "daily loss limit" in flags.halt_reason


async def test_a_worker_that_lost_its_lease_stops_before_journaling(rig):
    await rig.run_ticks(1)
    later = rig.clock.now_ms() + 10_000
    got, epoch, _ = await rig.store.acquire_lease("green:x", "green", "t", later, 3000)
    assert got and epoch == rig.epoch + 1
    with pytest.raises(LeaseLost):
        await rig.run_ticks(1)
    assert len(await rig.store.r.xrange(rig.store.k.journal_ticks())) == 1


class StoppingClock(VirtualClock):
    """Asks the worker to stop once it has slept through `ticks` boundaries."""

    def __init__(self, start_ms: int, worker_ref: list, ticks: int) -> None:
        super().__init__(start_ms)
        self.worker_ref = worker_ref
        self.left = ticks

    async def sleep_until_ms(self, t_ms: int) -> None:
        await super().sleep_until_ms(t_ms)
        self.left -= 1
        if self.left < 0:
            self.worker_ref[0].request_stop()


async def test_a_stopped_runtime_counts_no_missed_tick_but_a_stopped_worker_does(rig):
    ref: list = []
    clock = StoppingClock(rig.clock.now_ms() + 60_000, ref, ticks=5)
    await rig.store.release_lease("blue:t", rig.epoch)
    w = Worker(rig.settings, rig.store, rig.venue, clock, "blue")
    ref.append(w)
    assert await asyncio.wait_for(w.run(), 30) == 0
    assert w.epoch == rig.epoch + 1 and w.state == "stopped"
    assert await rig.store.read_lease() == {}
    last, clean = await rig.store.read_stop_marks()
    assert last == clean == w.last_tick
    # the paper deposit was booked once, whatever the number of worker starts
    assert (await rig.store.read_ledger_totals())["deposit_micros"] == usd_to_micros(1000)

    # `baton stop` marks the downtime of the whole runtime as on purpose: not missed.
    await rig.store.r.hset(rig.store.k.stats(), "stack_stopped_ms", clock.now_ms())
    clock2 = StoppingClock(clock.now_ms() + 30_000, ref, ticks=2)
    g = Worker(rig.settings, rig.store, rig.venue, clock2, "green")
    ref[0] = g
    assert await asyncio.wait_for(g.run(), 30) == 0
    assert g.epoch == w.epoch + 1
    assert int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed") or 0) == 0
    assert not await rig.store.stack_was_stopped()  # cleared by the new holder

    # A worker stopped (or restarted) by hand while the runtime runs: nobody traded at the
    # boundaries in between, and they are counted.
    clock3 = StoppingClock(clock2.now_ms() + 10_000, ref, ticks=1)
    b = Worker(rig.settings, rig.store, rig.venue, clock3, "blue")
    ref[0] = b
    assert await asyncio.wait_for(b.run(), 30) == 0
    missed = int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed"))
    assert missed == b.last_tick - g.last_tick - 1 >= 9


async def test_a_crashed_workers_gap_is_counted_as_missed_ticks(rig):
    await rig.run_ticks(1)
    last, _ = await rig.store.read_stop_marks()
    ref: list = []
    # no clean stop recorded: the holder "crashed"; its lease expires and green takes over
    clock = StoppingClock(rig.clock.now_ms() + 10_000, ref, ticks=1)
    g = Worker(rig.settings, rig.store, rig.venue, clock, "green")
    ref.append(g)
    assert await asyncio.wait_for(g.run(), 30) == 0
    journal = await rig.store.r.xrange(rig.store.k.journal_ticks())
    first_green = next(f for _, f in journal if f["color"] == "green")
    gap = int(first_green["tick"]) - last - 1
    assert gap >= 9 and int(first_green["missed_before"]) == gap
    assert int(await rig.store.r.hget(rig.store.k.stats(), "ticks_missed")) == gap


async def test_a_key_the_entry_checks_read_of_the_wrong_type_blocks_entries_not_the_tick(rig):
    await rig.store.r.delete(rig.store.k.positions_open())
    await rig.store.r.set(rig.store.k.positions_open(), "garbage")
    outs = await rig.run_ticks(20)
    assert all(o.record.blocked == 1 and o.record.orders == 0 for o in outs)
    assert await rig.store.read_intents() == []
    (blocker,) = await rig.store.read_blocked()
    assert blocker.key == "baton:positions:open" and "WRONGTYPE" in blocker.problem


async def test_a_key_of_the_wrong_type_elsewhere_fails_the_tick_with_the_keys_name(rig):
    await rig.store.r.set(rig.store.k.handover(), "garbage")
    with pytest.raises(SnapshotError, match="baton:handover"):
        await rig.run_ticks(1)

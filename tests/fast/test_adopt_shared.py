"""Adoption when two slots trade one market (free-form slots: two strategies on x00-15s): an
order an intent of either knows is never adopted as the other's entry; an unknown one is the
entry of the one slot that has none; when either could have sent it, it is not adopted and
both are held from entering."""

from __future__ import annotations

from kernel.adopt import HOLD
from kernel.windows import window_bounds
from state.structs import SLOT, Slot
from tests.fast.rig import enter_at_once, last_five_seconds
from tests.fast.test_adopt import adopted_journal, lost_order, stub_rig

QUIET = "x00-15s.quiet"  # sorts after x00-15s: the market's last slot, as the bug needed


async def two_slots(rig, first: str = "enter") -> object:
    venue = await stub_rig(rig, n=1)
    strategies = {"enter": enter_at_once([]), "quiet": last_five_seconds([])}
    rig.resolver = lambda name: strategies["quiet" if name == "quiet" else first]
    slot = Slot(id=QUIET, asset="x00", timeframe="15s", strategy="quiet")
    await rig.store.r.hset(rig.store.k.slots(), QUIET, SLOT.encode(slot))
    return venue


async def test_a_known_order_of_one_slot_is_never_adopted_as_the_entry_of_its_neighbour(rig):
    venue = await two_slots(rig)
    await rig.run_ticks(16)  # x00-15s enters; the quiet slot on its market never does
    assert venue.calls["post"] >= 1
    before = {i.id: i for i in await rig.store.read_intents()}
    assert not [i for i in before.values() if i.slot == QUIET]
    rig.runner.adopter.owe("a test: a takeover")
    await rig.run_ticks(2)
    after = {i.id: i for i in await rig.store.read_intents()}
    assert not [i for i in after.values() if i.slot == QUIET], "another slot's order adopted"
    assert await adopted_journal(rig) == []
    assert not [p for p in await rig.store.read_positions() if p.slot == QUIET]
    assert not rig.runner.adopter.owed and not rig.runner.blocks.of(HOLD)


async def test_an_unknown_order_is_the_entry_of_the_one_slot_of_its_market_without_one(rig):
    venue = await two_slots(rig)
    await rig.run_ticks(12)  # x00-15s enters in its window's last 5 s; the quiet slot never
    start, _ = window_bounds(rig.clock.now_ms(), "15s")
    assert [i.slot for i in await rig.store.read_intents()] == ["x00-15s"]
    oid = lost_order(rig, venue)
    rig.runner.adopter.owe("a test: the Redis primary changed")
    await rig.run_ticks(1)
    adopted = [i for i in await rig.store.read_intents() if i.adopted_ms]
    assert [(i.id, i.order_id) for i in adopted] == [(f"{QUIET}:{start}:entry", oid)]
    assert venue.calls["post"] == 2  # x00-15s's entry and the lost one: nothing sent again


async def test_an_order_either_slot_could_have_sent_is_not_adopted_and_holds_both(rig):
    venue = await two_slots(rig, first="quiet")  # neither slot ever enters
    await rig.run_ticks(2)
    oid = lost_order(rig, venue)
    rig.runner.adopter.owe("a test: the Redis primary changed")
    outs = await rig.run_ticks(2)
    assert not [i for i in await rig.store.read_intents() if i.adopted_ms]
    held = {b.slot for b in rig.runner.blocks.of(HOLD)}
    assert held == {"x00-15s", QUIET} and rig.runner.adopter.owed
    assert all(o.record.orders == 0 for o in outs)
    assert any(oid in p for o in outs for p in o.problems), [o.problems for o in outs]

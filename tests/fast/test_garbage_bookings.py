"""A fill that cannot be booked because a running sum turned to garbage between the tick's read
and the booking: record_fill.lua refuses before its first write, the intent stays open (the
order is at the venue, filled), the worker goes on ticking, and once the sum is repaired
reconciliation books the fill exactly once, and the ledger identity holds."""

from __future__ import annotations

from tests.e2e.invariants import check_ledger


async def test_a_fill_refused_by_a_garbage_total_is_booked_once_after_the_repair(rig):
    k = rig.store.k
    posted: list[str] = []
    post = rig.venue.post

    def post_then_garbage(signed, order_type="FOK", timeout_s=None):
        res = post(signed, order_type)
        # The running sum turns to garbage while the order is at the venue.
        good = rig.sync.hget(k.ledger_totals(), "cash_micros")
        rig.sync.hset(k.ledger_totals(), "cash_micros", "garbage")
        posted.append(good.decode())
        return res

    rig.venue.post = post_then_garbage
    outs = []
    for _ in range(120):
        outs += await rig.run_ticks(1)
        if posted:
            break
    assert posted, "no order posted in 120 ticks"
    rig.venue.post = post
    problems = [p for o in outs for p in o.problems]
    assert any(f'{k.ledger_totals()} cash_micros: holds "garbage"' in p for p in problems), problems
    opened = await rig.store.read_intents(open_only=True)
    assert opened and all(i.status != "filled" for i in opened)
    assert await rig.store.read_positions() == []
    assert [e.kind for e in await rig.store.read_ledger()] == ["deposit"]

    # The worker ticks on while the value stays unreadable: nothing is booked, nothing lost,
    # and no new entry is opened.
    out = await rig.run_ticks(2)
    assert await rig.store.read_positions() == []
    assert all(o.record.blocked >= 1 and o.record.orders == 0 for o in out)
    assert any(
        b.key == k.ledger_totals() and b.field == "cash_micros" for b in await rig.store.read_blocked()
    )

    # The repair (cash recomputed from the ledger stream), and the next ticks book it once.
    rig.sync.hset(k.ledger_totals(), "cash_micros", posted[0])
    await rig.run_ticks(2)
    assert await rig.store.read_intents(open_only=True) == []
    positions = await rig.store.read_positions()
    assert len(positions) == len(opened)
    refs = [e.ref for e in await rig.store.read_ledger() if e.kind == "buy"]
    assert sorted(refs) == sorted(f"buy:{i.id}" for i in opened)
    assert check_ledger(rig.sync) == 1 + len(opened)
    assert rig.runner.blocks.current() == {}


async def test_garbage_in_the_intents_hash_sends_nothing_and_every_tick_is_journaled(rig):
    """The intents hash of another type (the tick's read sees only the open intents): whether a
    slot-window was entered cannot be read, so its slots wait, blocked and reported; the worker
    ticks on and journals every tick, and once repaired entries go out again."""
    k = rig.store.k
    rig.sync.set(k.intents(), "garbage")
    outs = await rig.run_ticks(40)
    assert any(f"{k.intents()}: not a hash" in p for o in outs for p in o.problems)
    assert any(o.record.blocked for o in outs)
    assert await rig.store.r.hlen(k.intents_open()) == 0
    journaled = [int(f["tick"]) for _, f in await rig.store.r.xrange(k.journal_ticks())]
    assert journaled == [o.record.tick for o in outs]
    rig.sync.delete(k.intents())
    for _ in range(120):
        await rig.run_ticks(1)
        if await rig.store.r.hlen(k.intents()):
            break
    assert await rig.store.r.hlen(k.intents()) >= 1


async def test_a_commit_refused_for_a_garbage_counter_sends_nothing_and_the_tick_goes_on(rig):
    k = rig.store.k
    rig.sync.hset(k.counts(), "intents:committed", "garbage")
    outs = []
    for _ in range(120):
        outs += await rig.run_ticks(1)
        if any("not committed, nothing sent" in p for p in outs[-1].problems):
            break
    assert any(f"{k.counts()} intents:committed: holds" in p for p in outs[-1].problems)
    assert await rig.store.r.hlen(k.intents()) == 0  # nothing committed, so nothing posted
    journaled = [int(f["tick"]) for _, f in await rig.store.r.xrange(k.journal_ticks())]
    assert journaled == [o.record.tick for o in outs]

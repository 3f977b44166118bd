"""The ledger: append-only, every ref booked once, cash and PnL derived from it."""

from __future__ import annotations

from kernel.settlement import settled
from state.structs import POSITION
from tests.factories import NOW, intent, position

READ = POSITION.encode(position()).decode()  # the open record the settlement is computed from


def filled_intent():
    return intent(status="filled")


async def test_a_deposit_is_booked_once(store):
    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    assert await store.deposit(1, "deposit:paper-initial", 1_000_000_000, NOW) == "OK"
    assert await store.deposit(1, "deposit:paper-initial", 1_000_000_000, NOW) == "ALREADY"
    assert (await store.read_ledger_totals())["cash_micros"] == 1_000_000_000


async def test_fill_then_settlement_books_cost_payout_and_pnl_exactly_once(store):
    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    await store.deposit(1, "deposit:paper-initial", 1_000_000_000, NOW)
    await store.commit_intent(1, intent())
    assert await store.record_fill(1, filled_intent(), position()) == "OK"
    assert await store.record_fill(1, filled_intent(), position()) == "ALREADY"
    assert len(await store.read_positions(open_only=True)) == 1
    assert await store.read_intents(open_only=True) == []
    won = settled(position(), up_won=True, now_ms=NOW + 900_000)
    assert won.pnl_micros == 4_090_000
    assert await store.settle_position(READ, won) == "OK"
    assert await store.settle_position(READ, won) == "ALREADY"
    totals = await store.read_ledger_totals()
    assert totals["cash_micros"] == 1_000_000_000 - 5_000_000 + 9_090_000
    assert totals["realized_pnl_micros"] == 4_090_000
    entries = await store.read_ledger()
    assert [e.kind for e in entries] == ["deposit", "buy", "payout"]
    # cash is derivable from the stream alone
    assert sum(e.amount_micros for e in entries) == totals["cash_micros"]
    assert await store.read_positions(open_only=True) == []
    (p,) = await store.read_positions()
    assert p.status == "settled" and p.won is True


async def test_a_losing_position_pays_nothing_and_books_the_loss(store):
    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    await store.record_fill(1, filled_intent(), position())
    lost = settled(position(), up_won=False, now_ms=NOW + 900_000)
    assert (lost.won, lost.payout_micros, lost.pnl_micros) == (False, 0, -5_000_000)
    await store.settle_position(READ, lost)
    day = await store.r.hget(store.k.ledger_day("20231114"), "realized_pnl_micros")
    assert int(day) == -5_000_000


async def test_a_settlement_computed_from_a_changed_position_is_refused(store):
    """The settle job holds no lease: its fence is the record it read. A fill reconciled
    into the position after the read makes the write refuse, and the job reads again."""
    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    await store.record_fill(1, filled_intent(), position())
    stale_read = POSITION.encode(position(shares=1)).decode()
    assert await store.settle_position(stale_read, settled(position(), True, NOW)) == "CHANGED"
    assert len(await store.read_positions(open_only=True)) == 1
    assert [e.kind for e in await store.read_ledger()] == ["buy"]
    # a handover since the read does not matter: the record is the fence, not the epoch
    await store.acquire_lease("g", "green", "r", NOW + 5000, 1000)
    assert await store.settle_position(READ, settled(position(), True, NOW)) == "OK"


async def test_batches_commit_and_book_each_once_even_with_repeats_inside(store):
    """One call commits a tick's intents and one books its fills (the scripts batch their
    lookups and writes): an id repeated inside a batch, or booked by an earlier one, is
    refused exactly as one call per intent would refuse it."""
    import msgspec

    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    await store.deposit(1, "deposit:paper-initial", 1_000_000_000, NOW)
    a, b = intent("a:1:entry"), intent("b:1:entry")
    assert await store.commit_intents(1, [a, b, a]) == ["OK", "OK", "DUPLICATE"]
    assert await store.commit_intents(1, [b, intent("c:1:entry")]) == ["DUPLICATE", "OK"]
    assert await store.r.hlen(store.k.intents_open()) == 3
    pa = msgspec.structs.replace(position(), id="a:1", intent_id=a.id)
    pb = msgspec.structs.replace(position(), id="b:1", intent_id=b.id)
    fa = msgspec.structs.replace(a, status="filled")
    fb = msgspec.structs.replace(b, status="filled")
    assert await store.record_fills(1, [(fa, pa), (fb, pb), (fa, pa)]) == ["OK", "OK", "ALREADY"]
    assert await store.record_fills(1, [(fb, pb)]) == ["ALREADY"]
    assert await store.record_fills(2, [(fb, pb)]) == ["STALE_EPOCH"]
    entries = await store.read_ledger()
    assert [e.kind for e in entries] == ["deposit", "buy", "buy"]
    totals = await store.read_ledger_totals()
    assert totals["cash_micros"] == 1_000_000_000 - 2 * 5_000_000 == sum(e.amount_micros for e in entries)
    assert totals["entries"] == 3 and totals["buy_micros"] == -2 * 5_000_000
    assert {p.id for p in await store.read_positions(open_only=True)} == {"a:1", "b:1"}
    assert {i.id for i in await store.read_intents(open_only=True)} == {"c:1:entry"}

"""The e2e tick check tells a tick lost to the tick before it overrunning its boundary (a
stalled machine) from a gap between ticks (a handover, a reload, a dead worker)."""

from __future__ import annotations

from tests.e2e import invariants

TICK_MS = 500


def entry(tick: int, duration_ms: int = 3, jitter_ms: int = 1, epoch: int = 1) -> dict[str, str]:
    return {
        "tick": str(tick),
        "epoch": str(epoch),
        "color": "blue",
        "release": "r1",
        "started_ms": str(tick * TICK_MS + jitter_ms),
        "duration_ms": str(duration_ms),
        "jitter_ms": str(jitter_ms),
    }


def test_a_tick_lost_to_an_overrun_is_told_from_a_gap():
    # Tick 102 ran 529 ms from 77 ms after its boundary: the boundary of 103 came meanwhile.
    # Tick 106 is missing though 105 ended in time: a gap.
    slow = entry(102, duration_ms=529, jitter_ms=77)
    entries = [entry(100), entry(101), slow, entry(104), entry(105), entry(107)]
    rep = invariants.check_ticks(entries)
    assert rep.missed == [103, 106]
    assert rep.overran == [103]
    assert rep.missed_not_overrun == [106]


def test_overruns_are_rare_at_most_one_in_a_hundred_ticks():
    slow = [entry(t, duration_ms=600) if t % 2 == 0 else None for t in range(1000, 1400)]
    rep = invariants.check_ticks([e for e in slow if e is not None])
    assert rep.missed_not_overrun == [] and len(rep.overran) == 199
    assert not rep.overruns_are_rare()
    one = invariants.check_ticks([entry(1), entry(2, duration_ms=600), entry(4)])
    assert one.overran == [3] and one.overruns_are_rare()


# --- the money's invariants with exits (tests/e2e/invariants.py), on fakeredis ------------------


def _book_entry_and_exits(store_sync):
    """A buy of 10 shares with a fee, then two exits that sell them all: what Redis holds
    and the venue's order list, as a run at the sim leaves them."""
    import msgspec

    from state.positions import sale
    from state.structs import exit_leg
    from tests.factories import NOW, intent, position

    s = store_sync
    s.r.set(s.k.lease_epoch(), 1)
    s.scripts.ledger_deposit(
        keys=[
            s.k.lease_epoch(),
            s.k.ledger(),
            s.k.ledger_totals(),
            s.k.ledger_refs(),
            s.k.ledger_day("20231114"),
        ],
        args=[1, "deposit:paper-initial", 100_000_000, NOW],
    )
    entry = msgspec.structs.replace(intent(), order_id="0xbuy", condition_id="0xc", fee_micros=40_000)
    assert s.commit_intents(1, [entry]) == ["OK"]
    filled = msgspec.structs.replace(entry, status="filled", filled_size=10.0, avg_price=0.5)
    p = position(cost=5_040_000, shares=10_000_000)
    assert s.record_fills(1, [(filled, p)]) == ["OK"]
    orders = [{"id": "0xbuy", "market": "0xc", "side": "BUY", "size_matched": "10"}]
    for n, (shares, price) in enumerate([(4.0, 0.7), (6.0, 0.2)], start=1):
        leg = exit_leg(n)
        x = msgspec.structs.replace(
            entry, id=f"{p.id}:{leg}", leg=leg, order_id=f"0xsell{n}", fee_micros=1_000 * n, size=shares
        )
        assert s.commit_intents(1, [x]) == ["OK"]
        done = msgspec.structs.replace(x, status="filled", filled_size=shares, avg_price=price)
        b = sale(p, done, NOW + n)
        assert s.record_exits(1, [(done, b)]) == ["OK"]
        p = b.position
        orders.append({"id": f"0xsell{n}", "market": "0xc", "side": "SELL", "size_matched": str(shares)})
    return orders


def _sync_store():
    import fakeredis

    from state.keys import Keys
    from state.store import Store

    return Store(fakeredis.FakeRedis(decode_responses=True), Keys("baton:"))


def test_a_run_whose_positions_were_sold_holds_the_money_invariants():
    s = _sync_store()
    orders = _book_entry_and_exits(s)
    rep = invariants.check_orders(s.r, orders)
    assert (rep.posted, rep.filled, rep.positions, rep.exits) == (3, 3, 1, 2)
    assert invariants.check_ledger(s.r) == 4
    (p,) = invariants.redis_positions(s.r)
    assert p.status == "closed"


def test_an_exit_sent_twice_or_sold_and_not_booked_breaks_the_invariants():
    import pytest

    s = _sync_store()
    orders = _book_entry_and_exits(s)
    with pytest.raises(AssertionError, match="more than once"):
        invariants.check_orders(s.r, [*orders, dict(orders[1], id="0xsell1-again")])
    with pytest.raises(AssertionError, match=r"more than once|other side"):
        invariants.check_orders(s.r, [orders[0], dict(orders[1], side="BUY"), orders[2]])
    # the venue sold more than the books say
    with pytest.raises(AssertionError, match="shares sold by exits"):
        invariants.check_orders(s.r, [orders[0], dict(orders[1], size_matched="5"), orders[2]])
    s.r.srem(s.k.ledger_refs(), "sell:btc-15m:1700000000:exit-2")
    with pytest.raises(AssertionError, match="not booked"):
        invariants.check_orders(s.r, orders)


def test_a_sale_whose_totals_or_entries_disagree_breaks_the_ledger_check():
    import pytest

    s = _sync_store()
    _book_entry_and_exits(s)
    s.r.hincrby(s.k.ledger_totals(), "fee_micros", 1)
    with pytest.raises(AssertionError):
        invariants.check_ledger(s.r)
    s.r.hincrby(s.k.ledger_totals(), "fee_micros", -1)
    invariants.check_ledger(s.r)
    # a position whose proceeds disagree with its sales' entries
    from state.structs import POSITION

    (p,) = invariants.redis_positions(s.r)
    import msgspec

    s.r.hset(
        s.k.positions(),
        p.id,
        POSITION.encode(msgspec.structs.replace(p, proceeds_micros=p.proceeds_micros + 1)),
    )
    with pytest.raises(AssertionError):
        invariants.check_ledger(s.r)

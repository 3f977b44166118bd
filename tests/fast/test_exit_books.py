"""Exits in the books: a sale's arithmetic (state/positions.py `sale`), its fenced, exactly-once
booking (record_exit.lua), buy fees, and the settlement of what is still held."""

from __future__ import annotations

import msgspec
import pytest

from baton.errors import BookingError
from kernel.settlement import settled
from state.counts import read_counts_async, scan_counts
from state.positions import ExitBooking, sale
from state.structs import INTENT, POSITION, Intent, Position, exit_leg
from tests.factories import NOW, intent, position

POS_ID = "btc-15m:1700000000"
DAY = "20231114"


def sell(n: int, shares: float, price: float, fee_micros: int = 0, status: str = "filled") -> Intent:
    """The exit leg exit-<n> of the factories' slot-window, filled as told."""
    return msgspec.structs.replace(
        intent(f"{POS_ID}:{exit_leg(n)}", status=status),  # type: ignore[arg-type]
        leg=exit_leg(n),
        size=shares,
        limit_price=price,
        filled_size=shares if status == "filled" else 0.0,
        avg_price=price if status == "filled" else 0.0,
        fee_micros=fee_micros,
    )


def bought(cost: int = 5_000_000, shares: int = 10_000_000, fee: int = 0) -> tuple[Intent, Position]:
    """The entry's fill: 10 shares for $5 (fee included in the cost)."""
    filled = msgspec.structs.replace(
        intent(status="filled"), filled_size=shares / 1e6, avg_price=0.5, fee_micros=fee
    )
    return filled, position(cost=cost, shares=shares)


async def _opened(store, fee: int = 0) -> Position:
    await store.acquire_lease("w", "blue", "r", NOW, 1000)
    await store.ensure_counts(NOW)  # as a new lease holder does: the counts are then kept
    await store.deposit(1, "deposit:paper-initial", 100_000_000, NOW)
    await store.commit_intent(1, intent())
    i, p = bought(cost=5_000_000 + fee, fee=fee)
    assert await store.record_fill(1, i, p) == "OK"
    return p


async def _commit_exit(store, n: int) -> None:
    assert await store.commit_intent(1, sell(n, 0, 0.6, status="committed")) == "OK"


# --- the arithmetic ------------------------------------------------------------------------------


def test_a_partial_sale_takes_its_shares_cost_pro_rata_and_books_the_difference_as_pnl():
    b = sale(position(cost=5_000_000, shares=10_000_000), sell(1, 4.0, 0.7, fee_micros=20_000), NOW)
    assert b.sold_shares_micros == 4_000_000
    assert b.fee_micros == 20_000 and b.proceeds_micros == 2_800_000 - 20_000
    # 4 of 10 shares cost 2 of the 5 dollars
    assert b.pnl_micros == 2_780_000 - 2_000_000
    p = b.position
    assert (p.status, p.shares_micros, p.cost_micros) == ("open", 6_000_000, 3_000_000)
    assert (p.sold_shares_micros, p.proceeds_micros, p.fees_micros, p.exits) == (
        4_000_000,
        2_780_000,
        20_000,
        1,
    )
    assert p.exit_pnl_micros == b.pnl_micros and b.shares_before_micros == 10_000_000


def test_selling_the_rest_closes_the_position_and_the_costs_add_up_exactly():
    """Costs taken are floored; the last sale takes whatever is left: cost sold plus cost
    held is always what was paid, to the micro."""
    p0 = position(cost=5_000_001, shares=9_090_000)
    b1 = sale(p0, sell(1, 3.03, 0.5), NOW)
    b2 = sale(b1.position, sell(2, 3.03, 0.4), NOW + 1)
    b3 = sale(b2.position, sell(3, 3.03, 0.3), NOW + 2)
    p = b3.position
    assert (p.status, p.shares_micros, p.cost_micros, p.exits) == ("closed", 0, 0, 3)
    taken = sum(b.proceeds_micros - b.pnl_micros for b in (b1, b2, b3))
    assert taken == p0.cost_micros
    assert p.exit_pnl_micros == sum(b.pnl_micros for b in (b1, b2, b3)) == p.proceeds_micros - p0.cost_micros


@pytest.mark.parametrize(
    ("exit_intent", "pos", "why"),
    [
        (sell(1, 11.0, 0.5), position(shares=10_000_000), "sells 11 shares, the position holds 10"),
        (sell(1, 0.0, 0.5, status="committed"), position(), "sells nothing"),
        (sell(1, 1.0, 0.5, fee_micros=600_000), position(), "fee of 600000 micros"),
        (intent(status="filled"), position(), "is not an exit leg"),
        (
            msgspec.structs.replace(sell(1, 1.0, 0.5), window_start_s=1),
            position(),
            "belongs to position btc-15m:1",
        ),
        (sell(1, 1.0, 0.5), msgspec.structs.replace(position(), status="settled"), "is settled, not open"),
        (msgspec.structs.replace(sell(1, 1.0, 0.5), avg_price=0.0), position(), "average price 0.0"),
    ],
)
def test_a_fill_that_cannot_be_this_positions_sale_is_refused_by_name(exit_intent, pos, why):
    with pytest.raises(BookingError, match=why):
        sale(pos, exit_intent, NOW)


# --- the booking ---------------------------------------------------------------------------------


async def test_a_buy_fee_is_in_the_cost_and_named_by_the_ledger_entry(store):
    await _opened(store, fee=40_000)
    (p,) = await store.read_positions(open_only=True)
    assert p.cost_micros == 5_040_000
    deposit, buy = await store.read_ledger()
    assert (buy.kind, buy.amount_micros, buy.fee_micros) == ("buy", -5_040_000, 40_000)
    assert deposit.fee_micros == 0
    totals = await store.read_ledger_totals()
    assert totals["fee_micros"] == 40_000 and totals["cash_micros"] == 100_000_000 - 5_040_000


async def test_exits_are_booked_once_close_the_position_and_move_cash_pnl_and_the_day(store):
    p0 = await _opened(store, fee=40_000)
    p0 = (await store.read_positions(open_only=True))[0]
    await _commit_exit(store, 1)
    b1 = sale(p0, sell(1, 4.0, 0.7, fee_micros=10_000), NOW + 1000)
    assert await store.record_exit(1, sell(1, 4.0, 0.7, fee_micros=10_000), b1) == "OK"
    assert await store.record_exit(1, sell(1, 4.0, 0.7, fee_micros=10_000), b1) == "ALREADY"
    (held,) = await store.read_positions(open_only=True)
    assert held == b1.position and held.shares_micros == 6_000_000
    await _commit_exit(store, 2)
    b2 = sale(held, sell(2, 6.0, 0.3, fee_micros=5_000), NOW + 2000)
    assert await store.record_exits(1, [(sell(2, 6.0, 0.3, fee_micros=5_000), b2)]) == ["OK"]
    assert await store.read_positions(open_only=True) == []
    (closed,) = await store.read_positions()
    assert closed.status == "closed" and closed.shares_micros == 0 and closed.exits == 2
    assert await store.read_intents(open_only=True) == []
    entries = await store.read_ledger()
    assert [(e.kind, e.ref) for e in entries] == [
        ("deposit", "deposit:paper-initial"),
        ("buy", f"buy:{POS_ID}:entry"),
        ("sell", f"sell:{POS_ID}:exit-1"),
        ("sell", f"sell:{POS_ID}:exit-2"),
    ]
    s1, s2 = entries[2:]
    assert (s1.amount_micros, s1.fee_micros, s1.pnl_micros) == (2_790_000, 10_000, 2_790_000 - 2_016_000)
    assert (s2.amount_micros, s2.fee_micros, s2.pnl_micros) == (1_795_000, 5_000, 1_795_000 - 3_024_000)
    totals = await store.read_ledger_totals()
    assert (
        totals["cash_micros"] == sum(e.amount_micros for e in entries) == 100_000_000 - 5_040_000 + 4_585_000
    )
    assert totals["sell_micros"] == 4_585_000 and totals["fee_micros"] == 55_000
    assert totals["realized_pnl_micros"] == 4_585_000 - 5_040_000 == closed.exit_pnl_micros
    # the daily loss limit reads the day's PnL: it sees the loss the exits took
    assert int(await store.r.hget(store.k.ledger_day(DAY), "realized_pnl_micros")) == -455_000
    counts = await read_counts_async(store.r, store.k)
    assert (counts.positions_open, counts.positions_closed, counts.positions_settled) == (0, 1, 0)
    assert counts.intents["filled"] == 3 and counts.source == "counts"


async def test_an_exit_is_refused_when_fenced_out_settled_closed_or_computed_from_another_position(store):
    p0 = await _opened(store)
    await _commit_exit(store, 1)
    b1 = sale(p0, sell(1, 4.0, 0.6), NOW)
    assert await store.record_exits(2, [(sell(1, 4.0, 0.6), b1)]) == ["STALE_EPOCH"]
    # computed from a position that held other shares: nothing written
    stale = sale(position(cost=5_000_000, shares=12_000_000), sell(1, 4.0, 0.6), NOW)
    assert await store.record_exits(1, [(sell(1, 4.0, 0.6), stale)]) == ["CHANGED"]
    assert [e.kind for e in await store.read_ledger()] == ["deposit", "buy"]
    assert len(await store.read_intents(open_only=True)) == 1
    # two exits of one position in one call, the second computed from the first
    await _commit_exit(store, 2)
    b2 = sale(b1.position, sell(2, 6.0, 0.6), NOW)
    assert await store.record_exits(1, [(sell(1, 4.0, 0.6), b1), (sell(2, 6.0, 0.6), b2)]) == ["OK", "OK"]
    # the position is closed: a third sale has nothing to sell
    b3 = ExitBooking(
        position=b2.position, sold_shares_micros=0, proceeds_micros=1, fee_micros=0, pnl_micros=1, at_ms=NOW
    )
    assert await store.record_exits(1, [(sell(3, 1.0, 0.6), b3)]) == ["SETTLED"]
    assert [e.kind for e in await store.read_ledger()] == ["deposit", "buy", "sell", "sell"]
    before = await store.r.hgetall(store.k.counts())
    assert await store.record_exits(1, [(sell(2, 6.0, 0.6), b2)]) == ["ALREADY"]
    assert await store.r.hgetall(store.k.counts()) == before


async def test_an_exit_of_a_settled_position_writes_nothing(store):
    p0 = await _opened(store)
    assert await store.settle_position(POSITION.encode(p0).decode(), settled(p0, True, NOW)) == "OK"
    await _commit_exit(store, 1)
    assert await store.record_exit(1, sell(1, 4.0, 0.6), sale(p0, sell(1, 4.0, 0.6), NOW)) == "SETTLED"
    assert [e.kind for e in await store.read_ledger()] == ["deposit", "buy", "payout"]


async def test_a_garbage_total_refuses_the_whole_batch_before_any_write(store):
    from baton.errors import UnreadableValue

    p0 = await _opened(store)
    await _commit_exit(store, 1)
    await store.r.hset(store.k.ledger_totals(), "sell_micros", "lots")
    with pytest.raises(UnreadableValue, match="sell_micros"):
        await store.record_exit(1, sell(1, 4.0, 0.6), sale(p0, sell(1, 4.0, 0.6), NOW))
    assert await store.read_positions(open_only=True) == [p0]
    assert [e.kind for e in await store.read_ledger()] == ["deposit", "buy"]


# --- settlement of what is left ------------------------------------------------------------------


async def test_a_partly_sold_position_settles_on_the_shares_it_still_holds(store):
    p0 = await _opened(store)
    await _commit_exit(store, 1)
    b1 = sale(p0, sell(1, 4.0, 0.7), NOW)
    assert await store.record_exit(1, sell(1, 4.0, 0.7), b1) == "OK"
    held = b1.position
    won = settled(held, up_won=True, now_ms=NOW + 900_000)
    assert (won.payout_micros, won.pnl_micros) == (6_000_000, 6_000_000 - 3_000_000)
    assert await store.settle_position(POSITION.encode(held).decode(), won) == "OK"
    totals = await store.read_ledger_totals()
    assert totals["cash_micros"] == 100_000_000 - 5_000_000 + 2_800_000 + 6_000_000
    # the position's whole PnL: what came in (sales and payout) less what it cost
    assert totals["realized_pnl_micros"] == 2_800_000 + 6_000_000 - 5_000_000


async def test_a_settlement_waits_while_an_exit_is_open_and_a_closed_position_never_settles(store):
    p0 = await _opened(store)
    await _commit_exit(store, 1)
    raw = POSITION.encode(p0).decode()
    assert await store.settle_position(raw, settled(p0, True, NOW)) == "PENDING"
    b1 = sale(p0, sell(1, 10.0, 0.6), NOW)
    assert await store.record_exit(1, sell(1, 10.0, 0.6), b1) == "OK"
    closed = b1.position
    assert (
        await store.settle_position(POSITION.encode(closed).decode(), settled(closed, True, NOW)) == "UNKNOWN"
    )
    assert await store.settle_position(raw, settled(p0, True, NOW)) == "UNKNOWN"
    assert [e.kind for e in await store.read_ledger()] == ["deposit", "buy", "sell"]


def test_scanned_counts_know_closed_positions():
    closed = msgspec.structs.replace(position(), status="closed", shares_micros=0, cost_micros=0)
    c = scan_counts([INTENT.encode(intent())], [POSITION.encode(position()), POSITION.encode(closed)])
    assert (c.positions_open, c.positions_closed, c.positions, c.positions_unreadable) == (1, 1, 2, 0)


async def test_a_sale_whose_intent_is_not_final_is_refused_before_any_write(store):
    import redis

    p0 = await _opened(store)
    await _commit_exit(store, 1)
    working = sell(1, 4.0, 0.6, status="posted")
    b = sale(p0, sell(1, 4.0, 0.6), NOW)
    with pytest.raises(redis.ResponseError, match="not a final intent"):
        await store.record_exit(1, working, b)
    assert await store.read_positions(open_only=True) == [p0]
    assert len(await store.read_intents(open_only=True)) == 1

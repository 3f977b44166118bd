"""The chaos checker with exits (tests/chaos/order_checks.py, ledger_checks.py) on synthetic
runs: a run whose positions were partly or wholly sold before resolution holds every
invariant, and each way exits can go wrong is caught: an exit sent twice or as a buy, a sale
not booked or booked twice, a fee lost, a closed position paid, a ledger off by a cent."""

from __future__ import annotations

from tests.chaos import checker
from tests.chaos.synthetic import broken, totals, with_exits


def _retotal(d):
    d.ledger_totals = totals(d.ledger)
    return d


def test_a_run_with_exits_holds_every_invariant():
    d = with_exits()
    rep = checker.check(d)
    assert rep.broken == [], [(r.name, r.evidence) for r in rep.broken]
    figs = rep.figures
    assert figs["positions"]["sold_out"] == 1 and figs["positions"]["sales"] == 2
    assert figs["positions"]["settled"] == 2
    assert figs["ledger"]["identity_diff_micros"] == 0
    assert figs["ledger"]["fees_micros"] == 15_000
    assert figs["ledger"]["sells_micros"] == (2_800_000 - 10_000) + (3_000_000 - 5_000)
    assert figs["ledger"]["cash_micros"] == figs["ledger"]["deposits_micros"] + figs["ledger"][
        "buys_micros"
    ] + (figs["ledger"]["sells_micros"] + figs["ledger"]["payouts_micros"])


def test_an_exit_sent_twice_is_caught():
    d = with_exits()
    d.venue_orders.append(dict(d.venue_orders[1], id="0xsell1-again"))
    assert broken(d) >= {"duplicated per slot-window", "unknown to Redis (no intent)"}


def test_two_slots_on_one_market_may_each_enter_and_exit_once():
    """Two strategies on one slot-window's market: an intent each, an order each."""
    d = with_exits()
    twin = [
        dict(i, id=i["id"].replace("a1-15s", "a1b-15s"), slot="a1b-15s", order_id=i["order_id"] + "b")
        for i in d.intents[:2]
    ]
    d.intents += twin
    d.venue_orders += [dict(o, id=o["id"] + "b", size_matched="0") for o in d.venue_orders[:2]]
    assert broken(d) == set()
    d.venue_orders.append(dict(d.venue_orders[0], id="0xthird", size_matched="0"))
    assert "duplicated per slot-window" in broken(d)


def test_an_exit_sent_as_a_buy_is_caught():
    d = with_exits()
    d.venue_orders[1]["side"] = "BUY"
    assert "sent as the other side than its leg" in broken(d)


def test_a_sale_filled_at_the_venue_and_not_booked_is_caught():
    d = with_exits()
    d.ledger = [e for e in d.ledger if e["ref"] != "sell:a1-15s:1005:exit-1"]
    got = broken(_retotal(d))
    assert {"filled at the venue, not recorded", "positions whose entries disagree"} <= got


def test_a_sale_booked_that_the_venue_did_not_fill_is_caught():
    d = with_exits()
    d.venue_orders[1]["size_matched"] = "0"
    got = broken(d)
    assert {"recorded, not filled at the venue", "size differs from the venue's fill"} <= got


def test_a_sale_booked_twice_is_caught():
    d = with_exits()
    d.ledger.append(dict(d.ledger[2]))
    got = broken(_retotal(d))
    assert "refs booked twice" in got


def test_a_fee_lost_between_the_venue_and_the_ledger_is_caught():
    d = with_exits()
    d.intents[1]["fee_micros"] = 20_000  # the venue charged more than the sale's entry says
    assert broken(d) == {"positions whose entries disagree"}
    d = with_exits()
    d.intents[0]["fee_micros"] = 7  # a buy's fee
    assert broken(d) == {"positions whose entries disagree"}


def test_totals_that_lose_a_fee_or_a_sale_are_caught():
    d = with_exits()
    d.ledger_totals["fee_micros"] = "0"
    assert broken(d) == {"totals hash vs stream, micros"}
    d = with_exits()
    d.ledger_totals["sell_micros"] = str(int(d.ledger_totals["sell_micros"]) - 1)
    assert broken(d) == {"totals hash vs stream, micros"}


def test_a_sale_off_by_a_cent_is_caught():
    d = with_exits()
    sale = next(e for e in d.ledger if e["kind"] == "sell")
    sale["amount_micros"] = str(int(sale["amount_micros"]) + 10_000)
    got = broken(_retotal(d))
    assert {"cash + open cost - (initial + PnL), micros", "positions whose entries disagree"} <= got


def test_a_closed_position_that_was_paid_or_still_holds_is_caught():
    d = with_exits()
    closed = d.positions[1]
    d.ledger.append(
        {"kind": "payout", "amount_micros": "0", "ref": f"settle:{closed['id']}", "pnl_micros": "0"}
    )
    assert "positions whose entries disagree" in broken(_retotal(d))
    d = with_exits()
    d.positions[1]["shares_micros"] = 1
    assert "settlements that do not add up" in broken(d)
    d = with_exits()
    d.open_positions.append(d.positions[1])
    assert "open set disagrees with positions" in broken(d)


def test_a_settlement_that_paid_on_the_shares_sold_is_caught():
    d = with_exits()
    p = d.positions[0]
    p["payout_micros"] = 10_000_000  # the shares bought, not the 6 still held
    assert "settlements that do not add up" in broken(d)


def test_an_exit_during_a_pause_is_no_entry():
    from tests.chaos.synthetic import _fault

    d = with_exits()
    at = d.intents[1]["created_ms"] = 1_058_000  # no entry is committed near it
    d.faults = [
        _fault(
            "garbage-keys",
            1,
            at - 10_000,
            at + 500,
            variant="paused",
            field="paused",
            written_ms=at - 10_000,
            cleanup_sent_ms=at + 400,
        )
    ]
    assert "entered while paused" not in broken(d)
    d.intents[0]["created_ms"] = at  # the entry, committed inside it: caught
    assert "entered while paused" in broken(d)

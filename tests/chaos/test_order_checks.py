"""The chaos checker's invariants of the money (tests/chaos/order_checks.py) on synthetic runs:
a duplicate order per slot-window, an order from a stale epoch, an order or a posting tick
inside a halt, and a ledger that does not balance are caught."""

from __future__ import annotations

from tests.chaos import checker, halts
from tests.chaos.synthetic import FIRST, LAST, T, _entry, _fault, _trade, broken, clean, totals


def test_a_duplicate_order_per_slot_window_is_caught():
    d = clean()
    twin = dict(d.venue_orders[0], id="0xorder1-again")
    d.venue_orders.append(twin)
    got = broken(d)
    assert "duplicated per slot-window" in got
    assert "unknown to Redis (no intent)" in got


def test_an_order_from_a_stale_epoch_is_caught():
    d = clean()
    # Epoch 2 takes over at tick 1040; trade 3's order (epoch 1) reached the venue at 1045 s.
    d.journal = [_entry(t, 1 if t < FIRST + 40 else 2) for t in range(FIRST, LAST + 1)]
    d.faults = [_fault("kill-worker", 1, (FIRST + 39) * T, (FIRST + 41) * T)]
    assert broken(d) == {"posted by a stale epoch"}
    # The same order from epoch 2 is fine.
    d.intents[2]["epoch"] = 2
    assert broken(d) == set()


def test_an_order_after_a_halt_is_caught():
    d = clean()
    # Trade 3's order was created in second 1045; halt acknowledged at 1043.2 s, resumed at 1048 s.
    d.faults = [
        _fault(
            "halt",
            1,
            1_043_000,
            1_049_000,
            halted_ms=1_043_190,
            acknowledged=True,
            ack_ms=10,
            resume_sent_ms=1_048_000,
        )
    ]
    got = broken(d)
    assert "posted after a halt" in got
    # Acknowledged within the order's own second: not provably after it (whole seconds).
    d.faults[0]["details"].update(halted_ms=1_045_100, ack_ms=10)
    d.intents[2]["created_ms"] = 1_045_050
    assert broken(d) == set()


def test_an_intent_committed_while_a_garbage_flag_stood_is_caught():
    d = clean()
    d.faults = [
        _fault(
            "garbage-keys",
            1,
            1_030_000,
            1_047_000,
            variant="paused",
            field="paused",
            written_ms=1_030_000,
            cleanup_sent_ms=1_046_000,
        )
    ]
    assert broken(d) == {"entered while paused"}
    d.faults[0]["details"].update(field="halted", variant="halted")
    assert broken(d) == {"posted after a halt"}


def test_a_tick_that_posted_inside_a_halt_is_caught():
    d = clean()
    # A halt that reached the tick mid-way: its posts went out before the gate closed.
    d.journal[10]["halted"] = "1"
    d.journal[10]["orders"] = "2"
    assert broken(d) == set()
    rep = checker.check(d)
    assert [r.value for r in rep.rows if r.name == "posted, then halted in the same tick"] == [1]
    # A tick that started after the acknowledgement, before the resume, posted: broken.
    d.faults = [
        _fault(
            "halt",
            1,
            (FIRST + 9) * T,
            (FIRST + 14) * T,
            halted_ms=(FIRST + 9) * T + 500,
            acknowledged=True,
            ack_ms=3,
            resume_sent_ms=(FIRST + 13) * T,
        )
    ]
    assert broken(d) == {"ticks that posted inside a halt"}


def test_a_ledger_off_by_one_cent_is_caught():
    d = clean()
    d.ledger[-1]["amount_micros"] = str(int(d.ledger[-1]["amount_micros"]) + 10_000)
    d.ledger_totals["cash_micros"] = str(int(d.ledger_totals["cash_micros"]) + 10_000)
    got = broken(d)
    assert "cash + open cost - (initial + PnL), micros" in got
    rep = checker.check(d)
    assert rep.figures["ledger"]["identity_diff_micros"] == 10_000


def test_totals_that_disagree_with_the_stream_are_caught():
    d = clean()
    d.ledger_totals["realized_pnl_micros"] = str(int(d.ledger_totals["realized_pnl_micros"]) - 1)
    assert broken(d) == {"totals hash vs stream, micros"}


def test_an_open_position_counts_at_cost():
    d = clean()
    o, i, p, led = _trade(4, 1050, True, settled=False)
    d.venue_orders.append(o)
    d.intents.append(i)
    d.positions.append(p)
    d.open_positions.append(p)
    d.ledger += led
    d.ledger_totals = totals(d.ledger)
    assert broken(d) == set()  # its window (1050-1065 s) has not closed long enough ago
    d.end_ms = 1_080_000
    d.journal += [_entry(t) for t in range(LAST + 1, 1080)]
    assert broken(d) == {"closed windows not settled"}


def test_a_fill_without_a_position_and_a_position_without_a_fill_are_caught():
    d = clean()
    d.venue_orders[0]["size_matched"] = "0"
    got = broken(d)
    assert "recorded, not filled at the venue" in got
    d = clean()
    d.positions[1]["shares_micros"] = 9_990_000
    assert "size differs from the venue's fill" in broken(d)
    d = clean()
    lost = d.positions.pop(0)
    d.ledger = [e for e in d.ledger if lost["id"] not in e["ref"] and lost["intent_id"] not in e["ref"]]
    d.ledger_totals = totals(d.ledger)
    assert broken(d) == {"filled at the venue, not recorded"}


def test_a_halt_answered_500_that_stood_anyway_is_still_checked():
    d = clean()
    # The API said the halt failed, yet the flag was set: no acknowledgement to go by, so the
    # window opens two ticks and a second after the request.
    d.faults = [
        _fault(
            "garbage-keys",
            1,
            1_039_000,
            1_049_000,
            variant="counter",
            field="seq",
            halt_status=500,
            halted_ms=1_040_000,
            acknowledged=False,
            ack_ms=None,
            set_anyway=True,
            resume_sent_ms=1_048_000,
        )
    ]
    assert halts.halt_windows(d.faults, T) == [(1_043_000, 1_048_000, "garbage-keys #1")]
    assert broken(d) == {"posted after a halt"}  # trade 3: created in second 1045


def test_an_entry_committed_past_garbage_in_its_scope_is_caught():
    d = clean()
    # Trade 3 (slot a3-15s) was committed at 1045 s; garbage stood from 1040 s to 1047 s.
    blocked = [{"variant": "day-pnl", "key": "baton:ledger:day:x", "id": "x", "scope": "all"}]
    d.faults = [
        _fault(
            "garbage-values",
            1,
            1_040_000,
            1_048_000,
            written_ms=1_040_000,
            repaired_ms=1_047_000,
            blocked=blocked,
        )
    ]
    assert broken(d) == {"entered past an unreadable value"}
    # Garbage that blocks another asset's slots only: not broken.
    d.faults[0]["details"]["blocked"] = [dict(blocked[0], scope="asset a1")]
    assert broken(d) == set()
    d.faults[0]["details"]["blocked"] = [dict(blocked[0], scope="asset a3")]
    assert broken(d) == {"entered past an unreadable value"}
    # Garbage in one slot's value (garbage-keys): that slot only.
    d.faults = [
        _fault(
            "garbage-keys",
            1,
            1_040_000,
            1_048_000,
            variant="slot",
            field="a3-15s",
            written_ms=1_040_000,
            restored_ms=1_047_000,
        )
    ]
    assert broken(d) == {"entered past an unreadable value"}
    d.faults[0]["details"]["field"] = "a2-15s"
    assert broken(d) == set()
    # Committed by the tick in progress when the garbage was written: within the grace.
    d.faults = [
        _fault(
            "garbage-values",
            1,
            1_044_000,
            1_048_000,
            written_ms=1_044_500,
            repaired_ms=1_047_000,
            blocked=blocked,
        )
    ]
    assert broken(d) == set()
    # Shown in baton:blocked at 1044.9 s: from then on, whatever the grace would say.
    d.faults[0]["details"]["shown_ms"] = 1_044_900
    assert broken(d) == {"entered past an unreadable value"}

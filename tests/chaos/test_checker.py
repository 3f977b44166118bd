"""The chaos checker on synthetic runs: a clean run passes, and each broken invariant the
harness exists to catch is caught (a checker that cannot fail proves nothing)."""

from __future__ import annotations

import copy
import random

import pytest

from tests.chaos import checker, faults, halts, report, tick_checks
from tests.chaos.report import RunData

T = 1000
FIRST, LAST = 1000, 1060  # ticks; boundary of tick k is k * T ms
DEPOSIT = 1_000_000_000


def _entry(tick: int, epoch: int = 1, **kw: str) -> dict[str, str]:
    e = {
        "tick": str(tick),
        "color": "blue",
        "release": "r1",
        "epoch": str(epoch),
        "started_ms": str(tick * T + 3),
        "duration_ms": "40",
        "jitter_ms": "3",
        "orders": "0",
        "halted": "0",
        "paused": "0",
    }
    e.update(kw)
    return e


def _trade(n: int, window_s: int, won: bool, epoch: int = 1, settled: bool = True):
    """One filled entry: (venue order, intent, position, ledger entries)."""
    slot = f"a{n}-15s"
    iid, pid, oid = f"{slot}:{window_s}:entry", f"{slot}:{window_s}", f"0xorder{n}"
    shares, cost = 10_000_000, 5_000_000
    order = {
        "id": oid,
        "market": f"0xmarket{n}",
        "size_matched": "10",
        "created_at": window_s + 10,
        "price": "0.5",
    }
    intent = {
        "id": iid,
        "slot": slot,
        "window_start_s": window_s,
        "window_end_s": window_s + 15,
        "leg": "entry",
        "epoch": epoch,
        "created_ms": (window_s + 10) * 1000 + 5,
        "status": "filled",
        "order_id": oid,
    }
    payout = shares if won else 0
    position = {
        "id": pid,
        "slot": slot,
        "window_start_s": window_s,
        "window_end_s": window_s + 15,
        "shares_micros": shares,
        "cost_micros": cost,
        "intent_id": iid,
        "status": "settled" if settled else "open",
        "won": won if settled else None,
        "payout_micros": payout if settled else 0,
        "pnl_micros": payout - cost if settled else 0,
    }
    ledger = [{"kind": "buy", "amount_micros": str(-cost), "ref": f"buy:{iid}", "pnl_micros": "0"}]
    if settled:
        ledger.append(
            {
                "kind": "payout",
                "amount_micros": str(payout),
                "ref": f"settle:{pid}",
                "pnl_micros": str(payout - cost),
            }
        )
    return order, intent, position, ledger


def clean() -> RunData:
    trades = [_trade(1, 1005, True), _trade(2, 1020, False), _trade(3, 1035, True)]
    ledger = [
        {"kind": "deposit", "amount_micros": str(DEPOSIT), "ref": "deposit:paper-initial", "pnl_micros": "0"}
    ]
    for t in trades:
        ledger += t[3]
    cash = sum(int(e["amount_micros"]) for e in ledger)
    pnl = sum(int(e["pnl_micros"]) for e in ledger)
    return RunData(
        tick_ms=T,
        first_tick=FIRST,
        end_ms=LAST * T + 500,
        settle_grace_ms=10_000,
        journal=[_entry(t) for t in range(FIRST, LAST + 1)],
        venue_orders=[t[0] for t in trades],
        intents=[t[1] for t in trades],
        open_intents=[],
        positions=[t[2] for t in trades],
        open_positions=[],
        ledger=ledger,
        ledger_totals={"cash_micros": str(cash), "realized_pnl_micros": str(pnl)},
        faults=[],
    )


def _fault(kind: str, seq: int, start_ms: int, end_ms: int, **details) -> dict:
    k = faults.CATALOGUE[kind]
    return {
        "seq": seq,
        "lane": k.lane,
        "kind": kind,
        "costs_ticks": k.costs_ticks,
        "grace_ms": int(k.grace_s * 1000),
        "max_effect_s": k.max_effect_s,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "recovered": True,
        "details": details,
        "problems": [],
        "notes": [],
        "error": "",
    }


def broken(d: RunData) -> set[str]:
    return {r.name for r in checker.check(d).broken}


def test_a_clean_run_holds_every_invariant():
    rep = checker.check(clean())
    assert rep.broken == [], [(r.name, r.evidence) for r in rep.broken]
    figs = rep.figures
    assert figs["ticks"]["expected"] == figs["ticks"]["done"] == LAST - FIRST + 1
    assert figs["orders"]["posted"] == 3 and figs["positions"]["settled"] == 3
    assert figs["ledger"]["identity_diff_micros"] == 0
    assert "every" not in checker.table(rep)  # the table prints rows, not a verdict
    assert "BROKEN" not in checker.table(rep)


def test_a_duplicated_tick_is_caught():
    d = clean()
    d.journal.insert(30, _entry(FIRST + 29))
    assert "duplicated" in broken(d)
    rep = checker.check(d)
    assert rep.figures["ticks"]["duplicated"] == [FIRST + 29]
    assert "BROKEN" in checker.table(rep)


def test_an_unattributed_missed_tick_is_caught_and_an_attributed_one_is_not():
    d = clean()
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 30)]
    assert broken(d) == {"missed, not attributed to a fault"}
    # A fault that may cost ticks, covering the boundary: attributed.
    b = (FIRST + 30) * T
    d.faults = [_fault("kill-worker", 1, b - 400, b + 1500)]
    assert broken(d) == set()
    assert checker.check(d).figures["ticks"]["missed_by_kind"] == {"kill-worker": 1}
    # A fault that must cost no tick (feed, garbage) explains nothing.
    d.faults = [_fault("kill-feed", 1, b - 400, b + 1500)]
    assert broken(d) == {"missed, not attributed to a fault"}
    # One long after the boundary (beyond the tick before it) does not either.
    d.faults = [_fault("kill-worker", 1, b + 5000, b + 7000)]
    assert broken(d) == {"missed, not attributed to a fault"}


def test_a_tick_lost_to_the_tick_before_overrunning_is_allowed_while_rare():
    # Tick FIRST + 30 ran 1.5 s (a stalled machine): boundary FIRST + 31 passed while it ran.
    d = clean()
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 31)]
    slow = next(e for e in d.journal if e["tick"] == str(FIRST + 30))
    slow["duration_ms"] = "1500"
    assert broken(d) == set()
    figs = checker.check(d).figures["ticks"]
    assert figs["unattributed"] == [] and len(figs["overran_unattributed"]) == 1
    assert figs["gap_evidence"] == {"overrun": 1}
    # A second one in a 61-tick run is more than one in a hundred: broken.
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 41)]
    next(e for e in d.journal if e["tick"] == str(FIRST + 40))["duration_ms"] = "1500"
    assert broken(d) == {"missed to an overrun no fault explains"}
    # The same gaps without the overrun evidence are stalls: unattributed, broken at once.
    for e in d.journal:
        e["duration_ms"] = "40"
    assert broken(d) == {"missed, not attributed to a fault"}


def test_an_overrun_covers_only_the_boundaries_its_tick_ran_past():
    # Tick FIRST + 30 ran 1.2 s: it covers FIRST + 31; the 19 missing ticks after it are a
    # stall of the same holder that no fault explains.
    d = clean()
    gone = {str(t) for t in range(FIRST + 31, FIRST + 51)}
    d.journal = [e for e in d.journal if e["tick"] not in gone]
    next(e for e in d.journal if e["tick"] == str(FIRST + 30))["duration_ms"] = "1200"
    figs = checker.check(d).figures["ticks"]
    assert len(figs["overran_unattributed"]) == 1 and len(figs["unattributed"]) == 19
    assert "missed, not attributed to a fault" in broken(d)


def test_a_takeover_after_a_slow_tick_is_not_excused_by_it():
    d = clean()
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 31)]
    next(e for e in d.journal if e["tick"] == str(FIRST + 30))["duration_ms"] = "1500"
    for e in d.journal:
        if int(e["tick"]) > FIRST + 31:
            e["epoch"] = "2"
    figs = checker.check(d).figures["ticks"]
    assert figs["overran_unattributed"] == [] and len(figs["unattributed"]) == 1


def test_a_missed_tick_goes_to_the_fault_that_began_last():
    b = (FIRST + 30) * T
    fs = [_fault("deploy", 1, b - 5000, b - 500), _fault("redis-restart", 2, b - 200, b + 3000)]
    got = tick_checks.attribute(FIRST + 30, T, fs)
    assert got is not None and got["kind"] == "redis-restart"
    assert tick_checks.attribute(FIRST + 40, T, fs) is None


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
    d.ledger_totals["cash_micros"] = str(int(d.ledger_totals["cash_micros"]) - p["cost_micros"])
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
    d.ledger_totals = {
        "cash_micros": str(sum(int(e["amount_micros"]) for e in d.ledger)),
        "realized_pnl_micros": str(sum(int(e["pnl_micros"]) for e in d.ledger)),
    }
    assert broken(d) == {"filled at the venue, not recorded"}


def test_intents_left_open_and_faults_not_recovered_are_caught():
    d = clean()
    d.open_intents = [dict(d.intents[0], status="posted")]
    assert broken(d) == {"intents left open after the drain"}
    d = clean()
    f = _fault("sim-errors", 1, 1_010_000, 1_012_000)
    f["recovered"] = False
    d.faults = [f]
    assert broken(d) == {"not recovered in time"}
    f["recovered"], f["problems"] = True, ["POST /halt answered 500"]
    assert broken(d) == {"broken while injecting"}


def test_a_handover_gap_is_caught_even_when_attributed():
    d = clean()
    k = FIRST + 20
    d.journal = [e for e in d.journal if e["tick"] != str(k + 1)]
    d.faults = [_fault("deploy", 1, k * T - 2000, k * T + 1500, ok=True, handover_tick=k, missed=0)]
    assert broken(d) == {"gaps at a deploy/rollback handover"}


def test_the_schedule_is_seeded_covers_every_kind_and_never_rolls_back_first():
    kinds = list(faults.DEFAULT_KINDS)
    a = faults.plan(11, kinds, (1, 2), (1, 2), n=40)
    assert a == faults.plan(11, kinds, (1, 2), (1, 2), n=40)
    assert a != faults.plan(12, kinds, (1, 2), (1, 2), n=40)
    main = [k for k in kinds if faults.CATALOGUE[k].lane == faults.MAIN]
    bg = [k for k in kinds if faults.CATALOGUE[k].lane == faults.BACKGROUND]
    assert sorted(p.kind for p in a[faults.MAIN][: len(main)]) == sorted(main)
    assert sorted(p.kind for p in a[faults.BACKGROUND][: len(bg)]) == sorted(bg)
    for seed in range(50):
        seq = [p.kind for p in faults.plan(seed, kinds, (1, 2), (1, 2), n=30)[faults.MAIN]]
        assert seq.index("deploy") < seq.index("rollback")
    # Without cover, a rollback drawn before any deploy becomes a deploy.
    lane = faults.plan_lane(random.Random(3), ["rollback", "deploy"], 10, (1, 1), cover=False)
    assert lane[0].kind == "deploy"


@pytest.mark.parametrize("kind", sorted(faults.CATALOGUE))
def test_every_fault_says_what_it_tests(kind):
    k = faults.CATALOGUE[kind]
    assert k.tests and k.max_effect_s > 0 and k.lane in (faults.MAIN, faults.BACKGROUND)
    # Faults of the background lane overlap the others: they must never be allowed to cost ticks.
    assert not (k.lane == faults.BACKGROUND and k.costs_ticks)


def test_a_report_round_trips_to_json():
    import json

    d = copy.deepcopy(clean())
    d.journal.insert(5, _entry(FIRST + 4))
    out = checker.check(d).to_json()
    assert out["ok"] is False and out["broken"] == ["duplicated"]
    json.dumps(out)


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


def test_the_fault_table_has_a_line_per_kind():
    d = clean()
    b = (FIRST + 30) * T
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 30)]
    d.faults = [_fault("kill-worker", 1, b - 400, b + 1500), _fault("kill-feed", 2, b + 9000, b + 10_000)]
    text = checker.fault_table(checker.check(d))
    lines = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()[1:]}
    assert lines["kill-worker"] == ["1", "1", "1", "1", "1.9"]
    assert lines["kill-feed"] == ["1", "1", "0", "0", "1.0"]


def test_a_saved_run_is_judged_again_offline(tmp_path, capsys):
    import dataclasses
    import json

    d = clean()
    path = tmp_path / "chaos-data.json"
    path.write_text(json.dumps(dataclasses.asdict(d)))
    assert checker.main([str(path)]) == 0
    d.journal.insert(3, _entry(FIRST + 2))
    path.write_text(json.dumps(dataclasses.asdict(d)))
    assert checker.main([str(path)]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_the_markdown_tables_mark_broken_rows():
    d = clean()
    d.journal.insert(3, _entry(FIRST + 2))
    md = report.markdown(checker.check(d))
    assert "| ticks | duplicated | 1 | 0 | **BROKEN** |" in md
    assert "| ledger | cash + open cost - (initial + PnL), micros | 0 | 0 | ok |" in md

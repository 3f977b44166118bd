"""The chaos checker's tick invariants (tests/chaos/tick_checks.py) on synthetic runs: a
duplicated tick, a missed tick no fault explains, a handover gap and a fault not recovered
are caught; a missed tick is attributed to its fault, and an overrun excuses only what it
ran past."""

from __future__ import annotations

from tests.chaos import checker, tick_checks
from tests.chaos.synthetic import FIRST, T, _entry, _fault, broken, clean


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

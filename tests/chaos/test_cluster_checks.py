"""The cluster chaos checker (tests/chaos/cluster_checks.py) on synthetic runs: a clean run
holds every invariant; an order that reached the venue after its epoch was superseded is
caught, one just before is not; a fault past its allowance, a hole in a candle window and a
settlement booked twice are caught."""

from __future__ import annotations

import dataclasses
import json

from tests.chaos import cluster_checks
from tests.chaos.cluster_checks import ClusterRunData
from tests.chaos.synthetic import FIRST, LAST, T, _entry, clean

ASSETS = ("a1", "a2", "a3")


def cluster_clean() -> ClusterRunData:
    d = clean()
    span = (FIRST * T, (LAST - 5) * T)
    return ClusterRunData(
        **dataclasses.asdict(d),
        lease_log=[{"epoch": "1", "holder": "blue:h1:1:x", "host": "h1", "at_ms": str(FIRST * T - 4000)}],
        candles={a: list(range(span[0], span[1], 1000)) for a in ASSETS},
        candle_span_ms=span,
        settle_stats={"runs": "3", "settled": "3", "already": "0"},
    )


def broken(d: ClusterRunData) -> set[str]:
    return {r.name for r in cluster_checks.check(d).broken}


def _takeover(d: ClusterRunData, epoch: int, at_ms: int, host: str = "h2", **kw: str) -> None:
    d.lease_log.append(
        {"epoch": str(epoch), "holder": f"green:{host}:2:y", "host": host, "at_ms": str(at_ms), **kw}
    )


def _host_kill(seq: int, start_ms: int, end_ms: int, allowed: int) -> dict:
    return {
        "seq": seq,
        "kind": "kill-holder-host",
        "costs_ticks": True,
        "grace_ms": 2000,
        "max_effect_s": 60,
        "allowed_missed": allowed,
        "start_ms": start_ms,
        "end_ms": end_ms,
        "recovered": True,
        "details": {"target": "h1"},
        "problems": [],
        "notes": [],
        "error": "",
    }


def test_a_clean_cluster_run_holds_every_invariant():
    rep = cluster_checks.check(cluster_clean())
    assert rep.broken == [], [(r.name, r.evidence) for r in rep.broken]
    assert rep.figures["lease"]["judged"] == 3
    assert rep.figures["candles"]["expected"] == 3 * (LAST - 5 - FIRST)
    sections = [r.section for r in rep.rows]
    assert "lease" in sections and "candles" in sections and "settlement" in sections


def test_an_order_that_arrived_after_its_epoch_was_superseded_is_caught():
    d = cluster_clean()
    # Trade 3 (epoch 1) arrived at 1_045_010 ms; h2 took epoch 2 at 1_045_000 ms. The journal
    # shows no tick of epoch 2 yet, so only the lease log can tell.
    d.venue_orders[2]["received_ms"] = 1_045_010
    _takeover(d, 2, 1_045_000)
    assert broken(d) == {"orders after the poster's lease deadline"}
    late = cluster_checks.check(d).figures["lease"]["late"]
    assert len(late) == 1 and "epoch 1, host h1" in late[0] and "10 ms after" in late[0]


def test_an_order_after_its_expired_lease_is_caught_before_the_taker_came():
    d = cluster_clean()
    # h1's lease (epoch 1) expired at 1_044_900 ms; h2 found it expired and took epoch 2 at
    # 1_045_200 ms. Trade 3 arrived at 1_045_010 ms: before the takeover, after the deadline.
    d.venue_orders[2]["received_ms"] = 1_045_010
    expired = {"how": "acquired", "prev_holder": "blue:h1:1:x", "prev_expires_ms": "1044900"}
    _takeover(d, 2, 1_045_200, **expired)
    late = cluster_checks.check(d).figures["lease"]["late"]
    assert len(late) == 1 and "110 ms after its deadline: its lease expired at 1044900" in late[0]
    # A planned transfer (the lease still live) or a dead holder's: the takeover is the deadline.
    d.lease_log[-1]["how"] = "transferred"
    assert broken(d) == set()
    # Another holder's expiry (the log lost one in between) is not this epoch's deadline.
    d.lease_log[-1].update(how="acquired", prev_holder="green:h2:9:z")
    assert broken(d) == set()


def test_an_order_that_arrived_before_its_epoch_was_superseded_is_not_flagged():
    d = cluster_clean()
    d.venue_orders[2]["received_ms"] = 1_044_999
    _takeover(d, 2, 1_045_000)
    assert broken(d) == set()
    # Its poster's own epoch taken again later changes nothing; a larger one after it neither.
    _takeover(d, 3, 1_050_000, "h3")
    assert broken(d) == set()


def test_without_the_sims_ms_an_order_is_judged_by_its_whole_second():
    d = cluster_clean()
    _takeover(d, 2, 1_044_500)
    # created_at 1045 s: the whole second starts after 1_044_500 ms, surely superseded.
    assert broken(d) == {"orders after the poster's lease deadline"}
    # created_at 1044 s: it may have arrived before 1_044_500 ms.
    d.venue_orders[2]["created_at"] = 1044
    assert broken(d) == set()


def test_an_order_whose_epoch_the_lease_log_lacks_is_caught():
    d = cluster_clean()
    d.intents[1]["epoch"] = 7
    got = broken(d)
    assert "orders whose epoch the lease log lacks" in got


def test_a_fault_past_its_missed_tick_allowance_is_caught():
    d = cluster_clean()
    # h1 killed just before tick 1050 (after the last trade); h2 ticks from 1052 on.
    b = (FIRST + 50) * T
    ticks = [t for t in range(FIRST, LAST + 1) if t not in (1050, 1051)]
    d.journal = [_entry(t, 1 if t < 1050 else 2) for t in ticks]
    _takeover(d, 2, b + 1500)
    d.faults = [_host_kill(1, b - 300, b + 2500, allowed=1)]
    assert broken(d) == {"faults past their missed-tick allowance"}
    d.faults[0]["allowed_missed"] = 2
    assert broken(d) == set()


def test_a_hole_in_a_candle_window_is_caught():
    d = cluster_clean()
    d.candles["a2"].remove(FIRST * T + 17_000)
    rep = cluster_checks.check(d)
    assert {r.name for r in rep.broken} == {"candles missing"}
    at = FIRST * T + 17_000
    assert rep.figures["candles"]["holes"] == [f"a2: 1 missing, first at {at} ms, last at {at} ms"]


def test_a_settlement_booked_twice_is_caught():
    d = cluster_clean()
    pay = next(e for e in d.ledger if str(e["ref"]).startswith("settle:"))
    d.ledger.append(dict(pay))
    got = broken(d)
    assert "positions settled more than once" in got and "refs booked twice" in got


def test_a_saved_cluster_run_is_judged_again(tmp_path):
    d = cluster_clean()
    d.venue_orders[2]["received_ms"] = 1_045_010
    _takeover(d, 2, 1_045_000)
    f = tmp_path / "data.json"
    f.write_text(json.dumps(dataclasses.asdict(d)))
    assert cluster_checks.main([str(f)]) == 1
    assert cluster_checks.main(["--markdown", str(f)]) == 1
    d.venue_orders[2]["received_ms"] = 1_044_000
    f.write_text(json.dumps(dataclasses.asdict(d)))
    assert cluster_checks.main([str(f)]) == 0

"""bench/ha.py's numbers on made-up runs: the takeover read from a journal and a lease in
(fake) Redis, the per-fault summary against the goals of issue #24, the table, and the money's
checks (duplicates, lost positions, the ledger, orders after a deadline)."""

from __future__ import annotations

import fakeredis

from bench import ha
from bench.ha_cluster import Reader, host_of, measure
from bench.ha_numbers import (
    CUT,
    HOST_KILL,
    PRIMARY_KILL,
    SINGLE,
    WORKER_KILL,
    Money,
    Sample,
    after_deadline,
    attribute,
    duplicates,
    ledger_error_micros,
    lost_positions,
    money_row,
    render,
    summarise,
)
from bench.stack import KEYS
from kernel.lease import Lease

TICK = 5000


def sample(fault: str, missed: int, to_first: int, index: int = 0, **kw: object) -> Sample:
    fault_ms = 1_000_000 + index * 60_000
    base: dict[str, object] = dict(
        fault=fault,
        index=index,
        phase_ms=1234,
        target="h1",
        old_host="h1",
        new_host="h2",
        old_epoch=3,
        new_epoch=4,
        old_last_tick=200,
        new_first_tick=201 + missed,
        missed=missed,
        fault_ms=fault_ms,
        first_tick_ms=fault_ms + to_first,
        lease_taken_ms=fault_ms + 900,
        deadline_ms=fault_ms + 1500,
        takeover_delay_ms=0,
    )
    base.update(kw)
    return Sample(**base)  # type: ignore[arg-type]


def journal_add(r: fakeredis.FakeRedis, tick: int, epoch: int, started_ms: int, color: str) -> None:
    r.xadd(KEYS.journal_ticks(), {"tick": tick, "epoch": epoch, "started_ms": started_ms, "color": color})


def lease_set(r: fakeredis.FakeRedis, holder: str, epoch: int, acquired_ms: int, expires_ms: int) -> None:
    color = holder.split(":")[0]
    r.hset(
        KEYS.lease(),
        mapping={
            "holder": holder,
            "color": color,
            "epoch": epoch,
            "acquired_ms": acquired_ms,
            "expires_ms": expires_ms,
        },
    )


def test_measure_reads_the_takeover_from_the_journal_and_the_lease():
    r = fakeredis.FakeRedis(decode_responses=True)
    for t in range(100, 104):
        journal_add(r, t, 7, t * TICK + 2, "blue")
    before = Lease(holder="blue:h1:11:ab", color="blue", epoch=7, expires_ms=103 * TICK + 4000)
    fault_ms = 103 * TICK + 3000  # late in tick 103: tick 104 is missed
    lease_set(r, "green:h2:22:cd", 8, fault_ms + 1100, fault_ms + 5000)
    journal_add(r, 105, 8, 105 * TICK + 3, "green")
    journal_add(r, 106, 8, 106 * TICK + 1, "green")
    s = measure(Reader(lambda: r), HOST_KILL, 0, 3000, "h1", before, fault_ms, True, TICK, timeout_s=2)
    assert (s.old_last_tick, s.new_first_tick, s.missed) == (103, 105, 1)
    assert (s.old_host, s.new_host, s.old_epoch, s.new_epoch) == ("h1", "h2", 7, 8)
    assert s.to_first_tick_ms == 105 * TICK + 3 - fault_ms
    assert s.to_lease_ms == 1100
    assert s.deadline_ms == before.expires_ms
    assert s.takeover_delay_ms == TICK + 3  # the boundary of tick 104 passed unticked


def test_measure_when_the_holder_keeps_its_lease_through_a_primary_failover():
    r = fakeredis.FakeRedis(decode_responses=True)
    for t in (10, 11, 12):
        journal_add(r, t, 2, t * TICK + 1, "blue")
    lease_set(r, "blue:h2:5:aa", 2, 1, 13 * TICK + 5000)
    before = Lease(holder="blue:h2:5:aa", color="blue", epoch=2, expires_ms=12 * TICK + 5000)
    fault_ms = 11 * TICK + 500
    s = measure(Reader(lambda: r), PRIMARY_KILL, 0, 500, "h1", before, fault_ms, False, TICK, timeout_s=2)
    assert (s.old_last_tick, s.new_first_tick, s.missed) == (11, 12, 0)
    assert s.to_lease_ms is None
    assert s.deadline_ms == 13 * TICK + 5000  # the lease's latest expiry of the same epoch


def test_summary_holds_each_fault_against_its_goal():
    samples = [
        sample(SINGLE, 1, 6500, 0),
        sample(SINGLE, 0, 3000, 1),
        sample(HOST_KILL, 0, 2000, 2),
        sample(HOST_KILL, 0, 3000, 3),
        sample(WORKER_KILL, 1, 5100, 4),
        sample(WORKER_KILL, 0, 1000, 5),
        sample(PRIMARY_KILL, 1, 4000, 6, lease_taken_ms=None, new_epoch=3),
        sample(CUT, 0, 2500, 7),
    ]
    summary = summarise(samples, {CUT: 1}, dup_per_sample={}, late={7: 1})
    assert summary[SINGLE]["goal"] == "-"
    assert summary[SINGLE]["missed_mean"] == 0.5
    assert summary[SINGLE]["to_first_tick_ms_median"] == 4750
    assert summary[HOST_KILL]["goal"] == "met"
    assert summary[WORKER_KILL]["goal"].startswith("MISSED (mean 0.50 > 0.25")
    assert summary[PRIMARY_KILL]["goal"] == "met"
    assert summary[PRIMARY_KILL]["to_lease_ms_median"] is None
    assert summary[PRIMARY_KILL]["hit_the_holder"] == 1  # target h1 was the holder's host
    assert "1 orders after the deadline" in summary[CUT]["goal"]
    assert "1 runs failed" in summary[CUT]["goal"]
    table = render(
        summary,
        TICK,
        {"cluster": {"orders": 5, "duplicates": 0, "lost_positions": 0, "ledger_error_micros": 0}},
    )
    assert table.count("\n| ") >= 6
    assert "p99 (max)" in table
    assert "(1 of 1 the holder's host too)" in table
    assert "holder-host-kill: missed ticks 0.00x" in table
    assert "| cluster | 5 | 0 | 0 | 0 |" in table


def money(orders: list[dict], intents: list[dict], positions: list[dict], ledger: list[dict]) -> Money:
    cash = sum(int(e["amount_micros"]) for e in ledger)
    pnl = sum(int(e.get("pnl_micros", 0)) for e in ledger)
    totals = {"cash_micros": str(cash), "realized_pnl_micros": str(pnl)}
    return Money(orders, intents, [], positions, ledger, totals)


def test_the_money_checks_find_duplicates_lost_positions_and_a_ledger_off():
    orders = [
        {"id": "o1", "market": "m1", "created_at": 100, "size_matched": "2"},
        {"id": "o2", "market": "m1", "created_at": 107, "size_matched": "2"},  # a second order
        {"id": "o3", "market": "m2", "created_at": 120, "size_matched": "1"},
    ]
    intents = [
        {"id": "i1", "order_id": "o1", "epoch": 3, "slot": "s1", "window_start_s": 90, "created_ms": 99_000},
        {"id": "i2", "order_id": "o2", "epoch": 4, "slot": "s1", "window_start_s": 90, "created_ms": 106_000},
        {"id": "i3", "order_id": "o3", "epoch": 3, "slot": "s2", "window_start_s": 90, "created_ms": 119_000},
    ]
    positions = [
        {"id": "p1", "intent_id": "i1", "status": "open", "cost_micros": 1_000_000},
        {"id": "p2", "intent_id": "i2", "status": "open", "cost_micros": 1_000_000},
    ]
    ledger = [
        {"ref": "deposit:paper-initial", "kind": "deposit", "amount_micros": "100000000"},
        {"ref": "buy:i1", "kind": "buy", "amount_micros": "-1000000"},
        {"ref": "buy:i2", "kind": "buy", "amount_micros": "-1000000"},
    ]
    m = money(orders, intents, positions, ledger)
    assert [o["id"] for o in duplicates(m)] == ["o2"]
    assert lost_positions(m) == ["o3"]  # filled at the venue, no position
    assert ledger_error_micros(m) == 0
    m.ledger.append({"ref": "buy:i2", "kind": "buy", "amount_micros": "-1000000"})  # booked twice
    assert ledger_error_micros(m) > 0
    row = money_row(m)
    assert (row["orders"], row["duplicates"], row["lost_positions"]) == (3, 1, 1)
    # o3 is the old epoch's and stamped in second 120, after a deadline at 110.5 s
    s = sample(CUT, 0, 2000, deadline_ms=110_500, old_epoch=3, new_epoch=4)
    assert after_deadline(m, s) == ["o3"]
    assert after_deadline(m, sample(PRIMARY_KILL, 0, 1, old_epoch=3, new_epoch=3, deadline_ms=0)) == []


def test_orders_are_attributed_to_the_stretch_of_the_fault_they_follow():
    a = sample(HOST_KILL, 0, 1000, fault_ms=100_000)
    b = sample(CUT, 0, 1000, fault_ms=200_000)
    orders = [{"created_at": 50}, {"created_at": 96}, {"created_at": 150}, {"created_at": 250}]
    assert attribute([a, b], orders, TICK) == {0: 2, 1: 1}


def test_the_plan_and_the_options():
    assert ha.plan(2, (HOST_KILL, CUT)) == [HOST_KILL, CUT, HOST_KILL, CUT]
    args = ha.parse_args(["--runs", "3"])
    assert (args.runs, args.single_runs, args.tick_ms, args.name) == (3, 3, 5000, "bbn")
    assert host_of("green:h2:123:ab") == "h2"


def test_the_sims_arrival_in_ms_judges_an_order_inside_the_deadlines_second():
    intents = [{"id": "i1", "order_id": "o1", "epoch": 3}]
    s = sample(CUT, 0, 2000, deadline_ms=110_500, old_epoch=3, new_epoch=4)
    before = {"id": "o1", "market": "m", "created_at": 110, "received_ms": 110_400}
    after = {"id": "o1", "market": "m", "created_at": 110, "received_ms": 110_600}
    assert after_deadline(money([before], intents, [], []), s) == []
    assert after_deadline(money([after], intents, [], []), s) == ["o1"]


def test_the_suites_headline_reads_the_ha_json():
    from bench import all as bench_all

    summary = summarise([sample(HOST_KILL, 0, 2000), sample(SINGLE, 1, 6000)], {CUT: 1}, {}, {})
    money_rows = {"cluster": {"orders": 3, "duplicates": 0, "lost_positions": 0, "ledger_error_micros": 0}}
    line = bench_all.h_ha({"summary": summary, "money": money_rows})
    assert "holder-host-kill: 0.00 missed ticks (max 0)" in line
    assert "holder-host-cut: no run completed" in line
    assert "cluster: 0 duplicates, 0 lost positions, ledger off by 0 micro-USD" in line


def test_measure_prefers_the_lease_log_for_the_lease_taken_and_the_deadline():
    r = fakeredis.FakeRedis(decode_responses=True)
    for t in (50, 51):
        journal_add(r, t, 4, t * TICK + 2, "blue")
    before = Lease(holder="blue:h1:1:aa", color="blue", epoch=4, expires_ms=51 * TICK + 900)
    fault_ms = 51 * TICK + 700
    lease_set(r, "green:h2:2:bb", 5, fault_ms + 9999, fault_ms + 5000)  # the hash: not read
    r.xadd(
        KEYS.lease_log(),
        {
            "epoch": 5,
            "holder": "green:h2:2:bb",
            "at_ms": fault_ms + 1150,
            "prev_holder": before.holder,
            "prev_expires_ms": fault_ms + 1050,
            "how": "took-over-dead",
        },
    )
    journal_add(r, 52, 5, 52 * TICK + 4, "green")
    s = measure(Reader(lambda: r), WORKER_KILL, 0, 700, "h1", before, fault_ms, True, TICK, timeout_s=2)
    assert (s.to_lease_ms, s.deadline_ms, s.missed) == (1150, fault_ms + 1050, 0)


def test_settling_counts_what_the_repair_cost_after_the_takeover():
    r = fakeredis.FakeRedis(decode_responses=True)
    # epoch 5's first tick 20, a lease move to epoch 6 that skips tick 22, then two ticks
    for t, ep in ((20, 5), (21, 5), (23, 6), (24, 6)):
        journal_add(r, t, ep, t * TICK, "blue" if ep == 5 else "green")
    lease_set(r, "green:h1:3:cc", 6, 23 * TICK - 500, 25 * TICK)
    assert Reader(lambda: r).settle(20, timeout_s=2) == (1, 1)
    table = render(
        summarise([sample(HOST_KILL, 0, 1000, missed_after=1, handoffs_after=1)], {}, {}, {}), TICK, {}
    )
    assert "| 1, 1 |" in table

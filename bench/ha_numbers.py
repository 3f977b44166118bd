"""The failover table of issue #24 (bench/ha.py): one sample per fault, the per-fault summary
against the issue's goals, the Markdown table, and the money's checks on what Redis and the
venue hold at the end of a run. Pure functions of their arguments, so that tests/fast can check
them on made-up samples."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.numbers import cell, p99

# The faults, in the order of the table; SINGLE is today's single-host failover beside them.
SINGLE = "single-host-worker-kill"
HOST_KILL = "holder-host-kill"
WORKER_KILL = "worker-kill"
PRIMARY_KILL = "primary-host-kill"
CUT = "holder-host-cut"
FAULTS = (SINGLE, HOST_KILL, WORKER_KILL, PRIMARY_KILL, CUT)

LABELS = {
    SINGLE: "today: active worker SIGKILLed, supervisor restarts it (one host)",
    HOST_KILL: "every process of the lease holder's host SIGKILLed",
    WORKER_KILL: "the active worker SIGKILLed, standby on another host",
    PRIMARY_KILL: "the Redis primary's host SIGKILLed (Sentinel failover)",
    CUT: "the lease holder's host cut off from the others",
}


@dataclass(frozen=True)
class Goal:
    missed_mean: float | None  # None: no goal on the mean
    missed_max: int
    after_deadline: int | None = None  # None: not a goal of this fault


GOALS: dict[str, Goal] = {
    HOST_KILL: Goal(0.25, 1),
    WORKER_KILL: Goal(0.25, 1),
    PRIMARY_KILL: Goal(None, 1),
    CUT: Goal(None, 1, after_deadline=0),
}


@dataclass
class Sample:
    """One fault and what followed it, every time a wall-clock millisecond of the one machine
    the namespaces share; ticks and epochs from the tick journal, the lease from its hash."""

    fault: str
    index: int
    phase_ms: int  # where in its tick the fault landed
    target: str  # the host (or program) the fault hit
    old_host: str  # the lease holder's host before the fault
    new_host: str  # ... and after the takeover
    old_epoch: int
    new_epoch: int
    old_last_tick: int  # the old holder's last journaled tick
    new_first_tick: int  # the new holder's first
    missed: int  # tick indices absent between those two
    fault_ms: int  # when the fault was dealt
    first_tick_ms: int  # started_ms of the new holder's first tick
    lease_taken_ms: int | None  # the new lease's acquired_ms (None: the holder kept it)
    deadline_ms: int  # the old holder's lease deadline: its last expires_ms before the takeover
    takeover_delay_ms: int  # first_tick_ms - the boundary right after the old last tick
    primary_before: str = ""
    primary_after: str = ""
    restored_ms: int = 0  # when the host or program was back (up/heal/restart), 0: not measured
    # From the first tick after the takeover until the holder has run a few more ticks with
    # the host back: ticks missed, and lease moves after the first (what the repair cost).
    missed_after: int = 0
    handoffs_after: int = 0

    @property
    def to_first_tick_ms(self) -> int:
        """From the fault to the new holder's first tick: the takeover time of the table."""
        return self.first_tick_ms - self.fault_ms

    @property
    def to_lease_ms(self) -> int | None:
        return None if self.lease_taken_ms is None else self.lease_taken_ms - self.fault_ms


# --- the money ------------------------------------------------------------------------------------


@dataclass
class Money:
    """What the end of a run holds: the venue's orders, Redis's intents, positions and ledger."""

    venue_orders: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    open_intents: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    ledger: list[dict[str, str]]
    ledger_totals: dict[str, str]


def _i(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def duplicates(m: Money) -> list[dict[str, Any]]:
    """The second and later orders of a market (a slot-window enters once: one market, one
    order) and of an intent key (slot, window, leg), each as the later order."""
    out: list[dict[str, Any]] = []
    by_market: dict[str, list[dict[str, Any]]] = {}
    for o in m.venue_orders:
        by_market.setdefault(str(o.get("market")), []).append(o)
    for orders in by_market.values():
        out += sorted(orders, key=lambda o: arrival_ms(o)[0])[1:]
    keys = Counter((i.get("slot"), i.get("window_start_s"), i.get("leg", "")) for i in m.intents)
    by_order = {o["id"]: o for o in m.venue_orders}
    seen: set[Any] = set()
    for i in sorted(m.intents, key=lambda i: _i(i.get("created_ms"))):
        k = (i.get("slot"), i.get("window_start_s"), i.get("leg", ""))
        if keys[k] > 1 and k in seen and i.get("order_id") in by_order:
            o = by_order[i["order_id"]]
            if o not in out:
                out.append(o)
        seen.add(k)
    return out


def lost_positions(m: Money) -> list[str]:
    """Orders the venue filled that no position in Redis records."""
    intent_of_order = {i["order_id"]: i["id"] for i in m.intents if i.get("order_id")}
    recorded = {p.get("intent_id") for p in m.positions}
    return [
        str(o["id"])
        for o in m.venue_orders
        if float(o.get("size_matched") or 0) > 0 and intent_of_order.get(o["id"]) not in recorded
    ]


def ledger_error_micros(m: Money) -> int:
    """How far the ledger is from exact, in micro-dollars: cash + open cost against deposits +
    realised PnL, plus the totals hash against the stream, plus each ref booked twice."""
    cash = sum(_i(e.get("amount_micros")) for e in m.ledger)
    deposits = sum(_i(e.get("amount_micros")) for e in m.ledger if e.get("kind") == "deposit")
    realized = sum(_i(e.get("pnl_micros")) for e in m.ledger)
    open_cost = sum(_i(p.get("cost_micros")) for p in m.positions if p.get("status") == "open")
    identity = cash + open_cost - (deposits + realized)
    totals = abs(_i(m.ledger_totals.get("cash_micros")) - cash) + abs(
        _i(m.ledger_totals.get("realized_pnl_micros")) - realized
    )
    refs = Counter(e.get("ref") for e in m.ledger)
    twice = sum(abs(_i(e.get("amount_micros"))) for e in m.ledger if refs[e.get("ref")] > 1) // 2
    return abs(identity) + totals + twice


def arrival_ms(order: dict[str, Any]) -> tuple[int, bool]:
    """When the venue accepted an order: the sim's `received_ms`, else (exact=False) the start
    of the CLOB's whole second `created_at`."""
    ms = _i(order.get("received_ms"))
    return (ms, True) if ms > 0 else (_i(order.get("created_at")) * 1000, False)


def _after(order: dict[str, Any], moment_ms: int) -> bool:
    """Surely after: by the millisecond, or by a whole second that starts after the moment."""
    return arrival_ms(order)[0] > moment_ms


def after_deadline(m: Money, s: Sample) -> list[str]:
    """Orders of the old holder's epoch that reached the venue after its deadline. Empty when
    the holder kept its lease through the fault (it had no deadline to pass)."""
    if s.new_epoch == s.old_epoch:
        return []
    epoch_of = {i["order_id"]: _i(i.get("epoch")) for i in m.intents if i.get("order_id")}
    return [
        str(o["id"])
        for o in m.venue_orders
        if epoch_of.get(o["id"]) == s.old_epoch and _after(o, s.deadline_ms)
    ]


def attribute(samples: list[Sample], orders: list[dict[str, Any]], tick_ms: int) -> dict[int, int]:
    """Which sample's stretch (from a tick before its fault to the next fault) each order falls
    in, counted per sample position; orders before the first stretch are not counted."""
    starts = sorted((s.fault_ms - tick_ms, n) for n, s in enumerate(samples))
    out: dict[int, int] = {}
    for o in orders:
        at, _ = arrival_ms(o)
        mine = [n for start, n in starts if start <= at]
        if mine:
            out[mine[-1]] = out.get(mine[-1], 0) + 1
    return out


# --- the summary and its table --------------------------------------------------------------------


def summarise(
    samples: list[Sample], failures: dict[str, int], dup_per_sample: dict[int, int], late: dict[int, int]
) -> dict[str, dict[str, Any]]:
    """Per fault: runs, missed ticks, takeover times, orders after the deadline, duplicates,
    and whether the issue's goal was met. `dup_per_sample`/`late` count per position in
    `samples`."""
    out: dict[str, dict[str, Any]] = {}
    for fault in FAULTS:
        idx = [n for n, s in enumerate(samples) if s.fault == fault]
        if not idx and not failures.get(fault):
            continue
        mine = [samples[n] for n in idx]
        missed = [s.missed for s in mine]
        first = [float(s.to_first_tick_ms) for s in mine]
        lease = [float(s.to_lease_ms) for s in mine if s.to_lease_ms is not None]
        row: dict[str, Any] = {
            "label": LABELS[fault],
            "runs": len(mine),
            "failed": failures.get(fault, 0),
            "missed_mean": statistics.fmean(missed) if missed else None,
            "missed_max": max(missed) if missed else None,
            "missed_after": sum(s.missed_after for s in mine),
            "handoffs_after": sum(s.handoffs_after for s in mine),
            "to_first_tick_ms_median": statistics.median(first) if first else None,
            "to_first_tick_ms_p99": p99(first) if first else None,
            "to_lease_ms_median": statistics.median(lease) if lease else None,
            "to_lease_ms_p99": p99(lease) if lease else None,
            "after_deadline": sum(late.get(n, 0) for n in idx),
            "duplicates": sum(dup_per_sample.get(n, 0) for n in idx),
            "phases_ms": sorted(s.phase_ms for s in mine),
            # A primary's host that also held the lease: the lease moved as well.
            "hit_the_holder": sum(1 for s in mine if s.target == s.old_host),
        }
        row["goal"] = verdict(fault, row)
        out[fault] = row
    return out


def verdict(fault: str, row: dict[str, Any]) -> str:
    """The goal's verdict: met, MISSED (why), or - for the row with no goal (today's)."""
    goal = GOALS.get(fault)
    if goal is None:
        return "-"
    if not row["runs"]:
        return "MISSED (no run completed)"
    why = []
    if goal.missed_mean is not None and row["missed_mean"] > goal.missed_mean:
        why.append(f"mean {row['missed_mean']:.2f} > {goal.missed_mean}")
    if row["missed_max"] > goal.missed_max:
        why.append(f"max {row['missed_max']} > {goal.missed_max}")
    if goal.after_deadline is not None and row["after_deadline"] > goal.after_deadline:
        why.append(f"{row['after_deadline']} orders after the deadline")
    if row["duplicates"]:
        why.append(f"{row['duplicates']} duplicates")
    if row["failed"]:
        why.append(f"{row['failed']} runs failed")
    return "met" if not why else "MISSED (" + "; ".join(why) + ")"


def render(summary: dict[str, dict[str, Any]], tick_ms: int, money: dict[str, dict[str, int]]) -> str:
    """The failover table, the money row per deployment, and the ratios against today."""
    n_max = max((v["runs"] for v in summary.values()), default=0)
    p = "p99 (max)" if n_max < 100 else "p99"
    rows = [
        f"| fault (tick {tick_ms} ms) | runs | missed ticks mean | max | fault → first tick of the new "
        f"holder ms median | {p} | fault → lease taken ms median | {p} | orders after the deadline "
        "| duplicates | goal | later: missed ticks, handoffs |",
        "|" + "---|" * 12,
    ]
    for v in summary.values():
        failed = f" ({v['failed']} failed)" if v["failed"] else ""
        label = v["label"]
        if v["label"] == LABELS[PRIMARY_KILL] and v["runs"]:
            label += f" ({v['hit_the_holder']} of {v['runs']} the holder's host too)"
        mean = "-" if v["missed_mean"] is None else f"{v['missed_mean']:.2f}"
        rows.append(
            f"| {label} | {v['runs']}{failed} | {mean} | {cell(v['missed_max'])} "
            f"| {cell(v['to_first_tick_ms_median'])} | {cell(v['to_first_tick_ms_p99'])} "
            f"| {cell(v['to_lease_ms_median'])} | {cell(v['to_lease_ms_p99'])} "
            f"| {v['after_deadline']} | {v['duplicates']} | {v['goal']} "
            f"| {v['missed_after']}, {v['handoffs_after']} |"
        )
    out = "\n".join(rows)
    if money:
        out += "\n\n| deployment | orders | duplicate orders | lost positions | ledger off by, micro-USD |"
        out += "\n|---|---|---|---|---|"
        for name, m in money.items():
            out += (
                f"\n| {name} | {m['orders']} | {m['duplicates']} | {m['lost_positions']} "
                f"| {m['ledger_error_micros']} |"
            )
    r = ratios(summary)
    if r:
        out += "\n\nagainst today's single-host failover: " + "; ".join(r)
    return out


def ratios(summary: dict[str, dict[str, Any]]) -> list[str]:
    """Each cluster fault's missed ticks and takeover times as a share of today's."""
    base = summary.get(SINGLE)
    if not base or not base["runs"]:
        return []
    out = []
    for fault, v in summary.items():
        if fault == SINGLE or not v["runs"]:
            continue
        parts = []
        if base["missed_mean"]:
            parts.append(f"missed ticks {v['missed_mean'] / base['missed_mean']:.2f}x")
        else:
            parts.append(f"missed ticks {v['missed_mean']:.2f} against none")
        for key, what in (("to_first_tick_ms_median", "median"), ("to_first_tick_ms_p99", "p99")):
            if base[key]:
                parts.append(f"first tick {what} {v[key] / base[key]:.2f}x")
        out.append(f"{fault}: " + ", ".join(parts))
    return out


def money_row(m: Money) -> dict[str, int]:
    return {
        "orders": len(m.venue_orders),
        "duplicates": len(duplicates(m)),
        "lost_positions": len(lost_positions(m)),
        "ledger_error_micros": ledger_error_micros(m),
        "open_intents": len(m.open_intents),
    }

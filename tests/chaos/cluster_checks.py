"""The cluster chaos run's invariant checker (`make chaos-cluster`): the single-host checker's
invariants (tests/chaos/checker.py: ticks, orders, positions, ledger, faults) on what the
cluster's Redis and the venue's sim hold, plus what only several hosts can break:

- no order after the poster's lease deadline: every order the sim accepted arrived before
  its intent's epoch was superseded (the first lease log entry with a larger epoch), and
  before its lease expired when the taker found it expired;
- no fault cost more ticks than its allowance (a host kill, a partition, a primary kill: 1);
- candle windows complete through host losses and failovers (the feed runs on every host);
- each settlement booked once, whichever host's rq worker ran its job.

Pure functions of a `ClusterRunData`, unit-tested on synthetic runs (test_cluster_checks.py).
Times are wall-clock ms; the hosts are namespaces of one machine, so they share one clock.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.chaos import checker
from tests.chaos.report import Report, Row, RunData, _fig, _i, _inv, table
from tests.chaos.tick_checks import attribute


@dataclass
class ClusterRunData(RunData):
    # The lease log stream (every acquisition and transfer: epoch, holder, host, at_ms).
    lease_log: list[dict[str, str]] = field(default_factory=list)
    # Each asset's 1 s candle open times (ms) inside `candle_span_ms`, as Redis holds them.
    candles: dict[str, list[int]] = field(default_factory=dict)
    candle_span_ms: tuple[int, int] = (0, 0)
    candle_step_ms: int = 1000
    settle_stats: dict[str, str] = field(default_factory=dict)


def superseded_ms(lease_log: list[dict[str, str]], epoch: int) -> int | None:
    """When a larger epoch than `epoch` was first taken, from the lease log; None: never."""
    later = [_i(e.get("at_ms")) for e in lease_log if _i(e.get("epoch")) > epoch]
    return min(later) if later else None


def deadline_ms(lease_log: list[dict[str, str]], epoch: int) -> tuple[int, str] | None:
    """The last moment an order of `epoch` may reach the venue, and why: when a larger epoch
    was first taken; earlier, when that taker found the lease expired (`how` acquired) and
    it was this epoch's holder's: its expiry (`prev_expires_ms`). None: never superseded."""
    later = [e for e in lease_log if _i(e.get("epoch")) > epoch]
    if not later:
        return None
    first = min(later, key=lambda e: _i(e.get("at_ms")))
    at = _i(first.get("at_ms"))
    own = [e.get("holder") for e in lease_log if _i(e.get("epoch")) == epoch]
    expired = _i(first.get("prev_expires_ms"))
    if first.get("how") == "acquired" and 0 < expired < at and own and first.get("prev_holder") == own[0]:
        return expired, f"its lease expired at {expired} (epoch {first.get('epoch')} taken at {at})"
    return at, f"epoch {first.get('epoch')} taken at {at} ({first.get('how') or 'taken'})"


def arrival_ms(order: dict[str, Any]) -> tuple[int, bool]:
    """When the sim accepted an order: its own `received_ms`, else the start of the CLOB's
    whole second (then only a whole second after a moment is surely after it)."""
    ms = _i(order.get("received_ms"))
    return (ms, True) if ms > 0 else (_i(order.get("created_at")) * 1000, False)


def check_lease_deadline(d: ClusterRunData) -> tuple[list[Row], dict[str, Any]]:
    """No order reached the venue after its poster's lease deadline (`deadline_ms`): a worker
    that cannot renew (partitioned, paused, its Redis failed over) fences itself before its
    lease can expire, so its orders all arrive before another holder takes the lease."""
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    epochs_logged = {_i(e.get("epoch")) for e in d.lease_log}
    host_of = {_i(e.get("epoch")): e.get("host") or e.get("holder", "?") for e in d.lease_log}
    late: list[str] = []
    unlogged: list[str] = []
    judged = by_ms = 0
    for o in d.venue_orders:
        i = by_order.get(o.get("id"))
        if i is None:
            continue  # unknown to Redis: its own invariant (order_checks.py)
        epoch = _i(i.get("epoch"))
        if epoch not in epochs_logged:
            unlogged.append(f"order {str(o['id'])[:14]} of {i['id']}: epoch {epoch} not in the lease log")
            continue
        judged += 1
        at, exact = arrival_ms(o)
        by_ms += exact
        dl = deadline_ms(d.lease_log, epoch)
        if dl is None:
            continue
        t, why = dl
        # By the whole second, `at` is the second's start: surely after t only if that is.
        if at >= t:
            late.append(
                f"order {str(o['id'])[:14]} of {i['id']} (epoch {epoch}, host {host_of.get(epoch)}) "
                f"arrived at {at} ms{'' if exact else ' (whole second)'}, {at - t} ms after its "
                f"deadline: {why}"
            )
    rows = [
        _fig("lease", "lease log entries", len(d.lease_log), [f"epochs {sorted(epochs_logged)}"]),
        _fig("lease", "orders judged (by the sim's ms)", f"{judged} ({by_ms})"),
        _inv("lease", "orders whose epoch the lease log lacks", len(unlogged), 0, unlogged),
        _inv("lease", "orders after the poster's lease deadline", len(late), 0, late),
    ]
    return rows, {
        "log_entries": len(d.lease_log),
        "epochs": len(epochs_logged),
        "judged": judged,
        "judged_by_ms": by_ms,
        "late": late,
        "unlogged": unlogged,
    }


def check_allowances(d: ClusterRunData) -> tuple[list[Row], dict[str, Any]]:
    """Each fault cost at most the ticks its kind allows (`allowed_missed` in its record)."""
    missed: Counter[int] = Counter()
    present = {_i(e["tick"]) for e in d.journal if _i(e.get("tick"), -1) >= d.first_tick}
    if present:
        for t in range(d.first_tick, max(present) + 1):
            if t not in present and (f := attribute(t, d.tick_ms, d.faults)) is not None:
                missed[f["seq"]] += 1
    over = [
        f"{f['kind']} #{f['seq']} ({(f.get('details') or {}).get('target', '')}): "
        f"{missed[f['seq']]} missed, {f['allowed_missed']} allowed"
        for f in d.faults
        if "allowed_missed" in f and missed[f["seq"]] > f["allowed_missed"]
    ]
    rows = [_inv("faults", "faults past their missed-tick allowance", len(over), 0, over)]
    return rows, {"missed_by_fault": {str(k): v for k, v in missed.items()}, "over": over}


def check_candles(d: ClusterRunData) -> tuple[list[Row], dict[str, Any]]:
    """Every 1 s candle of the run is in Redis after the drain: the feeds on the other hosts
    (and the backfill) cover a host loss and a failover."""
    lo, hi = d.candle_span_ms
    step = d.candle_step_ms
    want = range(-(-lo // step) * step, hi, step)
    holes: list[str] = []
    missing = 0
    for asset, got in sorted(d.candles.items()):
        have = set(got)
        gone = [t for t in want if t not in have]
        missing += len(gone)
        if gone:
            holes.append(f"{asset}: {len(gone)} missing, first at {gone[0]} ms, last at {gone[-1]} ms")
    total = len(want) * len(d.candles)
    rows = [
        _fig("candles", "candles expected", total, [f"assets {sorted(d.candles)}, [{lo}, {hi}) ms"]),
        _inv("candles", "candles missing", missing, 0, holes),
    ]
    if not d.candles:
        rows.append(_inv("candles", "assets read", 0, "> 0"))
    return rows, {"expected": total, "missing": missing, "holes": holes}


def check_settlement(d: ClusterRunData) -> tuple[list[Row], dict[str, Any]]:
    """Each settled position booked its payout once; jobs that found theirs already settled
    (another host's worker was first, or a retry) are a figure, not a fault."""
    settles = Counter(e.get("ref") for e in d.ledger if str(e.get("ref", "")).startswith("settle:"))
    twice = [f"{r} x{n}" for r, n in settles.items() if n > 1]
    st = d.settle_stats
    rows = [
        _fig(
            "settlement",
            "jobs run (rq, every host)",
            _i(st.get("runs")),
            [f"{k}: {v}" for k, v in sorted(st.items())],
        ),
        _fig("settlement", "jobs that found it already settled", _i(st.get("already"))),
        _inv("settlement", "positions settled more than once", len(twice), 0, twice),
    ]
    return rows, {"payouts": len(settles), "twice": twice}


def check(d: ClusterRunData) -> Report:
    base = checker.check(d)
    rows: list[Row] = list(base.rows)
    figures = dict(base.figures)
    for name, fn in (
        ("lease", check_lease_deadline),
        ("allowances", check_allowances),
        ("candles", check_candles),
        ("settlement", check_settlement),
    ):
        r, f = fn(d)
        rows += r
        figures[name] = f
    # The base report's fault section closes the table.
    order = ["ticks", "orders", "lease", "positions", "settlement", "ledger", "candles", "faults"]
    rows.sort(key=lambda r: order.index(r.section) if r.section in order else len(order))
    return Report(rows, figures)


def _by_kind(rep: Report, faults: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    missed = {int(k): v for k, v in rep.figures.get("allowances", {}).get("missed_by_fault", {}).items()}
    rows: dict[str, dict[str, int]] = {}
    for f in faults:
        k = rows.setdefault(
            f["kind"], {"n": 0, "ok": 0, "missed": 0, "worst": 0, "allowed": 0, "over": 0, "longest": 0}
        )
        n = missed.get(f["seq"], 0)
        k["n"] += 1
        k["ok"] += bool(f.get("recovered"))
        k["missed"] += n
        k["worst"] = max(k["worst"], n)
        k["allowed"] = max(k["allowed"], _i(f.get("allowed_missed")))
        k["over"] += n > _i(f.get("allowed_missed"))
        k["longest"] = max(k["longest"], f["end_ms"] - f["start_ms"])
    return dict(sorted(rows.items()))


def fault_table(rep: Report, faults: list[dict[str, Any]]) -> str:
    """One line per fault kind: how often, recovered, ticks missed (in all and the worst
    one), the allowance, how many went past it, and the longest effect."""
    head = (
        f"  {'fault':<20}{'injected':>9}{'recovered':>10}{'ticks missed':>13}{'worst':>6}"
        f"{'allowed':>8}{'over':>5}{'longest s':>10}"
    )
    lines = [head]
    for name, k in _by_kind(rep, faults).items():
        lines.append(
            f"  {name:<20}{k['n']:>9}{k['ok']:>10}{k['missed']:>13}{k['worst']:>6}{k['allowed']:>8}"
            f"{k['over']:>5}{k['longest'] / 1000:>10.1f}"
        )
    return "\n".join(lines)


def markdown(rep: Report, faults: list[dict[str, Any]]) -> str:
    """The report as docs/reliability.md's tables: invariants and figures, then the faults."""
    out = ["| section | what | value | must be | |", "|---|---|---|---|---|"]
    for r in rep.rows:
        mark = "" if r.ok is None else ("ok" if r.ok else "**BROKEN**")
        out.append(f"| {r.section} | {r.name} | {r.value} | {r.expected.lstrip('= ')} | {mark} |")
    out += [
        "",
        "| fault | injected | recovered | ticks missed | worst one | allowed | over | longest effect s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, k in _by_kind(rep, faults).items():
        out.append(
            f"| `{name}` | {k['n']} | {k['ok']} | {k['missed']} | {k['worst']} | {k['allowed']} "
            f"| {k['over']} | {k['longest'] / 1000:.1f} |"
        )
    return "\n".join(out)


def load(path: str) -> ClusterRunData:
    with open(path) as f:
        raw = json.load(f)
    raw["candle_span_ms"] = tuple(raw.get("candle_span_ms", (0, 0)))
    return ClusterRunData(**raw)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.chaos.cluster_checks [--markdown] <cluster-chaos-data.json>`: judge a
    saved cluster run again (the harness writes its raw snapshot into the cluster's home),
    as text or as docs/reliability.md's tables."""
    args = sys.argv[1:] if argv is None else argv
    md = args[:1] == ["--markdown"]
    args = args[md:]
    if len(args) != 1:
        print(
            "usage: python -m tests.chaos.cluster_checks [--markdown] <cluster-chaos-data.json>",
            file=sys.stderr,
        )
        return 2
    d = load(args[0])
    rep = check(d)
    if md:
        print(markdown(rep, d.faults))
        return 1 if rep.broken else 0
    print(table(rep))
    print()
    print(fault_table(rep, d.faults))
    return 1 if rep.broken else 0


if __name__ == "__main__":
    raise SystemExit(main())

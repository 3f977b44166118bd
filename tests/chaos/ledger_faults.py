"""Main-lane fault: garbage in what the money scripts and the tick journal depend on, while the
worker trades. A ledger running sum (`baton:ledger:totals`): every script that would add to it
refuses before its first write, entries are blocked and reported, and after the operator's
repair (the field recomputed from the ledger stream) what waited is booked once (the checker's
ledger identity holds at the end of the run). The journal's guard `stats.last_tick` (garbage or
from the far future): the journal goes on, rebuilt from its own stream, never a tick twice.
`stats.clean_stop_tick`: nothing decides on it while trading. In every case no program
restarts and no tick is missed (the fault costs none)."""

from __future__ import annotations

import random
import time
from typing import Any

from tests.chaos.lanes import Outcome

TOTALS = "baton:ledger:totals"
STATS = "baton:stats"
BLOCKED = "baton:blocked"
TOTAL_FIELDS = [
    *("cash_micros", "realized_pnl_micros", "entries", "buy_micros", "payout_micros"),
    *("sell_micros", "fee_micros"),
]
GARBAGE = ["garbage", "9" * 25, "1.5", " 12", "", "1e9", "NaN"]


def _pids(ctx: Any) -> tuple[int, int]:
    settle = ctx.st.supervisor("getProcessInfo", "settle")
    active = ctx.active()
    return (active[1] if active else 0), int(settle["pid"] or 0)


def repaired_total(entries: list[dict[str, str]], field: str) -> int:
    """What a running sum of the totals must hold, recomputed from the ledger stream (every
    script that adds to `field` refuses while it is garbage, so the stream is its truth)."""
    if field == "cash_micros":
        return sum(int(e["amount_micros"]) for e in entries)
    if field == "realized_pnl_micros":
        return sum(int(e.get("pnl_micros", 0)) for e in entries)
    if field == "entries":
        return len(entries)
    if field == "fee_micros":
        return sum(int(e.get("fee_micros", 0)) for e in entries)
    kind = field.removesuffix("_micros")
    return sum(int(e["amount_micros"]) for e in entries if e["kind"] == kind)


def inject_garbage_ledger(ctx: Any, rnd: random.Random) -> Outcome:
    out = Outcome()
    r = ctx.st.redis
    variant = rnd.choice(["totals", "totals", "last_tick", "clean_stop_tick"])
    before = _pids(ctx)
    details: dict[str, Any] = {"variant": variant}
    if variant == "totals":
        field = rnd.choice(TOTAL_FIELDS)
        value = rnd.choice(GARBAGE)
        r.hset(TOTALS, field, value)
        written_ms = out.injected_ms = ctx.now_ms()
        blocked = ctx.poll(lambda: r.hexists(BLOCKED, f"{TOTALS} {field}"), 15)
        if not blocked:
            out.problems.append(f"{TOTALS} {field}={value!r}: entries were not blocked (baton:blocked)")
        time.sleep(rnd.uniform(1.0, 3.0))
        # The operator's repair: the sum recomputed from the stream.
        entries = [f for _, f in r.xrange("baton:ledger")]
        good = repaired_total(entries, field)
        r.hset(TOTALS, field, good)
        repaired_ms = ctx.now_ms()
        details.update(
            field=field, value=repr(value), written_ms=written_ms, repaired_ms=repaired_ms, to=good
        )
        out.recovered = ctx.poll(lambda: not r.hexists(BLOCKED, f"{TOTALS} {field}"), 30)
    elif variant == "last_tick":
        value = rnd.choice([*GARBAGE, str(10**15), str(int(r.hget(STATS, "last_tick") or 0) + 100_000)])
        r.hset(STATS, "last_tick", value)
        written_ms = out.injected_ms = ctx.now_ms()
        rebuilt = ctx.wait_tick_after(written_ms, 15, lambda e: e.get("last_tick_was") is not None)
        if rebuilt is None:
            out.problems.append(f"{STATS} last_tick={value!r}: no journal entry rebuilt the guard")
        details.update(field="last_tick", value=repr(value), written_ms=written_ms)
        # Trusted again: a later tick journaled normally, and the blocker gone.
        out.recovered = ctx.wait_tick_after(
            ctx.now_ms(), 30, lambda e: e.get("last_tick_was") is None
        ) is not None and ctx.poll(lambda: not r.hexists(BLOCKED, f"{STATS} last_tick"), 30)
    else:
        value = rnd.choice(GARBAGE)
        r.hset(STATS, "clean_stop_tick", value)
        written_ms = out.injected_ms = ctx.now_ms()
        details.update(field="clean_stop_tick", value=repr(value), written_ms=written_ms)
        time.sleep(rnd.uniform(1.0, 2.0))
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
    after = _pids(ctx)
    details.update(pids_before=before, pids_after=after)
    if after != before:
        out.problems.append(
            f"a program restarted around garbage {variant}: (worker, settle) {before} -> {after}"
        )
    out.details = details
    return out

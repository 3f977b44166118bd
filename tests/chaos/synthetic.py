"""A synthetic chaos run for the checker's tests: a clean run of ticks, trades and ledger
entries that holds every invariant, and the faults a test adds to it."""

from __future__ import annotations

from tests.chaos import checker, faults
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

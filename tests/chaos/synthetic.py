"""A synthetic chaos run for the checker's tests: a clean run of ticks, trades and ledger
entries that holds every invariant, and the faults a test adds to it."""

from __future__ import annotations

from typing import Any

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
        "side": "BUY",
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
        "condition_id": f"0xmarket{n}",
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


def _exit(
    trade: tuple[Any, ...], n: int, shares: int, price: float, fee: int, oid: str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Sell `shares` micro-shares of a trade's position by its exit leg exit-<n>, as the books
    do (state/positions.py `sale`): (venue order, intent, ledger entry); the position is
    updated in place."""
    order, entry, p, _ = trade
    iid = f"{p['id']}:exit-{n}"
    gross = round(shares * price)
    proceeds = gross - fee
    held = p["shares_micros"]
    cost_sold = p["cost_micros"] if shares == held else p["cost_micros"] * shares // held
    pnl = proceeds - cost_sold
    p.update(
        shares_micros=held - shares,
        cost_micros=p["cost_micros"] - cost_sold,
        sold_shares_micros=p.get("sold_shares_micros", 0) + shares,
        proceeds_micros=p.get("proceeds_micros", 0) + proceeds,
        fees_micros=p.get("fees_micros", 0) + fee,
        exit_pnl_micros=p.get("exit_pnl_micros", 0) + pnl,
        exits=p.get("exits", 0) + 1,
    )
    if p["shares_micros"] == 0:
        p["status"] = "closed"
    sell_order = dict(order, id=oid, side="SELL", size_matched=str(shares / 1e6), price=str(price))
    intent = dict(entry, id=iid, leg=f"exit-{n}", order_id=oid, fee_micros=fee)
    intent["created_ms"] = entry["created_ms"] + 1000 * n
    sell_order["created_at"] = intent["created_ms"] // 1000
    led = {"kind": "sell", "amount_micros": str(proceeds), "ref": f"sell:{iid}", "pnl_micros": str(pnl)}
    led["fee_micros"] = str(fee)
    return sell_order, intent, led


def totals(ledger: list[dict[str, Any]]) -> dict[str, str]:
    """The totals hash the scripts keep for `ledger` (state/lua/_ledger.lua)."""
    out = {
        "cash_micros": sum(int(e["amount_micros"]) for e in ledger),
        "realized_pnl_micros": sum(int(e.get("pnl_micros", 0)) for e in ledger),
        "entries": len(ledger),
        "fee_micros": sum(int(e.get("fee_micros", 0)) for e in ledger),
    }
    for e in ledger:
        out[f"{e['kind']}_micros"] = out.get(f"{e['kind']}_micros", 0) + int(e["amount_micros"])
    return {k: str(v) for k, v in out.items()}


def clean() -> RunData:
    trades = [_trade(1, 1005, True), _trade(2, 1020, False), _trade(3, 1035, True)]
    ledger = [
        {"kind": "deposit", "amount_micros": str(DEPOSIT), "ref": "deposit:paper-initial", "pnl_micros": "0"}
    ]
    for t in trades:
        ledger += t[3]
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
        ledger_totals=totals(ledger),
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


def with_exits() -> RunData:
    """clean(), where trade 1 sold 4 of its 10 shares before it was settled (won) on the 6
    it held, and trade 2 sold all of its shares (closed: nothing settled)."""
    d = clean()
    t1, t2, t3 = (
        _trade(1, 1005, True, settled=False),
        _trade(2, 1020, False, settled=False),
        _trade(3, 1035, True),
    )
    s1 = _exit(t1, 1, 4_000_000, 0.7, 10_000, "0xsell1")
    s2 = _exit(t2, 1, 10_000_000, 0.3, 5_000, "0xsell2")
    p1 = t1[2]
    p1.update(status="settled", won=True, payout_micros=p1["shares_micros"])
    p1["pnl_micros"] = p1["payout_micros"] - p1["cost_micros"]
    pay1 = {
        "kind": "payout",
        "amount_micros": str(p1["payout_micros"]),
        "ref": f"settle:{p1['id']}",
        "pnl_micros": str(p1["pnl_micros"]),
    }
    d.venue_orders = [t1[0], s1[0], t2[0], s2[0], t3[0]]
    d.intents = [t1[1], s1[1], t2[1], s2[1], t3[1]]
    d.positions = [p1, t2[2], t3[2]]
    d.ledger = [d.ledger[0], *t1[3], s1[2], pay1, *t2[3], s2[2], *t3[3]]
    d.ledger_totals = totals(d.ledger)
    return d

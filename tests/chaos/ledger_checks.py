"""The chaos checker's invariants of the ledger: it balances exactly (cash = deposits - buys +
sells + payouts; cash + the cost still held = deposits + realised PnL), its running sums equal
the stream's, each ref is booked once, and each position's entries agree with it: its buy
(fee included), its sales (proceeds, fees and PnL of its exits) and its payout.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from tests.chaos.order_checks import is_exit, position_of
from tests.chaos.report import Row, RunData, _fig, _i, _inv

KINDS = ("deposit", "buy", "sell", "payout")


def _sum(entries: list[dict[str, Any]], field: str, kind: str | None = None) -> int:
    return sum(_i(e.get(field)) for e in entries if kind is None or e.get("kind") == kind)


def totals_off(ledger: list[dict[str, Any]], totals: dict[str, Any]) -> tuple[int, list[str]]:
    """Each running sum of the totals hash against the stream's: cash, PnL, fees, and each
    kind's (a total never written is 0, as a stream without that kind sums to). Returns how
    far off they are in all (micros) and a line per sum that is."""
    want = {
        "cash_micros": _sum(ledger, "amount_micros"),
        "realized_pnl_micros": _sum(ledger, "pnl_micros"),
        "fee_micros": _sum(ledger, "fee_micros"),
        **{f"{k}_micros": _sum(ledger, "amount_micros", k) for k in KINDS},
    }
    off = {f: _i(totals.get(f)) - v for f, v in want.items() if _i(totals.get(f)) != v}
    return sum(abs(x) for x in off.values()), [
        f"{f}: totals {_i(totals.get(f))} stream {want[f]}" for f in off
    ]


def position_problems(d: RunData) -> list[str]:
    """Each position against its ledger entries (by ref) and its intents."""
    by_ref = {e.get("ref"): e for e in d.ledger}
    intent_of = {i["id"]: i for i in d.intents}
    sales: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in d.ledger:
        if e.get("kind") == "sell":
            sales[str(e.get("ref")).removeprefix("sell:").rsplit(":", 1)[0]].append(e)
    out = []
    for p in d.positions:
        pid = p["id"]
        sold = sales.get(pid, [])
        proceeds, exit_pnl, fees = (_sum(sold, f) for f in ("amount_micros", "pnl_micros", "fee_micros"))
        if (proceeds, exit_pnl, fees, len(sold)) != (
            _i(p.get("proceeds_micros")),
            _i(p.get("exit_pnl_micros")),
            _i(p.get("fees_micros")),
            _i(p.get("exits")),
        ):
            out.append(
                f"{pid}: proceeds/pnl/fees/exits {p.get('proceeds_micros', 0)}/{p.get('exit_pnl_micros', 0)}"
                f"/{p.get('fees_micros', 0)}/{p.get('exits', 0)}, "
                f"sell entries {proceeds}/{exit_pnl}/{fees}/{len(sold)}"
            )
        # What was paid: the cost still held and the cost the sales took (proceeds less PnL).
        paid = _i(p.get("cost_micros")) + proceeds - exit_pnl
        buy = by_ref.get(f"buy:{p['intent_id']}")
        if buy is None or _i(buy.get("amount_micros")) != -paid:
            out.append(
                f"{pid}: paid {paid} (cost held + cost sold), buy entry {buy and buy.get('amount_micros')}"
            )
        entry = intent_of.get(p["intent_id"])
        if buy is not None and entry is not None and _i(buy.get("fee_micros")) != _i(entry.get("fee_micros")):
            out.append(
                f"{pid}: buy entry's fee {buy.get('fee_micros')}, its intent's {entry.get('fee_micros')}"
            )
        for e in sold:
            i = intent_of.get(str(e.get("ref")).removeprefix("sell:"))
            if i is None or i.get("status") != "filled" or _i(e.get("fee_micros")) != _i(i.get("fee_micros")):
                told = i and (i.get("status"), i.get("fee_micros"))
                out.append(f"{e.get('ref')}: fee {e.get('fee_micros')}, intent (status, fee) {told}")
        if p.get("status") == "settled":
            pay = by_ref.get(f"settle:{pid}")
            if (
                pay is None
                or _i(pay.get("amount_micros")) != _i(p.get("payout_micros"))
                or _i(pay.get("pnl_micros")) != _i(p.get("pnl_micros"))
            ):
                out.append(
                    f"{pid}: payout {p.get('payout_micros')}/pnl {p.get('pnl_micros')}, entry "
                    f"{pay and (pay.get('amount_micros'), pay.get('pnl_micros'))}"
                )
        elif f"settle:{pid}" in by_ref:
            out.append(f"{pid}: a payout entry, yet the position is {p.get('status')}")
    return out


def check_ledger(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    cash = _sum(d.ledger, "amount_micros")
    deposits = _sum(d.ledger, "amount_micros", "deposit")
    buys, sells, payouts = (_sum(d.ledger, "amount_micros", k) for k in ("buy", "sell", "payout"))
    realized = _sum(d.ledger, "pnl_micros")
    fees = _sum(d.ledger, "fee_micros")
    open_cost = sum(_i(p.get("cost_micros")) for p in d.positions if p.get("status") == "open")
    diff = cash + open_cost - (deposits + realized)
    totals_diff, totals = totals_off(d.ledger, d.ledger_totals)
    refs = Counter(e.get("ref") for e in d.ledger)
    dup_refs = [f"{r} x{n}" for r, n in refs.items() if n > 1]
    per_position = position_problems(d)
    exits_of = {
        f"sell:{i['id']}"
        for i in d.intents
        if is_exit(i) and position_of(i) in {p["id"] for p in d.positions}
    }
    known = (
        {f"buy:{p['intent_id']}" for p in d.positions} | {f"settle:{p['id']}" for p in d.positions} | exits_of
    )
    orphans = [r for r in refs if r and r not in known and not str(r).startswith("deposit:")]

    def usd(m: int) -> str:
        return f"{m / 1e6:,.6f}"

    rows = [
        _fig("ledger", "initial (deposits), USD", usd(deposits)),
        _fig("ledger", "cash, USD", usd(cash)),
        _fig("ledger", "sold by exits (net of fees), USD", usd(sells)),
        _fig("ledger", "fees, USD", usd(fees)),
        _fig("ledger", "open cost, USD", usd(open_cost)),
        _fig("ledger", "realised PnL, USD", usd(realized)),
        _inv("ledger", "cash + open cost - (initial + PnL), micros", diff, 0),
        _inv("ledger", "totals hash vs stream, micros", totals_diff, 0, totals),
        _inv("ledger", "refs booked twice", len(dup_refs), 0, dup_refs),
        _inv("ledger", "positions whose entries disagree", len(per_position), 0, per_position),
        _inv("ledger", "entries with no position", len(orphans), 0, [str(r) for r in orphans]),
    ]
    figures = {
        "entries": len(d.ledger),
        "deposits_micros": deposits,
        "buys_micros": buys,
        "sells_micros": sells,
        "payouts_micros": payouts,
        "fees_micros": fees,
        "cash_micros": cash,
        "open_cost_micros": open_cost,
        "realized_pnl_micros": realized,
        "identity_diff_micros": diff,
    }
    return rows, figures

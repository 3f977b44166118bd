"""The chaos checker's invariants of the money: no order reaches the venue while halted or
paused or from a fenced epoch, each slot-window enters once; every position is settled in
time; the ledger balances.

The sim's `created_at` is in whole seconds (as the CLOB's): an order is judged to be after a
moment only when its whole second is, and before one only when its whole second ends before it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.chaos.halts import blocked_windows, halt_windows, in_scope, pause_windows
from tests.chaos.report import Row, RunData, _fig, _i, _inv


def _surely_inside(created_s: int, start_ms: int, end_ms: int) -> bool:
    """The whole second `created_s` lies after start_ms and ends before end_ms."""
    return created_s * 1000 > start_ms and (created_s + 1) * 1000 <= end_ms


def epoch_starts(journal: list[dict[str, str]]) -> dict[int, int]:
    """When each epoch's holder started its first journaled tick."""
    out: dict[int, int] = {}
    for e in journal:
        ep, at = _i(e.get("epoch")), _i(e.get("started_ms"))
        if ep not in out or at < out[ep]:
            out[ep] = at
    return out


def check_orders(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    orders = d.venue_orders
    per_market = Counter(o.get("market") for o in orders)
    dup_markets = {m: n for m, n in per_market.items() if n > 1}
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    per_intent_key = Counter((i["slot"], i["window_start_s"], i.get("leg", "")) for i in d.intents)
    dup_intents = [k for k, n in per_intent_key.items() if n > 1]
    strangers = [o["id"] for o in orders if o["id"] not in by_order]

    starts = epoch_starts(d.journal)
    stale: list[str] = []
    for o in orders:
        i = by_order.get(o["id"])
        if i is None:
            continue
        later = [at for ep, at in starts.items() if ep > _i(i.get("epoch"))]
        if later and _i(o.get("created_at")) * 1000 > min(later):
            stale.append(
                f"order {o['id'][:14]} of {i['id']} (epoch {i.get('epoch')}) created at "
                f"{o.get('created_at')} s, after a newer epoch started at {min(later)} ms"
            )
    stale_intents = []
    for i in d.intents:
        later = [at for ep, at in starts.items() if ep > _i(i.get("epoch"))]
        if later and _i(i.get("created_ms")) > min(later):
            stale_intents.append(f"intent {i['id']} of epoch {i.get('epoch')} made at {i.get('created_ms')}")

    halts = halt_windows(d.faults, d.tick_ms)
    after_halt = [
        f"order {o['id'][:14]} created at {o.get('created_at')} s, inside {label} [{a}, {b}] ms"
        for o in orders
        for a, b, label in halts
        if _surely_inside(_i(o.get("created_at")), a, b)
    ]
    intents_in_halt = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}]"
        for i in d.intents
        for a, b, label in halts
        if a < _i(i.get("created_ms")) < b
    ]
    pauses = pause_windows(d.faults, d.tick_ms)
    intents_in_pause = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}]"
        for i in d.intents
        for a, b, label in pauses
        if a < _i(i.get("created_ms")) < b
    ]
    blocks = blocked_windows(d.faults, d.tick_ms)
    intents_in_block = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}] ({scope})"
        for i in d.intents
        for a, b, scope, label in blocks
        if a < _i(i.get("created_ms")) < b and in_scope(scope, str(i.get("slot")))
    ]
    rows = [
        _fig("orders", "posted", len(orders)),
        _inv(
            "orders",
            "duplicated per slot-window",
            sum(n - 1 for n in dup_markets.values()) + len(dup_intents),
            0,
            [f"market {m}: {n} orders" for m, n in dup_markets.items()]
            + [f"intent key {k}" for k in dup_intents],
        ),
        _inv("orders", "unknown to Redis (no intent)", len(strangers), 0, strangers),
        _inv("orders", "posted by a stale epoch", len(stale) + len(stale_intents), 0, stale + stale_intents),
        _inv(
            "orders",
            "posted after a halt",
            len(after_halt) + len(intents_in_halt),
            0,
            after_halt + intents_in_halt,
        ),
        _inv("orders", "entered while paused", len(intents_in_pause), 0, intents_in_pause),
        _inv("orders", "entered past an unreadable value", len(intents_in_block), 0, intents_in_block),
        _fig("orders", "garbage blocks checked", len(blocks)),
        _fig("orders", "halts checked", len(halts)),
    ]
    figures = {
        "posted": len(orders),
        "duplicated": sum(n - 1 for n in dup_markets.values()),
        "strangers": len(strangers),
        "stale_epoch": len(stale) + len(stale_intents),
        "after_halt": len(after_halt) + len(intents_in_halt),
        "halt_windows": [list(h) for h in halts],
        "pause_windows": [list(p) for p in pauses],
        "blocked_windows": [list(b) for b in blocks],
        "intents": len(d.intents),
        "intents_by_status": dict(Counter(i.get("status") for i in d.intents)),
    }
    return rows, figures


def check_positions(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    order_of = {i["id"]: i.get("order_id") for i in d.intents}
    positions = {p["intent_id"]: p for p in d.positions}
    filled = [o for o in d.venue_orders if float(o.get("size_matched") or 0) > 0]
    lost, mismatched = [], []
    for o in filled:
        i = by_order.get(o["id"])
        p = positions.get(i["id"]) if i else None
        if p is None:
            lost.append(f"order {o['id'][:14]} ({o.get('market', '')[:12]}) filled {o.get('size_matched')}")
        elif abs(_i(p.get("shares_micros")) - round(float(o["size_matched"]) * 1_000_000)) > 0:
            mismatched.append(f"{p['id']}: {p.get('shares_micros')} micro-shares, venue {o['size_matched']}")
    filled_ids = {o["id"] for o in filled}
    phantom = [p["id"] for p in d.positions if order_of.get(p.get("intent_id")) not in filled_ids]

    closed_before = d.end_ms - d.settle_grace_ms
    closed = [p for p in d.positions if _i(p.get("window_end_s")) * 1000 <= closed_before]
    unsettled = [p["id"] for p in closed if p.get("status") != "settled"]
    settled = [p for p in d.positions if p.get("status") == "settled"]
    bad_settle = []
    for p in settled:
        want = _i(p.get("shares_micros")) if p.get("won") else 0
        if _i(p.get("payout_micros")) != want or _i(p.get("pnl_micros")) != want - _i(p.get("cost_micros")):
            bad_settle.append(
                f"{p['id']}: won={p.get('won')} shares={p.get('shares_micros')} cost={p.get('cost_micros')} "
                f"payout={p.get('payout_micros')} pnl={p.get('pnl_micros')}"
            )
    open_ids = {p["id"] for p in d.positions if p.get("status") == "open"}
    open_hash = {p["id"] for p in d.open_positions}
    open_mismatch = sorted(open_ids ^ open_hash)
    rows = [
        _fig("positions", "filled at the venue", len(filled)),
        _fig("positions", "recorded in Redis", len(d.positions)),
        _inv("positions", "filled at the venue, not recorded", len(lost), 0, lost),
        _inv("positions", "recorded, not filled at the venue", len(phantom), 0, phantom),
        _inv("positions", "size differs from the venue's fill", len(mismatched), 0, mismatched),
        _fig("positions", "windows closed (with a position)", len(closed)),
        _fig("positions", "settled", len(settled)),
        _inv("positions", "closed windows not settled", len(unsettled), 0, unsettled),
        _inv("positions", "settlements that do not add up", len(bad_settle), 0, bad_settle),
        _inv("positions", "open set disagrees with positions", len(open_mismatch), 0, open_mismatch),
        _inv(
            "positions",
            "intents left open after the drain",
            len(d.open_intents),
            0,
            [
                f"{i['id']} ({i.get('status')}, epoch {i.get('epoch')}): {i.get('error', '')[:80]}"
                for i in d.open_intents
            ],
        ),
    ]
    figures = {
        "filled_at_venue": len(filled),
        "recorded": len(d.positions),
        "lost": len(lost),
        "phantom": len(phantom),
        "closed": len(closed),
        "settled": len(settled),
        "unsettled": unsettled,
        "open": len(open_ids),
        "won": sum(1 for p in settled if p.get("won")),
    }
    return rows, figures


def check_ledger(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    cash = sum(_i(e.get("amount_micros")) for e in d.ledger)
    deposits = sum(_i(e.get("amount_micros")) for e in d.ledger if e.get("kind") == "deposit")
    realized = sum(_i(e.get("pnl_micros")) for e in d.ledger)
    open_cost = sum(_i(p.get("cost_micros")) for p in d.positions if p.get("status") == "open")
    diff = cash + open_cost - (deposits + realized)
    totals_cash = _i(d.ledger_totals.get("cash_micros"))
    totals_pnl = _i(d.ledger_totals.get("realized_pnl_micros"))
    refs = Counter(e.get("ref") for e in d.ledger)
    dup_refs = [f"{r} x{n}" for r, n in refs.items() if n > 1]
    by_ref = {e.get("ref"): e for e in d.ledger}
    per_position = []
    for p in d.positions:
        buy = by_ref.get(f"buy:{p['intent_id']}")
        if buy is None or _i(buy.get("amount_micros")) != -_i(p.get("cost_micros")):
            got = buy and buy.get("amount_micros")
            per_position.append(f"{p['id']}: cost {p.get('cost_micros')}, buy entry {got}")
        if p.get("status") == "settled":
            pay = by_ref.get(f"settle:{p['id']}")
            if (
                pay is None
                or _i(pay.get("amount_micros")) != _i(p.get("payout_micros"))
                or _i(pay.get("pnl_micros")) != _i(p.get("pnl_micros"))
            ):
                per_position.append(
                    f"{p['id']}: payout {p.get('payout_micros')}/pnl {p.get('pnl_micros')}, entry "
                    f"{pay and (pay.get('amount_micros'), pay.get('pnl_micros'))}"
                )
    known = {f"buy:{p['intent_id']}" for p in d.positions} | {f"settle:{p['id']}" for p in d.positions}
    orphans = [r for r in refs if r and r not in known and not str(r).startswith("deposit:")]

    def usd(m: int) -> str:
        return f"{m / 1e6:,.6f}"

    rows = [
        _fig("ledger", "initial (deposits), USD", usd(deposits)),
        _fig("ledger", "cash, USD", usd(cash)),
        _fig("ledger", "open cost, USD", usd(open_cost)),
        _fig("ledger", "realised PnL, USD", usd(realized)),
        _inv("ledger", "cash + open cost - (initial + PnL), micros", diff, 0),
        _inv(
            "ledger",
            "totals hash vs stream, micros",
            (totals_cash - cash) + (totals_pnl - realized),
            0,
            [f"cash: totals {totals_cash} stream {cash}", f"pnl: totals {totals_pnl} stream {realized}"]
            if totals_cash != cash or totals_pnl != realized
            else [],
        ),
        _inv("ledger", "refs booked twice", len(dup_refs), 0, dup_refs),
        _inv("ledger", "positions whose entries disagree", len(per_position), 0, per_position),
        _inv("ledger", "entries with no position", len(orphans), 0, [str(r) for r in orphans]),
    ]
    figures = {
        "entries": len(d.ledger),
        "deposits_micros": deposits,
        "cash_micros": cash,
        "open_cost_micros": open_cost,
        "realized_pnl_micros": realized,
        "identity_diff_micros": diff,
    }
    return rows, figures

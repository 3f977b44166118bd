"""The chaos checker's invariants of the orders and positions: no order reaches the venue
while halted or from a fenced epoch, no entry while paused; each intent (an entry or an exit
leg) is one order at most; every fill is booked, entries as positions and exits as sales of
them; every position is settled or closed in time (the ledger's: ledger_checks.py).

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


def is_exit(i: dict[str, Any]) -> bool:
    """An exit leg (`exit-<n>`, state/structs.py): it sells; every other leg buys."""
    return str(i.get("leg", "")).startswith("exit-")


def position_of(i: dict[str, Any]) -> str:
    """The id of the position an intent belongs to: its slot-window."""
    return f"{i.get('slot')}:{i.get('window_start_s')}"


def _side(i: dict[str, Any]) -> str:
    return "SELL" if is_exit(i) else "BUY"


def extra_orders(d: RunData) -> dict[tuple[str, str], int]:
    """Per (market, side), the venue's orders beyond the intents that could have made them:
    each intent is one order at most (an entry a BUY, an exit leg a SELL), and two slots on
    one market (two strategies on btc-15m) have an intent each."""
    orders = Counter((str(o.get("market")), str(o.get("side", "BUY")).upper()) for o in d.venue_orders)
    allowed = Counter((str(i.get("condition_id", "")), _side(i)) for i in d.intents)
    return {k: n - allowed[k] for k, n in orders.items() if n > allowed[k]}


def check_orders(d: RunData) -> tuple[list[Row], dict[str, Any]]:
    orders = d.venue_orders
    dup_markets = extra_orders(d)
    by_order = {i["order_id"]: i for i in d.intents if i.get("order_id")}
    per_intent_key = Counter((i["slot"], i["window_start_s"], i.get("leg", "")) for i in d.intents)
    dup_intents = [k for k, n in per_intent_key.items() if n > 1]
    strangers = [o["id"] for o in orders if o["id"] not in by_order]
    # An order of the other side than its intent's leg: a sale sent as a buy, or the reverse.
    wrong_side = [
        f"order {o['id'][:14]} {o.get('side')} for {by_order[o['id']]['id']}"
        for o in orders
        if o["id"] in by_order and "side" in o and str(o["side"]).upper() != _side(by_order[o["id"]])
    ]

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
    # A pause and an unreadable value hold new entries back; exits go on (a halt stops both).
    entries = [i for i in d.intents if not is_exit(i)]
    pauses = pause_windows(d.faults, d.tick_ms)
    intents_in_pause = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}]"
        for i in entries
        for a, b, label in pauses
        if a < _i(i.get("created_ms")) < b
    ]
    blocks = blocked_windows(d.faults, d.tick_ms)
    intents_in_block = [
        f"intent {i['id']} committed at {i.get('created_ms')} ms, inside {label} [{a}, {b}] ({scope})"
        for i in entries
        for a, b, scope, label in blocks
        if a < _i(i.get("created_ms")) < b and in_scope(scope, str(i.get("slot")))
    ]
    rows = [
        _fig("orders", "posted", len(orders)),
        _fig("orders", "exits posted", sum(1 for o in orders if str(o.get("side", "")).upper() == "SELL")),
        _inv(
            "orders",
            "duplicated per slot-window",
            sum(dup_markets.values()) + len(dup_intents),
            0,
            [f"market {m} {side}: {n} order(s) more than intents" for (m, side), n in dup_markets.items()]
            + [f"intent key {k}" for k in dup_intents],
        ),
        _inv("orders", "unknown to Redis (no intent)", len(strangers), 0, strangers),
        _inv("orders", "sent as the other side than its leg", len(wrong_side), 0, wrong_side),
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
        "duplicated": sum(dup_markets.values()),
        "exits": sum(1 for i in d.intents if is_exit(i)),
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
    by_id = {p["id"]: p for p in d.positions}
    filled = [o for o in d.venue_orders if float(o.get("size_matched") or 0) > 0]
    sold_refs = {e.get("ref") for e in d.ledger if e.get("kind") == "sell"}
    lost, mismatched, lost_sales = [], [], []
    sold_at_venue: Counter[str] = Counter()  # position id -> micro-shares its exits sold
    for o in filled:
        i = by_order.get(o["id"])
        matched = round(float(o["size_matched"]) * 1_000_000)
        if i is not None and is_exit(i):
            sold_at_venue[position_of(i)] += matched
            if f"sell:{i['id']}" not in sold_refs:
                lost_sales.append(f"order {o['id'][:14]} of {i['id']} sold {o['size_matched']}: not booked")
            continue
        p = positions.get(i["id"]) if i else None
        if p is None:
            lost.append(f"order {o['id'][:14]} ({o.get('market', '')[:12]}) filled {o.get('size_matched')}")
        elif _i(p.get("shares_micros")) + _i(p.get("sold_shares_micros")) != matched:
            mismatched.append(
                f"{p['id']}: {p.get('shares_micros')} held + {p.get('sold_shares_micros', 0)} sold "
                f"micro-shares, venue bought {o['size_matched']}"
            )
    for pid, p in by_id.items():
        if _i(p.get("sold_shares_micros")) != sold_at_venue[pid]:
            mismatched.append(
                f"{pid}: sold {p.get('sold_shares_micros', 0)} micro-shares, venue {sold_at_venue[pid]}"
            )
    filled_ids = {o["id"] for o in filled}
    phantom = [p["id"] for p in d.positions if order_of.get(p.get("intent_id")) not in filled_ids]
    # A sale booked whose order the venue did not fill (or no intent made).
    intent_of = {i["id"]: i for i in d.intents}
    for ref in sold_refs:
        iid = str(ref).removeprefix("sell:")
        if order_of.get(iid) not in filled_ids:
            phantom.append(f"{ref} ({(intent_of.get(iid) or {}).get('status', 'no intent')})")

    closed_before = d.end_ms - d.settle_grace_ms
    closed = [p for p in d.positions if _i(p.get("window_end_s")) * 1000 <= closed_before]
    # Sold out by exits ("closed") is done with as settled is: nothing is left to pay.
    unsettled = [p["id"] for p in closed if p.get("status") not in ("settled", "closed")]
    settled = [p for p in d.positions if p.get("status") == "settled"]
    sold_out = [p for p in d.positions if p.get("status") == "closed"]
    bad_settle = []
    for p in settled:
        # Paid on the shares still held, the PnL against what they cost.
        want = _i(p.get("shares_micros")) if p.get("won") else 0
        if _i(p.get("payout_micros")) != want or _i(p.get("pnl_micros")) != want - _i(p.get("cost_micros")):
            bad_settle.append(
                f"{p['id']}: won={p.get('won')} shares={p.get('shares_micros')} cost={p.get('cost_micros')} "
                f"payout={p.get('payout_micros')} pnl={p.get('pnl_micros')}"
            )
    for p in sold_out:
        if _i(p.get("shares_micros")) or _i(p.get("cost_micros")) or _i(p.get("payout_micros")):
            bad_settle.append(
                f"{p['id']}: closed with shares={p.get('shares_micros')} cost={p.get('cost_micros')} "
                f"payout={p.get('payout_micros')}"
            )
    open_ids = {p["id"] for p in d.positions if p.get("status") == "open"}
    open_hash = {p["id"] for p in d.open_positions}
    open_mismatch = sorted(open_ids ^ open_hash)
    rows = [
        _fig("positions", "filled at the venue", len(filled)),
        _fig("positions", "recorded in Redis", len(d.positions)),
        _inv(
            "positions",
            "filled at the venue, not recorded",
            len(lost) + len(lost_sales),
            0,
            lost + lost_sales,
        ),
        _inv("positions", "recorded, not filled at the venue", len(phantom), 0, phantom),
        _inv("positions", "size differs from the venue's fill", len(mismatched), 0, mismatched),
        _fig("positions", "windows closed (with a position)", len(closed)),
        _fig("positions", "settled", len(settled)),
        _fig("positions", "sold out by exits", len(sold_out)),
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
        "lost": len(lost) + len(lost_sales),
        "phantom": len(phantom),
        "closed": len(closed),
        "settled": len(settled),
        "sold_out": len(sold_out),
        "sales": len(sold_refs),
        "unsettled": unsettled,
        "open": len(open_ids),
        "won": sum(1 for p in settled if p.get("won")),
    }
    return rows, figures

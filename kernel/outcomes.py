"""From a venue's answers to the writes they call for: a buy's fill opens its position, a
sale's is booked against the position it sold from (state/positions.py `sale`,
Store.record_exits), what is not final stays posted for reconciliation, and an order the book
could not fill is told apart from a fault. Used by the posts (kernel/executor.py), by
reconciliation (kernel/reconcile.py) and by adoption (kernel/adopt.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from baton.errors import BookingError, UnreadableValue
from kernel.blocking import EntryBlocks
from state.positions import sale
from state.store import Store
from state.structs import MICROS, Blocker, Intent, Position

# Venue order statuses (lower-cased): still in progress, or final.
PENDING_STATUSES = frozenset({"live", "delayed"})
# "dry_run": live dry-run mode signed the order and did not post it (BATON_DRY_RUN).
FINAL_STATUSES = frozenset(
    {"matched", "filled", "canceled", "cancelled", "expired", "unmatched", "killed", "rejected", "dry_run"}
)
# Final, with what matched before the end (a FAK's rest killed, a GTC cancelled, a GTD
# expired): the matched part is booked, the rest is gone.
ENDED_STATUSES = frozenset({"canceled", "cancelled", "expired"})
# Final with nothing matched because the book had nothing at the price: an outcome of the
# order type, not a fault.
UNFILLED_STATUSES = frozenset({"unmatched", "killed", *ENDED_STATUSES})
# The CLOB refuses a FOK it cannot fill whole, and a FAK with nothing to match, with these
# (sim/orders.py has the same words): outcomes too.
UNFILLED_MESSAGES = ("couldn't be fully filled", "no orders found to match")


@dataclass
class Tally:
    """What a tick's orders came to, beyond the count sent: exit orders sent (also in the
    count), and orders the book could not fill (TickRecord.exits, .unfilled)."""

    exits: int = 0
    unfilled: int = 0


def unfilled(res: Any) -> bool:
    """The venue's answer says the book could not fill the order (and nothing matched)."""
    if res.size_matched > 0:
        return False
    if res.status in UNFILLED_STATUSES:
        return True
    return res.status == "rejected" and any(m in (res.error or "") for m in UNFILLED_MESSAGES)


def position_id(intent: Intent) -> str:
    """The id of the position an intent's fill opens: its slot-window."""
    return f"{intent.slot}:{intent.window_start_s}"


def _position(intent: Intent, size: float, price: float, now_ms: int) -> Position:
    asset = intent.asset or intent.slot.split("-", 1)[0]
    return Position(
        id=position_id(intent),
        slot=intent.slot,
        asset=asset,
        window_start_s=intent.window_start_s,
        window_end_s=intent.window_end_s,
        side=intent.side,
        token_id=intent.token_id,
        condition_id=intent.condition_id,
        shares_micros=round(size * MICROS),
        # What was paid, the venue's fee included (the ledger's buy entry names the fee).
        cost_micros=round(size * price * MICROS) + intent.fee_micros,
        opened_ms=now_ms,
        intent_id=intent.id,
    )


def outcome(
    intent: Intent,
    res: Any,
    now_ms: int,
    updates: list[Intent],
    fills: list[tuple[Intent, Position]],
    problems: list[str],
    sells: list[Intent] | None = None,
    tally: Tally | None = None,
) -> None:
    """What the venue said of an order, as the write it calls for: a buy's fill opens the
    position (appended to `fills`), a sale's is booked against it (the filled intent appended
    to `sells`); what matched of an order that ended otherwise (a FAK's rest killed, a GTC
    cancelled, a GTD expired) is booked the same way. Anything else that is final marks the
    intent rejected with the venue's message: an order the book could not fill is counted in
    `tally`, any other refusal is a problem. An answer that is not final leaves it posted
    (appended to `updates`), and reconciliation asks again by order id."""
    status, matched = res.status, res.size_matched
    if status in PENDING_STATUSES or (status not in FINAL_STATUSES and matched <= 0):
        # The venue still works on it ("live", "delayed": resting, or a status we do not
        # know): not final; reconciliation asks again by order id until it is.
        updates.append(
            msgspec.structs.replace(
                intent, status="posted", order_id=res.order_id or intent.order_id, error=""
            )
        )
        return
    if matched > 0 and (status in ("matched", "filled") or status in ENDED_STATUSES):
        price = res.avg_price or res.price or intent.limit_price
        done = msgspec.structs.replace(
            intent,
            status="filled",
            order_id=res.order_id or intent.order_id,
            filled_size=matched,
            avg_price=price,
            error="",
            fee_micros=round((getattr(res, "fee_usd", 0.0) or 0.0) * MICROS),
            updated_ms=now_ms,
        )
        if not intent.is_exit:
            fills.append((done, _position(done, matched, price, now_ms)))
        elif sells is not None:
            sells.append(done)
        else:  # a caller that books no sales (adoption): left open for reconciliation
            problems.append(f"{intent.id}: a sale's fill with nowhere to book it: left open")
        return
    if unfilled(res):
        if tally is not None:
            tally.unfilled += 1
    elif status != "dry_run":
        problems.append(f"{intent.id}: order {status}: {res.error}")
    updates.append(
        msgspec.structs.replace(
            intent,
            status="rejected",
            order_id=res.order_id or intent.order_id,
            error=(res.error or status)[:300],
        )
    )


async def write_outcomes(
    store: Store,
    epoch: int,
    updates: list[Intent],
    fills: list[tuple[Intent, Position]],
    blocks: EntryBlocks | None = None,
    sells: list[Intent] | None = None,
    positions: dict[str, Position] | None = None,
) -> list[str]:
    """Every update, fill and sale in one round trip (all fills in one fenced call, all sales
    in another); returns the problems (writes the fence refused). A sale is booked against its
    position as `positions` holds it (the snapshot's: no exit leg is made while another of the
    same position is open, so it is the position the sale sold from), else as Redis holds it
    now. A write refused for an unreadable value wrote nothing: the intent stays open and
    reconciliation books it once the value is repaired; meanwhile `blocks` holds new entries
    back (source "bookings", cleared by a booking that goes in)."""
    sells = sells or []
    if not updates and not fills and not sells:
        return []
    problems: list[str] = []
    bookings: list[tuple[Intent, Any]] = []
    if sells:
        held = dict(positions or {})
        if any(position_id(i) not in held for i in sells):
            held.update({p.id: p for p in await store.read_positions(open_only=True)})
        for i in sells:
            p = held.get(position_id(i))
            if p is None:
                # Settled (or never booked) meanwhile: there is nothing to book the sale
                # against. Left open, so that it is seen again and a person looks.
                problems.append(
                    f"{i.id}: sold {i.filled_size:g} shares, but position {position_id(i)} is not open"
                )
                continue
            try:
                booked = sale(p, i, i.updated_ms)
                bookings.append((i, booked))
                # A second sale of the position in this call sells from what the first left.
                held[p.id] = booked.position
            except BookingError as e:
                # Nothing written: the intent stays open, reconciliation asks again.
                problems.append(f"{i.id}: sale not booked: {e}")

    def build(pipe: Any) -> None:
        for u in updates:
            store.update_intent(epoch, u, pipeline=pipe)
        if fills:
            store.record_fills(epoch, fills, pipeline=pipe)
        if bookings:
            store.record_exits(epoch, bookings, pipeline=pipe)

    if not updates and not fills and not bookings:
        return problems
    answers = await store.run_pipeline(build)
    verdicts: list[Any] = list(answers[: len(updates)])
    for a in answers[len(updates) :]:
        verdicts += a if isinstance(a, list) else [a]
    unreadable = {v.key + " " + v.field: v for v in verdicts if isinstance(v, UnreadableValue)}
    if blocks is not None:
        why = "a fill or intent could not be recorded; it is, once this is repaired"
        found = [
            Blocker(key=v.key, field=v.field, problem=f"{v.problem}: {why}", source="bookings")
            for v in unreadable.values()
        ]
        blocks.found("bookings", found)
    return problems + [f"recording a venue answer: {v}" for v in verdicts if v not in ("OK", "ALREADY")]

"""What the CLOB's answers about one order mean to the kernel (kernel.venue.OrderResult): the
answer to `POST /order` and to `GET /data/order/{id}`, read the same way for both sides and
every order type, and the taker fee of what matched, from the market's published schedule.

Why a module of its own: the CLOB reports amounts by role, not by side (a BUY's taking amount
is shares, a SELL's is USDC), reports a GTC that matched part of its size as "matched" while
the rest rests, and names statuses two ways (`live` when posting, `ORDER_STATUS_LIVE` or
`LIVE` when asked). The kernel wants one vocabulary: PENDING ("live", "delayed": ask again)
or final ("matched", "canceled", "unmatched", "rejected") with the shares matched so far.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from kernel.fees import taker_fee_usd as taker_fee_usd
from kernel.venue import OrderResult, SignedOrder

SIDES = ("BUY", "SELL")
# The CLOB's own words for the refusals a trader meets every day (the sim answers with them,
# the stub too; Polymarket's error table names them FOK_ORDER_NOT_FILLED_ERROR, ...).
FOK_KILLED = "order couldn't be fully filled. FOK orders are fully filled or killed."
FAK_KILLED = (
    "no orders found to match with FAK order. FAK orders are partially filled or killed if no match is found."
)
NOT_ENOUGH_BALANCE = "not enough balance / allowance"
INVALID_EXPIRATION = "invalid expiration"
# A GTD order's security threshold (Polymarket's docs): the venue expires it this long
# before its `expiration` field, and refuses one whose field is nearer than this. So that an
# order rests until the time the kernel means, ClobVenue.sign writes `expires_s` plus this
# ("to expire in 90 s, expiration = now + 1 minute + 30 s", the docs' own example).
GTD_THRESHOLD_S = 60
ORDER_TYPES = ("FOK", "FAK", "GTC", "GTD")
# Orders that rest on the book for what does not match at once.
RESTING_TYPES = ("GTC", "GTD")


def check_order(side: str, price: float, size: float, expires_s: int) -> None:
    """Raise ValueError naming what is wrong with an order's terms, before anything is signed."""
    if side not in SIDES:
        raise ValueError(f"side {side!r} is not one of {SIDES}")
    if not (math.isfinite(price) and 0.0 < price < 1.0):
        raise ValueError(f"price {price!r} must be between 0 and 1 (exclusive)")
    if not (math.isfinite(size) and size > 0.0):
        raise ValueError(f"size {size!r} must be a positive number of shares")
    if isinstance(expires_s, bool) or not isinstance(expires_s, int) or expires_s < 0:
        raise ValueError(f"expires_s {expires_s!r} must be a whole number of seconds >= 0 (0: none)")


def check_post(signed: SignedOrder, order_type: str) -> None:
    """The order type must suit the signed order: only a GTD carries an expiry, and it must
    carry one (the venue would refuse a GTD without it, and treat an expiry on another type
    as a mistake: Polymarket's own clients refuse both)."""
    if order_type not in ORDER_TYPES:
        raise ValueError(f"order_type {order_type!r} is not one of {ORDER_TYPES}")
    if order_type == "GTD" and signed.expires_s <= 0:
        raise ValueError("order_type GTD needs an order signed with expires_s (its expiry) > 0")
    if order_type != "GTD" and signed.expires_s > 0:
        raise ValueError(f"order_type {order_type} takes no expiry; the order was signed with expires_s")


def _num(v: Any) -> float:
    try:
        x = float(v or 0)
    except (TypeError, ValueError):
        return 0.0
    return x if math.isfinite(x) else 0.0


def status_word(raw: Any) -> str:
    """The CLOB's status in the kernel's words: lower case, without the `order_status_` prefix
    of the API reference; a resting order the venue cancelled at resolution is "canceled", an
    order the venue found invalid (never matched) is "rejected"."""
    s = str(raw or "").strip().lower().removeprefix("order_status_")
    if s in ("canceled_market_resolved", "cancelled"):
        return "canceled"
    if s == "invalid":
        return "rejected"
    return s


def post_result(
    resp: dict[str, Any], signed: SignedOrder, order_type: str, fee: tuple[float, float] = (0.0, 0.0)
) -> OrderResult:
    """The answer to a POST /order that the venue accepted. `size_matched` is in shares for
    either side (a BUY takes shares and makes USDC, a SELL the other way round); a GTC/GTD that
    matched part of its size is "live" (the rest rests: reconciliation asks again), a FAK's
    partial match is final ("matched": the rest was killed). `fee` is the market's (rate,
    exponent): what matched at the post took liquidity, so it paid the taker fee."""
    oid = str(resp.get("orderID") or signed.order_id)
    taking, making = _num(resp.get("takingAmount")), _num(resp.get("makingAmount"))
    shares, usdc = (taking, making) if signed.side == "BUY" else (making, taking)
    avg = usdc / shares if shares > 0 else 0.0
    status = status_word(resp.get("status") or "live")
    if status == "matched" and order_type in RESTING_TYPES and shares < signed.size - 1e-9:
        status = "live"
    return OrderResult(
        order_id=oid,
        status=status,
        size_matched=shares,
        price=signed.price,
        avg_price=avg,
        fee_usd=taker_fee_usd(shares, avg, *fee),
    )


def order_result(
    o: dict[str, Any], trades: Iterable[dict[str, Any]] = (), fee: tuple[float, float] = (0.0, 0.0)
) -> OrderResult:
    """An order as GET /data/order/{id} tells of it (the API's OpenOrder), with what its
    trades (`associate_trades`, read by the caller) tell: the average price of its fills, and
    the taker fee of the part it took on arrival (`fee`: the market's rate and exponent; its
    fills as maker pay none). Without trades, the average price is unknown (0.0)."""
    oid = str(o["id"])
    taken, taken_usd, made, made_usd = order_fills(trades, oid)
    shares, usd = taken + made, taken_usd + made_usd
    return OrderResult(
        order_id=oid,
        status=status_word(o.get("status")),
        size_matched=_num(o.get("size_matched")),
        price=_num(o.get("price")),
        avg_price=float(usd / shares) if shares > 0 else 0.0,
        fee_usd=taker_fee_usd(float(taken), float(taken_usd / taken), *fee) if taken > 0 else 0.0,
    )


def order_fills(trades: Iterable[dict[str, Any]], order_id: str) -> tuple[Decimal, Decimal, Decimal, Decimal]:
    """(shares taken, their USDC, shares made, their USDC) of one order in the trades that name
    it: as the taker (`taker_order_id`), or among a trade's `maker_orders`. A trade that
    failed on chain bought nothing, and each trade counts once however often it is listed."""
    taken = taken_usd = made = made_usd = Decimal(0)
    seen: set[str] = set()
    for t in trades:
        tid = str(t.get("id", ""))
        if tid in seen or str(t.get("status", "")).upper().removeprefix("TRADE_STATUS_") == "FAILED":
            continue
        seen.add(tid)
        if t.get("taker_order_id") == order_id and str(t.get("trader_side", "TAKER")).upper() == "TAKER":
            size, price = _dec(t.get("size")), _dec(t.get("price"))
            taken, taken_usd = taken + size, taken_usd + size * price
        for m in t.get("maker_orders") or []:
            if isinstance(m, dict) and m.get("order_id") == order_id:
                size, price = _dec(m.get("matched_amount")), _dec(m.get("price"))
                made, made_usd = made + size, made_usd + size * price
    return taken, taken_usd, made, made_usd


def _dec(v: Any) -> Decimal:
    try:
        d = Decimal(str(v))
    except (InvalidOperation, ValueError):
        return Decimal(0)
    return d if d.is_finite() and d > 0 else Decimal(0)

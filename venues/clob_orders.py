"""This account's orders as the CLOB tells of them, from the two listings it has: its open
orders (`GET /data/orders`: resting ones only, a filled FOK is not there) and its trades
(`GET /data/trades`: every fill, as taker or as maker). What the sweep after a takeover or a
Redis failover compares with the intents in Redis (kernel/adopt.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from kernel.venue import AccountOrder


def _dec(v: Any) -> Decimal:
    try:
        return Decimal(str(v))
    except (InvalidOperation, ValueError):
        return Decimal(0)


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


class _Fills:
    """An order's fills, summed exactly (the trades' sizes and prices are decimal strings)."""

    def __init__(self, market: str, token_id: str, side: str) -> None:
        self.market, self.token_id, self.side = market, token_id, side
        self.size = Decimal(0)
        self.cost = Decimal(0)
        self.first_s = 0

    def add(self, size: Decimal, price: Decimal, at_s: int) -> None:
        self.size += size
        self.cost += size * price
        self.first_s = at_s if not self.first_s else min(self.first_s, at_s)


def _failed(trade: dict[str, Any]) -> bool:
    """A match that failed on chain (status FAILED, or TRADE_STATUS_FAILED as the API's
    reference spells statuses): it bought nothing."""
    return str(trade.get("status", "")).upper().removeprefix("TRADE_STATUS_") == "FAILED"


def _ours(row: dict[str, Any], owner: str, address: str) -> bool:
    return bool(owner and row.get("owner") == owner) or (
        bool(address) and str(row.get("maker_address", "")).lower() == address
    )


def account_orders(
    trades: Iterable[dict[str, Any]],
    open_orders: Iterable[dict[str, Any]],
    owner: str,
    address: str,
    markets: Iterable[str] = (),
) -> list[AccountOrder]:
    """Every order of this account (its API key `owner`, or its maker `address`) in `markets`
    (condition ids; empty: every market) that the two listings show: the open ones as listed,
    the others from their fills. A trade names our order as its taker (`taker_order_id`, the
    listing holds only our trades) or among its `maker_orders`."""
    wanted = set(markets)
    address = address.lower()
    fills: dict[str, _Fills] = {}
    for t in trades:
        market = str(t.get("market", ""))
        if (wanted and market not in wanted) or _failed(t):
            continue
        at_s = _int(t.get("match_time"))
        if str(t.get("trader_side", "")).upper() == "MAKER":
            for m in t.get("maker_orders") or []:
                if not isinstance(m, dict) or not _ours(m, owner, address) or not m.get("order_id"):
                    continue
                side = str(m.get("side") or t.get("side", "")).upper()
                f = fills.setdefault(str(m["order_id"]), _Fills(market, str(m.get("asset_id", "")), side))
                f.add(_dec(m.get("matched_amount")), _dec(m.get("price")), at_s)
        elif t.get("taker_order_id"):
            f = fills.setdefault(
                str(t["taker_order_id"]),
                _Fills(market, str(t.get("asset_id", "")), str(t.get("side", "")).upper()),
            )
            f.add(_dec(t.get("size")), _dec(t.get("price")), at_s)
    out: dict[str, AccountOrder] = {}
    for o in open_orders:
        market = str(o.get("market", ""))
        if (wanted and market not in wanted) or not o.get("id") or not _ours(o, owner, address):
            continue
        oid = str(o["id"])
        got = fills.get(oid)
        matched = max(_dec(o.get("size_matched")), got.size if got else Decimal(0))
        out[oid] = AccountOrder(
            order_id=oid,
            market=market,
            token_id=str(o.get("asset_id", "")),
            side=str(o.get("side", "")).upper(),
            status=str(o.get("status", "live")).lower().removeprefix("order_status_"),
            size_matched=float(matched),
            original_size=float(_dec(o.get("original_size"))),
            price=float(_dec(o.get("price"))),
            avg_price=float(got.cost / got.size) if got and got.size > 0 else 0.0,
            created_s=_int(o.get("created_at")),
        )
    for oid, f in fills.items():
        if oid in out or f.size <= 0:
            continue
        # Known from its fills alone: no longer open, so matched in full or the rest killed
        # or canceled; either way what it bought is what its trades say.
        avg = f.cost / f.size
        out[oid] = AccountOrder(
            order_id=oid,
            market=f.market,
            token_id=f.token_id,
            side=f.side,
            status="matched",
            size_matched=float(f.size),
            original_size=float(f.size),
            price=float(avg),
            avg_price=float(avg),
            created_s=f.first_s,
        )
    return sorted(out.values(), key=lambda a: (a.created_s, a.order_id))

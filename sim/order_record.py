"""One order the sim's exchange accepted, and the rows the CLOB shows of it: the order itself
(the live API's OpenOrder) and its trades (the live API's Trade), as taker when it matched on
arrival, as maker when it matched later while resting.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from sim.book import TICKS_PER_UNIT, tick_str
from sim.markets import Window
from venues.clob_results import GTD_THRESHOLD_S

MICRO = 1_000_000


def micro_str(micro: int | Fraction) -> str:
    """A decimal string of a micro-unit amount, without trailing zeros ("5.3", "10")."""
    q = round(Fraction(micro))
    whole, frac = divmod(q, MICRO)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


@dataclass
class SimOrder:
    id: str
    window: Window
    token_id: str
    side: str
    price_tick: int
    original_micro: int
    order_type: str
    owner: str
    maker: str
    created_s: int
    matched_micro: int = 0
    status: str = "LIVE"
    trade_ids: list[str] = field(default_factory=list)
    response: dict[str, Any] = field(default_factory=dict)
    # When the sim accepted it, on its wall clock in ms: `created_at` is whole seconds (as the
    # CLOB's), too coarse to tell an order from the lease change a second around it.
    received_ms: int = 0
    # A GTD order's expiration (unix seconds; 0 for the other types).
    expiration_s: int = 0
    # The last second whose book a resting order has been matched against (sim/resting.py).
    checked_s: int = 0

    def live_until_s(self) -> int:
        """The first second it no longer rests: its market's end, or for a GTD order its
        expiration less the venue's security threshold, whichever comes first."""
        end_s = self.window.end_s
        if self.order_type == "GTD":
            end_s = min(end_s, self.expiration_s - GTD_THRESHOLD_S)
        return end_s

    def resting(self, now_s: int) -> bool:
        return self.status == "LIVE" and now_s < self.live_until_s()

    def reserved(self) -> int:
        """What this resting order may still take from its maker: micro-USDC for a BUY,
        micro-shares for a SELL."""
        left = self.original_micro - self.matched_micro
        if self.side == "BUY":
            return -(-left * self.price_tick // TICKS_PER_UNIT)  # rounded up
        return left

    def record(self, now_s: int) -> dict[str, Any]:
        status = self.status
        if status == "LIVE" and not self.resting(now_s):
            # Dead with its market (the API's ORDER_STATUS_CANCELED_MARKET_RESOLVED), or a
            # GTD order past its time (cancelled by the venue: the API has no "expired").
            status = "CANCELED_MARKET_RESOLVED" if now_s >= self.window.end_s else "CANCELED"
        # Field names and types as the live API's OpenOrder (py-clob-client-v2's README;
        # Polymarket's rs-clob-client-v2 OpenOrderResponse): sizes and prices as decimal
        # strings, created_at an integer of seconds, expiration a string of seconds.
        return {
            "id": self.id,
            "status": status,
            "owner": self.owner,
            "maker_address": self.maker,
            "market": self.window.condition_id,
            "asset_id": self.token_id,
            "side": self.side,
            "original_size": micro_str(self.original_micro),
            "size_matched": micro_str(self.matched_micro),
            "price": tick_str(self.price_tick),
            "outcome": self.window.outcome_of(self.token_id),
            "expiration": str(self.expiration_s),
            "order_type": self.order_type,
            "created_at": self.created_s,
            "associate_trades": list(self.trade_ids),
            "received_ms": self.received_ms,  # the sim's own field (docs/sim.md)
        }


def trade(
    order: SimOrder, i: int, tick: int, micro: int, now_ms: int, fee_bps: int, maker: bool
) -> dict[str, Any]:
    """The i-th trade of an order: (trade id, the live API's Trade row). As taker, the order is
    the trade's `taker_order_id`; as maker (it rested, an anonymous taker crossed it), the trade
    is the taker's and lists the order among its `maker_orders`, as the live API shows a maker
    its trades. Either way the row carries the order's owner and address, so that the owner's
    listing (GET /data/trades with L2 headers) finds it."""
    tid = hashlib.sha256(f"{order.id}:trade:{i}".encode()).hexdigest()
    tx = "0x" + hashlib.sha256(f"{order.id}:tx:{i}".encode()).hexdigest()
    outcome = order.window.outcome_of(order.token_id)
    # Field names and types as the live API's Trade (py-clob-client-v2's README; the Trade of
    # Polymarket's clob-client-v2 types): amounts as decimal strings, times as strings of
    # seconds, bucket_index an integer.
    row: dict[str, Any] = {
        "id": tid,
        "taker_order_id": order.id,
        "market": order.window.condition_id,
        "asset_id": order.token_id,
        "side": order.side,
        "size": micro_str(micro),
        "fee_rate_bps": str(fee_bps),
        "price": tick_str(tick),
        "status": "CONFIRMED",
        "match_time": str(now_ms // 1000),
        "last_update": str(now_ms // 1000),
        "outcome": outcome,
        "bucket_index": 0,
        "owner": order.owner,
        "maker_address": order.maker,
        "transaction_hash": tx,
        "trader_side": "TAKER",
        "maker_orders": [],
    }
    if maker:
        row["taker_order_id"] = "0x" + hashlib.sha256(f"{order.id}:taker:{i}".encode()).hexdigest()
        row["side"] = "SELL" if order.side == "BUY" else "BUY"  # the taker's side
        row["trader_side"] = "MAKER"
        row["fee_rate_bps"] = "0"  # makers pay no fee
        row["maker_orders"] = [
            {
                "order_id": order.id,
                "owner": order.owner,
                "maker_address": order.maker,
                "matched_amount": micro_str(micro),
                "price": tick_str(tick),
                "fee_rate_bps": "0",
                "asset_id": order.token_id,
                "outcome": outcome,
                "side": order.side,
            }
        ]
    return row

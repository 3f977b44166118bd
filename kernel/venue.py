"""What the kernel needs of a venue: the `Venue` protocol and the structs of its answers.

The adapters live in venues/ (venues/polymarket.py: the Polymarket CLOB with Gamma discovery;
venues/stub.py: an in-memory stand-in); the worker builds one and hands it to the kernel. All
calls block: the kernel makes them through threads.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from state.structs import Market

# The status of an order signed and not posted (live dry-run mode, BATON_DRY_RUN).
DRY_RUN = "dry_run"


class Book(msgspec.Struct, frozen=True):
    """One token's book, best level first: asks ascending, bids descending (price, size)."""

    token_id: str
    asks: list[tuple[float, float]]
    bids: list[tuple[float, float]]

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None


class OrderResult(msgspec.Struct, frozen=True):
    """What the venue says of an order. `price` is the limit price; `avg_price` the average
    fill price when the venue reported one (0.0 otherwise); `fee_usd` the fee it charged on
    what matched (0.0 when none or not told)."""

    order_id: str
    status: str  # "matched" | "live" | "canceled" | "delayed" | "unmatched" | "rejected"
    size_matched: float
    price: float
    error: str = ""
    avg_price: float = 0.0
    fee_usd: float = 0.0


class SignedOrder(msgspec.Struct, frozen=True):
    """A signed order, not yet posted. `order_id` is the id the venue will know it by, so an
    intent can record it first; posting the same SignedOrder again never fills twice.
    `side` is "BUY" or "SELL"; `expires_s` when a GTD order stops resting (0: none; the
    adapter writes it in the venue's own terms: venues/clob_results.py GTD_THRESHOLD_S)."""

    order_id: str
    token_id: str
    price: float
    size: float
    order: dict[str, Any]
    side: str = "BUY"
    expires_s: int = 0


# The name from before sells existed.
SignedBuy = SignedOrder


class AccountOrder(msgspec.Struct, frozen=True):
    """One order of this account as the venue knows it (`Venue.account_orders`): resting now,
    or traded. `status` is lower-cased ("live", "matched", "canceled", ...); `price` is the
    limit price, or the average fill price when only the order's trades tell of it (an order
    that is no longer open is known from its trades alone: GET /data/orders lists open
    orders only); `created_s` is 0 when the venue did not say."""

    order_id: str
    market: str  # the condition id
    token_id: str
    side: str  # "BUY" | "SELL"
    status: str
    size_matched: float
    original_size: float
    price: float
    avg_price: float = 0.0
    created_s: int = 0


class Venue(Protocol):
    """What the kernel needs of a venue (venues/polymarket.py's ClobVenue); all calls block."""

    def discover(self, slug: str) -> Market | None: ...

    def books(self, token_ids: list[str]) -> dict[str, Book]: ...

    def sign_buy(self, token_id: str, price: float, size: float) -> SignedOrder: ...

    # side "BUY" or "SELL" (size in shares either way); expires_s: when a GTD order stops
    # resting (unix seconds; the adapter encodes the venue's security threshold).
    def sign(
        self, side: str, token_id: str, price: float, size: float, expires_s: int = 0
    ) -> SignedOrder: ...

    # Cancel a resting order (GTC/GTD): True when the venue cancelled it, False when it was
    # not resting any more (filled, expired, unknown).
    def cancel(self, order_id: str) -> bool: ...

    # `timeout_s` (the time left before the lease deadline): done or abandoned within it, no
    # retry started after it, and an abandoned post never reaches the venue later.
    def post(
        self, signed: SignedOrder, order_type: str = "FOK", timeout_s: float | None = None
    ) -> OrderResult: ...

    def order(self, order_id: str) -> OrderResult | None: ...

    def resolution(self, condition_id: str) -> bool | None: ...

    def account_orders(self, markets: list[str], since_s: int) -> list[AccountOrder]: ...

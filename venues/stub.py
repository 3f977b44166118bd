"""An in-memory venue: the kernel's `Venue` protocol answered at once, in this process, with
no HTTP and no signing, for fast tests and benchmarks (as dramatiq's `StubBroker` stands in
for a broker). The real adapter is venues/polymarket.py.

    venue = StubVenue()                  # every market exists, every order fills at its price
    venue = StubVenue(entry_rate=0.2)    # cheap asks only now and then: entries spread out
"""

from __future__ import annotations

import hashlib
import math
import threading
import zlib
from typing import Any

from kernel.clock import wall_ms
from kernel.venue import AccountOrder, Book, OrderResult, SignedBuy
from state.structs import Market

ASK = 0.05  # both sides: snipe enters every slot at its first tick in the entry zone
NO_EDGE_ASK = 0.97  # above snipe's max_price (0.95): no entry (entry_rate below 1)


def _digits(text: str) -> str:
    """A Polymarket-sized token id (a 77-digit decimal) derived from `text`."""
    return str(int(hashlib.sha256(text.encode()).hexdigest(), 16))


class StubVenue:
    """What the kernel asks of a venue (kernel.venue.Venue), answered at once and in process:
    every market exists, every order fills at its price, and every book has `ask` on both
    sides, except that with `entry_rate` below 1 a slot's market offers that cheap ask at a
    given second only with that probability (and an ask above snipe's max_price otherwise):
    entries then spread over the entry zone instead of all landing on its first tick. The
    draw is a hash of the token and the second (of `now_s`: the wall clock unless given, a
    virtual one in bench/entry_burst.py), so a rerun sees the same books."""

    def __init__(self, ask: float = ASK, entry_rate: float = 1.0, now_s: Any = None) -> None:
        self.ask = ask
        self._now_s = now_s or (lambda: wall_ms() // 1000)
        # Per token: a market (two tokens) offers an edge with probability entry_rate.
        self._token_rate = 1.0 - math.sqrt(max(0.0, 1.0 - entry_rate))
        self.calls = {"discover": 0, "books": 0, "sign": 0, "post": 0, "account_orders": 0}
        self._lock = threading.Lock()
        self._n = 0
        # What a venue remembers: every order posted (its id, at most once), and each token's
        # market (from discovery), so that `order` and `account_orders` tell of them.
        self.posted: dict[str, tuple[SignedBuy, OrderResult, int]] = {}
        self._market_of: dict[str, str] = {}
        # Raised by `account_orders` while set: a test's venue that cannot be asked.
        self.account_orders_error: Exception | None = None

    def discover(self, slug: str) -> Market | None:
        self.calls["discover"] += 1
        m = Market(
            slug=slug,
            condition_id="0x" + hashlib.sha256(slug.encode()).hexdigest(),
            up_token=_digits(slug + ":up"),
            down_token=_digits(slug + ":down"),
        )
        self._market_of[m.up_token] = self._market_of[m.down_token] = m.condition_id
        return m

    def books(self, token_ids: list[str]) -> dict[str, Book]:
        self.calls["books"] += 1
        second = self._now_s()
        return {t: self._book(t, self._ask(t, second)) for t in token_ids}

    def _ask(self, token_id: str, second: int) -> float:
        if self._token_rate >= 1.0:
            return self.ask
        draw = zlib.crc32(f"{token_id}:{second}".encode()) / 2**32
        return self.ask if draw < self._token_rate else NO_EDGE_ASK

    @staticmethod
    def _book(token_id: str, ask: float) -> Book:
        return Book(token_id, asks=[(ask, 1000.0)], bids=[(round(ask - 0.01, 2), 1000.0)])

    def sign_buy(self, token_id: str, price: float, size: float) -> SignedBuy:
        return self.sign("BUY", token_id, price, size)

    def sign(self, side: str, token_id: str, price: float, size: float, expires_s: int = 0) -> SignedBuy:
        with self._lock:
            self._n += 1
            n = self._n
            self.calls["sign"] += 1
        oid = "0x" + hashlib.sha256(f"{token_id}:{n}".encode()).hexdigest()
        return SignedBuy(
            order_id=oid, token_id=token_id, price=price, size=size, order={}, side=side, expires_s=expires_s
        )

    def cancel(self, order_id: str) -> bool:
        return False  # every order fills or dies at once here: nothing rests

    def post(
        self,
        signed: SignedBuy,
        order_type: str = "FOK",
        timeout_s: float | None = None,
    ) -> OrderResult:
        with self._lock:
            self.calls["post"] += 1
            known = self.posted.get(signed.order_id)
            if known is not None:
                return known[1]  # a repost is answered as the first post, never filled twice
            res = OrderResult(
                order_id=signed.order_id,
                status="matched",
                size_matched=signed.size,
                price=signed.price,
                avg_price=signed.price,
            )
            self.posted[signed.order_id] = (signed, res, self._now_s())
        return res

    def order(self, order_id: str) -> OrderResult | None:
        known = self.posted.get(order_id)
        return known[1] if known is not None else None

    def account_orders(self, markets: list[str], since_s: int) -> list[AccountOrder]:
        with self._lock:
            self.calls["account_orders"] += 1
            if self.account_orders_error is not None:
                raise self.account_orders_error
            posted = list(self.posted.values())
        wanted = set(markets)
        out = []
        for signed, res, at_s in posted:
            market = self._market_of.get(signed.token_id, "")
            if at_s < since_s or (wanted and market not in wanted):
                continue
            out.append(
                AccountOrder(
                    order_id=signed.order_id,
                    market=market,
                    token_id=signed.token_id,
                    side="BUY",
                    status=res.status,
                    size_matched=res.size_matched,
                    original_size=signed.size,
                    price=signed.price,
                    avg_price=res.avg_price,
                    created_s=at_s,
                )
            )
        return out

    def resolution(self, condition_id: str) -> bool | None:
        return True

    def cancel_all(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass

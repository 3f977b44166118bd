"""An in-memory venue: the kernel's `Venue` protocol answered at once, in this process, with
no HTTP and no signing, for fast tests and benchmarks (as dramatiq's `StubBroker` stands in
for a broker). The real adapter is venues/polymarket.py; the sim (sim/) is the honest book.

    venue = StubVenue()                  # every market exists, every order fills at its price
    venue = StubVenue(entry_rate=0.2)    # cheap asks only now and then: entries spread out
    venue = StubVenue(depth=20.0)        # takers find 20 shares: FOK beyond is killed, FAK partial

Taker orders (FOK, FAK) fill at their limit price, up to `depth` shares (unlimited unless
given); a SELL only of shares the stub sold you (less what resting sells hold back), refused
otherwise with the CLOB's message. Resting orders (GTC, GTD) fill at once only when their
price crosses the stub's quote (a BUY at or above the ask, a SELL at or below the bid);
otherwise they rest until the quote moves to cross them (a test sets `ask`/`bid`, seen on
the next `order()`), their GTD expiry `expires_s` comes (a GTD whose expiry has passed is
refused: "invalid expiration"), or `cancel()`. Messages and statuses are the ones
venues/polymarket.py makes of the real CLOB's answers.
"""

from __future__ import annotations

import hashlib
import math
import threading
import zlib
from typing import Any

import msgspec

from kernel.clock import wall_ms
from kernel.venue import AccountOrder, Book, OrderResult, SignedOrder
from state.structs import Market
from venues.clob_results import (
    FAK_KILLED,
    FOK_KILLED,
    INVALID_EXPIRATION,
    NOT_ENOUGH_BALANCE,
    check_order,
    check_post,
    taker_fee_usd,
)

ASK = 0.05  # both sides: snipe enters every slot at its first tick in the entry zone
NO_EDGE_ASK = 0.97  # above snipe's max_price (0.95): no entry (entry_rate below 1)
_EPS = 1e-9


def _digits(text: str) -> str:
    """A Polymarket-sized token id (a 77-digit decimal) derived from `text`."""
    return str(int(hashlib.sha256(text.encode()).hexdigest(), 16))


class _Order:
    """One accepted order: its terms, what the venue says of it now, and when it came."""

    __slots__ = ("at_s", "first", "order_type", "result", "signed")

    def __init__(self, signed: SignedOrder, order_type: str, result: OrderResult, at_s: int) -> None:
        self.signed, self.order_type, self.result, self.at_s = signed, order_type, result, at_s
        self.first = result  # what a repost of the same signed order is answered with

    @property
    def resting(self) -> bool:
        return self.result.status == "live"


class StubVenue:
    """What the kernel asks of a venue (kernel.venue.Venue), answered at once and in process:
    every market exists, and every book has `ask` on both sides (and `bid`, a cent below
    unless set), except that with `entry_rate` below 1 a slot's market offers that cheap ask
    at a given second only with that probability (and an ask above snipe's max_price
    otherwise): entries then spread over the entry zone instead of all landing on its first
    tick. The draw is a hash of the token and the second (of `now_s`: the wall clock unless
    given, a virtual one in bench/entry_burst.py), so a rerun sees the same books.
    `fee_rate`: the taker fee's rate (exponent 1: shares * rate * p * (1 - p)), 0 by default."""

    def __init__(
        self,
        ask: float = ASK,
        entry_rate: float = 1.0,
        now_s: Any = None,
        *,
        bid: float | None = None,
        depth: float | None = None,
        fee_rate: float = 0.0,
    ) -> None:
        self.ask = ask
        self.bid = bid
        self.depth = depth
        self.fee_rate = fee_rate
        self._now_s = now_s or (lambda: wall_ms() // 1000)
        # Per token: a market (two tokens) offers an edge with probability entry_rate.
        self._token_rate = 1.0 - math.sqrt(max(0.0, 1.0 - entry_rate))
        self.calls = {
            "discover": 0, "books": 0, "sign": 0, "post": 0, "order": 0, "cancel": 0, "account_orders": 0,
        }  # fmt: skip
        self._lock = threading.Lock()
        self._n = 0
        # What a venue remembers: every order accepted (its id, at most once), each token's
        # market (from discovery), and the shares this account holds of each token.
        self._orders: dict[str, _Order] = {}
        self._refused: dict[str, OrderResult] = {}
        self._market_of: dict[str, str] = {}
        self.held: dict[str, float] = {}
        # Raised by `account_orders` while set: a test's venue that cannot be asked.
        self.account_orders_error: Exception | None = None

    @property
    def posted(self) -> dict[str, tuple[SignedOrder, OrderResult, int]]:
        """Every order accepted: id -> (signed order, what the venue says of it now, second)."""
        with self._lock:
            return {oid: (o.signed, o.result, o.at_s) for oid, o in self._orders.items()}

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

    def _bid(self, ask: float) -> float:
        return self.bid if self.bid is not None else round(ask - 0.01, 2)

    def _book(self, token_id: str, ask: float) -> Book:
        return Book(token_id, asks=[(ask, 1000.0)], bids=[(self._bid(ask), 1000.0)])

    def sign_buy(self, token_id: str, price: float, size: float) -> SignedOrder:
        return self.sign("BUY", token_id, price, size)

    def sign(self, side: str, token_id: str, price: float, size: float, expires_s: int = 0) -> SignedOrder:
        check_order(side, price, size, expires_s)
        with self._lock:
            self._n += 1
            n = self._n
            self.calls["sign"] += 1
        oid = "0x" + hashlib.sha256(f"{token_id}:{n}".encode()).hexdigest()
        return SignedOrder(
            order_id=oid, token_id=token_id, price=price, size=size, order={}, side=side, expires_s=expires_s
        )

    def post(
        self,
        signed: SignedOrder,
        order_type: str = "FOK",
        timeout_s: float | None = None,
    ) -> OrderResult:
        check_post(signed, order_type)
        with self._lock:
            self.calls["post"] += 1
            known = self._orders.get(signed.order_id)
            if known is not None:
                return known.first  # a repost is answered as the first post, never filled twice
            refused = self._refused.get(signed.order_id)
            if refused is not None:
                return refused
            now_s = self._now_s()
            res = self._accept(signed, order_type, now_s)
            if res.status == "rejected":
                self._refused[signed.order_id] = res
            else:
                self._orders[signed.order_id] = _Order(signed, order_type, res, now_s)
        return res

    def _sellable(self, token_id: str) -> float:
        held = self.held.get(token_id, 0.0)
        reserved = sum(
            o.signed.size - o.result.size_matched
            for o in self._orders.values()
            if o.resting and o.signed.side == "SELL" and o.signed.token_id == token_id
        )
        return held - reserved

    def _accept(self, s: SignedOrder, order_type: str, now_s: int) -> OrderResult:
        def refuse(why: str) -> OrderResult:
            return OrderResult(s.order_id, "rejected", 0.0, s.price, why)

        if s.side == "SELL":
            have = self._sellable(s.token_id)
            if s.size > have + _EPS:
                balance, amount = max(round(have * 1e6), 0), round(s.size * 1e6)
                why = f"the balance is not enough -> balance: {balance}, order amount: {amount}"
                return refuse(f"{NOT_ENOUGH_BALANCE}: {why}")
        if order_type == "GTD" and s.expires_s < now_s:
            return refuse(INVALID_EXPIRATION)
        if order_type in ("GTC", "GTD"):
            if not self._crosses(s, now_s):
                return OrderResult(s.order_id, "live", 0.0, s.price)
            return self._fill(s, s.size, taker=True)
        shares = s.size if self.depth is None else min(s.size, self.depth)
        if order_type == "FOK" and shares < s.size - _EPS:
            return refuse(FOK_KILLED)
        if shares <= 0:
            return refuse(FAK_KILLED)
        return self._fill(s, shares, taker=True)

    def _crosses(self, s: SignedOrder, now_s: int) -> bool:
        ask = self._ask(s.token_id, now_s)
        return s.price >= ask - _EPS if s.side == "BUY" else s.price <= self._bid(ask) + _EPS

    def _fill(self, s: SignedOrder, shares: float, taker: bool, matched_before: float = 0.0) -> OrderResult:
        # Fills at the order's own price; the shares move into (or out of) the account.
        sign = 1.0 if s.side == "BUY" else -1.0
        self.held[s.token_id] = round(self.held.get(s.token_id, 0.0) + sign * shares, 6)
        fee = taker_fee_usd(shares, s.price, self.fee_rate, 1.0) if taker else 0.0
        return OrderResult(
            order_id=s.order_id,
            status="matched",
            size_matched=round(matched_before + shares, 6),
            price=s.price,
            avg_price=s.price,
            fee_usd=fee,
        )

    def _advance(self, o: _Order, now_s: int) -> None:
        """A resting order as time and the quote have moved: filled (as the maker: no fee)
        once the quote crosses it, cancelled once its GTD expiry has passed."""
        if not o.resting:
            return
        s = o.signed
        if o.order_type == "GTD" and now_s >= s.expires_s:
            o.result = msgspec.structs.replace(o.result, status="canceled", error="expired")
        elif self._crosses(s, now_s):
            left = s.size - o.result.size_matched
            o.result = self._fill(s, left, taker=False, matched_before=o.result.size_matched)

    def order(self, order_id: str) -> OrderResult | None:
        with self._lock:
            self.calls["order"] += 1
            o = self._orders.get(order_id)
            if o is None:
                return None
            self._advance(o, self._now_s())
            return o.result

    def cancel(self, order_id: str) -> bool:
        """True when the order was resting and is cancelled now; False otherwise."""
        with self._lock:
            self.calls["cancel"] += 1
            o = self._orders.get(order_id)
            if o is None:
                return False
            self._advance(o, self._now_s())
            if not o.resting:
                return False
            o.result = msgspec.structs.replace(o.result, status="canceled")
            return True

    def account_orders(self, markets: list[str], since_s: int) -> list[AccountOrder]:
        with self._lock:
            self.calls["account_orders"] += 1
            if self.account_orders_error is not None:
                raise self.account_orders_error
            orders = list(self._orders.values())
        wanted = set(markets)
        out = []
        for o in orders:
            signed, res, at_s = o.signed, o.result, o.at_s
            market = self._market_of.get(signed.token_id, "")
            if at_s < since_s or (wanted and market not in wanted):
                continue
            out.append(
                AccountOrder(
                    order_id=signed.order_id,
                    market=market,
                    token_id=signed.token_id,
                    side=signed.side,
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
        with self._lock:
            ids = [oid for oid, o in self._orders.items() if o.resting]
        return {"canceled": [oid for oid in ids if self.cancel(oid)], "not_canceled": {}}

    def close(self) -> None:
        pass

"""The sim's exchange: signed V2 orders in, fills against the maker's book, every order kept.

An order's id is the EIP-712 hash of the signed order, computed with py-clob-client-v2's own
order builder, so the id a client computes before posting is the id the sim answers with;
posting the same signed order again returns the first answer and never fills twice.
The maker's book is regenerated from the model on every match (fills do not deplete it).
Fills move collateral and positions in sim.accounts; an order its maker cannot pay for
(counting what resting orders reserve) is refused with the live venue's message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import msgspec
from eth_account import Account
from eth_account.messages import encode_typed_data
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.constants import BYTES32_ZERO
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderV2, Side, SignatureTypeV2

from baton.errors import Rejected
from sim.accounts import NOT_ENOUGH, Accounts
from sim.book import TICKS_PER_UNIT, BookParams, book, tick_str
from sim.fees import NO_FEE, Fee
from sim.markets import MIN_ORDER_SIZE, TICK_SIZE, Catalogue, Window, iso
from sim.model import PriceModel

MICRO = 1_000_000
FOK_KILLED = "order couldn't be fully filled. FOK orders are fully filled or killed."
FAK_KILLED = (
    "no orders found to match with FAK order. FAK orders are partially filled or killed if no match is found."
)


class WireOrder(msgspec.Struct, kw_only=True):
    salt: int
    maker: str
    signer: str
    tokenId: str
    makerAmount: str
    takerAmount: str
    side: Literal["BUY", "SELL"]
    expiration: str = "0"
    signatureType: int = 0
    timestamp: str
    metadata: str = BYTES32_ZERO
    builder: str = BYTES32_ZERO
    signature: str


class PostOrderBody(msgspec.Struct, kw_only=True):
    order: WireOrder
    owner: str = ""
    orderType: Literal["GTC", "FOK", "GTD", "FAK"] = "GTC"
    deferExec: bool = False
    postOnly: bool = False


_BODY = msgspec.json.Decoder(PostOrderBody)


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

    def resting(self, now_s: int) -> bool:
        # Resting orders die with their market.
        return self.status == "LIVE" and now_s < self.window.end_s

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
            status = "CANCELED"
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
            "expiration": "0",
            "order_type": self.order_type,
            "created_at": self.created_s,
            "associate_trades": list(self.trade_ids),
            "received_ms": self.received_ms,  # the sim's own field (docs/sim.md)
        }


def micro_str(micro: int | Fraction) -> str:
    """A decimal string of a micro-unit amount, without trailing zeros ("5.3", "10")."""
    q = round(Fraction(micro))
    whole, frac = divmod(q, MICRO)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


class Exchange:
    def __init__(
        self,
        model: PriceModel,
        catalogue: Catalogue,
        params: BookParams,
        seed: int,
        chain_id: int,
        clock_ms: Callable[[], int],
        accounts: Accounts,
        fees: Callable[[Window], Fee] = lambda w: NO_FEE,
    ) -> None:
        self.model = model
        self.catalogue = catalogue
        self.params = params
        self.seed = seed
        self.clock_ms = clock_ms
        # The sim's markets are not neg-risk, so orders are signed for the V2 exchange.
        self._hasher = ExchangeOrderBuilderV2(
            get_contract_config(chain_id).exchange_v2, chain_id, signer=None
        )
        self.accounts = accounts
        self.fees = fees
        self.orders: dict[str, SimOrder] = {}
        self.trades: dict[str, dict[str, Any]] = {}
        # Resting orders by maker address (lowercase), for balance reservations.
        self._resting: dict[str, dict[str, SimOrder]] = {}
        # Killed orders (never accepted), kept so that a repost gets the same answer.
        self._killed: dict[str, str] = {}

    def book(self, w: Window, token_id: str) -> tuple[list, list]:
        return book(self.model, w, token_id, self.clock_ms(), self.params, self.seed)

    def order_hash(self, o: WireOrder) -> tuple[str, dict[str, Any]]:
        v2 = OrderV2(
            salt=str(o.salt),
            maker=o.maker,
            signer=o.signer,
            tokenId=o.tokenId,
            makerAmount=o.makerAmount,
            takerAmount=o.takerAmount,
            side=Side.BUY if o.side == "BUY" else Side.SELL,
            signatureType=SignatureTypeV2(o.signatureType),
            timestamp=o.timestamp,
            metadata=o.metadata,
            builder=o.builder,
            expiration=o.expiration,
        )
        typed = self._hasher.build_order_typed_data(v2)
        return self._hasher.build_order_hash(typed), typed

    def post(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one POST /order body: (HTTP status, JSON answer). Never raises."""
        try:
            body = _BODY.decode(raw)
        except msgspec.DecodeError as e:
            return 400, {"error": f"invalid order payload: {e}"}
        try:
            oid, typed = self.order_hash(body.order)
        except (ValueError, TypeError, OverflowError) as e:
            return 400, {"error": f"invalid order payload: cannot hash the order: {e}"}
        known = self.orders.get(oid)
        if known is not None:
            return 200, known.response
        if oid in self._killed:
            return 400, _rejection(self._killed[oid])
        try:
            return 200, self._accept(oid, body, typed)
        except Rejected as e:
            if body.orderType in ("FOK", "FAK"):
                self._killed[oid] = str(e)
            return 400, _rejection(str(e))

    def _accept(self, oid: str, body: PostOrderBody, typed: dict[str, Any]) -> dict[str, Any]:
        o = body.order
        if o.signatureType == SignatureTypeV2.EOA:
            try:
                signer = Account.recover_message(encode_typed_data(full_message=typed), signature=o.signature)
            except Exception as e:  # eth-account raises several types for a bad signature
                raise Rejected(f"invalid signature: {e}") from None
            if signer.lower() != o.signer.lower():
                raise Rejected("invalid signature: it was not made by the order's signer")
        now_ms = self.clock_ms()
        w = self.catalogue.by_token(o.tokenId, now_ms // 1000)
        if w is None:
            raise Rejected(f"invalid order: no market for token id {o.tokenId}")
        if now_ms >= w.end_s * 1000:
            raise Rejected(f"market closed: {w.slug} ended at {iso(w.end_s)}")
        try:
            maker_amt, taker_amt = int(o.makerAmount), int(o.takerAmount)
        except ValueError:
            raise Rejected("invalid order: makerAmount and takerAmount must be integers") from None
        if maker_amt <= 0 or taker_amt <= 0:
            raise Rejected("invalid order: makerAmount and takerAmount must be positive")
        buy = o.side == "BUY"
        shares, usdc = (taker_amt, maker_amt) if buy else (maker_amt, taker_amt)
        exact = Fraction(usdc * TICKS_PER_UNIT, shares)
        tick = round(exact)
        # The client rounds amounts to 4-6 decimals; allow that, not an off-tick price.
        # Messages begin with the live CLOB's own texts, which clients match on.
        price = float(exact) / TICKS_PER_UNIT
        if abs(exact - tick) > Fraction(1, 1000):
            raise Rejected(f"Price ({price}) breaks minimum tick size rule: {TICK_SIZE:g}")
        if not 1 <= tick < TICKS_PER_UNIT:
            raise Rejected(f"invalid price ({price}), min: {TICK_SIZE:g} - max: {1 - TICK_SIZE:g}")
        if shares < MIN_ORDER_SIZE * MICRO:
            raise Rejected(
                f"Size lower than the minimum: {MIN_ORDER_SIZE:g} (order size {micro_str(shares)})"
            )
        self._check_funds(o.maker, o.tokenId, buy, maker_amt, now_ms // 1000)
        bids, asks = self.book(w, o.tokenId)
        crossing = [(t, s) for t, s in (asks if buy else bids) if (t <= tick if buy else t >= tick)]
        if body.postOnly and crossing:
            raise Rejected("invalid post-only order: order crosses book")
        fills: list[tuple[int, int]] = []
        left = shares
        for t, size in crossing:
            take = min(left, int(size * MICRO))
            fills.append((t, take))
            left -= take
            if left == 0:
                break
        if body.orderType == "FOK" and left > 0:
            raise Rejected(FOK_KILLED)
        if body.orderType == "FAK" and not fills:
            raise Rejected(FAK_KILLED)
        order = SimOrder(
            id=oid,
            window=w,
            token_id=o.tokenId,
            side=o.side,
            price_tick=tick,
            original_micro=shares,
            order_type=body.orderType,
            owner=body.owner,
            maker=o.maker,
            created_s=now_ms // 1000,
            received_ms=now_ms,
        )
        filled = sum(f for _, f in fills)
        cost = sum(Fraction(f * t, TICKS_PER_UNIT) for t, f in fills)
        order.matched_micro = filled
        if filled == shares:
            order.status = "MATCHED"
        elif body.orderType in ("FOK", "FAK"):
            order.status = "CANCELED"  # the unfilled rest of a FAK is killed
        else:
            self._resting.setdefault(o.maker.lower(), {})[oid] = order
        if filled and buy:
            self.accounts.buy(o.maker, w, o.tokenId, filled, round(cost))
        elif filled:
            self.accounts.sell(o.maker, o.tokenId, filled, round(cost))
        hashes = [self._trade(order, i, t, f, now_ms) for i, (t, f) in enumerate(fills)]
        taking, making = (filled, cost) if buy else (cost, filled)
        order.response = {
            "success": True,
            "errorMsg": "",
            "orderID": oid,
            "takingAmount": micro_str(taking),
            "makingAmount": micro_str(making),
            "status": "matched" if filled else "live",
            "transactionsHashes": hashes,
            "tradeIDs": list(order.trade_ids),
        }
        self.orders[oid] = order
        return order.response

    def reserved(self, maker: str, now_s: int, side: str, token_id: str = "") -> int:
        """What the maker's resting orders on this side (and token, for SELL) hold back."""
        resting = self._resting.get(maker.lower(), {})
        for oid in [k for k, o in resting.items() if not o.resting(now_s)]:
            del resting[oid]
        return sum(
            o.reserved()
            for o in resting.values()
            if o.side == side and (side == "BUY" or o.token_id == token_id)
        )

    def available(self, maker: str, now_s: int, token_id: str = "") -> int:
        """Spendable collateral (no token) or sellable shares of a token, in micro-units."""
        if not token_id:
            return self.accounts.cash(maker, now_s) - self.reserved(maker, now_s, "BUY")
        held = self.accounts.shares(maker, token_id, now_s)
        return held - self.reserved(maker, now_s, "SELL", token_id)

    def _check_funds(self, maker: str, token_id: str, buy: bool, amount: int, now_s: int) -> None:
        # The live venue checks the order's whole maker amount (USDC for a BUY, shares for a
        # SELL) against what is not already reserved by the maker's resting orders.
        have = self.available(maker, now_s, "" if buy else token_id)
        if amount > have:
            raise Rejected(
                f"{NOT_ENOUGH}: the balance is not enough -> balance: {max(have, 0)}, order amount: {amount}"
            )

    def cancel(self, oid: str) -> str:
        """Cancel a resting order: "" when done, else why not (the live not_canceled reason)."""
        order = self.orders.get(oid)
        now_s = self.clock_ms() // 1000
        if order is None:
            return "order not found"
        if not order.resting(now_s):
            status = order.record(now_s)["status"]
            return f"order is {status.lower()}: it can no longer be canceled"
        order.status = "CANCELED"
        self._resting.get(order.maker.lower(), {}).pop(oid, None)
        return ""

    def resting_ids(self, maker: str, market: str = "", asset_id: str = "") -> list[str]:
        now_s = self.clock_ms() // 1000
        return [
            o.id
            for o in self._resting.get(maker.lower(), {}).values()
            if o.resting(now_s)
            and (not market or o.window.condition_id == market)
            and (not asset_id or o.token_id == asset_id)
        ]

    def _trade(self, order: SimOrder, i: int, tick: int, micro: int, now_ms: int) -> str:
        tid = hashlib.sha256(f"{order.id}:trade:{i}".encode()).hexdigest()
        tx = "0x" + hashlib.sha256(f"{order.id}:tx:{i}".encode()).hexdigest()
        order.trade_ids.append(tid)
        # Field names and types as the live API's Trade (py-clob-client-v2's README; the
        # Trade of Polymarket's clob-client-v2 types): amounts as decimal strings, times as
        # strings of seconds, bucket_index an integer. The sim's maker is anonymous, so
        # maker_orders is empty.
        self.trades[tid] = {
            "id": tid,
            "taker_order_id": order.id,
            "market": order.window.condition_id,
            "asset_id": order.token_id,
            "side": order.side,
            "size": micro_str(micro),
            "fee_rate_bps": str(self.fees(order.window).base_fee),
            "price": tick_str(tick),
            "status": "CONFIRMED",
            "match_time": str(now_ms // 1000),
            "last_update": str(now_ms // 1000),
            "outcome": order.window.outcome_of(order.token_id),
            "bucket_index": 0,
            "owner": order.owner,
            "maker_address": order.maker,
            "transaction_hash": tx,
            "trader_side": "TAKER",
            "maker_orders": [],
        }
        return tx


def _rejection(message: str) -> dict[str, Any]:
    # The live CLOB refuses an order with HTTP 400 and only {"error": message} (the
    # ClobErrorResponseBody of Polymarket's clob-client-v2; e.g. {"error": "not enough
    # balance / allowance"} in many public issue reports).
    return {"error": message}

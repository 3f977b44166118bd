"""The sim's exchange: signed V2 orders in, fills against the maker's book, every order kept.

An order's id is the EIP-712 hash of the signed order, computed with py-clob-client-v2's own
order builder, so the id a client computes before posting is the id the sim answers with;
posting the same signed order again returns the first answer and never fills twice.
The maker's book is regenerated from the model on every match (fills do not deplete it).
Fills move collateral and positions in sim.accounts; an order its maker cannot pay for, or
a SELL of more shares than it holds (counting what resting orders reserve), is refused with
the live venue's message. What matches on arrival took liquidity and pays the market's
published taker fee (sim/fees.py); what rests (GTC, GTD) matches later as the book moves
(sim/resting.py), as the maker, without a fee. The order rows are sim/order_record.py's.
"""

from __future__ import annotations

from collections.abc import Callable
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
from sim.book import TICKS_PER_UNIT, BookParams, book
from sim.fees import NO_FEE, Fee
from sim.markets import MIN_ORDER_SIZE, TICK_SIZE, Catalogue, Window, iso
from sim.model import PriceModel
from sim.order_record import MICRO, SimOrder, micro_str, trade
from sim.resting import Resting
from venues.clob_results import FAK_KILLED, FOK_KILLED, GTD_THRESHOLD_S, INVALID_EXPIRATION, taker_fee_usd
from venues.http import VERSION_MISMATCH

__all__ = ["FAK_KILLED", "FOK_KILLED", "MICRO", "Exchange", "SimOrder", "micro_str"]


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
        # Resting orders: what they reserve of their makers' funds, and their later matches.
        self.resting = Resting(
            accounts, lambda o, at_ms: book(model, o.window, o.token_id, at_ms, params, seed)
        )
        # Killed orders (never accepted), kept so that a repost gets the same answer.
        self._killed: dict[str, str] = {}

    def book(self, w: Window, token_id: str) -> tuple[list, list]:
        return book(self.model, w, token_id, self.clock_ms(), self.params, self.seed)

    def sweep(self) -> None:
        """Match the resting orders against the books since they were last matched (run
        before every request: sim/clob.py)."""
        self.resting.sweep(self.clock_ms(), self.trades)

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
            if _version_1(raw):
                return 400, {"error": VERSION_MISMATCH}
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
        expiration_s = self._expiration(o, body.orderType, now_ms // 1000)
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
            expiration_s=expiration_s,
        )
        filled = sum(f for _, f in fills)
        cost = sum((Fraction(f * t, TICKS_PER_UNIT) for t, f in fills), Fraction(0))
        order.matched_micro = filled
        if filled == shares:
            order.status = "MATCHED"
        elif body.orderType in ("FOK", "FAK"):
            order.status = "CANCELED"  # the unfilled rest of a FAK is killed
        else:
            self.resting.add(order, now_ms // 1000)
        fee = self._taker_fee(w, filled, cost)
        if filled and buy:
            self.accounts.buy(o.maker, w, o.tokenId, filled, round(cost) + fee)
        elif filled:
            self.accounts.sell(o.maker, o.tokenId, filled, round(cost) - fee)
        hashes = [self._trade(order, t, f, now_ms) for t, f in fills]
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

    def _expiration(self, o: WireOrder, order_type: str, now_s: int) -> int:
        """A GTD order's expiration (unix seconds), refused with the venue's message unless it
        is at least the security threshold ahead; other types rest (or not) without one."""
        if order_type != "GTD":
            return 0
        try:
            expiration_s = int(o.expiration)
        except ValueError:
            raise Rejected(f"{INVALID_EXPIRATION}: {o.expiration!r} is not a number of seconds") from None
        if expiration_s < now_s + GTD_THRESHOLD_S:
            raise Rejected(
                f"{INVALID_EXPIRATION}: {expiration_s} is less than {GTD_THRESHOLD_S} s after now ({now_s})"
            )
        return expiration_s

    def _taker_fee(self, w: Window, filled: int, cost: Fraction) -> int:
        """The taker fee (micro-USDC) of what an order took on arrival: the market's published
        schedule at the order's average price (venues/clob_results.py, which the client
        reports from the same schedule)."""
        fee = self.fees(w)
        if filled <= 0 or fee.rate <= 0:
            return 0
        usd = taker_fee_usd(filled / MICRO, float(cost / filled), fee.rate, fee.exponent)
        return round(usd * MICRO)

    def reserved(self, maker: str, now_s: int, side: str, token_id: str = "") -> int:
        """What the maker's resting orders on this side (and token, for SELL) hold back."""
        return self.resting.reserved(maker, now_s, side, token_id)

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
        self.resting.drop(order)
        return ""

    def resting_ids(self, maker: str, market: str = "", asset_id: str = "") -> list[str]:
        return self.resting.ids(maker, self.clock_ms() // 1000, market, asset_id)

    def _trade(self, order: SimOrder, tick: int, micro: int, now_ms: int) -> str:
        fee_bps = self.fees(order.window).base_fee
        row = trade(order, len(order.trade_ids), tick, micro, now_ms, fee_bps, maker=False)
        order.trade_ids.append(row["id"])
        self.trades[row["id"]] = row
        return str(row["transaction_hash"])


# A version 1 order's fields that version 2 dropped (V2 added timestamp, metadata, builder):
# the shape of the orders py-clob-client-v2 signs when /version says 1 (order_to_json_v1).
_V1_ONLY = frozenset({"taker", "nonce", "feeRateBps"})
_JSON = msgspec.json.Decoder()


def _version_1(raw: bytes) -> bool:
    """True for a body whose order has version 1's shape: the live CLOB (V2 since 2026-04-28)
    refuses it with HTTP 400 {"error": "order_version_mismatch"}, the text py-clob-client-v2
    watches for (constants.ORDER_VERSION_MISMATCH_ERROR) to re-read GET /version."""
    try:
        order = _JSON.decode(raw).get("order")
    except (msgspec.DecodeError, AttributeError):
        return False
    return isinstance(order, dict) and "timestamp" not in order and bool(_V1_ONLY & order.keys())


def _rejection(message: str) -> dict[str, Any]:
    # The live CLOB refuses an order with HTTP 400 and only {"error": message} (the
    # ClobErrorResponseBody of Polymarket's clob-client-v2; e.g. {"error": "not enough
    # balance / allowance"} in many public issue reports).
    return {"error": message}

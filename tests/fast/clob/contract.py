"""The CLOB contract: the live API's shapes, and the calls the tests make through the real
py-clob-client-v2 against the sim's CLOB over a real socket.

Every call the live path makes goes through the client package itself (no wrapper of ours),
and every answer is held to the live API's field names and types. The expected key sets come
from Polymarket's own clients, cited at each one:
  [TS]  Polymarket/clob-client-v2 src/types/clob.ts (OpenOrder, Trade, OrderResponse, ...)
  [RS]  Polymarket/rs-clob-client-v2 src/clob/types/response.rs (serde structs of each answer)
  [PY]  py-clob-client-v2 itself: clob_types.py dataclasses and what client.py reads
  [LIVE] a live GET /clob-markets answer recorded in a public client's tests (2026-10-02)
Where the sim still differs from the live API, docs/sim.md says so and why. The fixtures (a
sim per test module, a client of it, faults cleared after each test) are in conftest.py.
"""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import OrderBookSummary
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, Side
from py_clob_client_v2.signer import Signer

from baton.settings import SIM_PRIVATE_KEY
from tests.simserver import Clock

SEED = 23
CHAIN_ID = 137
PAGE_LIMIT = 3  # small, so that listings span several pages
# The second Hardhat/Anvil dev account: a separate sim account for the balance tests.
SECOND_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"

# -- the live shapes ---------------------------------------------------------------------------

API_KEY_KEYS = {"apiKey", "secret", "passphrase"}  # [TS] ApiKeyRaw
BOOK_KEYS = {f.name for f in dataclasses.fields(OrderBookSummary)}  # [PY] OrderBookSummary
LEVEL_KEYS = {"price", "size"}  # [TS] OrderSummary
# [RS] MarketResponse (every field is required there, so a live answer carries them all).
MARKET_KEYS = {
    "enable_order_book", "active", "closed", "archived", "accepting_orders",
    "accepting_order_timestamp", "minimum_order_size", "minimum_tick_size", "condition_id",
    "question_id", "question", "description", "market_slug", "end_date_iso", "game_start_time",
    "seconds_delay", "fpmm", "maker_base_fee", "taker_base_fee", "notifications_enabled",
    "neg_risk", "neg_risk_market_id", "neg_risk_request_id", "icon", "image", "rewards",
    "is_50_50_outcome", "tokens", "tags",
}  # fmt: skip
MARKET_TOKEN_KEYS = {"token_id", "outcome", "price", "winner"}  # [RS] Token
REWARDS_KEYS = {"rates", "min_size", "max_spread"}  # [RS] Rewards
# [RS] ClobMarketInfoResponse documents c, t, mts, mos, nr, fd, mbf, tbf, rfqe; [LIVE] also
# carries the rest (all but "v", whose meaning no client documents).
CLOB_MARKET_DOCUMENTED = {"c", "t", "mts", "mos", "nr", "fd", "mbf", "tbf", "rfqe"}
CLOB_MARKET_KEYS = CLOB_MARKET_DOCUMENTED | {"gst", "r", "itode", "ao", "cbos", "aot", "sd", "ibce", "oas"}
FEE_DETAILS_KEYS = {"r", "e", "to"}  # [TS] FeeDetails, [RS] FeeDetails
MARKET_BY_TOKEN_KEYS = {"condition_id", "primary_token_id", "secondary_token_id"}  # [RS]
# [TS] OrderResponse, plus tradeIDs ([RS] PostOrderResponse; [PY] post_order reads it).
POST_ORDER_KEYS = {
    "success", "errorMsg", "orderID", "takingAmount", "makingAmount", "status",
    "transactionsHashes", "tradeIDs",
}  # fmt: skip
# [TS] OpenOrder / [RS] OpenOrderResponse: created_at a number of seconds, expiration a string.
OPEN_ORDER_TYPES: dict[str, Any] = {
    "id": str, "status": str, "owner": str, "maker_address": str, "market": str,
    "asset_id": str, "side": str, "original_size": Decimal, "size_matched": Decimal,
    "price": Decimal, "associate_trades": list, "outcome": str, "created_at": int,
    "expiration": str, "order_type": str,
}  # fmt: skip
# [TS] Trade / [RS] TradeResponse: times are strings of seconds, bucket_index a number.
TRADE_TYPES: dict[str, Any] = {
    "id": str, "taker_order_id": str, "market": str, "asset_id": str, "side": str,
    "size": Decimal, "fee_rate_bps": Decimal, "price": Decimal, "status": str,
    "match_time": str, "last_update": str, "outcome": str, "bucket_index": int, "owner": str,
    "maker_address": str, "maker_orders": list, "transaction_hash": str, "trader_side": str,
}  # fmt: skip
PAGE_KEYS = {"data", "next_cursor", "limit", "count"}  # [TS] PaginationPayload, [RS] Page
CANCEL_KEYS = {"canceled", "not_canceled"}  # [RS] CancelOrdersResponse
BALANCE_KEYS = {"balance", "allowances"}  # [RS] BalanceAllowanceResponse


def check(obj: dict[str, Any], types: dict[str, Any]) -> None:
    """Exactly these keys, each of its type; Decimal means a decimal number in a string."""
    assert set(obj) == set(types), f"keys differ: {set(obj) ^ set(types)}"
    for key, t in types.items():
        if t is Decimal:
            assert isinstance(obj[key], str) and Decimal(obj[key]) >= 0, (key, obj[key])
        elif t is int:
            assert isinstance(obj[key], int) and not isinstance(obj[key], bool), (key, obj[key])
        else:
            assert isinstance(obj[key], t), (key, obj[key])


def new_client(url: str, key: str = SIM_PRIVATE_KEY) -> ClobClient:
    # A fresh client has empty caches, so each call really goes to the sim.
    c = ClobClient(url, chain_id=CHAIN_ID, key=key)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


def market(http: httpx.Client, clock: Clock, asset: str = "btc", tf: str = "5m") -> dict[str, Any]:
    """Discover (Gamma) a window that started 100 s ago: tokens and condition id."""
    [event] = http.get("/events", params={"slug": f"{asset}-updown-{tf}-{clock.ms // 1000 - 100}"}).json()
    m = event["markets"][0]
    up, down = json.loads(m["clobTokenIds"])
    return {"cid": m["conditionId"], "up": up, "down": down, "gamma": m}


def resting_token(c: ClobClient, m: dict[str, Any]) -> str:
    # A BUY at 0.01 rests unless the best ask is at 0.01 already: pick the dearer side.
    asks = [c.get_order_book(t)["asks"] for t in (m["up"], m["down"])]
    return m["up"] if float(asks[0][-1]["price"]) >= float(asks[1][-1]["price"]) else m["down"]


def signed(key: str, token: str, maker_amount: int, taker_amount: int):
    """A BUY signed with raw amounts, for what the client itself would refuse to build."""
    builder = ExchangeOrderBuilderV2(
        get_contract_config(CHAIN_ID).exchange_v2, CHAIN_ID, Signer(key, CHAIN_ID)
    )
    address = Signer(key, CHAIN_ID).address()
    data = OrderDataV2(
        maker=address,
        signer=address,
        tokenId=token,
        makerAmount=str(maker_amount),
        takerAmount=str(taker_amount),
        side=Side.BUY,
    )
    return builder.build_signed_order(data)


def order_id(order) -> str:
    hasher = ExchangeOrderBuilderV2(get_contract_config(CHAIN_ID).exchange_v2, CHAIN_ID, signer=None)
    return hasher.build_order_hash(hasher.build_order_typed_data(order))


def rejected(call) -> PolyApiException:
    with pytest.raises(PolyApiException) as info:
        call()
    return info.value

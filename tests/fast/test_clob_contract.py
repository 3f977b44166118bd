"""Contract test: the real py-clob-client-v2 against the sim's CLOB, over a real socket.

Every call the live path makes goes through the client package itself (no wrapper of ours),
and every answer is held to the live API's field names and types. The expected key sets come
from Polymarket's own clients, cited at each one:
  [TS]  Polymarket/clob-client-v2 src/types/clob.ts (OpenOrder, Trade, OrderResponse, ...)
  [RS]  Polymarket/rs-clob-client-v2 src/clob/types/response.rs (serde structs of each answer)
  [PY]  py-clob-client-v2 itself: clob_types.py dataclasses and what client.py reads
  [LIVE] a live GET /clob-markets answer recorded in a public client's tests (2026-10-02)
Where the sim still differs from the live API, docs/sim.md says so and why.

The last part injects faults (sim/faults.py) into the running sim and watches the client fail
the way it would against a slow or flaky venue.
"""

from __future__ import annotations

import dataclasses
import json
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import (
    AssetType,
    BalanceAllowanceParams,
    BookParams,
    OpenOrderParams,
    OrderArgsV2,
    OrderBookSummary,
    OrderPayload,
    TradeParams,
)
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, Side
from py_clob_client_v2.signer import Signer

from baton.errors import SettingsError
from baton.settings import SIM_PRIVATE_KEY
from sim import binance as sim_binance
from sim.accounts import MICRO, balance_from_env
from sim.clob import ClobSim, create_app
from sim.faults import Faults
from sim.fees import fees_from_env
from sim.markets import MIN_ORDER_SIZE, TICK_SIZE
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer

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


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env():
    clock = Clock()
    s = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID, clock_ms=clock, page_limit=PAGE_LIMIT)
    with ThreadServer(create_app(s)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield url, http, s, clock


def new_client(url: str, key: str = SIM_PRIVATE_KEY) -> ClobClient:
    # A fresh client has empty caches, so each call really goes to the sim.
    c = ClobClient(url, chain_id=CHAIN_ID, key=key)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


@pytest.fixture(scope="module")
def client(env):
    return new_client(env[0])


@pytest.fixture(autouse=True)
def no_faults(env):
    yield
    env[1].delete("/_sim/faults")


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


# -- server, keys, market parameters ---------------------------------------------------------


def test_server_answers_ok_time_and_version(env, client):
    clock = env[3]
    assert client.get_ok() == "OK"
    t = client.get_server_time()
    assert isinstance(t, int) and t == clock.ms // 1000
    assert client.get_version() == 2


def test_api_keys_come_in_the_live_shape(env, client):
    url, http, _, _ = env
    raw = http.get("/auth/derive-api-key", headers=client._l1_headers()).json()
    assert set(raw) == API_KEY_KEYS and all(isinstance(v, str) and v for v in raw.values())
    assert new_client(url).creds == client.creds  # create_or_derive is deterministic


def test_tick_size_neg_risk_and_fee_rate(env):
    url, http, _, clock = env
    five, fifteen = market(http, clock, "eth", "5m"), market(http, clock, "eth", "15m")
    c = new_client(url)
    assert c.get_tick_size(five["up"]) == "0.01"
    assert c.get_neg_risk(five["up"]) is False
    # [RS] FeeRateResponse {base_fee: u32}; 1000 marks a market with taker fees.
    assert c.get_fee_rate_bps(five["up"]) == 0
    assert c.get_fee_rate_bps(fifteen["up"]) == 1000
    # The V2 fee parameters come from /markets-by-token + /clob-markets.
    assert c.get_fee_exponent(fifteen["down"]) == 1
    raw = http.get("/fee-rate", params={"token_id": fifteen["up"]}).json()
    assert raw == {"base_fee": 1000}
    raw = http.get("/tick-size", params={"token_id": five["up"]}).json()
    assert set(raw) == {"minimum_tick_size"} and raw["minimum_tick_size"] == TICK_SIZE
    assert http.get("/neg-risk", params={"token_id": five["up"]}).json() == {"neg_risk": False}


def test_clob_market_info_in_the_short_key_shape(env, client):
    _, http, _, clock = env
    m = market(http, clock, "sol", "15m")
    info = client.get_clob_market_info(m["cid"])
    assert set(info) == CLOB_MARKET_KEYS and set(info) >= CLOB_MARKET_DOCUMENTED
    assert info["c"] == m["cid"] and info["t"] == [{"t": m["up"], "o": "Up"}, {"t": m["down"], "o": "Down"}]
    assert isinstance(info["mts"], float) and isinstance(info["mos"], int | float) and info["nr"] is False
    assert set(info["fd"]) == FEE_DETAILS_KEYS and info["fd"]["to"] is True
    assert (info["fd"]["r"], info["tbf"]) == (0.072, 1000)
    assert info["ao"] is True and isinstance(info["sd"], int) and isinstance(info["rfqe"], bool)
    five = client.get_clob_market_info(market(http, clock, "sol", "5m")["cid"])
    assert (five["fd"]["r"], five["tbf"]) == (0, 0)


def test_market_and_market_by_token_in_the_live_shape(env, client):
    _, http, _, clock = env
    m = market(http, clock, "xrp")
    full = client.get_market(m["cid"])
    assert set(full) == MARKET_KEYS
    assert set(full["rewards"]) == REWARDS_KEYS
    assert [set(t) for t in full["tokens"]] == [MARKET_TOKEN_KEYS] * 2
    assert [t["token_id"] for t in full["tokens"]] == [m["up"], m["down"]]
    assert full["condition_id"] == m["cid"] and full["closed"] is False
    by_token = http.get(f"/markets-by-token/{m['down']}").json()
    assert by_token == {
        "condition_id": m["cid"],
        "primary_token_id": m["up"],
        "secondary_token_id": m["down"],
    }
    assert set(by_token) == MARKET_BY_TOKEN_KEYS


def test_tick_and_minimum_size_agree_everywhere(env, client):
    # The runtime reads these from the CLOB; every place that publishes them must agree
    # with each other and with the matching (sim.markets constants).
    _, http, _, clock = env
    m = market(http, clock, "doge", "15m")
    book = client.get_order_book(m["up"])
    info = client.get_clob_market_info(m["cid"])
    full = client.get_market(m["cid"])
    ticks = {
        Decimal(client.get_tick_size(m["up"])),
        Decimal(book["tick_size"]),
        Decimal(str(info["mts"])),
        Decimal(str(full["minimum_tick_size"])),
        Decimal(str(m["gamma"]["orderPriceMinTickSize"])),
    }
    sizes = {
        Decimal(book["min_order_size"]),
        Decimal(str(info["mos"])),
        Decimal(str(full["minimum_order_size"])),
        Decimal(str(m["gamma"]["orderMinSize"])),
    }
    assert ticks == {Decimal(str(TICK_SIZE))} and sizes == {Decimal(str(MIN_ORDER_SIZE))}


# -- books -----------------------------------------------------------------------------------------


def test_order_book_and_books_in_the_live_shape(env, client):
    _, http, _, clock = env
    m = market(http, clock, "bnb")
    book = client.get_order_book(m["up"])
    assert set(book) == BOOK_KEYS
    for key in ("market", "asset_id", "timestamp", "min_order_size", "tick_size", "last_trade_price", "hash"):
        assert isinstance(book[key], str), key
    assert isinstance(book["neg_risk"], bool) and book["timestamp"].isdigit()
    for level in book["bids"] + book["asks"]:
        assert set(level) == LEVEL_KEYS and Decimal(level["price"]) > 0 and Decimal(level["size"]) > 0
    # The client's own server-compatible hash agrees with the sim's.
    assert client.get_order_book_hash(book) == book["hash"]
    books = client.get_order_books([BookParams(token_id=m["up"]), BookParams(token_id=m["down"])])
    assert [b["asset_id"] for b in books] == [m["up"], m["down"]]
    assert all(set(b) == BOOK_KEYS for b in books)


# -- orders ----------------------------------------------------------------------------------------


def test_fok_fills_and_the_order_and_its_trades_read_back(env, client):
    _, http, _, clock = env
    m = market(http, clock, "link")
    order = client.create_order(OrderArgsV2(token_id=m["up"], price=0.99, size=5, side="BUY"))
    r = client.post_order(order, "FOK")
    assert set(r) == POST_ORDER_KEYS
    assert r["success"] is True and r["errorMsg"] == "" and r["status"] == "matched"
    assert r["orderID"] == order_id(order)  # the id is the signed order's EIP-712 hash
    assert r["takingAmount"] == "5" and 0 < Decimal(r["makingAmount"]) <= Decimal("4.95")
    assert len(r["tradeIDs"]) == len(r["transactionsHashes"]) >= 1
    got = client.get_order(r["orderID"])
    check(got, OPEN_ORDER_TYPES)
    assert (got["status"], got["size_matched"], got["original_size"]) == ("MATCHED", "5", "5")
    assert (got["side"], got["order_type"], got["outcome"], got["asset_id"]) == ("BUY", "FOK", "Up", m["up"])
    assert got["associate_trades"] == r["tradeIDs"] and got["market"] == m["cid"]
    assert got["maker_address"] == client.get_address() and got["owner"] == client.creds.api_key
    trades = client.get_trades(TradeParams(market=m["cid"]))
    assert {t["id"] for t in trades} == set(r["tradeIDs"])
    for t in trades:
        check(t, TRADE_TYPES)
        assert t["taker_order_id"] == r["orderID"] and t["trader_side"] == "TAKER"
        assert t["transaction_hash"] in r["transactionsHashes"]
    assert sum(Decimal(t["size"]) for t in trades) == 5
    assert client.get_trades(TradeParams(id=r["tradeIDs"][0]))[0]["id"] == r["tradeIDs"][0]
    # Reposting the same signed order is idempotent: the same answer, no second fill.
    assert client.post_order(order, "FOK") == r
    assert len(client.get_trades(TradeParams(market=m["cid"]))) == len(trades)


def test_fak_fills_part_and_kills_the_rest(env, client):
    _, http, _, clock = env
    m = market(http, clock, "hype")
    r = client.post_order(client.create_order(OrderArgsV2(m["down"], 0.99, 100_000, "BUY")), "FAK")
    assert set(r) == POST_ORDER_KEYS and r["status"] == "matched"
    assert 0 < Decimal(r["takingAmount"]) < 100_000
    got = client.get_order(r["orderID"])
    check(got, OPEN_ORDER_TYPES)
    assert got["status"] == "CANCELED" and got["size_matched"] == r["takingAmount"]
    assert got["original_size"] == "100000" and got["order_type"] == "FAK"


def test_gtc_rests_until_canceled(env, client):
    _, http, _, clock = env
    m = market(http, clock, "eth")
    token = resting_token(client, m)
    r = client.post_order(client.create_order(OrderArgsV2(token, 0.01, 10, "BUY")), "GTC")
    assert set(r) == POST_ORDER_KEYS and r["status"] == "live" and r["takingAmount"] == "0"
    assert r["tradeIDs"] == [] and r["transactionsHashes"] == []
    got = client.get_order(r["orderID"])
    assert (got["status"], got["size_matched"], got["price"]) == ("LIVE", "0", "0.01")
    listed = client.get_open_orders(OpenOrderParams(id=r["orderID"]))
    assert [o["id"] for o in listed] == [r["orderID"]]
    canceled = client.cancel_order(OrderPayload(orderID=r["orderID"]))
    assert set(canceled) == CANCEL_KEYS and canceled == {"canceled": [r["orderID"]], "not_canceled": {}}
    assert client.get_order(r["orderID"])["status"] == "CANCELED"
    again = client.cancel_order(OrderPayload(orderID=r["orderID"]))
    assert again["canceled"] == [] and r["orderID"] in again["not_canceled"]
    # The batch cancels answer in the same shape.
    r2 = client.post_order(client.create_order(OrderArgsV2(token, 0.01, 11, "BUY")), "GTC")
    assert client.cancel_orders([r2["orderID"], "0xnope"]) == {
        "canceled": [r2["orderID"]],
        "not_canceled": {"0xnope": "order not found"},
    }
    r3 = client.post_order(client.create_order(OrderArgsV2(token, 0.01, 12, "BUY")), "GTC")
    assert client.cancel_all()["canceled"] == [r3["orderID"]]


def test_off_tick_price_is_refused_with_the_venues_message(env, client):
    _, http, _, clock = env
    m = market(http, clock, "btc")
    # 0.5555 a share: the client would round it, so the amounts are signed by hand.
    e = rejected(lambda: client.post_order(signed(SIM_PRIVATE_KEY, m["up"], 5_555_000, 10_000_000), "GTC"))
    assert e.status_code == 400
    assert e.error_msg == {"error": "Price (0.5555) breaks minimum tick size rule: 0.01"}


def test_too_small_an_order_is_refused_with_the_venues_message(env, client):
    _, http, _, clock = env
    m = market(http, clock, "btc")
    e = rejected(lambda: client.post_order(client.create_order(OrderArgsV2(m["up"], 0.5, 4, "BUY")), "GTC"))
    assert e.status_code == 400 and set(e.error_msg) == {"error"}
    assert e.error_msg["error"].startswith("Size lower than the minimum: 5")


def test_a_fok_that_cannot_fill_is_killed_with_the_venues_message(env, client):
    _, http, _, clock = env
    m = market(http, clock, "sol")
    e = rejected(
        lambda: client.post_order(client.create_order(OrderArgsV2(m["up"], 0.99, 100_000, "BUY")), "FOK")
    )
    assert e.status_code == 400
    assert e.error_msg == {"error": "order couldn't be fully filled. FOK orders are fully filled or killed."}


def test_orders_and_trades_paginate_across_pages(env, client):
    _, http, _, clock = env
    m = market(http, clock, "doge")
    for size in (5, 6, 7, 8):
        client.post_order(client.create_order(OrderArgsV2(m["up"], 0.99, size, "BUY")), "FOK")
    first = http.get("/data/orders").json()
    assert set(first) == PAGE_KEYS and first["limit"] == PAGE_LIMIT == first["count"] == len(first["data"])
    assert first["next_cursor"] not in ("", "LTE=")
    assert len(client.get_open_orders(only_first_page=True)) == PAGE_LIMIT
    everything = client.get_open_orders()  # the client walks every page
    ids = [o["id"] for o in everything]
    assert len(ids) > PAGE_LIMIT and len(ids) == len(set(ids))
    walked, cursor = [], "MA=="
    while cursor != "LTE=":
        page = http.get("/data/orders", params={"next_cursor": cursor}).json()
        walked += [o["id"] for o in page["data"]]
        cursor = page["next_cursor"]
    assert walked == ids
    mine = client.get_open_orders(OpenOrderParams(market=m["cid"]))
    assert len(mine) == 4 and all(o["market"] == m["cid"] for o in mine)
    for o in mine:
        check(o, OPEN_ORDER_TYPES)
    trades = client.get_trades()
    assert len(trades) > PAGE_LIMIT and len({t["id"] for t in trades}) == len(trades)
    page = client.get_trades_paginated(TradeParams(market=m["cid"]))
    assert set(page) == {"trades", "next_cursor", "limit", "count"} and page["limit"] == PAGE_LIMIT


# -- balance ----------------------------------------------------------------------------------------


@pytest.fixture
def small_account():
    """A sim of its own whose accounts start with 10 USDC, and a client for a second key."""
    clock = Clock()
    s = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID, clock_ms=clock, balance_micro=10 * MICRO)
    with ThreadServer(create_app(s)) as url, httpx.Client(base_url=url, timeout=10) as http:
        yield url, http, s, clock, new_client(url, SECOND_KEY)


def collateral(c: ClobClient) -> int:
    r = c.get_balance_allowance(BalanceAllowanceParams(asset_type=AssetType.COLLATERAL))
    assert set(r) == BALANCE_KEYS and isinstance(r["balance"], str) and r["balance"].isdigit()
    assert r["allowances"] and all(
        a.startswith("0x") and len(a) == 42 and v.isdigit() for a, v in r["allowances"].items()
    )
    return int(r["balance"])


def test_balance_allowance_and_insufficient_balance(small_account):
    _, http, s, clock, c = small_account
    m = market(http, clock, "eth")
    token = resting_token(c, m)
    assert collateral(c) == 10 * MICRO
    # A resting order reserves what it may cost; the next one must fit beside it.
    first = c.post_order(c.create_order(OrderArgsV2(token, 0.01, 600, "BUY")), "GTC")
    assert first["status"] == "live"
    second = c.create_order(OrderArgsV2(token, 0.01, 500, "BUY"))
    e = rejected(lambda: c.post_order(second, "GTC"))
    assert e.status_code == 400 and set(e.error_msg) == {"error"}
    assert e.error_msg["error"].startswith("not enough balance / allowance")
    c.cancel_order(OrderPayload(orderID=first["orderID"]))
    assert c.post_order(second, "GTC")["status"] == "live"  # fits once the first is gone
    c.cancel_all()
    # A fill debits exactly what it cost and credits the shares.
    r = c.post_order(c.create_order(OrderArgsV2(m["up"], 0.99, 5, "BUY")), "FOK")
    cost = round(Decimal(r["makingAmount"]) * MICRO)
    assert collateral(c) == 10 * MICRO - cost
    held = c.get_balance_allowance(BalanceAllowanceParams(AssetType.CONDITIONAL, token_id=m["up"]))
    assert set(held) == BALANCE_KEYS and held["balance"] == str(5 * MICRO)
    e = rejected(lambda: c.post_order(c.create_order(OrderArgsV2(m["down"], 0.99, 20, "BUY")), "FOK"))
    assert e.status_code == 400 and e.error_msg["error"].startswith("not enough balance / allowance")
    # Once the window has ended, a winning position is redeemed at 1 USDC a share.
    w = s.catalogue.by_token(m["up"], clock.ms // 1000)
    clock.ms = (w.end_s + 1) * 1000
    won = s.model.outcome_up(w.asset, w.start_s, w.end_s)
    assert collateral(c) == 10 * MICRO - cost + (5 * MICRO if won else 0)


def test_a_sell_needs_the_shares_and_credits_the_proceeds(small_account):
    _, http, _, clock, c = small_account
    m = market(http, clock, "sol")
    sell = c.create_order(OrderArgsV2(m["up"], 0.01, 5, "SELL"))
    e = rejected(lambda: c.post_order(sell, "FAK"))
    assert e.status_code == 400 and e.error_msg["error"].startswith("not enough balance / allowance")
    bought = c.post_order(c.create_order(OrderArgsV2(m["up"], 0.99, 5, "BUY")), "FOK")
    before = collateral(c)
    sold = c.post_order(c.create_order(OrderArgsV2(m["up"], 0.01, 5, "SELL")), "FAK")
    assert set(sold) == POST_ORDER_KEYS and sold["makingAmount"] == "5"  # shares given
    assert collateral(c) == before + round(Decimal(sold["takingAmount"]) * MICRO)
    assert Decimal(sold["takingAmount"]) < Decimal(bought["makingAmount"])  # bought the ask, sold the bid
    held = c.get_balance_allowance(BalanceAllowanceParams(AssetType.CONDITIONAL, token_id=m["up"]))
    assert held["balance"] == "0"
    assert c.get_order(sold["orderID"])["side"] == "SELL"


def test_balance_needs_l2_headers_and_can_be_set_by_the_admin_endpoint(small_account):
    _, http, _, _, c = small_account
    assert http.get("/balance-allowance").status_code == 401
    r = http.post("/_sim/balance", json={"address": c.get_address(), "usd": 2.5})
    assert r.status_code == 200 and r.json()["balance"] == "2500000"
    assert collateral(c) == 2_500_000
    assert http.post("/_sim/balance", json={"usd": 1}).status_code == 400


# -- fault injection -------------------------------------------------------------------------------


def faults(http: httpx.Client, *rules: dict[str, Any], seed: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"rules": list(rules)}
    if seed is not None:
        body["seed"] = seed
    r = http.post("/_sim/faults", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_injected_latency_delays_the_endpoint(env):
    url, http, _, clock = env
    m = market(http, clock, "btc")
    faults(http, {"method": "GET", "path": "/tick-size", "latency_ms": 300})
    c = new_client(url)
    t0 = time.monotonic()
    assert c.get_tick_size(m["up"]) == "0.01"
    assert time.monotonic() - t0 >= 0.29
    t0 = time.monotonic()
    c.get_neg_risk(m["up"])  # another endpoint: not delayed (generous bound for slow CI)
    assert time.monotonic() - t0 < 5
    assert http.get("/_sim/faults").json()["rules"][0]["matched"] == 1


def test_injected_errors_answer_the_chosen_status_then_stop(env, client):
    _, http, _, clock = env
    m = market(http, clock, "btc")
    faults(http, {"method": "GET", "path": "/book", "error_rate": 1.0, "status": 503, "times": 2})
    for _ in range(2):
        e = rejected(lambda: client.get_order_book(m["up"]))
        assert e.status_code == 503 and "sim fault injected" in e.error_msg["error"]
    assert client.get_order_book(m["up"])["asset_id"] == m["up"]  # the rule is spent
    assert http.get("/_sim/faults").json()["rules"] == []
    faults(http, {"path": "/book", "error_rate": 1, "status": 429, "body": {"error": "Too Many Requests"}})
    e = rejected(lambda: client.get_order_book(m["up"]))
    assert (e.status_code, e.error_msg) == (429, {"error": "Too Many Requests"})


def test_a_dropped_connection_gives_no_answer(env, client):
    _, http, _, clock = env
    m = market(http, clock, "btc")
    faults(http, {"method": "GET", "path": "/book", "drop_rate": 1.0, "times": 1})
    e = rejected(lambda: client.get_order_book(m["up"]))
    assert e.status_code is None  # the client saw no HTTP answer at all
    assert client.get_order_book(m["up"])["asset_id"] == m["up"]


def test_an_order_whose_answer_is_lost_was_placed_once(env, client):
    # phase "after": the venue places the order, then the connection drops. The id computed
    # before posting finds it, and reposting the same signed order does not fill twice.
    _, http, _, clock = env
    m = market(http, clock, "eth")
    order = client.create_order(OrderArgsV2(m["down"], 0.99, 5, "BUY"))
    faults(http, {"method": "POST", "path": "/order", "drop_rate": 1.0, "phase": "after", "times": 1})
    e = rejected(lambda: client.post_order(order, "FOK"))
    assert e.status_code is None
    got = client.get_order(order_id(order))
    assert (got["status"], got["size_matched"]) == ("MATCHED", "5")
    again = client.post_order(order, "FOK")
    assert again["orderID"] == order_id(order) and again["tradeIDs"] == got["associate_trades"]
    assert client.get_order(order_id(order))["size_matched"] == "5"


def test_random_faults_are_seeded(env):
    _, http, _, _ = env

    def pattern() -> list[int]:
        faults(http, {"method": "GET", "path": "/ok", "error_rate": 0.5, "status": 502}, seed=99)
        return [http.get("/ok").status_code for _ in range(40)]

    first = pattern()
    assert set(first) == {200, 502} and pattern() == first


def test_bad_fault_configurations_are_refused_and_change_nothing(env):
    _, http, _, _ = env
    faults(http, {"path": "/ok", "latency_ms": [1, 2]})
    for bad in (
        {"rules": [{"path": "/ok", "error_rate": 2}]},
        {"rules": [{"path": "/ok", "latency_ms": [5, 1]}]},
        {"rules": [{"path": "/ok", "status": 200}]},
        {"rules": [{"path": "/ok", "phase": "during"}]},
        {"rules": [{"path": "/ok", "bogus": 1}]},
        {"rules": [{"method": "GET"}]},
        {"nope": []},
    ):
        r = http.post("/_sim/faults", json=bad)
        assert r.status_code == 400 and "bad fault configuration" in r.json()["error"], bad
    assert http.post("/_sim/faults", content=b"{").status_code == 400
    [rule] = http.get("/_sim/faults").json()["rules"]
    assert rule["latency_ms"] == [1.0, 2.0]
    assert http.delete("/_sim/faults").json()["rules"] == []


def test_binance_rest_takes_the_same_faults():
    sim = sim_binance.BinanceSim(PriceModel(SEED))
    with ThreadServer(sim_binance.create_app(sim)) as url, httpx.Client(base_url=url, timeout=10) as http:
        r = http.post(
            "/_sim/faults",
            json=[
                {"path": "/api/v3/klines", "error_rate": 1, "status": 429, "times": 1},
                {"app": "clob", "path": "/api/v3/ping", "error_rate": 1},  # not this server's
            ],
        )
        assert [rule["path"] for rule in r.json()["rules"]] == ["/api/v3/klines"]
        params = {"symbol": "BTCUSDT", "interval": "1m", "limit": 2}
        r = http.get("/api/v3/klines", params=params)
        assert r.status_code == 429 and set(r.json()) == {"code", "msg"}  # Binance's error shape
        assert http.get("/api/v3/klines", params=params).status_code == 200
        assert http.get("/api/v3/ping").status_code == 200


@pytest.mark.parametrize(
    ("name", "value", "load"),
    [
        ("BATON_SIM_FAULTS", "{not json", lambda env: Faults.from_env(env, "clob", lambda r, s: {}, 0)),
        ("BATON_SIM_FAULTS", '[{"path": "/x", "drop_rate": 0.7, "error_rate": 0.7}]', None),
        ("BATON_SIM_BALANCE_USD", "lots", balance_from_env),
        ("BATON_SIM_BALANCE_USD", "-1", balance_from_env),
        ("BATON_SIM_FEES", '{"15x": {"base_fee": 1}}', fees_from_env),
        ("BATON_SIM_FEES", '{"15m": {"rate": 7}}', fees_from_env),
    ],
)
def test_bad_sim_settings_fail_naming_the_variable(name, value, load):
    load = load or (lambda env: Faults.from_env(env, "clob", lambda r, s: {}, 0))
    with pytest.raises(SettingsError, match=name):
        load({name: value})

"""The CLOB sim's server, keys, market parameters and books through the real client, in the
live API's shapes (tests/fast/clob/contract.py)."""

from __future__ import annotations

from decimal import Decimal

from py_clob_client_v2.clob_types import BookParams

from sim.markets import MIN_ORDER_SIZE, TICK_SIZE
from tests.fast.clob.contract import (
    API_KEY_KEYS,
    BOOK_KEYS,
    CLOB_MARKET_DOCUMENTED,
    CLOB_MARKET_KEYS,
    FEE_DETAILS_KEYS,
    LEVEL_KEYS,
    MARKET_BY_TOKEN_KEYS,
    MARKET_KEYS,
    MARKET_TOKEN_KEYS,
    REWARDS_KEYS,
    market,
    new_client,
)


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

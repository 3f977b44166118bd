"""Orders on the CLOB sim through the real client (tests/fast/clob/contract.py): FOK, FAK and
GTC orders and their trades read back, the venue's refusals word for word, and listings that
span pages."""

from __future__ import annotations

from decimal import Decimal

from py_clob_client_v2.clob_types import OpenOrderParams, OrderArgsV2, OrderPayload, TradeParams

from baton.settings import SIM_PRIVATE_KEY
from tests.fast.clob.contract import (
    CANCEL_KEYS,
    OPEN_ORDER_TYPES,
    PAGE_KEYS,
    PAGE_LIMIT,
    POST_ORDER_KEYS,
    SECOND_KEY,
    TRADE_TYPES,
    check,
    market,
    new_client,
    order_id,
    rejected,
    resting_token,
    signed,
)


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
    walked, cursor = [], "MA=="
    while cursor != "LTE=":
        page = http.get("/data/orders", params={"next_cursor": cursor}).json()
        walked += [o["id"] for o in page["data"]]
        cursor = page["next_cursor"]
    assert len(walked) > PAGE_LIMIT and len(walked) == len(set(walked))
    # The client's listing is the live one: open orders only, so the filled FOKs are not in it.
    assert client.get_open_orders(OpenOrderParams(market=m["cid"])) == []
    token = resting_token(client, m)
    resting = [
        client.post_order(client.create_order(OrderArgsV2(token, 0.01, size, "BUY")), "GTC")["orderID"]
        for size in (5, 6, 7, 8)
    ]
    assert len(client.get_open_orders(OpenOrderParams(market=m["cid"]), only_first_page=True)) == PAGE_LIMIT
    mine = client.get_open_orders(OpenOrderParams(market=m["cid"]))  # the client walks every page
    assert [o["id"] for o in mine] == resting
    for o in mine:
        check(o, OPEN_ORDER_TYPES)
        assert o["status"] == "LIVE"
    trades = client.get_trades()
    assert len(trades) > PAGE_LIMIT and len({t["id"] for t in trades}) == len(trades)
    page = client.get_trades_paginated(TradeParams(market=m["cid"]))
    assert set(page) == {"trades", "next_cursor", "limit", "count"} and page["limit"] == PAGE_LIMIT
    client.cancel_all()
    assert client.get_open_orders(OpenOrderParams(market=m["cid"])) == []


def test_listings_with_credentials_hold_the_callers_orders_and_trades_only(env, client):
    url, http, _, clock = env
    m = market(http, clock, "xrp")
    r = client.post_order(client.create_order(OrderArgsV2(m["up"], 0.99, 5, "BUY")), "FOK")
    other = new_client(url, SECOND_KEY)
    assert other.get_trades(TradeParams(market=m["cid"])) == []
    assert [t["taker_order_id"] for t in client.get_trades(TradeParams(market=m["cid"]))] == [
        r["orderID"]
    ] * len(r["tradeIDs"])
    token = resting_token(client, m)
    mine = client.post_order(client.create_order(OrderArgsV2(token, 0.01, 5, "BUY")), "GTC")["orderID"]
    assert other.get_open_orders(OpenOrderParams(market=m["cid"])) == []
    assert [o["id"] for o in client.get_open_orders(OpenOrderParams(market=m["cid"]))] == [mine]
    # The sim's own listing, without credentials, still holds every order.
    listed = {o["id"] for o in http.get("/data/orders", params={"market": m["cid"]}).json()["data"]}
    assert {r["orderID"], mine} <= listed
    client.cancel_all()

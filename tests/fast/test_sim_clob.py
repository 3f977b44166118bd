"""The sim's CLOB and Gamma endpoints over real HTTP, with the real py-clob-client-v2 signing.

The server runs in a background thread with its own event loop (the client is synchronous)
on a free port; the sim's clock is a settable one, so books and resolutions are exact.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2, OrderDataV2, Side
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

import sim.clob_orders
from baton.settings import SIM_PRIVATE_KEY
from sim.book import BookParams, book, maker_fair_up
from sim.clob import ClobSim, create_app
from sim.markets import condition_id, token_id
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer

SEED = 7
CHAIN_ID = 137


@pytest.fixture(scope="module")
def env():
    clock = Clock()
    model = PriceModel(SEED)
    s = ClobSim(model, seed=SEED, chain_id=CHAIN_ID, clock_ms=clock)
    with ThreadServer(create_app(s)) as url, httpx.Client(base_url=url, timeout=5) as http:
        yield url, http, s, clock


@pytest.fixture(scope="module")
def client(env):
    url = env[0]
    c = ClobClient(url, chain_id=CHAIN_ID, key=SIM_PRIVATE_KEY)
    c.set_api_creds(c.create_or_derive_api_key())
    return c


def live_slug(clock: Clock, asset: str = "btc", tf: str = "5m") -> str:
    # A window that started 100 s ago and has minutes left.
    return f"{asset}-updown-{tf}-{clock.ms // 1000 - 100}"


def discover(http: httpx.Client, slug: str) -> dict:
    [event] = http.get("/events", params={"slug": slug}).json()
    return event["markets"][0]


def test_gamma_event_has_gammas_shape_with_json_encoded_lists(env):
    _, http, _, clock = env
    slug = live_slug(clock, "eth", "15m")
    [event] = http.get("/events", params={"slug": slug}).json()
    assert event["slug"] == slug and event["title"].startswith("Ethereum Up or Down")
    [m] = event["markets"]
    assert m["conditionId"] == condition_id(slug)
    assert json.loads(m["clobTokenIds"]) == [token_id(slug, "Up"), token_id(slug, "Down")]
    assert all(t.isdigit() for t in json.loads(m["clobTokenIds"]))
    assert json.loads(m["outcomes"]) == ["Up", "Down"]
    prices = [float(p) for p in json.loads(m["outcomePrices"])]
    assert sum(prices) == pytest.approx(1.0)
    assert m["orderPriceMinTickSize"] == 0.01 and m["orderMinSize"] == 5
    assert m["active"] is True and m["closed"] is False


@pytest.mark.parametrize(
    "slug", ["", "btc-updown-5m", "btc-updown-5x-1700000000", "no_pe-updown-5m-1700000000", "x"]
)
def test_gamma_answers_an_unknown_or_malformed_slug_with_an_empty_list(env, slug):
    _, http, _, _ = env
    r = http.get("/events", params={"slug": slug})
    assert r.status_code == 200 and r.json() == []


def test_gamma_serves_a_market_of_any_asset_and_listed_timeframe(env):
    """A slot may be added on an asset the sim was not told of: it is a market too."""
    _, http, _, _ = env
    for slug in ("ada-updown-1h-1699999200", "pepe2-updown-4h-1699992000"):
        r = http.get("/events", params={"slug": slug})
        assert r.status_code == 200 and [e["slug"] for e in r.json()] == [slug]


def test_book_quotes_around_the_lagged_fair_value_on_tick(env):
    _, http, s, clock = env
    slug = live_slug(clock)
    m = discover(http, slug)
    up, down = json.loads(m["clobTokenIds"])
    w = s.catalogue.register(slug)
    up_book = http.get("/book", params={"token_id": up}).json()
    assert up_book["market"] == m["conditionId"] and up_book["asset_id"] == up
    assert up_book["tick_size"] == "0.01" and up_book["neg_risk"] is False and up_book["hash"]
    asks = [float(a["price"]) for a in up_book["asks"]]
    bids = [float(b["price"]) for b in up_book["bids"]]
    # As on the real CLOB, the best level is last: asks descending, bids ascending.
    assert asks == sorted(asks, reverse=True) and bids == sorted(bids)
    assert all(round(p * 100) == pytest.approx(p * 100) and 0.01 <= p <= 0.99 for p in asks + bids)
    # Three to five levels, fewer only when the best ask is so close to the 0.99 cap that
    # no more fit (about 1 run in 150 otherwise failed on that).
    fit = round((0.99 - asks[-1]) * 100) + 1
    assert min(3, fit) <= len(asks) <= 5 and all(100 <= float(a["size"]) <= 1000 for a in up_book["asks"])
    assert bids[-1] < asks[-1]
    fair = maker_fair_up(s.model, w, clock.ms, s.params, SEED)
    half = s.params.spread / 2
    assert fair + half - 1e-9 <= asks[-1] <= fair + half + 0.01 or asks[-1] == 0.99
    down_ask = float(http.get("/book", params={"token_id": down}).json()["asks"][-1]["price"])
    # Both sides together cost at least 1 + spread, unless one is pinned at the 0.99 cap.
    assert asks[-1] + down_ask >= 1.0 + s.params.spread - 1e-9 or 0.99 in (asks[-1], down_ask)
    # The maker's view is lagged: it is the model's fair value of lag_ms ago, plus noise.
    lagged = s.model.fair_up(w.asset, w.start_s, w.end_s, clock.ms - s.params.lag_ms)
    assert abs(fair - lagged) <= s.params.noise + 1e-12


def test_book_is_around_half_before_the_window_and_empty_after_it(env):
    _, http, _, clock = env
    now_s = clock.ms // 1000
    future = discover(http, f"sol-updown-5m-{now_s + 600}")
    token = json.loads(future["clobTokenIds"])[0]
    b = http.get("/book", params={"token_id": token}).json()
    assert (b["asks"][-1]["price"], b["bids"][-1]["price"]) == ("0.51", "0.49")
    past = discover(http, f"sol-updown-15s-{now_s - 60}")
    b = http.get("/book", params={"token_id": json.loads(past["clobTokenIds"])[0]}).json()
    assert b["asks"] == [] and b["bids"] == []


def test_books_of_unknown_tokens_are_404_or_left_out(env):
    _, http, _, clock = env
    r = http.get("/book", params={"token_id": "123"})
    assert r.status_code == 404 and "123" in r.json()["error"]
    assert http.get("/book", params={"token_id": "abc"}).status_code == 400
    up = json.loads(discover(http, live_slug(clock))["clobTokenIds"])[0]
    r = http.post("/books", json=[{"token_id": up}, {"token_id": "123"}])
    assert [b["asset_id"] for b in r.json()] == [up]


def test_market_resolves_from_the_model_once_the_window_has_ended(env):
    _, http, s, clock = env
    now_s = clock.ms // 1000
    for start in (now_s - 60, now_s - 75, now_s - 90, now_s - 105):
        slug = f"btc-updown-15s-{start}"
        m = http.get(f"/markets/{discover(http, slug)['conditionId']}").json()
        up_won = s.model.outcome_up("btc", start, start + 15)
        assert m["closed"] is True and m["market_slug"] == slug
        assert [t["outcome"] for t in m["tokens"]] == ["Up", "Down"]
        assert [t["winner"] for t in m["tokens"]] == [up_won, not up_won]
    live = http.get(f"/markets/{discover(http, live_slug(clock))['conditionId']}").json()
    assert live["closed"] is False and [t["winner"] for t in live["tokens"]] == [False, False]
    assert http.get("/markets/0x1234").status_code == 404


def test_unannounced_markets_of_the_usual_slots_are_found_by_scanning(env):
    _, http, _, clock = env
    start = clock.ms // 1000 // 900 * 900 - 1800
    slug = f"doge-updown-15m-{start}"
    r = http.get(f"/markets/{condition_id(slug)}")
    assert r.status_code == 200 and r.json()["market_slug"] == slug


def _signed(client: ClobClient, token: str, maker_amount: int, taker_amount: int):
    builder = ExchangeOrderBuilderV2(
        get_contract_config(CHAIN_ID).exchange_v2, CHAIN_ID, Signer(SIM_PRIVATE_KEY, CHAIN_ID)
    )
    data = OrderDataV2(
        maker=client.get_address(),
        tokenId=token,
        makerAmount=str(maker_amount),
        takerAmount=str(taker_amount),
        side=Side.BUY,
        signer=client.get_address(),
    )
    return builder.build_signed_order(data)


def _post(client: ClobClient, http: httpx.Client, order, order_type: str = "FOK") -> httpx.Response:
    body = json.dumps(order_to_json_v2(order, client.creds.api_key, order_type))
    return http.post("/order", content=body, headers=_l2(client, body))


def _l2(client: ClobClient, body: str | None = None) -> dict:
    return client._l2_headers("POST", "/order", serialized_body=body)


@pytest.mark.parametrize(
    ("maker", "taker", "words"),
    [
        (5_555_000, 10_000_000, "tick"),  # 0.5555 a share
        (2_000_000, 4_000_000, "size"),  # 4 shares, below the minimum of 5
    ],
)
def test_orders_off_tick_or_below_the_minimum_size_get_400_naming_the_problem(
    env, client, maker, taker, words
):
    _, http, _, clock = env
    up = json.loads(discover(http, live_slug(clock))["clobTokenIds"])[0]
    r = _post(client, http, _signed(client, up, maker, taker), "GTC")
    assert r.status_code == 400 and words in r.json()["error"]


def test_orders_on_an_ended_market_are_rejected_as_market_closed(env, client):
    _, http, _, clock = env
    past = discover(http, f"eth-updown-15s-{clock.ms // 1000 - 60}")
    token = json.loads(past["clobTokenIds"])[0]
    r = _post(client, http, _signed(client, token, 9_900_000, 10_000_000))
    assert r.status_code == 400 and "market closed" in r.json()["error"]


def test_a_tampered_order_is_rejected_for_its_signature(env, client):
    _, http, _, clock = env
    up = json.loads(discover(http, live_slug(clock))["clobTokenIds"])[0]
    order = _signed(client, up, 9_900_000, 10_000_000)
    order.takerAmount = "20000000"
    r = _post(client, http, order)
    assert r.status_code == 400 and "signature" in r.json()["error"]


def test_gtc_rests_live_fak_fills_what_it_can_and_orders_list_without_credentials(env, client):
    _, http, _, clock = env
    up = json.loads(discover(http, live_slug(clock, "xrp"))["clobTokenIds"])[0]
    live = client.create_order(OrderArgsV2(token_id=up, price=0.01, size=10, side="BUY"))
    r = client.post_order(live, "GTC")
    assert r["success"] is True and r["status"] == "live" and r["takingAmount"] == "0"
    fak = client.create_order(OrderArgsV2(token_id=up, price=0.99, size=100_000, side="BUY"))
    r = client.post_order(fak, "FAK")
    assert r["status"] == "matched" and 0 < float(r["takingAmount"]) < 100_000
    listed = {o["id"]: o for o in httpx.get(f"{env[0]}/data/orders").json()["data"]}
    assert listed[r["orderID"]]["size_matched"] == r["takingAmount"]
    assert listed[r["orderID"]]["original_size"] == "100000"
    live_row = next(o for o in listed.values() if o["price"] == "0.01" and o["asset_id"] == up)
    assert live_row["status"] == "LIVE" and live_row["order_type"] == "GTC"
    for key in ("market", "side", "outcome", "owner", "maker_address", "created_at"):
        assert key in live_row
    # The sim's own arrival time in ms, inside the CLOB's whole second.
    assert live_row["received_ms"] // 1000 == live_row["created_at"] > 0


def test_orders_are_paginated_in_the_real_clobs_shape(env, client, monkeypatch):
    url, http, _, clock = env
    up = json.loads(discover(http, live_slug(clock, "bnb"))["clobTokenIds"])[0]
    for _ in range(3):
        client.post_order(client.create_order(OrderArgsV2(up, 0.99, 5, "BUY")), "FOK")
    monkeypatch.setattr(sim.clob_orders, "PAGE_LIMIT", 2)
    ids, cursor, pages = [], "MA==", 0
    while cursor != "LTE=":
        page = httpx.get(f"{url}/data/orders", params={"next_cursor": cursor}).json()
        assert set(page) == {"data", "next_cursor", "limit", "count"}
        assert page["count"] == len(page["data"]) <= 2
        ids += [o["id"] for o in page["data"]]
        cursor, pages = page["next_cursor"], pages + 1
    assert pages >= 2 and len(ids) == len(set(ids)) >= 3
    assert http.get("/data/orders", params={"next_cursor": "!!"}).status_code == 400


@pytest.mark.parametrize(
    "body",
    [b"", b"garbage", b"[]", b'{"order": {}}', b'{"order": {"salt": "x"}, "orderType": "FOK"}'],
)
def test_malformed_order_bodies_get_400_json_and_the_server_keeps_serving(env, client, body):
    _, http, _, _ = env
    r = http.post("/order", content=body, headers=_l2(client, body.decode()))
    assert r.status_code == 400 and r.json()["error"]
    assert http.get("/version").json() == {"version": 2}


def test_orders_without_l2_headers_are_401(env):
    _, http, _, _ = env
    r = http.post("/order", content=b"{}")
    assert r.status_code == 401 and "POLY_API_KEY" in r.json()["error"]
    assert http.get("/data/order/0xabc").status_code == 401


def test_api_keys_are_deterministic_with_a_url_safe_secret(env, client):
    _, http, _, _ = env
    again = ClobClient(env[0], chain_id=CHAIN_ID, key=SIM_PRIVATE_KEY).derive_api_key()
    assert again == client.creds
    assert len(base64.urlsafe_b64decode(again.api_secret)) == 32
    assert http.post("/auth/api-key").status_code == 401


def test_small_endpoints(env):
    _, http, _, clock = env
    assert http.get("/").status_code == 200
    assert http.get("/time").json() == clock.ms // 1000
    up = json.loads(discover(http, live_slug(clock))["clobTokenIds"])[0]
    assert http.get("/tick-size", params={"token_id": up}).json() == {"minimum_tick_size": 0.01}
    assert http.get("/neg-risk", params={"token_id": up}).json() == {"neg_risk": False}
    r = http.get("/no/such/path")
    assert r.status_code == 404 and r.json()["error"]


def test_book_function_is_deterministic_for_a_clock(env):
    _, _, s, clock = env
    w = s.catalogue.register(live_slug(clock))
    a = book(s.model, w, w.up_token, clock.ms, BookParams(), SEED)
    assert a == book(s.model, w, w.up_token, clock.ms, BookParams(), SEED)

"""Faults injected (sim/faults.py) into the running sims, watched through the real client:
it fails the way it would against a slow or flaky venue. Bad fault and sim settings are
refused naming what is wrong."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2

from baton.errors import SettingsError
from sim import binance as sim_binance
from sim.accounts import balance_from_env
from sim.faults import Faults
from sim.fees import fees_from_env
from sim.model import PriceModel
from tests.fast.clob.contract import SEED, market, new_client, order_id, rejected
from tests.simserver import ThreadServer


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

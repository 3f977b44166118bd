"""The sim verifies both levels of the CLOB's authentication as the live CLOB does (sim/auth.py):
L1 headers must be signed by POLY_ADDRESS's key, L2 headers must carry that address's API key,
its passphrase and the HMAC of the request; either refused with the live 401 texts
(https://docs.polymarket.com/resources/error-codes, "Global errors"). The listing without
credentials that tools count duplicates with stays open."""

from __future__ import annotations

import json

import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import ApiCreds, OrderArgsV2
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.headers import create_level_1_headers
from py_clob_client_v2.order_utils.model.order_data_v2 import order_to_json_v2
from py_clob_client_v2.signer import Signer

from baton.settings import SIM_PRIVATE_KEY
from sim.clob import ClobSim
from sim.model import PriceModel
from tests.fast.clob.contract import CHAIN_ID, SECOND_KEY, SEED, market, new_client

INVALID_L1 = "Invalid L1 Request headers"
INVALID_L2 = "Unauthorized/Invalid api key"


def _refused(e: pytest.ExceptionInfo[PolyApiException], text: str) -> bool:
    return e.value.status_code == 401 and e.value.error_msg["error"].startswith(text)


def test_l1_headers_signed_by_another_key_get_no_api_key(env):
    _, http, _, _ = env
    victim = Signer(SIM_PRIVATE_KEY, CHAIN_ID).address()
    forged = {**create_level_1_headers(Signer(SECOND_KEY, CHAIN_ID)), "POLY_ADDRESS": victim}
    for r in (http.get("/auth/derive-api-key", headers=forged), http.post("/auth/api-key", headers=forged)):
        assert r.status_code == 401 and r.json()["error"].startswith(INVALID_L1)
        assert "apiKey" not in r.json()
    # A signature over another timestamp than the one sent is not good either.
    own = create_level_1_headers(Signer(SIM_PRIVATE_KEY, CHAIN_ID))
    r = http.get(
        "/auth/derive-api-key", headers={**own, "POLY_TIMESTAMP": str(int(own["POLY_TIMESTAMP"]) + 1)}
    )
    assert r.status_code == 401 and r.json()["error"].startswith(INVALID_L1)
    # The real client's own headers get the key.
    assert http.get("/auth/derive-api-key", headers=own).json()["apiKey"]


def test_a_wrong_hmac_secret_another_addresss_key_or_passphrase_is_refused(env, client):
    url = env[0]
    good = client.creds
    other = new_client(url, SECOND_KEY).creds
    wrong = {
        "secret": ApiCreds(good.api_key, other.api_secret, good.api_passphrase),
        "key of another address": other,
        "passphrase": ApiCreds(good.api_key, good.api_secret, other.api_passphrase),
    }
    for what, creds in wrong.items():
        c = ClobClient(url, chain_id=CHAIN_ID, key=SIM_PRIVATE_KEY, creds=creds)
        with pytest.raises(PolyApiException) as e:
            c.get_open_orders()
        assert _refused(e, INVALID_L2), what
        with pytest.raises(PolyApiException) as e:
            c.get_balance_allowance()
        assert _refused(e, INVALID_L2), what


def test_an_order_body_changed_after_signing_is_refused_and_never_placed(env, client):
    _, http, sim, clock = env
    m = market(http, clock, "doge")
    order = client.create_order(OrderArgsV2(token_id=m["up"], price=0.01, size=5, side="BUY"))
    payload = order_to_json_v2(order, client.creds.api_key, "GTC", False, False)
    signed_body = json.dumps(payload, separators=(",", ":"))
    headers = client._l2_headers("POST", "/order", serialized_body=signed_body)
    tampered = signed_body.replace('"GTC"', '"FOK"')
    before = len(sim.exchange.orders)
    r = http.post("/order", content=tampered, headers=headers)
    assert r.status_code == 401 and r.json()["error"].startswith(INVALID_L2)
    assert len(sim.exchange.orders) == before
    # A signature for another path is refused too.
    r = http.post(
        "/order",
        content=signed_body,
        headers=client._l2_headers("POST", "/orders", serialized_body=signed_body),
    )
    assert r.status_code == 401 and len(sim.exchange.orders) == before


def test_the_open_listing_stays_open_and_half_credentials_are_refused(env, client):
    _, http, _, _ = env
    assert http.get("/data/orders").status_code == 200
    assert http.get("/data/trades").status_code == 200
    half = {"POLY_API_KEY": client.creds.api_key, "POLY_ADDRESS": client.get_address()}
    for path in ("/data/orders", "/data/trades"):
        r = http.get(path, headers=half)
        assert r.status_code == 401 and r.json()["error"].startswith(INVALID_L2)
    assert isinstance(client.get_open_orders(), list)  # the real client's L2 headers pass


def test_a_key_issued_before_a_restart_of_the_sim_still_verifies(client):
    # Keys derive from (address, nonce): a fresh sim knows the client's (nonce 0) without
    # having issued it, so a worker's cached key survives a restart of the sim.
    fresh = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID)
    known = fresh.creds.lookup(client.creds.api_key, client.get_address())
    assert known is not None and known[1:] == (client.creds.api_secret, client.creds.api_passphrase)

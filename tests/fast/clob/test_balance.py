"""Balances on the CLOB sim through the real client (tests/fast/clob/contract.py): what an
order reserves, debits and credits, redemption of a won window, and the admin endpoint."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import AssetType, BalanceAllowanceParams, OrderArgsV2, OrderPayload

from sim.accounts import MICRO
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.fast.clob.contract import (
    BALANCE_KEYS,
    CHAIN_ID,
    POST_ORDER_KEYS,
    SECOND_KEY,
    SEED,
    market,
    new_client,
    rejected,
    resting_token,
)
from tests.simserver import Clock, ThreadServer


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

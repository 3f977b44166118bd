"""Resting orders on the CLOB sim through the real client (tests/fast/clob/contract.py): a GTC
that matches later as the maker's book moves across it (as the maker: its own price, no fee,
the trade listing it among maker_orders), a GTD that stops resting its threshold before its
expiry, orders that die with their market, and shares sold that are not paid at resolution.
The test's clock moves forward; each test picks a market around the clock's second then."""

from __future__ import annotations

from decimal import Decimal

from py_clob_client_v2.clob_types import (
    AssetType,
    BalanceAllowanceParams,
    OrderArgsV2,
    OrderPayload,
    TradeParams,
)

from baton.settings import SIM_PRIVATE_KEY
from sim.book import book
from sim.clob import ClobSim
from tests.fast.clob.contract import CHAIN_ID, TRADE_TYPES, check, market, new_client, rejected
from tests.simserver import Clock
from venues.clob_results import GTD_THRESHOLD_S
from venues.polymarket import ClobVenue


def own_client(url: str, n: int):
    """A client of an account of this test's own (a private key of the digit n): holdings of
    other tests' windows, redeemed as the clock moves, never show in its balance."""
    return new_client(url, "0x" + str(n) * 64)


def balance(c, token: str = "") -> int:
    if token:
        params = BalanceAllowanceParams(asset_type=AssetType.CONDITIONAL, token_id=token)
    else:
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
    return int(c.get_balance_allowance(params)["balance"])


def first_cross(s: ClobSim, m: dict, token: str, side: str, clock: Clock, ahead_s: int = 150):
    """(second, price tick) for a resting order of `side` placed now that the maker's book
    crosses later: the best price it reaches over the next `ahead_s` seconds, and the first
    second it is there; None if the book never improves on now's."""
    w = s.catalogue.register(m["gamma"]["slug"])
    now_s = clock.ms // 1000

    def touch(at_ms: int) -> int | None:
        bids, asks = book(s.model, w, token, at_ms, s.params, s.seed)
        levels = asks if side == "BUY" else bids
        return levels[0][0] if levels else None

    # Now, as the order's arrival sees it; later, as the walk sees each second (its start).
    now = touch(clock.ms)
    seconds = [(t, touch(t * 1000)) for t in range(now_s + 1, min(now_s + ahead_s, w.end_s))]
    seconds = [(t, p) for t, p in seconds if p is not None]
    best = min(p for _, p in seconds) if side == "BUY" else max(p for _, p in seconds)
    if now is None or (best >= now if side == "BUY" else best <= now):
        return None
    return next((t, p) for t, p in seconds if p == best)


def test_a_gtc_buy_matches_later_as_the_maker_when_the_asks_come_down_to_it(env):
    url, http, s, clock = env
    client = own_client(url, 3)
    m = market(http, clock, "btc")
    token = next((t for t in (m["up"], m["down"]) if first_cross(s, m, t, "BUY", clock)), None)
    assert token is not None, "the book never moved within the window"
    at_s, tick = first_cross(s, m, token, "BUY", clock)
    cash0 = balance(client)
    order = client.create_order(OrderArgsV2(token_id=token, price=tick / 100, size=5, side="BUY"))
    r = client.post_order(order, "GTC")
    assert (r["status"], r["takingAmount"]) == ("live", "0")
    clock.ms = at_s * 1000 - 1
    assert client.get_order(r["orderID"])["status"] == "LIVE"
    # Well past the crossing second: the walk catches up with the seconds gone by.
    clock.ms = at_s * 1000 + 20_000
    got = client.get_order(r["orderID"])
    assert (got["status"], got["size_matched"]) == ("MATCHED", "5")
    [t] = [t for t in client.get_trades(TradeParams(market=m["cid"])) if t["id"] in got["associate_trades"]]
    check(t, TRADE_TYPES)
    assert (t["trader_side"], t["match_time"], t["side"]) == ("MAKER", str(at_s), "SELL")
    [mo] = t["maker_orders"]
    assert (mo["order_id"], mo["matched_amount"], mo["side"]) == (r["orderID"], "5", "BUY")
    assert Decimal(mo["price"]) == Decimal(tick) / 100
    # At its own price, without a fee (the market is a 5m one; makers pay none anyway).
    assert cash0 - balance(client) == 5 * tick * 10_000
    assert balance(client, token) >= 5_000_000
    # The runtime's reading of it: matched, from the order and from the account's trades.
    venue = ClobVenue(url, url, "0x" + "3" * 64, CHAIN_ID)
    try:
        assert (venue.order(r["orderID"]).status, venue.order(r["orderID"]).size_matched) == ("matched", 5.0)
        [a] = [a for a in venue.account_orders([m["cid"]], 0) if a.order_id == r["orderID"]]
        assert (a.side, a.status, a.size_matched, a.avg_price) == ("BUY", "matched", 5.0, tick / 100)
    finally:
        venue.close()


def test_a_gtc_sell_of_held_shares_matches_later_when_the_bids_come_up_to_it(env):
    url, http, s, clock = env
    client = own_client(url, 4)
    m = market(http, clock, "eth")
    token = next(t for t in (m["up"], m["down"]) if first_cross(s, m, t, "SELL", clock))
    at_s, tick = first_cross(s, m, token, "SELL", clock)
    client.post_order(client.create_order(OrderArgsV2(token_id=token, price=0.99, size=8, side="BUY")), "FOK")
    cash0, held0 = balance(client), balance(client, token)
    r = client.post_order(
        client.create_order(OrderArgsV2(token_id=token, price=tick / 100, size=8, side="SELL")), "GTC"
    )
    assert r["status"] == "live"
    # The resting SELL holds its shares back: they cannot be sold twice.
    again = client.create_order(OrderArgsV2(token_id=token, price=0.01, size=5, side="SELL"))
    assert (
        "not enough balance / allowance"
        in rejected(lambda: client.post_order(again, "FOK")).error_msg["error"]
    )
    clock.ms = at_s * 1000 + 500
    assert client.get_order(r["orderID"])["status"] == "MATCHED"
    assert balance(client, token) == held0 - 8_000_000
    assert balance(client) - cash0 == 8 * tick * 10_000


def test_a_gtd_rests_until_its_threshold_before_its_expiry(env, client):
    url, http, _, clock = env
    m = market(http, clock, "sol")
    now_s = clock.ms // 1000
    expires_s = now_s + GTD_THRESHOLD_S + 30
    order = client.create_order(
        OrderArgsV2(token_id=m["up"], price=0.01, size=5, side="BUY", expiration=expires_s)
    )
    r = client.post_order(order, "GTD")
    assert r["status"] == "live"
    got = client.get_order(r["orderID"])
    assert (got["order_type"], got["expiration"], got["status"]) == ("GTD", str(expires_s), "LIVE")
    clock.ms = (now_s + 29) * 1000
    assert client.get_order(r["orderID"])["status"] == "LIVE"
    clock.ms = (now_s + 30) * 1000
    assert client.get_order(r["orderID"])["status"] == "CANCELED"
    out = client.cancel_order(OrderPayload(orderID=r["orderID"]))
    assert out["canceled"] == [] and r["orderID"] in out["not_canceled"]
    venue = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID)
    try:
        assert venue.order(r["orderID"]).status == "canceled"
        assert venue.cancel(r["orderID"]) is False
    finally:
        venue.close()
    late = client.create_order(
        OrderArgsV2(token_id=m["up"], price=0.01, size=5, side="BUY", expiration=clock.ms // 1000 + 59)
    )
    err = rejected(lambda: client.post_order(late, "GTD"))
    assert err.status_code == 400 and err.error_msg["error"].startswith("invalid expiration")


def test_resting_orders_die_with_their_market_and_sold_shares_are_not_paid(env):
    url, http, s, clock = env
    client = own_client(url, 5)
    m = market(http, clock, "xrp")
    w = s.catalogue.register(m["gamma"]["slug"])
    # The side that wins: bids to sell into at 0.01, and a BUY at 0.01 rests (a cent-wide maker
    # offers the loser at 0.01 once it is all but lost, and would fill it).
    token = m["up"] if s.model.outcome_up(w.asset, w.start_s, w.end_s) else m["down"]
    client.post_order(
        client.create_order(OrderArgsV2(token_id=token, price=0.99, size=12, side="BUY")), "FOK"
    )
    client.post_order(
        client.create_order(OrderArgsV2(token_id=token, price=0.01, size=5, side="SELL")), "FOK"
    )
    resting = client.post_order(
        client.create_order(OrderArgsV2(token_id=token, price=0.01, size=5, side="BUY")), "GTC"
    )
    assert balance(client, token) == 7_000_000
    cash_before = balance(client)
    clock.ms = w.end_s * 1000 + 1000
    assert client.get_order(resting["orderID"])["status"] == "CANCELED_MARKET_RESOLVED"
    # Only the 7 shares still held are redeemed, at 1 USDC each.
    assert balance(client) - cash_before == 7_000_000
    venue = ClobVenue(url, url, "0x" + "5" * 64, CHAIN_ID)
    try:
        assert venue.order(resting["orderID"]).status == "canceled"
    finally:
        venue.close()

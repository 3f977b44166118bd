"""ClobVenue's sells, order types, expiries, cancels and fees, against the sim's CLOB over real
sockets through py-clob-client-v2 (the sim runs on its own loop in a thread; its clock is the
test's). What the sim does to resting orders later is in tests/fast/clob/test_resting.py."""

from __future__ import annotations

import httpx
import pytest

from baton.settings import SIM_PRIVATE_KEY
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer
from venues.clob_results import FAK_KILLED, GTD_THRESHOLD_S, NOT_ENOUGH_BALANCE, taker_fee_usd
from venues.polymarket import ClobVenue

SEED = 17
CHAIN_ID = 137


@pytest.fixture(scope="module")
def env():
    clock = Clock()
    s = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID, clock_ms=clock)
    with ThreadServer(create_app(s)) as url:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID, timeout_s=5.0)
        yield url, venue, s, clock
        venue.close()


def market(venue: ClobVenue, clock: Clock, asset: str, tf: str = "5m"):
    """A window that started 100 s before the test's clock."""
    return venue.discover(f"{asset}-updown-{tf}-{clock.ms // 1000 - 100}")


def rich(venue: ClobVenue, m) -> str:
    """The dearer token of a market: bids to sell into at 0.01, and an ask above 0.01, so that a
    BUY at 0.01 rests."""
    books = venue.books([m.up_token, m.down_token])
    return max(books, key=lambda t: books[t].best_bid or 0.0)


def sim_order(url: str, order_id: str) -> dict:
    [row] = [o for o in httpx.get(f"{url}/data/orders", params={"id": order_id}, timeout=5).json()["data"]]
    return row


def test_shares_bought_can_be_sold_back_and_sizes_are_shares_on_both_sides(env):
    url, venue, _, clock = env
    m = market(venue, clock, "btc")
    token = rich(venue, m)
    bought = venue.post(venue.sign("BUY", token, 0.99, 20))
    assert (bought.status, bought.size_matched) == ("matched", 20.0)
    signed = venue.sign("SELL", token, 0.01, 12.5)
    assert (signed.side, signed.expires_s, signed.order["side"]) == ("SELL", 0, 1)
    sold = venue.post(signed, "FOK")
    # The venue answers a SELL's amounts the other way round (making: shares, taking: USDC);
    # the result is in shares either way, at the average price the bids paid.
    assert (sold.status, sold.size_matched, sold.price) == ("matched", 12.5, 0.01)
    assert 0.01 <= sold.avg_price < bought.avg_price
    row = sim_order(url, sold.order_id)
    assert (row["side"], row["size_matched"], row["status"]) == ("SELL", "12.5", "MATCHED")
    got = venue.order(sold.order_id)
    assert (got.status, got.size_matched, got.price) == ("matched", 12.5, 0.01)
    assert got.avg_price == pytest.approx(sold.avg_price)


def test_selling_more_than_held_is_refused_with_the_venues_message(env):
    _, venue, _, clock = env
    m = market(venue, clock, "eth")
    token = rich(venue, m)
    other = m.up_token if token == m.down_token else m.down_token
    venue.post(venue.sign("BUY", token, 0.99, 10))
    r = venue.post(venue.sign("SELL", token, 0.01, 10.01))
    assert (r.status, r.size_matched) == ("rejected", 0.0)
    assert r.error.startswith(NOT_ENOUGH_BALANCE)
    never = venue.post(venue.sign("SELL", other, 0.01, 5))  # none held of this one
    assert never.status == "rejected" and NOT_ENOUGH_BALANCE in never.error
    assert venue.post(venue.sign("SELL", token, 0.01, 10)).size_matched == 10.0


def test_a_fak_sell_takes_what_the_bids_hold_and_the_rest_is_killed(env):
    url, venue, _, clock = env
    m = market(venue, clock, "sol")
    token = rich(venue, m)
    best_bid = venue.books([token])[token].bids[0]
    size = best_bid[1] + 7
    assert venue.post(venue.sign("BUY", token, 0.99, size)).size_matched == size
    # At the best bid's price only its level matches: a partial fill, final.
    r = venue.post(venue.sign("SELL", token, best_bid[0], size), "FAK")
    assert (r.status, r.size_matched) == ("matched", best_bid[1])
    assert r.avg_price == pytest.approx(best_bid[0])
    assert sim_order(url, r.order_id)["status"] == "CANCELED"  # its rest was killed
    above = venue.post(venue.sign("SELL", token, 0.99, 5), "FAK")
    assert (above.status, above.error) == ("rejected", FAK_KILLED)


def test_a_gtc_that_matches_part_of_its_size_is_live_for_the_rest(env):
    _, venue, _, clock = env
    m = market(venue, clock, "xrp")
    best_ask = venue.books([m.down_token])[m.down_token].asks[0]
    r = venue.post(venue.sign("BUY", m.down_token, best_ask[0], best_ask[1] + 7), "GTC")
    assert (r.status, r.size_matched) == ("live", best_ask[1])
    got = venue.order(r.order_id)
    assert (got.status, got.size_matched) == ("live", best_ask[1])
    assert venue.cancel(r.order_id) is True
    after = venue.order(r.order_id)
    assert (after.status, after.size_matched) == ("canceled", best_ask[1])  # what matched stays


def test_cancel_says_whether_the_order_was_resting(env):
    _, venue, _, clock = env
    m = market(venue, clock, "doge")
    token = rich(venue, m)
    resting = venue.post(venue.sign("BUY", token, 0.01, 5), "GTC")
    assert resting.status == "live"
    assert venue.cancel(resting.order_id) is True
    assert venue.cancel(resting.order_id) is False  # cancelled already
    filled = venue.post(venue.sign("BUY", token, 0.99, 5))
    assert venue.cancel(filled.order_id) is False
    assert venue.cancel("0x" + "0" * 64) is False
    assert venue.order(resting.order_id).status == "canceled"


def test_a_gtd_rests_until_its_expiry_written_with_the_venues_threshold(env):
    url, venue, _, clock = env
    m = market(venue, clock, "bnb")
    token = rich(venue, m)
    now_s = clock.ms // 1000
    signed = venue.sign("BUY", token, 0.01, 5, expires_s=now_s + 30)
    plain = venue.sign("BUY", token, 0.01, 5)
    # The venue stops a GTD order its threshold before the field: the field carries it.
    assert signed.expires_s == now_s + 30
    assert signed.order["expiration"] == str(now_s + 30 + GTD_THRESHOLD_S)
    assert plain.order["expiration"] == "0"
    r = venue.post(signed, "GTD")
    assert (r.order_id, r.status) == (signed.order_id, "live")  # the id is the struct's hash
    row = sim_order(url, r.order_id)
    assert (row["order_type"], row["expiration"]) == ("GTD", str(now_s + 30 + GTD_THRESHOLD_S))
    clock.ms = (now_s + 29) * 1000
    assert venue.order(r.order_id).status == "live"
    clock.ms = (now_s + 30) * 1000
    assert venue.order(r.order_id).status == "canceled"
    assert venue.cancel(r.order_id) is False
    past = venue.post(venue.sign("BUY", token, 0.01, 5, expires_s=clock.ms // 1000 - 1), "GTD")
    assert past.status == "rejected" and past.error.startswith("invalid expiration")


def test_an_order_type_that_does_not_suit_the_order_is_refused_before_sending(env):
    _, venue, _, clock = env
    m = market(venue, clock, "hype")
    token = rich(venue, m)
    gtd = venue.sign("BUY", token, 0.01, 5, expires_s=clock.ms // 1000 + 600)
    for order_type in ("FOK", "FAK", "GTC"):
        with pytest.raises(ValueError, match="takes no expiry"):
            venue.post(gtd, order_type)
    with pytest.raises(ValueError, match="GTD needs"):
        venue.post(venue.sign("BUY", token, 0.01, 5), "GTD")
    with pytest.raises(ValueError, match="order_type"):
        venue.post(venue.sign("BUY", token, 0.01, 5), "IOC")
    for bad in (("HOLD", 0.5, 5, 0), ("SELL", 1.0, 5, 0), ("BUY", 0.5, 0, 0), ("BUY", 0.5, 5, -1)):
        with pytest.raises(ValueError):
            venue.sign(bad[0], token, bad[1], bad[2], expires_s=bad[3])


def test_the_taker_fee_of_what_matched_is_reported_on_fee_markets_only(env):
    _, venue, s, clock = env
    m15 = market(venue, clock, "btc", "15m")
    rate, exponent = s.fee(s.catalogue.register(m15.slug)).rate, 1.0
    assert rate > 0
    token = rich(venue, m15)
    r = venue.post(venue.sign("BUY", token, 0.99, 40))
    assert r.fee_usd == taker_fee_usd(40, r.avg_price, rate, exponent) > 0
    assert r.fee_usd == pytest.approx(40 * rate * r.avg_price * (1 - r.avg_price), abs=1e-5)
    sold = venue.post(venue.sign("SELL", token, 0.01, 40))
    assert sold.fee_usd == taker_fee_usd(40, sold.avg_price, rate, exponent) > 0
    # Reconciliation's reading (the order and its trades) tells what the post's answer did.
    for posted in (r, sold):
        again = venue.order(posted.order_id)
        assert again.avg_price == pytest.approx(posted.avg_price)
        assert again.fee_usd == pytest.approx(posted.fee_usd, abs=1e-5)
    resting = venue.post(venue.sign("BUY", token, 0.01, 5), "GTC")
    assert resting.fee_usd == 0.0  # nothing matched: nothing taken
    m5 = market(venue, clock, "btc")
    assert venue.post(venue.sign("BUY", rich(venue, m5), 0.99, 40)).fee_usd == 0.0


def test_a_dry_run_venue_signs_sells_and_cancels_nothing(env):
    url, _, _, clock = env
    dry = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID, dry_run=True)
    try:
        m = market(dry, clock, "eth")
        signed = dry.sign("SELL", m.up_token, 0.5, 5)
        assert dry.post(signed).status == "dry_run"
        assert dry.cancel(signed.order_id) is False
    finally:
        dry.close()

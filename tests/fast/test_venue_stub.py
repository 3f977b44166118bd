"""venues/stub.StubVenue: the in-process venue of the fast tests sells only what it sold you,
kills FOKs beyond its depth and fills FAKs in part, rests GTC/GTD orders until its quote
crosses them, expires GTDs and cancels, with the messages the real client reports."""

from __future__ import annotations

import pytest

from kernel.venue import OrderResult
from venues.clob_results import FAK_KILLED, FOK_KILLED, NOT_ENOUGH_BALANCE
from venues.stub import StubVenue


class Seconds:
    def __init__(self, s: int = 1_800_000_000) -> None:
        self.s = s

    def __call__(self) -> int:
        return self.s


@pytest.fixture
def clock() -> Seconds:
    return Seconds()


@pytest.fixture
def token() -> str:
    return StubVenue().discover("btc-updown-5m-1800000000").up_token


def test_it_sells_what_it_sold_you_and_no_more(clock, token):
    v = StubVenue(now_s=clock)
    refused = v.post(v.sign("SELL", token, 0.04, 5))
    assert refused.status == "rejected" and refused.error.startswith(NOT_ENOUGH_BALANCE)
    assert v.post(v.sign_buy(token, 0.05, 10)).size_matched == 10
    sold = v.post(v.sign("SELL", token, 0.04, 6))
    assert (sold.status, sold.size_matched, sold.avg_price) == ("matched", 6.0, 0.04)
    assert v.held[token] == 4.0
    assert v.post(v.sign("SELL", token, 0.04, 4.01)).status == "rejected"
    assert v.post(v.sign("SELL", token, 0.04, 4)).size_matched == 4.0
    [o] = [a for a in v.account_orders([], 0) if a.order_id == sold.order_id]
    assert (o.side, o.status, o.size_matched) == ("SELL", "matched", 6.0)


def test_takers_meet_its_depth_fok_killed_fak_in_part(clock, token):
    v = StubVenue(now_s=clock, depth=20.0)
    killed = v.post(v.sign_buy(token, 0.05, 25))
    assert (killed.status, killed.size_matched, killed.error) == ("rejected", 0.0, FOK_KILLED)
    part = v.post(v.sign_buy(token, 0.05, 25), "FAK")
    assert (part.status, part.size_matched) == ("matched", 20.0)
    none = StubVenue(now_s=clock, depth=0.0)
    assert none.post(none.sign_buy(token, 0.05, 5), "FAK").error == FAK_KILLED


def test_a_repost_is_answered_as_the_first_post(clock, token):
    v = StubVenue(now_s=clock)
    signed = v.sign_buy(token, 0.05, 10)
    assert v.post(signed) == v.post(signed) and v.held[token] == 10.0
    oversell = v.sign("SELL", token, 0.04, 11)
    assert v.post(oversell) == v.post(oversell) and v.held[token] == 10.0


def test_a_gtc_rests_until_the_quote_crosses_it_then_fills_as_the_maker(clock, token):
    v = StubVenue(now_s=clock, fee_rate=0.07)
    v.post(v.sign_buy(token, 0.05, 10))
    ask = v.post(v.sign("SELL", token, 0.60, 10), "GTC")  # bid 0.04: rests
    assert (ask.status, ask.size_matched) == ("live", 0.0)
    # What a resting SELL holds back cannot be sold again.
    assert v.post(v.sign("SELL", token, 0.04, 1)).error.startswith(NOT_ENOUGH_BALANCE)
    assert v.order(ask.order_id).status == "live"
    v.bid = 0.61
    assert v.order(ask.order_id) == OrderResult(ask.order_id, "matched", 10.0, 0.6, avg_price=0.6)
    assert v.held[token] == 0.0 and v.cancel(ask.order_id) is False
    # A GTC that crosses on arrival is a taker: it fills at once and pays the fee.
    taker = v.post(v.sign_buy(token, 0.05, 10), "GTC")
    assert taker.status == "matched" and taker.fee_usd == pytest.approx(10 * 0.07 * 0.05 * 0.95, abs=1e-5)


def test_a_gtd_rests_until_its_expiry_and_a_past_one_is_refused(clock, token):
    v = StubVenue(now_s=clock)
    expires_s = clock.s + 30
    bid = v.post(v.sign("BUY", token, 0.01, 10, expires_s=expires_s), "GTD")
    assert bid.status == "live"
    clock.s += 29
    assert v.order(bid.order_id).status == "live"
    clock.s += 1
    assert (v.order(bid.order_id).status, v.order(bid.order_id).error) == ("canceled", "expired")
    assert v.cancel(bid.order_id) is False
    near = v.post(v.sign("BUY", token, 0.01, 10, expires_s=clock.s - 1), "GTD")
    assert (near.status, near.error) == ("rejected", "invalid expiration")


def test_cancel_stops_a_resting_order_and_says_so_once(clock, token):
    v = StubVenue(now_s=clock)
    bid = v.post(v.sign_buy(token, 0.01, 10), "GTC")
    assert v.cancel(bid.order_id) is True
    assert v.cancel(bid.order_id) is False and v.cancel("0xnope") is False
    v.ask = 0.01  # the quote crosses it now: too late, it was cancelled
    assert v.order(bid.order_id).status == "canceled" and v.held.get(token, 0.0) == 0.0
    v.ask = 0.5
    resting = {v.post(v.sign_buy(token, p, 10), "GTC").order_id for p in (0.02, 0.03)}
    assert set(v.cancel_all()["canceled"]) == resting
    assert all(v.order(oid).status == "canceled" for oid in resting)


def test_terms_wrong_on_their_face_are_refused_before_signing(clock, token):
    v = StubVenue(now_s=clock)
    with pytest.raises(ValueError, match="side"):
        v.sign("HOLD", token, 0.5, 5)
    with pytest.raises(ValueError, match="takes no expiry"):
        v.post(v.sign("BUY", token, 0.5, 5, expires_s=clock.s + 600), "GTC")
    with pytest.raises(ValueError, match="GTD needs"):
        v.post(v.sign("BUY", token, 0.5, 5), "GTD")

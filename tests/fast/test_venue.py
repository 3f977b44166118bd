"""venues.polymarket.ClobVenue against the sim's CLOB over real sockets, through py-clob-client-v2.

The sim runs in a background thread with its own loop (the venue is synchronous) on a free
port, with a settable clock so that windows open and resolve when a test says so.
"""

from __future__ import annotations

import logging

import httpx
import msgspec
import pytest
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2

from baton.errors import VenueError
from baton.settings import SIM_PRIVATE_KEY
from deploy.ports import free_port
from kernel.venue import Book, OrderResult, SignedBuy
from sim.book import book
from sim.clob import ClobSim, create_app
from sim.markets import condition_id, token_id
from sim.model import PriceModel
from sim.orders import FOK_KILLED
from tests.simserver import Clock, ThreadServer
from venues.polymarket import ClobVenue

SEED = 11
CHAIN_ID = 137


@pytest.fixture(scope="module")
def env():
    clock = Clock()
    s = ClobSim(PriceModel(SEED), seed=SEED, chain_id=CHAIN_ID, clock_ms=clock)
    with ThreadServer(create_app(s)) as url:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID, timeout_s=5.0)
        yield url, venue, s, clock
        venue.close()


def live_slug(clock: Clock, asset: str = "btc") -> str:
    return f"{asset}-updown-5m-{clock.ms // 1000 - 100}"


def all_orders(url: str) -> list[dict]:
    # No credentials: the sim's lenient contract for counting orders from outside.
    return httpx.get(f"{url}/data/orders", timeout=5).json()["data"]


def test_discover_finds_the_market_of_a_slug(env):
    _, venue, _, clock = env
    slug = live_slug(clock)
    m = venue.discover(slug)
    assert m is not None and m.slug == slug
    assert m.condition_id == condition_id(slug)
    assert (m.up_token, m.down_token) == (token_id(slug, "Up"), token_id(slug, "Down"))
    assert (m.tick_size, m.min_size) == (0.01, 5.0)
    assert venue.discover("btc-updown-5m-notanumber") is None
    assert venue.discover("no_such-updown-5m-1700000000") is None  # not an asset name


def test_books_come_best_first_and_match_the_sims_maker(env):
    _, venue, s, clock = env
    m = venue.discover(live_slug(clock, "eth"))
    books = venue.books([m.up_token, m.down_token, "123"])
    assert set(books) == {m.up_token, m.down_token}
    up = books[m.up_token]
    assert isinstance(up, Book)
    assert [p for p, _ in up.asks] == sorted(p for p, _ in up.asks)
    assert [p for p, _ in up.bids] == sorted((p for p, _ in up.bids), reverse=True)
    w = s.catalogue.register(m.slug)
    bids, asks = book(s.model, w, m.up_token, clock.ms, s.params, SEED)
    assert up.asks == [(t / 100, size) for t, size in asks]
    assert up.bids == [(t / 100, size) for t, size in bids]
    assert up.best_ask == asks[0][0] / 100
    assert books[m.up_token].best_ask + books[m.down_token].best_ask >= 1.0
    assert venue.books([]) == {}


def test_a_fok_buy_fills_and_is_listed_with_its_size_matched(env):
    url, venue, _, clock = env
    m = venue.discover(live_slug(clock, "sol"))
    r = venue.buy(m.up_token, 0.99, 12.5)
    assert isinstance(r, OrderResult)
    assert (r.status, r.size_matched, r.price, r.error) == ("matched", 12.5, 0.99, "")
    assert 0.01 <= r.avg_price <= 0.99
    [row] = [o for o in all_orders(url) if o["id"] == r.order_id]
    assert row["size_matched"] == "12.5" and row["asset_id"] == m.up_token
    assert row["market"] == m.condition_id and row["side"] == "BUY"
    assert row["status"] == "MATCHED"


def test_a_fok_buy_beyond_the_depth_is_rejected_with_the_venues_message(env):
    url, venue, _, clock = env
    m = venue.discover(live_slug(clock, "sol"))
    r = venue.buy(m.down_token, 0.99, 50_000)
    assert (r.status, r.size_matched, r.error) == ("rejected", 0.0, FOK_KILLED)
    assert r.order_id.startswith("0x")
    assert r.order_id not in {o["id"] for o in all_orders(url)}


def test_the_order_id_is_the_hash_the_client_computes_before_posting(env):
    _, venue, _, clock = env
    m = venue.discover(live_slug(clock, "xrp"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    # Recomputed independently from the signed order with the client's own order builder (the
    # venue computes it from the struct's fields, not through the client's typed-data encoder).
    hasher = ExchangeOrderBuilderV2(get_contract_config(CHAIN_ID).exchange_v2, CHAIN_ID, None)

    def client_hash(s: SignedBuy) -> str:
        return hasher.build_order_hash(hasher.build_order_typed_data(SignedOrderV2(**s.order)))

    assert signed.order_id == client_hash(signed)
    assert venue.post(signed).order_id == signed.order_id
    # Every side, price and size, each with its own salt and timestamp.
    for token in (m.up_token, m.down_token):
        for price, size in ((0.01, 5), (0.37, 13.57), (0.5, 1000), (0.99, 5.01)):
            other = venue.sign_buy(token, price, size)
            assert other.order_id == client_hash(other)


def test_reposting_the_same_signed_order_never_creates_a_second_order(env):
    url, venue, _, clock = env
    m = venue.discover(live_slug(clock, "doge"))
    signed = venue.sign_buy(m.up_token, 0.99, 7)
    # A SignedBuy survives a trip through Redis as JSON.
    stored = msgspec.json.decode(msgspec.json.encode(signed), type=SignedBuy)
    first, again = venue.post(signed), venue.post(stored)
    assert first == again and first.size_matched == 7
    assert [o["id"] for o in all_orders(url)].count(signed.order_id) == 1
    rejected = venue.sign_buy(m.up_token, 0.99, 50_000)
    assert venue.post(rejected).status == venue.post(rejected).status == "rejected"


def test_order_lookup_by_id(env):
    _, venue, _, clock = env
    m = venue.discover(live_slug(clock, "bnb"))
    r = venue.buy(m.down_token, 0.99, 6)
    got = venue.order(r.order_id)
    assert (got.order_id, got.status, got.size_matched, got.price) == (r.order_id, "matched", 6.0, 0.99)
    assert got.avg_price == pytest.approx(r.avg_price)  # from its trades
    assert venue.order("0x" + "0" * 64) is None


def test_gtc_below_the_book_rests_live(env):
    _, venue, _, clock = env
    m = venue.discover(live_slug(clock, "link"))
    r = venue.buy(m.up_token, 0.01, 5, order_type="GTC")
    assert (r.status, r.size_matched) == ("live", 0.0)
    assert venue.order(r.order_id).status == "live"
    with pytest.raises(ValueError, match="order_type"):
        venue.buy(m.up_token, 0.5, 5, order_type="IOC")


def test_buying_on_an_ended_market_is_rejected_as_market_closed(env):
    _, venue, _, clock = env
    m = venue.discover(f"eth-updown-15s-{clock.ms // 1000 - 60}")
    r = venue.buy(m.up_token, 0.5, 5)
    assert r.status == "rejected" and "market closed" in r.error


def test_resolution_is_none_until_the_window_ends_then_follows_the_model(env):
    _, venue, s, clock = env
    start = clock.ms // 1000 - 10
    m = venue.discover(f"btc-updown-15s-{start}")
    assert venue.resolution(m.condition_id) is None
    ended = [venue.discover(f"btc-updown-15s-{start - k * 15}") for k in range(4, 8)]
    for e in ended:
        w = s.catalogue.register(e.slug)
        assert venue.resolution(e.condition_id) is s.model.outcome_up("btc", w.start_s, w.end_s)
    saved = clock.ms
    try:
        clock.ms = (start + 15) * 1000  # the window's end
        assert venue.resolution(m.condition_id) is s.model.outcome_up("btc", start, start + 15)
    finally:
        clock.ms = saved


def test_an_unknown_market_is_a_non_retryable_venue_error(env):
    _, venue, _, _ = env
    with pytest.raises(VenueError) as info:
        venue.resolution("0x1234")
    assert not info.value.retryable and "404" in str(info.value)


def _dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # a port nobody listens on


def test_transport_failures_are_retryable_venue_errors(env):
    url, _, _, clock = env
    dead = _dead_url()
    venue = ClobVenue(dead, dead, SIM_PRIVATE_KEY, CHAIN_ID, timeout_s=1.0)
    try:
        with pytest.raises(VenueError) as info:
            venue.discover(live_slug(clock))
        assert info.value.retryable and "/events" in str(info.value)
        with pytest.raises(VenueError) as info:
            venue.books(["1"])
        assert info.value.retryable
        with pytest.raises(VenueError) as info:
            venue.order("0xabc")
        assert info.value.retryable
    finally:
        venue.close()
    # Discovery on a live Gamma with a dead CLOB fails: tick size, minimum size and fee rate
    # come from the CLOB, never assumed.
    split = ClobVenue(dead, url, SIM_PRIVATE_KEY, CHAIN_ID, timeout_s=1.0)
    try:
        with pytest.raises(VenueError) as info:
            split.discover(live_slug(clock))
        assert info.value.retryable and "/clob-markets/" in str(info.value)
    finally:
        split.close()


def test_the_key_and_api_secret_are_never_logged(env, caplog):
    url, _, _, clock = env
    caplog.set_level(logging.DEBUG)
    venue = ClobVenue(url, url, SIM_PRIVATE_KEY, CHAIN_ID)
    try:
        m = venue.discover(live_slug(clock, "hype"))
        venue.buy(m.up_token, 0.99, 5)
        venue.buy(m.up_token, 0.99, 99_999)
        secret = venue._client.creds.api_secret
    finally:
        venue.close()
    text = caplog.text + repr(venue)
    assert SIM_PRIVATE_KEY not in text and SIM_PRIVATE_KEY[2:] not in text
    assert secret not in text


def test_orders_are_signed_in_c_and_the_signature_is_the_pure_python_signers(env, monkeypatch):
    """eth-keys signs with coincurve (libsecp256k1) when it is importable and in pure Python
    otherwise, about 7× slower per order (bench/venue_sign.py): the dependency must be there, and
    the signature it makes must be the one the pure-Python signer would (RFC 6979: deterministic)."""
    from eth_keys import keys
    from eth_keys.backends import NativeECCBackend, get_backend_class

    monkeypatch.delenv("ECC_BACKEND_CLASS", raising=False)
    assert get_backend_class().__name__ == "CoinCurveECCBackend"
    _, venue, _, clock = env
    m = venue.discover(live_slug(clock, "eth"))
    signed = venue.sign_buy(m.up_token, 0.5, 10)
    sig = bytes.fromhex(signed.order["signature"].removeprefix("0x"))
    # The order id is the EIP-712 digest that was signed.
    digest = bytes.fromhex(signed.order_id.removeprefix("0x"))
    key = keys.PrivateKey(bytes.fromhex(SIM_PRIVATE_KEY.removeprefix("0x")), backend=NativeECCBackend())
    native = key.sign_msg_hash(digest)
    assert (native.r, native.s) == (int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"))
    assert native.recover_public_key_from_msg_hash(digest) == key.public_key

"""Venue errors against the sim with injected faults (sim/faults.py): retryable ones are
retried within a bound and then surface as retryable; final ones come back with the venue's
message; a lost answer never makes a second order. Market parameters come from the CLOB."""

from __future__ import annotations

import time

import httpx
import pytest
from py_clob_client_v2.clob_types import OrderArgsV2
from py_clob_client_v2.exceptions import PolyApiException
from py_clob_client_v2.order_utils import SignedOrderV2

from baton.errors import VenueError
from baton.settings import SIM_PRIVATE_KEY
from sim.clob import ClobSim, create_app
from sim.model import PriceModel
from tests.simserver import Clock, ThreadServer
from venues.clob_transport import translate
from venues.polymarket import RETRY_ATTEMPTS, RETRY_BACKOFF_S, RETRY_BUDGET_S, ClobVenue


@pytest.fixture
def env():
    clock = Clock()
    with ThreadServer(create_app(ClobSim(PriceModel(8), seed=8, chain_id=137, clock_ms=clock))) as url:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, 137, timeout_s=2.0)
        try:
            yield url, venue, clock
        finally:
            venue.close()


def faults(url: str, rules: list[dict]) -> None:
    r = httpx.post(f"{url}/_sim/faults", json=rules, timeout=5)
    assert r.status_code == 200, r.text


def window(clock: Clock, asset: str, tf: str = "5m", secs: int = 300) -> str:
    return f"{asset}-updown-{tf}-{clock.ms // 1000 // secs * secs}"


def sim_orders(url: str) -> list[dict]:
    return httpx.get(f"{url}/data/orders", timeout=5).json()["data"]


def test_market_parameters_come_from_the_clob(env):
    url, venue, clock = env
    m5 = venue.discover(window(clock, "btc"))
    m15 = venue.discover(window(clock, "btc", "15m", 900))
    info = httpx.get(f"{url}/clob-markets/{m15.condition_id}", timeout=5).json()
    assert m15.tick_size == float(info["mts"]) and m15.fee_rate == float(info["fd"]["r"]) > 0
    assert m15.min_size == float(
        httpx.get(f"{url}/markets/{m15.condition_id}", timeout=5).json()["minimum_order_size"]
    )
    assert m5.fee_rate == 0.0  # the sim, like Polymarket, charges takers on 15-minute markets only


def test_a_server_error_is_retried_within_the_bound_then_succeeds(env):
    url, venue, clock = env
    m = venue.discover(window(clock, "eth"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    faults(
        url,
        [{"method": "POST", "path": "/order", "error_rate": 1, "status": 503, "times": RETRY_ATTEMPTS - 1}],
    )
    res = venue.post(signed)
    assert res.status == "matched"
    assert [o["id"] for o in sim_orders(url)] == [signed.order_id]


def test_a_post_is_not_retried_once_its_poster_may_send_no_more(env):
    # The worker's lease deadline passing between two attempts: the retry is not sent, and
    # the first attempt's error comes back (its fate is reconciled, never called "not sent").
    url, venue, clock = env
    m = venue.discover(window(clock, "eth"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    faults(url, [{"method": "POST", "path": "/order", "error_rate": 1, "status": 503, "times": 1}])
    with pytest.raises(VenueError) as info:
        venue.post(signed, timeout_s=RETRY_BACKOFF_S[0] / 2)  # over before the retry's pause
    assert info.value.retryable and "503" in str(info.value)
    assert sim_orders(url) == []  # the one attempt failed, and no second was sent


def test_a_venue_that_keeps_failing_raises_a_retryable_error_after_the_bound(env):
    url, venue, clock = env
    m = venue.discover(window(clock, "sol"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    faults(url, [{"method": "POST", "path": "/order", "error_rate": 1, "status": 502}])
    started = time.monotonic()
    with pytest.raises(VenueError) as info:
        venue.post(signed)
    assert info.value.retryable and info.value.kind == "server" and "HTTP 502" in str(info.value)
    assert time.monotonic() - started < RETRY_BUDGET_S + 5  # bounded (generous for a slow machine)
    (rule,) = httpx.get(f"{url}/_sim/faults", timeout=5).json()["rules"]
    assert rule["errors"] == RETRY_ATTEMPTS  # the sim saw each attempt, and no more
    assert sim_orders(url) == []


def test_a_lost_answer_after_the_order_was_placed_never_makes_a_second_order(env):
    url, venue, clock = env
    m = venue.discover(window(clock, "xrp"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    # the venue places the order, then the connection drops before the answer: the retry
    # reposts the same signed order, and the venue answers with the first result
    faults(url, [{"method": "POST", "path": "/order", "drop_rate": 1, "phase": "after", "times": 1}])
    res = venue.post(signed)
    assert res.status == "matched" and res.order_id == signed.order_id
    assert [o["id"] for o in sim_orders(url)] == [signed.order_id]


def test_final_errors_come_back_with_the_venues_message(env):
    url, venue, clock = env
    m = venue.discover(window(clock, "doge"))
    # insufficient balance: a final refusal, not an exception, and nothing is retried
    httpx.post(f"{url}/_sim/balance", json={"address": venue._client.get_address(), "usd": 1}, timeout=5)
    res = venue.buy(m.up_token, 0.5, 100)
    assert res.status == "rejected" and "not enough balance" in res.error
    # an order version mismatch is final for that signed order
    signed = venue.sign_buy(m.up_token, 0.5, 1.5)
    faults(
        url,
        [
            {
                "method": "POST",
                "path": "/order",
                "error_rate": 1,
                "status": 400,
                "body": {"error": "order_version_mismatch"},
                "times": 1,
            }
        ],
    )
    res = venue.post(signed)
    assert res.status == "rejected" and "order_version_mismatch" in res.error
    assert signed.order_id not in {o["id"] for o in sim_orders(url)}


def test_a_version_1_order_gets_the_live_version_mismatch_and_the_next_is_signed_right(env):
    # The live CLOB (V2 since 2026-04-28) refuses a V1-signed order with HTTP 400
    # {"error": "order_version_mismatch"}; docs/venues.md's path for it, through the real
    # client: the refusal is final for that order, and the version is read again.
    url, venue, clock = env
    m = venue.discover(window(clock, "sol"))
    venue._ensure_creds()
    client = venue._client
    client._ClobClient__cached_version = 1  # cached before the migration
    v1 = client.create_order(OrderArgsV2(token_id=m.up_token, price=0.99, size=5, side="BUY"))
    assert not isinstance(v1, SignedOrderV2)  # the client signed a version 1 order
    with pytest.raises(PolyApiException) as info:
        client.post_order(v1, "FOK")
    assert (info.value.status_code, info.value.error_msg) == (400, {"error": "order_version_mismatch"})
    err = translate(info.value, "POST /order")
    assert (err.kind, err.retryable) == ("version_mismatch", False)
    assert sim_orders(url) == []
    # Baton's venue refuses to sign under the stale version (its ids are version 2 ids),
    # reads /version again, and signs the next order right.
    client._ClobClient__cached_version = 1
    with pytest.raises(VenueError) as refused:
        venue.sign_buy(m.up_token, 0.99, 5)
    assert refused.value.kind == "version_mismatch" and not refused.value.retryable
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    res = venue.post(signed)
    assert res.status == "matched" and [o["id"] for o in sim_orders(url)] == [signed.order_id]


def test_a_post_the_venue_answers_late_is_abandoned_by_its_deadline(env):
    url, venue, clock = env
    m = venue.discover(window(clock, "btc"))
    signed = venue.sign_buy(m.up_token, 0.99, 5)
    # The venue answers 3 s late (a partition that heals); the lease leaves 0.4 s.
    faults(url, [{"method": "POST", "path": "/order", "latency_ms": 3000, "phase": "before"}])
    started = time.monotonic()
    with pytest.raises(VenueError) as info:
        venue.post(signed, timeout_s=0.4)
    took_s = time.monotonic() - started
    assert info.value.retryable and info.value.kind in ("timeout", "deadline"), info.value
    assert took_s < 2.5, f"abandoned after {took_s:.2f} s, not at its 0.4 s deadline"


def test_a_connection_the_clob_client_gives_up_is_reset_not_closed():
    # What must never happen: an abandoned request, still in the kernel's send queue (a cut
    # link), delivered when the link heals. A reset discards it; a graceful close would not.
    import socket
    import threading

    from venues.polymarket import RESET_ON_CLOSE

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    seen: dict[str, object] = {}

    def serve() -> None:
        conn, _ = srv.accept()
        conn.settimeout(10)
        try:
            request = b""
            while not request.endswith(b"{}"):  # read it all, answer nothing
                request += conn.recv(65536)
            seen["request"] = request
            seen["after"] = conn.recv(65536)  # b"" for a FIN
        except ConnectionResetError:
            seen["after"] = "reset"
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    http = httpx.Client(timeout=0.3, transport=httpx.HTTPTransport(socket_options=RESET_ON_CLOSE))
    with pytest.raises(httpx.ReadTimeout):
        http.post(f"http://127.0.0.1:{port}/order", content=b"{}")
    http.close()
    t.join(10)
    srv.close()
    assert b"POST /order" in seen["request"]
    assert seen["after"] == "reset"

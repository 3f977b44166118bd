"""Who may call the control API and how often (tests/fast/api_rig.py): the token or the
session cookie, same-origin writes, the mutation rate limit, and the token in no answer and
no log line. Sessions, the Host allowlist, sign-in throttling and the /metrics door are in
tests/fast/test_api_doors.py."""

from __future__ import annotations

import json
import logging

import msgspec
import pytest

from api.app import served_routes
from api.auth import BURST, SESSION_COOKIE, MutationLimiter
from baton.errors import TooManyRequests
from state.structs import Slot
from tests.fast.api_rig import TOKEN, TOKEN_ID, Api, K, example_path


# --- authentication -------------------------------------------------------------------------------
async def test_health_is_public_and_says_whether_redis_answers(api: Api):
    status, body, _ = await api.call("GET", "/health", token=None)
    assert (status, body) == (200, {"ok": True, "redis": True})
    api.server.connected = False
    status, body, _ = await api.call("GET", "/health", token=None)
    assert (status, body) == (200, {"ok": True, "redis": False})


async def test_every_route_behind_the_token_answers_401_without_it_or_with_a_wrong_one(api: Api):
    guarded = [r for r in served_routes(api.client.app) if not r.public]
    assert {("POST", "/halt"), ("PATCH", "/slots/{id}"), ("GET", "/openapi.json")} <= {
        (r.method, r.path) for r in guarded
    }
    for r in guarded:
        path = example_path(r.path)
        status, body, headers = await api.call(r.method, path, token=None)
        assert status == 401 and "no bearer token" in body["error"], (r.path, body)
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, headers = await api.call(r.method, path, token="not-the-token-at-all")
        assert (status, body["error"]) == (401, "wrong token"), r.path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        status, body, _ = await api.call(r.method, path, token=None, headers={"Authorization": "Basic eDp5"})
        assert status == 401 and "not a bearer token" in body["error"]
    # None of those calls did anything.
    assert api.control().get("halted", "0") == "0" and api.audit() == []
    assert api.sup.calls == []


def controls(api: Api) -> list[dict[str, str]]:
    """The audit entries of control calls (sign-ins and sign-outs are audited too)."""
    return [e for e in api.audit() if e["action"] not in ("login", "logout", "logout_all")]


async def test_the_session_cookie_opens_reads_and_same_origin_writes(api: Api):
    cookie = await api.sign_in()
    status, body, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 200 and body["halted"] is False
    # curl with the cookie (no Origin) and the dashboard's own page (same origin) may write.
    status, body, _ = await api.call("POST", "/pause", {}, token=None, headers=cookie)
    assert status == 200 and body["changed"] is True
    own = f"http://{api.client.host}:{api.client.port}"
    status, _, _ = await api.call("POST", "/resume", {}, token=None, headers={**cookie, "Origin": own})
    assert status == 200
    assert api.audit()[0]["token_id"] == TOKEN_ID


async def test_a_cookie_sent_by_another_sites_page_cannot_write(api: Api):
    cookie = await api.sign_in()
    status, body, _ = await api.call(
        "POST", "/halt", {}, token=None, headers={**cookie, "Origin": "https://evil.example"}
    )
    assert status == 403 and "Origin https://evil.example" in body["error"]
    status, body, _ = await api.call(
        "POST", "/slots/btc-15m/disable", token=None, headers={**cookie, "Sec-Fetch-Site": "cross-site"}
    )
    assert status == 403 and "cross-site" in body["error"]
    assert api.control().get("halted", "0") == "0"
    assert controls(api) == []
    # Reads with the cookie stay open to the dashboard whatever the Origin (nothing changes).
    status, _, _ = await api.call(
        "GET", "/slots", token=None, headers={**cookie, "Origin": "https://x.example"}
    )
    assert status == 200


async def test_a_wrong_cookie_or_a_wrong_bearer_beside_a_good_cookie_is_401(api: Api):
    status, body, _ = await api.call(
        "GET", "/control", token=None, headers={"Cookie": f"{SESSION_COOKIE}=abc"}
    )
    assert status == 401 and "not a session cookie of this server" in body["error"]
    good = await api.sign_in()
    status, body, _ = await api.call("GET", "/control", token="wrong-token-wrong-token", headers=good)
    assert (status, body["error"]) == (401, "wrong token")


# --- rate limit -----------------------------------------------------------------------------------
async def test_mutations_are_rate_limited_after_the_burst_but_halt_and_reads_are_not(api: Api):
    for _ in range(BURST):
        status, _, _ = await api.call("POST", "/pause")
        assert status == 200
    status, body, headers = await api.call("POST", "/slots/btc-15m/disable")
    assert status == 429 and "at most 60 mutating calls a minute" in body["error"]
    assert int(headers["Retry-After"]) >= 1
    status, body, _ = await api.call("POST", "/halt", {"reason": "still possible"})
    assert status == 200 and body["halted"] is True
    status, _, _ = await api.call("GET", "/control")
    assert status == 200
    # The refused call never reached the operation: the slot is still enabled, and only the
    # calls carried out are in the audit stream.
    assert msgspec.json.decode(api.r.hget(K.slots(), "btc-15m"), type=Slot).enabled is True
    assert len(controls(api)) == BURST + 1


def test_the_bucket_refills_at_the_per_minute_rate_per_token():
    now = [0.0]
    lim = MutationLimiter(per_min=60, clock=lambda: now[0])
    for _ in range(BURST):
        lim.take("a")
    with pytest.raises(TooManyRequests) as e:
        lim.take("a")
    assert e.value.headers == {"Retry-After": "1"} and e.value.status == 429
    lim.take("b")  # another token has its own bucket
    now[0] = 1.0  # 60 a minute: one call a second
    lim.take("a")
    with pytest.raises(TooManyRequests):
        lim.take("a")
    slow = MutationLimiter(per_min=3, clock=lambda: now[0])
    for _ in range(3):  # the burst is never more than a minute's worth
        slow.take("a")
    with pytest.raises(TooManyRequests) as e:
        slow.take("a")
    assert e.value.headers == {"Retry-After": "20"}


# --- secrets --------------------------------------------------------------------------------------
async def test_the_token_is_in_no_answer_and_no_log_line(api: Api, caplog):
    caplog.set_level(logging.DEBUG)
    cookie = await api.sign_in()
    await api.call("GET", "/status")
    await api.call("POST", "/halt", {"reason": "secrets check"})
    await api.call("POST", "/resume", token=None, headers=cookie)
    await api.call("GET", "/control", token=TOKEN + "x")
    await api.call("GET", "/audit?count=5")
    await api.call("GET", "/openapi.json")
    # The access log has a line per request, naming the token by its id only.
    access = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    assert len(access) == 7 and any(
        "POST /halt 200" in line and f"token:{TOKEN_ID}" in line for line in access
    )
    for secret in (TOKEN, *api.session_ids):
        assert secret not in caplog.text
        assert not any(secret in json.dumps(e) for e in api.audit())

"""The API's doors (tests/fast/api_rig.py, fakeredis): dashboard sessions kept in Redis with a
lifetime and ended by sign-out or a token rotation, the Host allowlist (421), the sign-in
throttle (429), and GET /metrics' own door. tests/e2e/test_api_doors.py repeats the hostile
cases on a real stack."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request

from api.apitoken import ApiToken
from api.app import served_routes
from api.auth import metrics_door
from api.hosts import allowed, split_host
from api.sessions import SESSION_COOKIE, address_slug, sessions_of
from baton.errors import Forbidden, TooManyRequests, Unauthorized
from tests.fast.api_rig import TOKEN, TOKEN_ID, Api, K, example_path, running_api, settings


def logins(api: Api) -> list[dict[str, str]]:
    return [e for e in api.audit() if e["action"] in ("login", "logout", "logout_all")]


def redis_contents(api: Api) -> list[Any]:
    """Every key and value in Redis, for looking for a secret."""
    out: list[Any] = []
    for key in api.r.scan_iter("*"):
        kind = api.r.type(key)
        out.append(key)
        if kind == "string":
            out.append(api.r.get(key))
        elif kind == "zset":
            out += api.r.zrange(key, 0, -1)
        elif kind == "hash":
            out.append(api.r.hgetall(key))
        elif kind == "stream":
            out += [fields for _id, fields in api.r.xrange(key)]
    return out


async def until(cond: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# --- sessions ---------------------------------------------------------------------------------------
async def test_a_sign_in_keeps_only_the_digest_of_a_random_id_with_the_lifetime_as_ttl(tmp_path):
    async with running_api(tmp_path, BATON_API_SESSION_TTL_S="600") as api:
        first, second = await api.sign_in(), await api.sign_in()
        a, b = api.session_ids
        assert a != b and len(a) == 43  # a fresh random id per sign-in
        key = K.session(hashlib.sha256(a.encode()).hexdigest())
        stored = json.loads(api.r.get(key))
        assert stored["token_id"] == TOKEN_ID and stored["remote"] == "127.0.0.1"
        assert stored["expires_ms"] - stored["created_ms"] == 600_000
        assert 590_000 < api.r.pttl(key) <= 600_000
        assert api.r.zcard(K.sessions()) == 2
        # Neither the id nor the token is anywhere in Redis.
        everything = json.dumps(redis_contents(api))
        for secret in (a, b, TOKEN):
            assert secret not in everything
        for cookie in (first, second):
            status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
            assert status == 200
        assert [(e["action"], e["result"], e["who"]) for e in logins(api)] == [
            ("login", "ok", "addr:127.0.0.1")
        ] * 2


async def test_a_session_ends_when_its_lifetime_is_over(api: Api):
    cookie = await api.sign_in()
    status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 200
    # The lifetime is Redis's TTL: let it run out.
    api.r.pexpire(K.session(hashlib.sha256(api.session_ids[0].encode()).hexdigest()), 1)
    await until(lambda: api.r.keys(K.session("*")) == [])
    status, body, headers = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 401 and "session ended" in body["error"] and headers["WWW-Authenticate"]


async def test_sign_out_ends_the_session_in_redis_not_only_in_the_browser(api: Api):
    mine, other = await api.sign_in(), await api.sign_in()
    resp = await api.client.post("/logout", headers=mine, allow_redirects=False)
    assert resp.status == 303 and "Max-Age=0" in resp.headers["Set-Cookie"]
    # A copy of the cookie kept elsewhere (a stolen one) is dead too.
    status, body, _ = await api.call("GET", "/control", token=None, headers=mine)
    assert status == 401 and "session ended" in body["error"]
    status, _, _ = await api.call("POST", "/pause", {}, token=None, headers=mine)
    assert status == 401 and api.control().get("paused", "0") == "0"
    # Another browser's session stands.
    status, _, _ = await api.call("GET", "/control", token=None, headers=other)
    assert status == 200
    assert api.r.zcard(K.sessions()) == 1
    assert logins(api)[0]["action"] == "logout"


async def test_sign_out_everywhere_ends_every_session_and_needs_a_credential(api: Api):
    cookies = [await api.sign_in() for _ in range(3)]
    # Without a live session or the token, scope=all ends nothing.
    resp = await api.client.post("/logout", data={"scope": "all"}, allow_redirects=False)
    assert resp.status == 401
    assert api.r.zcard(K.sessions()) == 3
    resp = await api.client.post("/logout", data={"scope": "all"}, headers=cookies[0], allow_redirects=False)
    assert resp.status == 303
    for cookie in cookies:
        status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
        assert status == 401
    assert api.r.keys(K.session("*")) == [] and api.r.exists(K.sessions()) == 0
    entry = logins(api)[0]
    assert (entry["action"], entry["detail"], entry["token_id"]) == (
        "logout_all",
        "3 sessions ended",
        TOKEN_ID,
    )
    # The bearer token can do it too (after a cookie was stolen, from a script).
    cookie = await api.sign_in()
    resp = await api.client.post(
        "/logout", data={"scope": "all"}, headers={"Authorization": f"Bearer {TOKEN}"}, allow_redirects=False
    )
    assert resp.status == 303
    status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 401


async def test_a_token_rotation_ends_the_sessions_of_the_old_token(api: Api):
    cookie, script = await api.sign_in(), await api.sign_in()
    # The api program restarted with a new token (the file was replaced): sessions name the
    # token they were opened with, and that one is no longer in force.
    new = "rotated-token-0123456789abcdef"
    api.ctx.token = ApiToken(new, "test")
    status, body, _ = await api.call("GET", "/control", token=None, headers=script)
    assert status == 401 and "the API token changed" in body["error"]
    resp = await api.client.get("/", headers=cookie)
    assert "the API token changed" in await resp.text() and 'id="halt"' not in await resp.text()
    assert api.r.keys(K.session("*")) == []  # deleted on sight
    status, body, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 401 and "session ended" in body["error"]
    # The new token signs in as usual.
    resp = await api.client.post("/login", data={"token": new}, allow_redirects=False)
    assert resp.status == 303


async def test_the_old_hmac_style_cookie_and_garbage_open_nothing(api: Api):
    old_style = hashlib.sha256(b"anything").hexdigest()  # 64 hex digits, as before sessions
    for value in (old_style, "x" * 43, "a b", ""):
        status, _, _ = await api.call(
            "GET", "/control", token=None, headers={"Cookie": f"{SESSION_COOKIE}={value}"}
        )
        assert status == 401, value
    # A session value that cannot be read opens nothing either.
    cookie = await api.sign_in()
    [key] = api.r.keys(K.session("*"))
    api.r.set(key, "{not json")
    status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 401


async def test_an_open_event_stream_ends_when_its_session_does(api: Api, monkeypatch):
    monkeypatch.setattr("api.dashboard_stream.RECHECK_S", 0.05)
    cookie = await api.sign_in()
    own = f"http://{api.client.host}:{api.client.port}"
    resp = await api.client.get("/events", headers={**cookie, "Origin": own})
    assert resp.status == 200
    await asyncio.wait_for(resp.content.readuntil(b"\n\n"), 10)  # retry: line
    await api.client.post("/logout", headers=cookie, allow_redirects=False)
    rest = await asyncio.wait_for(resp.content.read(), 15)  # returns once the server ends it
    assert resp.content.at_eof() and isinstance(rest, bytes)


async def test_a_stream_or_a_sign_in_started_by_another_site_is_refused(api: Api):
    cookie = await api.sign_in()
    status, body, _ = await api.call(
        "GET", "/events", token=None, headers={**cookie, "Origin": "https://evil.example"}
    )
    assert status == 403 and "cross-origin" in body["error"]
    resp = await api.client.post(
        "/login", data={"token": TOKEN}, headers={"Origin": "https://evil.example"}, allow_redirects=False
    )
    assert resp.status == 403 and "Set-Cookie" not in resp.headers
    resp = await api.client.post("/logout", headers={**cookie, "Sec-Fetch-Site": "cross-site"})
    assert resp.status == 403
    # `Origin: null` (a sandboxed frame, or a page under no-referrer): only when the browser
    # says the request is same-origin.
    for site, expected in (("cross-site", 403), (None, 403), ("same-origin", 303)):
        headers = {"Origin": "null", **({"Sec-Fetch-Site": site} if site else {})}
        resp = await api.client.post("/login", data={"token": TOKEN}, headers=headers, allow_redirects=False)
        assert resp.status == expected, site
        if expected == 303:
            api.session_ids.append(resp.cookies[SESSION_COOKIE].value)
    status, _, _ = await api.call("GET", "/control", token=None, headers=cookie)
    assert status == 200  # the session still stands


async def test_redis_down_refuses_the_cookie_with_503_but_not_the_bearer_token(api: Api):
    cookie = await api.sign_in()
    api.server.connected = False
    status, body, _ = await api.call("GET", "/slots/btc-15m", token=None, headers=cookie)
    assert status == 503 and "cannot check the session" in body["error"]
    status, body, _ = await api.call("GET", "/health")
    assert status == 200 and body["redis"] is False


# --- Host allowlist ---------------------------------------------------------------------------------
async def test_every_kind_of_route_answers_421_to_a_foreign_host(api: Api):
    port = api.client.port
    cookie = await api.sign_in()
    routes = {(r.method, example_path(r.path)) for r in served_routes(api.client.app)}
    assert {("GET", "/metrics"), ("GET", "/events"), ("GET", "/"), ("POST", "/login")} <= routes
    routes |= {("GET", "/no/such/route"), ("DELETE", "/halt")}
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"127.0.0.1.evil.example:{port}",
        f"localhost:{port + 1}",
    ):
        for method, path in sorted(routes):
            for creds in ({"Authorization": f"Bearer {TOKEN}"}, cookie):
                status, body, _ = await api.call(method, path, token=None, headers={**creds, "Host": host})
                assert status == 421, (host, method, path)
                assert "does not answer to Host" in body["error"]
    # Nothing was done: no halt, no session, no audit entry beyond the one sign-in.
    assert api.control().get("halted", "0") == "0"
    assert [e["action"] for e in api.audit()] == ["login"]
    assert api.sup.calls == []


async def test_the_known_names_with_the_port_are_served(tmp_path):
    async with running_api(tmp_path, BATON_API_HOSTS="baton.lan,ops.example:8443") as api:
        port = api.client.port
        for host in (
            f"127.0.0.1:{port}",
            f"localhost:{port}",
            f"LOCALHOST.:{port}",
            f"[::1]:{port}",
            "baton.lan:1",
        ):
            status, _, _ = await api.call("GET", "/control", headers={"Host": host})
            assert status == 200, host
        for host in ("ops.example:8444", f"baton.lan.evil:{port}", f"127.0.0.1:{port}x"):
            status, _, _ = await api.call("GET", "/control", headers={"Host": host})
            assert status == 421, host


def test_the_host_rules(tmp_path):
    s = settings(
        tmp_path, BATON_API_HOST="10.1.2.3", BATON_API_PORT="7390", BATON_API_HOSTS="ops.example:443"
    )
    assert allowed(s, "10.1.2.3:7390", 7390) and allowed(s, "127.0.0.1:7390", 7390)
    assert not allowed(s, "10.1.2.3:7391", 7390)  # another port is another origin
    assert not allowed(s, None, 7390) and not allowed(s, "", 7390)
    assert allowed(s, "ops.example", 7390)  # a proxy on the default port
    assert not allowed(s, "10.1.2.3", 7390)  # no port: port 80 or 443, not ours
    wide = settings(tmp_path, BATON_API_HOST="0.0.0.0", BATON_API_PORT="7390")
    assert not allowed(wide, "0.0.0.0:7390", 7390) and allowed(wide, "localhost:7390", 7390)
    v6 = settings(tmp_path, BATON_API_HOST="::1")
    assert allowed(v6, "[::1]:7390", 7390)
    assert split_host("[::1]:80") == ("[::1]", 80) and split_host("a.b.") == ("a.b", None)
    with pytest.raises(Exception, match="BATON_API_HOSTS"):
        settings(tmp_path, BATON_API_HOSTS="http://x.example/")


# --- sign-in throttle -------------------------------------------------------------------------------
async def test_repeated_bad_sign_ins_get_429_with_retry_after_even_for_the_right_token(tmp_path, caplog):
    # 4 a minute per address: a burst of 2, then one every 30 s.
    async with running_api(tmp_path, BATON_API_LOGINS_PER_MIN="4") as api:
        wrong = "wrong-" + TOKEN
        for _ in range(2):
            resp = await api.client.post("/login", data={"token": wrong}, allow_redirects=False)
            assert resp.status == 401
        resp = await api.client.post("/login", data={"token": wrong}, allow_redirects=False)
        body = await resp.text()
        assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 30
        assert "too many sign-in attempts from this address" in body and wrong not in body
        # Throttled means the token is not even looked at: the right one is refused too.
        resp = await api.client.post("/login", data={"token": TOKEN}, allow_redirects=False)
        assert resp.status == 429 and "Set-Cookie" not in resp.headers
        # The failures are audited without the value; a throttled attempt is not (no flood).
        refused = [e for e in api.audit() if e["action"] == "login"]
        assert [(e["result"], e["status"], e["detail"]) for e in refused] == [
            ("refused", "401", "wrong token")
        ] * 2
        assert wrong not in json.dumps(api.audit()) and wrong not in caplog.text
        # The bearer token is never throttled: the halt always gets through.
        status, body, _ = await api.call("POST", "/halt", {"reason": "during a guessing run"})
        assert status == 200 and body["halted"] is True
        assert api.r.hgetall(K.ratelimit("login:addr:127.0.0.1"))


async def test_sign_ins_under_the_limit_are_not_affected(tmp_path):
    async with running_api(tmp_path, BATON_API_LOGINS_PER_MIN="10") as api:
        await api.client.post("/login", data={"token": "a-mistyped-token-000"}, allow_redirects=False)
        for _ in range(4):
            await api.sign_in()
        assert len(api.session_ids) == 4


async def test_the_throttle_counts_per_address_and_for_all_addresses(tmp_path):
    async with running_api(tmp_path, BATON_API_LOGINS_PER_MIN="4", BATON_API_LOGINS_ALL_PER_MIN="6") as api:
        sessions = sessions_of(api.ctx)
        for _ in range(2):
            await sessions.take_attempt("10.0.0.1")
        with pytest.raises(TooManyRequests, match="from this address"):
            await sessions.take_attempt("10.0.0.1")
        # Another address has its own count, up to the global one (burst 3).
        await sessions.take_attempt("2001:db8::7")
        with pytest.raises(TooManyRequests, match="from all addresses together") as e:
            await sessions.take_attempt("10.0.0.2")
        assert int(e.value.headers["Retry-After"]) >= 1
        assert address_slug("2001:db8::7") == "2001-db8--7" and address_slug("fe80::1%eth0") == "fe80--1"


# --- GET /metrics -----------------------------------------------------------------------------------
def _metrics_request(api: Api, remote: str, headers: dict[str, str] | None = None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (remote, 40000) if name == "peername" else default
    )
    return make_mocked_request(
        "GET", "/metrics", headers=headers or {}, transport=transport, app=api.client.app
    )


async def test_metrics_are_open_to_this_machine_only_by_default(api: Api):
    status, body, _ = await api.call("GET", "/metrics", token=None)
    assert status == 200 and b"baton_redis_up" in body
    metrics_door(_metrics_request(api, "::1"), api.ctx)
    metrics_door(_metrics_request(api, "::ffff:127.0.0.1"), api.ctx)
    with pytest.raises(Forbidden, match="BATON_METRICS_AUTH=token"):
        metrics_door(_metrics_request(api, "192.168.1.20"), api.ctx)


async def test_metrics_can_require_a_token(tmp_path):
    async with running_api(tmp_path, BATON_METRICS_AUTH="token") as api:
        scrape = "metrics-only-token-0123456789"
        api.ctx.metrics_token = ApiToken(scrape, "test")
        status, body, headers = await api.call("GET", "/metrics", token=None)
        assert status == 401 and "needs a bearer token" in body["error"] and headers["WWW-Authenticate"]
        status, body, _ = await api.call("GET", "/metrics", token="wrong-wrong-wrong-wrong")
        assert status == 401 and body["error"] == "wrong token for GET /metrics"
        for good in (scrape, TOKEN):
            status, body, _ = await api.call("GET", "/metrics", token=good)
            assert status == 200 and b"baton_redis_up" in body
        # With the token, from anywhere; the metrics token opens nothing else.
        metrics_door(_metrics_request(api, "192.168.1.20", {"Authorization": f"Bearer {scrape}"}), api.ctx)
        status, _, _ = await api.call("GET", "/control", token=scrape)
        assert status == 401
        with pytest.raises(Unauthorized):
            metrics_door(_metrics_request(api, "127.0.0.1"), api.ctx)


async def test_the_metrics_token_is_made_once_owner_only(tmp_path):
    import os
    import stat

    from api.__main__ import load_metrics_token

    s = settings(tmp_path, BATON_METRICS_AUTH="token")
    first = load_metrics_token(s)
    assert first is not None and load_metrics_token(s).reveal() == first.reveal()  # type: ignore[union-attr]
    assert stat.S_IMODE(os.stat(s.metrics_token_file).st_mode) == 0o600
    assert load_metrics_token(settings(tmp_path)) is None  # loopback: no token


async def test_a_guessing_run_cannot_flush_the_audit_stream(tmp_path):
    async with running_api(
        tmp_path, BATON_API_LOGINS_PER_MIN="100", BATON_API_LOGINS_ALL_PER_MIN="100"
    ) as api:
        for i in range(15):
            resp = await api.client.post(
                "/login", data={"token": f"guess-{i:03d}-0123456789"}, allow_redirects=False
            )
            assert resp.status == 401
        # A burst of 10 is audited, then 50 an hour: the real entries stay in the capped stream.
        assert len([e for e in api.audit() if e["action"] == "login"]) == 10
        await api.sign_in()  # a success is always audited
        assert [e["result"] for e in api.audit()][:1] == ["ok"]

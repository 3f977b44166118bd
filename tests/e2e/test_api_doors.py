"""The API's doors attacked on a real stack (the api program under supervisor, a real
redis-server): a foreign Host gets 421 on every kind of route, the old HMAC-style cookie and a
signed-out one get 401, repeated bad sign-ins get 429, and nothing secret lands in Redis or in
a log."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from api import apitoken
from api.sessions import SESSION_COOKIE
from baton import settings as settings_mod
from deploy.sandbox import Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _sign_in(http: httpx.Client, token: str) -> httpx.Response:
    resp = http.post("/login", data={"token": token}, follow_redirects=False)
    http.cookies.clear()  # no cookie jar: every request says which session it brings
    return resp


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={value}"}


def test_foreign_hosts_stale_cookies_and_guessing_are_refused_on_a_real_stack():
    st = Stack(BATON_TICK_MS="1000")
    s = settings_mod.load(st.env)
    base = f"http://{s.api_host}:{s.api_port}"
    http = httpx.Client(base_url=base, timeout=30)
    try:
        st.start()
        wait_for(lambda: http.get("/health").status_code == 200, 30, "the api program's /health")
        token = apitoken.load(s, env=st.env, create=False)
        bearer = {"Authorization": f"Bearer {token.reveal()}"}

        # (a) DNS rebinding: a page whose name resolves to 127.0.0.1 reaches the port, not the API.
        for method, path in (
            ("GET", "/health"),
            ("GET", "/metrics"),
            ("GET", "/"),
            ("GET", "/events"),
            ("POST", "/login"),
            ("GET", "/control"),
            ("POST", "/halt"),
            ("GET", "/nothing-here"),
        ):
            resp = http.request(method, path, headers={**bearer, "Host": f"rebound.example:{s.api_port}"})
            assert resp.status_code == 421, (method, path, resp.text)
            assert "does not answer to Host" in resp.json()["error"]
        assert st.redis.hget("baton:control", "halted") in (None, "0")
        assert http.get("/health", headers={"Host": f"localhost:{s.api_port}"}).status_code == 200

        # (b) The cookie of the old scheme (an HMAC of the token, valid forever) opens nothing.
        old = hmac.new(token.reveal().encode(), b"baton-session-v1", hashlib.sha256).hexdigest()
        resp = http.get("/control", headers=_cookie(old))
        assert resp.status_code == 401 and "not a session cookie" in resp.json()["error"]
        assert 'name="token"' in http.get("/", headers=_cookie(old)).text

        # (c) A session works until sign-out, and not one request after, wherever the cookie is.
        resp = _sign_in(http, token.reveal())
        assert resp.status_code == 303
        sid = resp.cookies[SESSION_COOKIE]
        assert "HttpOnly" in resp.headers["set-cookie"] and "SameSite=Strict" in resp.headers["set-cookie"]
        assert http.get("/control", headers=_cookie(sid)).status_code == 200
        digest = hashlib.sha256(sid.encode()).hexdigest()
        assert json.loads(st.redis.get(f"baton:session:{digest}"))["token_id"] == token.id
        assert 0 < st.redis.pttl(f"baton:session:{digest}") <= s.api_session_ttl_s * 1000
        assert http.post("/logout", headers=_cookie(sid), follow_redirects=False).status_code == 303
        resp = http.get("/control", headers=_cookie(sid))
        assert resp.status_code == 401 and "session ended" in resp.json()["error"]
        resp = http.post("/pause", json={}, headers=_cookie(sid))
        assert resp.status_code == 401 and st.redis.hget("baton:control", "paused") in (None, "0")
        assert st.redis.exists(f"baton:session:{digest}") == 0

        # (d) Guessing: a burst of bad sign-ins, then 429 with Retry-After, even for the token.
        # The burst is half a minute's attempts; the sign-in of (c) counted too, and the bucket
        # refills a little while we go (a slow machine), so the 429 comes after about a burst.
        burst = s.api_logins_per_min // 2
        refused = 0
        while (resp := _sign_in(http, f"guess-{refused:04d}-0123456789abcdef")).status_code == 401:
            refused += 1
            assert refused <= burst + 2, "no 429 after a burst of bad sign-ins"
        assert burst - 1 <= refused and resp.status_code == 429 and int(resp.headers["Retry-After"]) >= 1
        assert "too many sign-in attempts" in resp.text
        resp = _sign_in(http, token.reveal())
        assert resp.status_code == 429 and "set-cookie" not in resp.headers
        # The bearer token is not throttled (a halt always gets through).
        assert http.get("/control", headers=bearer).status_code == 200
        audit = [f for _id, f in st.redis.xrevrange("baton:audit")]
        failed = [e for e in audit if (e["action"], e["result"]) == ("login", "refused")]
        assert len(failed) == refused and all(e["who"] == "addr:127.0.0.1" for e in failed)
        assert "guess-" not in json.dumps(audit)
        counted = f'baton_control_actions_total{{action="login",result="refused"}} {float(refused)}'
        wait_for(lambda: counted in http.get("/metrics").text, 30, "the refused sign-ins in /metrics")

        # Neither the token nor a session id is anywhere in Redis.
        for key in st.redis.scan_iter("*"):
            if st.redis.type(key) == "string":
                value = st.redis.get(key) or ""
                assert token.reveal() not in value and sid not in value, key
    finally:
        http.close()
        st.stop(wait=True)
    logs = "".join(f.read_text(errors="replace") for f in (st.home / "var" / "log").glob("*.log*"))
    assert logs and token.reveal() not in logs and sid not in logs
    assert "guess-" not in logs

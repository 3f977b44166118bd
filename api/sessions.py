"""The dashboard's sessions: the login form trades the API token for a random session id (the
cookie), kept in Redis as its digest for a fixed lifetime (state/sessions.py); sign-out deletes
it, "sign out everywhere" deletes them all, and a token rotation ends them (each session names
the token it was opened with). Sign-in attempts are throttled per client address and for all
addresses together (state/ratelimit.py's buckets), so the form is no guessing machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from typing import Any

import redis
from aiohttp import web

from api.context import ApiContext
from baton.errors import RateLimited, TooManyRequests, Unauthorized, Unavailable
from kernel.clock import wall_ms
from state import sessions as store
from state.keys import Keys
from state.ratelimit import AsyncLimiter, BucketSpec, Budget

SESSION_COOKIE = "baton_session"
# A session lookup is one GET: a Redis that does not answer in this long is down.
LOOKUP_TIMEOUT_S = 5.0
# An open event stream checks that its session still stands this often: sign-out ends it.
RECHECK_S = 5.0
_CTX_KEY = "sessions"
# Failed sign-ins audited: a burst of 10, then 50 an hour. A guessing run from many addresses
# gets 60 attempts a minute through the throttle; audited one by one, they would push the
# real entries out of the capped audit stream within hours. The api log has every one.
AUDITED_FAILURES = BucketSpec("login:audited", capacity=10, refill_per_s=50 / 3600)
_SLUG = re.compile(r"[^a-z0-9_.\-]")


class Sessions:
    """Sessions and the sign-in throttle of one api process, on its async Redis client."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        keys = Keys(ctx.s.prefix)
        self.repo = store.SessionRepo(ctx.redis, keys)
        # Scale 1 whatever BATON_RATE_LIMIT_SCALE says: that scales the venues' budgets, and
        # turning it off must not turn this one off.
        self.limiter = AsyncLimiter(ctx.redis, keys, scale=1.0, clock_ms=wall_ms)
        self.ttl_s = ctx.s.api_session_ttl_s

    # --- sign-in throttle -------------------------------------------------------------------
    def login_budget(self, remote: str) -> Budget:
        s = self.ctx.s
        return Budget(
            "login",
            (
                BucketSpec.window(f"login:addr:{address_slug(remote)}", s.api_logins_per_min, 60),
                BucketSpec.window("login:all", s.api_logins_all_per_min, 60),
            ),
            covers="dashboard sign-in attempts",
        )

    async def take_attempt(self, remote: str) -> None:
        """Count one sign-in attempt before the token is looked at (so that parallel guesses
        cannot outrun the count), or raise TooManyRequests with the wait."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                await self.limiter.take(self.login_budget(remote))
        except RateLimited as e:
            wait_s = max(1, -(-e.wait_ms // 1000)) if e.wait_ms > 0 else 60
            scope = "from this address" if ":addr:" in e.bucket else "from all addresses together"
            raise TooManyRequests(
                f"too many sign-in attempts {scope}; try again in {wait_s} s "
                "(a bearer token still works: `baton token` prints it)",
                wait_s,
            ) from None
        except (redis.RedisError, OSError, TimeoutError) as e:
            raise Unavailable(f"cannot count the sign-in attempt: Redis: {type(e).__name__}: {e}") from None

    async def may_audit_failure(self) -> bool:
        """Whether this failed sign-in goes to the audit stream (see AUDITED_FAILURES)."""
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                await self.limiter.take(Budget("login_audit", (AUDITED_FAILURES,)))
        except RateLimited:
            return False
        except (redis.RedisError, OSError, TimeoutError):
            return True  # the audit write will meet the same Redis, and say nothing if it fails
        return True

    # --- sessions ---------------------------------------------------------------------------
    async def open(self, remote: str) -> str:
        """A new session for the token in force; returns its id (the cookie's value)."""
        now = wall_ms()
        sid = store.new_id()
        session = store.Session(
            token_id=self.ctx.token.id, created_ms=now, expires_ms=now + self.ttl_s * 1000, remote=remote
        )
        await self._redis("store the session", self.repo.create(sid, session, now))
        return sid

    async def check(self, cookie: str) -> str:
        """The session's digest prefix (names it in the audit) if `cookie` is a live session of
        the token in force; Unauthorized saying why otherwise."""
        if not store.well_formed(cookie):
            raise Unauthorized("not a session cookie of this server (an old one?): sign in again")
        session = await self._redis("check the session", self.repo.get(cookie))
        if session is None:
            raise Unauthorized("session ended (signed out, expired or revoked): sign in again")
        if session.token_id != self.ctx.token.id:
            # Opened with a token that is no longer in force: the rotation ended it.
            await self._redis("end the session", self.repo.delete(cookie))
            raise Unauthorized("session ended: the API token changed since it began; sign in again")
        return store.digest(cookie)[:12]

    async def still_open(self, cookie: str) -> bool:
        try:
            await self.check(cookie)
        except Unauthorized:
            return False
        return True

    async def close(self, cookie: str) -> bool:
        if not store.well_formed(cookie):
            return False
        return bool(await self._redis("end the session", self.repo.delete(cookie)))

    async def close_all(self) -> int:
        return int(await self._redis("end the sessions", self.repo.delete_all()))

    async def _redis(self, what: str, aw: Any) -> Any:
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                return await aw
        except (redis.RedisError, OSError, TimeoutError) as e:
            raise Unavailable(f"cannot {what}: Redis: {type(e).__name__}: {e}") from None


def sessions_of(ctx: ApiContext) -> Sessions:
    found = ctx.extra.get(_CTX_KEY)
    if found is None:
        found = ctx.extra[_CTX_KEY] = Sessions(ctx)
    return found


def address_slug(remote: str) -> str:
    """A client address as a bucket name: IPv6's colons (and anything odd) become '-'."""
    with contextlib.suppress(ValueError):
        remote = str(ipaddress.ip_address(remote.split("%")[0]))
    return _SLUG.sub("-", remote.lower())[:64] or "unknown"


def set_cookie(response: web.StreamResponse, session_id: str, max_age_s: int, secure: bool) -> None:
    """HttpOnly (page scripts cannot read it), SameSite=Strict (a browser does not send it with
    requests started by another site), Path=/, Secure over TLS, gone with the session."""
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        secure=secure,
        path="/",
        max_age=max_age_s,
    )

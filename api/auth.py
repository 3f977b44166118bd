"""Who may call the API, from where, and how often.

Two credentials open every route that is not `public`:
- `Authorization: Bearer <token>`: scripts, curl, the CLI;
- the session cookie `baton_session` = `session_cookie(token)`: the dashboard's login form
  sets it, so that the browser never keeps the token itself. Because a browser sends a
  cookie with any request to this host, a *mutating* call authenticated by the cookie must
  also come from this server's own origin (CSRF): a browser names the page that made a
  request in `Origin` (and `Sec-Fetch-Site`), and a page elsewhere cannot forge them.

Secrets are compared in constant time; the token and the cookie value never appear in an
answer or a log line: errors name the token by its id (a SHA-256 prefix) only.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections.abc import Callable

from aiohttp import web

from api.apitoken import ApiToken
from api.spec import Route
from baton.errors import Forbidden, TooManyRequests, Unauthorized
from control.commands import Actor

SESSION_COOKIE = "baton_session"
# The halt is the safety valve: see `rate_limited`.
NEVER_RATE_LIMITED = frozenset({("POST", "/halt")})
# A token may make this many mutating calls at once before the per-minute rate applies.
BURST = 10


def session_cookie(token: ApiToken) -> str:
    """The value of the session cookie: an HMAC of a fixed label keyed with the token, so it
    proves knowledge of the token without being it, and changes when the token changes."""
    return hmac.new(token.reveal().encode(), b"baton-session-v1", hashlib.sha256).hexdigest()


def set_session_cookie(response: web.StreamResponse, token: ApiToken, secure: bool = False) -> None:
    """For the login form: HttpOnly (page scripts cannot read it) and SameSite=Strict (a
    browser does not send it with requests started by another site) on top of the Origin check."""
    response.set_cookie(
        SESSION_COOKIE, session_cookie(token), httponly=True, samesite="Strict", secure=secure, path="/"
    )


def actor_of(token: ApiToken) -> Actor:
    return Actor(source="api", who=f"token:{token.id}", token_id=token.id)


def authenticate(request: web.Request, token: ApiToken, route: Route) -> Actor:
    """The Actor of an authenticated request, or Unauthorized/Forbidden saying what was wrong.
    A bearer header, when given, decides alone (a wrong one is not rescued by a cookie)."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Unauthorized(
                "the Authorization header is not a bearer token: send 'Authorization: Bearer <token>'"
            )
        if not token.matches(presented.strip()):
            raise Unauthorized("wrong token")
        return actor_of(token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise Unauthorized(
            "no bearer token: send 'Authorization: Bearer <token>' "
            "(the token is BATON_API_TOKEN, or the file var/api-token; `baton token` prints it)"
        )
    if not hmac.compare_digest(cookie.encode(), session_cookie(token).encode()):
        raise Unauthorized("wrong session cookie (the token changed?): log in again")
    if route.mutating:
        _same_origin(request)
    return actor_of(token)


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def _same_origin(request: web.Request) -> None:
    """CSRF check for a cookie-authenticated mutating call. Browsers send `Origin` with every
    POST/PATCH; a client that sends none (curl with a cookie) is not a browser a page can steer.
    `Sec-Fetch-Site` covers browsers that leave Origin out."""
    origin = request.headers.get("Origin")
    if origin is not None and origin.lower() != own_origin(request):
        raise Forbidden(
            f"cross-origin request refused: Origin {origin} is not this server ({own_origin(request)}); "
            "use the dashboard served here, or a bearer token"
        )
    site = request.headers.get("Sec-Fetch-Site")
    if origin is None and site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site}); use a bearer token")


def rate_limited(route: Route) -> bool:
    """Mutating calls are rate-limited, except the halt: it is the emergency stop, it only ever
    makes trading safer, and an operator (or a script) that has just used up its budget on
    bad calls must still be able to stop everything at once. It also takes no tokens, so a
    burst of halts does not lock out the resume that follows."""
    return route.mutating and (route.method, route.path) not in NEVER_RATE_LIMITED


class MutationLimiter:
    """A token bucket per token id: `per_min` calls a minute, bursts of up to BURST (never more
    than a minute's worth). In memory: there is one api process, and a restart that forgets
    the buckets grants at most one more burst."""

    def __init__(self, per_min: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_min = per_min
        self.rate_per_s = per_min / 60.0
        self.capacity = float(min(BURST, per_min))
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # token id -> (tokens, at)

    def take(self, token_id: str) -> None:
        """Spend one call of `token_id`'s budget, or raise TooManyRequests with the wait."""
        now = self.clock()
        tokens, at = self._buckets.get(token_id, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[token_id] = (tokens, now)
            wait_s = max(1, math.ceil((1.0 - tokens) / self.rate_per_s))
            raise TooManyRequests(
                f"rate limited: at most {self.per_min} mutating calls a minute (bursts of "
                f"{self.capacity:.0f}) per token; retry in {wait_s} s (POST /halt is never limited)",
                wait_s,
            )
        self._buckets[token_id] = (tokens - 1.0, now)

"""Who may call the API, from where, and how often.

Two credentials open every route that is not `public`:
- `Authorization: Bearer <token>`: scripts, curl, the CLI;
- the session cookie `baton_session`: a random session id the dashboard's login form trades
  the token for (api/sessions.py), so that the browser never keeps the token itself. Because
  a browser sends a cookie with any request to this host, a *mutating* call or an event
  stream authenticated by the cookie must also come from this server's own origin (CSRF): a
  browser names the page that made a request in `Origin` (and `Sec-Fetch-Site`), and a page
  elsewhere cannot forge them.
`GET /metrics` has a door of its own (`metrics_door`, BATON_METRICS_AUTH).

Secrets are compared in constant time; the token and the session id never appear in an
answer or a log line: errors name the token by its id (a SHA-256 prefix) only.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections.abc import Callable

from aiohttp import web

from api.apitoken import ApiToken
from api.context import ApiContext
from api.sessions import SESSION_COOKIE, sessions_of
from api.spec import Route
from baton.errors import Forbidden, TooManyRequests, Unauthorized
from control.commands import Actor

__all__ = ["SESSION_COOKIE", "authenticate", "metrics_door", "rate_limited", "same_origin"]

EVENT_STREAM = "text/event-stream"
# The halt is the safety valve: see `rate_limited`.
NEVER_RATE_LIMITED = frozenset({("POST", "/halt")})
# A token may make this many mutating calls at once before the per-minute rate applies.
BURST = 10


def actor_of(token: ApiToken) -> Actor:
    return Actor(source="api", who=f"token:{token.id}", token_id=token.id)


def bearer(request: web.Request) -> str | None:
    """The bearer token presented, None when there is no Authorization header, or
    Unauthorized when the header is not a bearer token."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise Unauthorized(
            "the Authorization header is not a bearer token: send 'Authorization: Bearer <token>'"
        )
    return presented.strip()


async def authenticate(request: web.Request, ctx: ApiContext, route: Route) -> Actor:
    """The Actor of an authenticated request, or Unauthorized/Forbidden saying what was wrong.
    A bearer header, when given, decides alone (a wrong one is not rescued by a cookie)."""
    presented = bearer(request)
    if presented is not None:
        if not ctx.token.matches(presented):
            raise Unauthorized("wrong token")
        return actor_of(ctx.token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie is None:
        raise Unauthorized(
            "no bearer token: send 'Authorization: Bearer <token>' "
            "(the token is BATON_API_TOKEN, or the file var/api-token; `baton token` prints it)"
        )
    session = await sessions_of(ctx).check(cookie)
    if route.mutating or route.content_type == EVENT_STREAM:
        same_origin(request)
    return Actor(source="api", who=f"session:{session}", token_id=ctx.token.id)


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}".lower()


def same_origin(request: web.Request) -> None:
    """CSRF check for a cookie-authenticated mutating call or stream (and the sign-in and
    sign-out forms). Browsers send `Origin` with every POST/PATCH; a client that sends none
    (curl with a cookie) is not a browser a page can steer. `Sec-Fetch-Site` covers browsers
    that leave Origin out."""
    origin = request.headers.get("Origin")
    site = request.headers.get("Sec-Fetch-Site")
    if origin == "null" and site == "same-origin":
        return  # a page of ours under a no-referrer policy: the browser vouches for it
    if origin is not None and origin.lower() != own_origin(request):
        raise Forbidden(
            f"cross-origin request refused: Origin {origin} is not this server ({own_origin(request)}); "
            "use the dashboard served here, or a bearer token"
        )
    if origin is None and site is not None and site not in ("same-origin", "none"):
        raise Forbidden(f"cross-site request refused (Sec-Fetch-Site: {site}); use a bearer token")


def metrics_door(request: web.Request, ctx: ApiContext) -> None:
    """GET /metrics, by BATON_METRICS_AUTH: "loopback" answers clients on this machine only,
    "token" wants a bearer token (the metrics token, or the API token), "open" anyone."""
    mode = ctx.s.metrics_auth
    if mode == "open":
        return
    if mode == "token":
        presented = bearer(request)
        if presented is None:
            raise Unauthorized(
                "GET /metrics needs a bearer token (BATON_METRICS_AUTH=token): the metrics token in "
                "var/secrets/metrics-token (`baton token --metrics` prints it), or the API token"
            )
        keys = [t for t in (ctx.metrics_token, ctx.token) if t is not None]
        # Both compared, whichever matches: the time taken does not say which one was close.
        if not [t for t in keys if t.matches(presented)]:
            raise Unauthorized("wrong token for GET /metrics")
        return
    if not _loopback(request.remote):
        raise Forbidden(
            "GET /metrics answers only clients on this machine without a token "
            "(BATON_METRICS_AUTH=loopback); set BATON_METRICS_AUTH=token to scrape it from elsewhere"
        )


def _loopback(remote: str | None) -> bool:
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote.split("%")[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped.is_loopback
    return addr.is_loopback


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

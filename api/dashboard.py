"""The dashboard's routes: its page (api/static/dashboard.html, which shows what the system is
doing and carries the emergency buttons), its login form, and the JSON and event stream the
page is drawn from. What the page shows is read in api/dashboard_data.py and pushed live by
api/dashboard_stream.py.

The page never holds the token: the login form trades it for a session cookie (see
api/sessions.py: a random id kept in Redis for a fixed lifetime, ended by sign-out), which
authenticates the page's `fetch` calls to the JSON API and its
EventSource. Everything the page shows is one `DashboardData` snapshot, served whole at
GET /dashboard/data (first paint, tests) and pushed on GET /events (server-sent events):
at once on connect, after every tick journaled, after every change of the control flags,
and when a slower poll finds something else changed (a worker gone, a slot disabled from the
CLI). The PnL series (GET /pnl, a page of the ledger: its newest entries) is not in the
snapshot: the page fetches it again when the snapshot's ledger entry count moves.
"""

from __future__ import annotations

import html
import logging
import secrets
from functools import cache
from pathlib import Path

from aiohttp import web

from api.app import ROUTE_KEY, json_response
from api.auth import SESSION_COOKIE, authenticate, same_origin
from api.context import ApiContext, ctx_of
from api.dashboard_data import DashboardData, PnlQuery, PnlResult, pnl_series, snapshot
from api.dashboard_stream import close_streams, serve_events
from api.routes import query_of
from api.sessions import sessions_of, set_cookie
from api.spec import route
from baton.errors import TooManyRequests, Unauthorized
from control import audit
from control.commands import Actor

log = logging.getLogger("baton.api.dashboard")

STATIC = Path(__file__).parent / "static"
TAGS = ("dashboard",)


# --- pages ---------------------------------------------------------------------------------------
@cache
def _template(name: str) -> str:
    return (STATIC / name).read_text()


def _page(name: str, status: int = 200, message: str = "") -> web.Response:
    """A static page with a fresh CSP nonce for its inline script and style: the page runs no
    script but its own, and no site can frame it (a Halt button must not be clickjacked)."""
    nonce = secrets.token_urlsafe(16)
    text = _template(name).replace("{{nonce}}", nonce).replace("{{message}}", html.escape(message))
    resp = web.Response(text=text, status=status, content_type="text/html")
    resp.headers.update(
        {
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
                "frame-ancestors 'none'; base-uri 'none'"
            ),
            "X-Frame-Options": "DENY",
            "X-Content-Type-Options": "nosniff",
            # Not no-referrer: with it a browser sends `Origin: null` on the page's own form
            # posts (sign-in, sign-out), which the origin check cannot tell from a sandboxed frame.
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }
    )
    return resp


async def _signed_in(request: web.Request) -> str:
    """"" when signed in, else why not (shown above the login form when there was a cookie)."""
    try:
        await authenticate(request, ctx_of(request), request[ROUTE_KEY])
    except Unauthorized as e:
        return e.message
    return ""


def _see_other(location: str) -> web.Response:
    # Returned, not raised: the app's error middleware answers raised HTTP errors as JSON.
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


@route(
    "GET", "/", tags=TAGS, public=True, content_type="text/html", summary="The dashboard (or the login form)"
)
async def page(request: web.Request) -> web.StreamResponse:
    # Public, so that a browser without the cookie gets the login form rather than a JSON 401.
    why = await _signed_in(request)
    if not why:
        return _page("dashboard.html")
    if SESSION_COOKIE in request.cookies:
        return _page("login.html", message=f"Signed out: {why}.")
    return _page("login.html")


@route(
    "GET", "/login", tags=TAGS, public=True, content_type="text/html", summary="The dashboard's login form"
)
async def login_form(request: web.Request) -> web.StreamResponse:
    return _page("login.html")


@route(
    "POST",
    "/login",
    tags=TAGS,
    public=True,
    content_type="text/html",
    errors=(401, 403, 429, 503),
    summary="Sign in to the dashboard: form field `token`; sets the session cookie, 303 to /. "
    "Attempts are throttled per client address and in all (429 with Retry-After)",
)
async def login(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    same_origin(request)  # a page elsewhere does not sign this browser in
    remote = request.remote or "unknown"
    sessions = sessions_of(ctx)
    try:
        # Counted before the token is looked at: parallel guesses cannot outrun the count.
        await sessions.take_attempt(remote)
    except TooManyRequests as e:
        log.warning("dashboard sign-in from %s refused: too many attempts", remote)
        resp = _page("login.html", status=429, message=f"Refused: {e.message}.")
        resp.headers.update(e.headers)
        return resp
    form = await request.post()
    presented = form.get("token")
    who = Actor(source="api", who=f"addr:{remote}")
    if isinstance(presented, str) and ctx.token.matches(presented.strip()):
        sid = await sessions.open(remote)
        resp = _see_other("/")
        set_cookie(resp, sid, sessions.ttl_s, secure=request.secure)
        log.info("dashboard sign-in from %s (token %s)", remote, ctx.token.id)
        await _audit(ctx, who, "login", "ok", 200, f"token {ctx.token.id}, session for {sessions.ttl_s} s")
        return resp
    # Never the presented value: a mistyped token is most of a real one.
    log.warning("dashboard sign-in refused from %s: wrong token", remote)
    if await sessions.may_audit_failure():
        await _audit(ctx, who, "login", "refused", 401, "wrong token")
    return _page("login.html", status=401, message="Wrong token. `baton token` prints the right one.")


@route(
    "POST",
    "/logout",
    tags=TAGS,
    public=True,
    content_type="text/html",
    errors=(401, 403, 503),
    summary="Sign out: ends this browser's session and drops the cookie; 303 to /. With the form "
    "field `scope=all` (and a live session or the bearer token), ends every session",
)
async def logout(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    same_origin(request)  # a page elsewhere does not sign this browser out
    form = await request.post()
    cookie = request.cookies.get(SESSION_COOKIE)
    sessions = sessions_of(ctx)
    if form.get("scope") == "all":
        who = await authenticate(request, ctx, request[ROUTE_KEY])
        n = await sessions.close_all()
        log.info("every dashboard session ended (%d) by %s", n, who.who)
        await _audit(ctx, who, "logout_all", "ok", 200, f"{n} sessions ended")
    elif cookie is not None and await sessions.close(cookie):
        await _audit(ctx, Actor(source="api", who=f"addr:{request.remote}"), "logout", "ok", 200, "")
    resp = _see_other("/")
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


async def _audit(ctx: ApiContext, who: Actor, action: str, result: str, status: int, detail: str) -> None:
    """Sign-ins and sign-outs go to the audit stream beside the control calls (never the
    token presented): an attempt to guess the token shows there, and in /metrics."""
    await ctx.call(audit.record, ctx.ops, who, action, "dashboard", None, result, status, detail)


# --- data ------------------------------------------------------------------------------------------
@route(
    "GET",
    "/dashboard/data",
    tags=TAGS,
    response=DashboardData,
    errors=(503,),
    summary="What the dashboard shows: flags, lease, workers, the last ticks, slots, PnL totals",
)
async def dashboard_data(request: web.Request) -> web.StreamResponse:
    return json_response(await snapshot(ctx_of(request)))


@route(
    "GET",
    "/pnl",
    tags=TAGS,
    response=PnlResult,
    query=PnlQuery,
    errors=(400, 503),
    summary="Realised PnL after every settlement (from the ledger, a page at a time, newest "
    "first: `next` is the cursor of the older page), win rate and trade count",
)
async def pnl(request: web.Request) -> web.StreamResponse:
    return json_response(await pnl_series(ctx_of(request), query_of(request, PnlQuery)))


@route(
    "GET",
    "/events",
    tags=TAGS,
    response=DashboardData,
    content_type="text/event-stream",
    errors=(503,),
    summary="Server-sent events: a DashboardData snapshot on connect, after every tick and control "
    "change, and when anything else changed; `event: problem` when Redis cannot be read",
)
async def events(request: web.Request) -> web.StreamResponse:
    return await serve_events(request)


def setup(app: web.Application, ctx: ApiContext) -> None:
    """End the open event streams when the app stops."""
    app.on_shutdown.append(close_streams)

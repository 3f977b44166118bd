"""The api program's aiohttp application: the route table of api/spec.py, behind three
middlewares (errors outside, then the Host allowlist, then access control), and an access log
without secrets.

Every answer is JSON unless a route declares another content type: errors are an
`ErrorBody` ({"error": "what was wrong", "status": 409}) whatever raised them.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import re
import sys
import traceback
from typing import Any

import msgspec
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from api.auth import SESSION_COOKIE, MutationLimiter, authenticate, rate_limited
from api.context import CTX_KEY, ApiContext, ctx_of
from api.hosts import hosts
from api.spec import ROUTES, Route
from baton.errors import OpError
from control import commands as c
from control import stops
from control.commands import Actor, ErrorBody, decode_body

log = logging.getLogger("baton.api")

# Route modules register their handlers with @route when imported. The optional ones are
# written separately (and may be absent from an older checkout): the app serves what exists.
ROUTE_MODULES = ("api.routes", "api.openapi")
OPTIONAL_ROUTE_MODULES = ("api.metrics", "api.dashboard")
# Request bodies are a few hundred bytes; anything bigger is a mistake, refused with 413.
MAX_BODY = 64 * 1024

ACTOR_KEY = web.RequestKey("baton_actor", Actor)
ROUTE_KEY = web.RequestKey("baton_route", Route)
# aiohttp route object -> the declared Route, for the middleware; and what the app serves.
TABLE_KEY: web.AppKey[dict[Any, Route]] = web.AppKey("baton_route_table", dict)
LIMITER_KEY = web.AppKey("baton_limiter", MutationLimiter)


# --- helpers for handlers -------------------------------------------------------------------
def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(body=msgspec.json.encode(obj), status=status, content_type="application/json")
    # Answers describe live trading state and may be private: no cache keeps them.
    resp.headers["Cache-Control"] = "no-store"
    if headers:
        resp.headers.update(headers)
    return resp


def error_response(status: int, message: str, headers: Any = None) -> web.Response:
    return json_response(ErrorBody(error=message, status=status), status, dict(headers or {}))


async def read_body(request: web.Request, typ: type[Any]) -> Any:
    """The request body as `typ`. The body is read as JSON whatever its Content-Type says (so
    `curl -d '{...}'` works in an emergency); an empty body is `{}`; anything else is a 400."""
    return decode_body(await request.read(), typ)


async def read_stop_body(
    request: web.Request, typ: type[c.HaltBody] | type[c.PauseBody]
) -> tuple[Any, list[str]]:
    """A halt's or pause's body, never refused (control/stops.py read_stop_body): (the body,
    what was wrong with it). At most MAX_BODY bytes are read, whatever the app-wide limit
    (client_max_size applies only to request.read(), which is not used here): a bigger body
    still stops, with a warning, and the rest is never read."""
    try:
        raw = await request.content.readexactly(MAX_BODY + 1)
    except asyncio.IncompleteReadError as e:
        raw = e.partial
    cut_at = MAX_BODY if len(raw) > MAX_BODY else 0
    return stops.read_stop_body(raw[:MAX_BODY], typ, cut_at=cut_at)


def actor(request: web.Request) -> Actor:
    return request[ACTOR_KEY]


def served_routes(app: web.Application) -> list[Route]:
    return list(app[TABLE_KEY].values())


# --- middlewares ----------------------------------------------------------------------------
@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except OpError as e:
        return error_response(e.status, e.message, getattr(e, "headers", None))
    except web.HTTPException as e:
        if e.status < 400:
            raise  # a redirect is an answer, not an error
        return error_response(e.status, _http_message(request, e), _kept_headers(e))
    except (asyncio.CancelledError, ConnectionResetError):
        raise  # the client is gone (a closed SSE stream): there is no one to answer
    except Exception as e:
        ctx = ctx_of(request)
        text = _scrub(ctx, "".join(traceback.format_exception(e)))
        log.error("%s %s failed:\n%s", request.method, request.path, text)
        return error_response(500, f"internal error: {type(e).__name__}: {_scrub(ctx, str(e))}")


@web.middleware
async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
    """Authentication for every route that is not public, and the mutation rate limit."""
    declared = request.app[TABLE_KEY].get(request.match_info.route)
    if declared is None:  # no such route or method: the handler raises 404/405
        return await handler(request)
    request[ROUTE_KEY] = declared
    if not declared.public:
        ctx = ctx_of(request)
        who = await authenticate(request, ctx, declared)
        request[ACTOR_KEY] = who
        if rate_limited(declared):
            request.app[LIMITER_KEY].take(who.token_id)
    return await handler(request)


def _http_message(request: web.Request, e: web.HTTPException) -> str:
    if request.match_info.http_exception is not None:  # raised by the router itself
        if isinstance(e, web.HTTPMethodNotAllowed):
            allowed = ", ".join(sorted(e.allowed_methods))
            return f"method {request.method} is not allowed on {request.path}; allowed: {allowed}"
        if isinstance(e, web.HTTPNotFound):
            return f"no route {request.method} {request.path} (GET /openapi.json lists the routes)"
    text = (e.text or "").strip()
    return text if text and not text.startswith(f"{e.status}:") else (e.reason or str(e.status))


def _kept_headers(e: web.HTTPException) -> dict[str, str]:
    return {k: v for k, v in e.headers.items() if k in ("Allow", "Retry-After", "WWW-Authenticate")}


_COOKIE_VALUE = re.compile(rf"({SESSION_COOKIE}=)[^;\s\"']+")


def _scrub(ctx: ApiContext, text: str) -> str:
    """An error message may quote anything it was handed; never a token or a session id."""
    for t in (ctx.token, ctx.metrics_token):
        if t is not None:
            text = text.replace(t.reveal(), "<redacted>")
    return _COOKIE_VALUE.sub(r"\1<redacted>", text)


# --- access log -----------------------------------------------------------------------------
class AccessLogger(AbstractAccessLogger):
    """One line per request: client, method, path, status, size, time and who (the token id).
    No headers (Authorization, Cookie) and no query string: a client that puts a secret in
    the URL by mistake does not get it written to the log."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        who = request.get(ACTOR_KEY)
        self.logger.info(
            "%s %s %s %s %sB %.1fms %s",
            request.remote,
            request.method,
            request.path,
            response.status,
            response.body_length,
            time * 1000,
            who.who if who is not None else "-",
        )


# --- the application ------------------------------------------------------------------------
def load_route_modules() -> None:
    for name in ROUTE_MODULES:
        importlib.import_module(name)
    for name in OPTIONAL_ROUTE_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:
            # Only the module itself missing is fine; a module that exists but fails to
            # import (a missing dependency, a bug) must stop the app, loudly.
            if e.name != name:
                raise


def make_app(ctx: ApiContext) -> web.Application:
    load_route_modules()
    app = web.Application(middlewares=[errors, hosts, guard], client_max_size=MAX_BODY)
    app[CTX_KEY] = ctx
    app[LIMITER_KEY] = MutationLimiter(ctx.s.api_mutations_per_min)
    table: dict[Any, Route] = {}
    seen: dict[tuple[str, str], Route] = {}
    for r in ROUTES:
        if (other := seen.get((r.method, r.path))) is not None:
            raise RuntimeError(
                f"{r.method} {r.path} is declared twice: {other.handler.__module__}.{other.handler.__name__} "
                f"and {r.handler.__module__}.{r.handler.__name__}"
            )
        seen[(r.method, r.path)] = r
        table[app.router.add_route(r.method, r.path, r.handler)] = r
    app[TABLE_KEY] = table
    # Modules with background work (the metrics' journal follower, the dashboard's live
    # streams) hook their start-up and shutdown into the app here.
    for name in OPTIONAL_ROUTE_MODULES:
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, "setup"):
            mod.setup(app, ctx)
    return app

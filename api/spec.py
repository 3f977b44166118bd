"""The route table the OpenAPI document is generated from.

Every handler of the api program is declared with `@route(...)`, naming its request body
and response types (msgspec structs); api/openapi.py turns the table into the document
served at GET /openapi.json, so the document cannot drift from the code: a route that is
not declared here is not served (api/app.py registers the table), and a test checks both.

    @route("POST", "/halt", body=HaltBody, response=HaltResult, summary="Emergency halt")
    async def halt(request: web.Request) -> web.StreamResponse: ...
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    summary: str
    # msgspec types (or None): the JSON request body and the 200 answer's body.
    body: Any = None
    response: Any = None
    # A msgspec struct describing the query string's parameters (or None).
    query: Any = None
    # Content type of a non-JSON answer (the dashboard page, /metrics, SSE).
    content_type: str = "application/json"
    # No token needed (health, metrics, the login form): everything else needs one.
    public: bool = False
    # Changes state: audited by the operation, rate-limited by the app.
    mutating: bool = False
    # Error statuses the route can answer besides 401 (documented in the OpenAPI doc).
    errors: tuple[int, ...] = ()
    # A stop (halt, pause): its body is never refused (no 400, no 413); what was wrong with
    # it comes back in the answer's `warnings`. Authentication still applies.
    lenient: bool = False
    tags: tuple[str, ...] = field(default_factory=tuple)


ROUTES: list[Route] = []


def route(method: str, path: str, **kw: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        ROUTES.append(Route(method=method.upper(), path=path, handler=fn, **kw))
        return fn

    return register

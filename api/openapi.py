"""GET /openapi.json: the OpenAPI 3.1 document of the routes the app serves, generated from
the route table (api/spec.py) and the msgspec types it names, so it cannot drift from the code.

It needs the token like every other route that is not public: the operators who read it hold
the token anyway, and an api bound beyond localhost should not hand its map to anyone who asks.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

import msgspec
from aiohttp import web

from api.app import json_response, served_routes
from api.auth import SESSION_COOKIE, rate_limited
from api.context import ctx_of
from api.spec import Route, route
from control.commands import ErrorBody

REF = "#/components/schemas/{name}"
JSON = "application/json"
_PARAM = re.compile(r"\{([^}:]+)(?::([^}]+))?\}")

ERROR_TEXT = {
    400: "Bad request: invalid JSON, a wrong or unknown field, a value out of range (the message says which)",
    401: "No credential or a wrong one: send `Authorization: Bearer <token>`, or sign in again (the "
    "session ended: signed out, expired, revoked, or the token changed)",
    403: "A session cookie used from another origin (CSRF): use the dashboard served here, or a bearer "
    "token; GET /metrics from another machine without BATON_METRICS_AUTH=token",
    404: "Not found (no such slot)",
    409: "Conflicts with the current state (nothing to resume, a worker already running, none running, ...)",
    413: "The request body is too large",
    421: "Misdirected: the Host header names no host this server answers to (its bind address, "
    "localhost, 127.0.0.1, [::1], BATON_API_HOSTS): a guard against DNS rebinding",
    429: "Too many mutating calls for this token, or too many sign-in attempts: wait the Retry-After seconds",
    500: "An internal error (the message names it)",
    503: "Redis or supervisord cannot be reached",
}


@route("GET", "/openapi.json", response=dict[str, Any], tags=("meta",), summary="This document (OpenAPI 3.1)")
async def openapi(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    # The route table is fixed once the app is made: build the document once.
    doc = ctx.extra.get("openapi")
    if doc is None:
        doc = ctx.extra["openapi"] = build(served_routes(request.app))
    return json_response(doc)


def build(routes: list[Route]) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for r in routes:
        if r.body is not None:
            types.append(r.body)
        if r.response is not None and r.content_type == JSON:
            types.append(r.response)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF)
    schema_of = {id(t): s for t, s in zip(types, schemas, strict=True)}
    paths: dict[str, dict[str, Any]] = {}
    op_ids: set[str] = set()
    for r in sorted(routes, key=lambda r: (r.path, r.method)):
        path, params = openapi_path(r.path)
        op = operation(r, params, schema_of, op_ids)
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Baton control API",
            "version": _version(),
            "description": (
                "Control plane of a Baton trading runtime. Every route but the public ones needs "
                "`Authorization: Bearer <token>` (or the dashboard's session cookie, from POST /login: a "
                "random id with a fixed lifetime, ended by POST /logout). Mutating calls are audited and "
                "rate-limited per token (POST /halt never is); sign-in attempts are throttled. A request "
                "whose Host header names another host gets 421. Errors are an ErrorBody. "
                "POST /halt and POST /pause are never refused for their body (not JSON, an unknown "
                "field, a reason too long, a body too big): they stop, keep what can be kept of the "
                "reason, and list what was wrong in the answer's `warnings`."
            ),
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer"},
                "sessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            },
        },
        "security": [{"bearerAuth": []}, {"sessionCookie": []}],
    }


def openapi_path(path: str) -> tuple[str, list[dict[str, Any]]]:
    """aiohttp's `/slots/{id}` (or `{id:regex}`) as an OpenAPI path and its path parameters."""
    params = []
    for m in _PARAM.finditer(path):
        schema: dict[str, Any] = {"type": "string"}
        if m.group(2):
            schema["pattern"] = f"^{m.group(2)}$"
        params.append({"name": m.group(1), "in": "path", "required": True, "schema": schema})
    return _PARAM.sub(lambda m: "{" + m.group(1) + "}", path), params


def operation(
    r: Route, params: list[dict[str, Any]], schema_of: dict[int, Any], op_ids: set[str]
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(r, op_ids),
        "summary": r.summary,
        "tags": list(r.tags) or [r.path.strip("/").split("/")[0].split(".")[0] or "root"],
    }
    doc = (r.handler.__doc__ or "").strip()
    if doc:
        op["description"] = doc
    params = params + query_parameters(r.query)
    if params:
        op["parameters"] = params
    if r.body is not None:
        # Optional: an empty body is read as `{}` (every field has a default).
        op["requestBody"] = {"required": False, "content": {JSON: {"schema": schema_of[id(r.body)]}}}
    ok: dict[str, Any] = {"description": r.summary or "OK"}
    if r.content_type == JSON and r.response is not None:
        ok["content"] = {JSON: {"schema": schema_of[id(r.response)]}}
    elif r.content_type != JSON:
        ok["content"] = {r.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {"200": ok}
    for status in sorted(set(error_statuses(r))):
        responses[str(status)] = {
            "description": ERROR_TEXT.get(status, "Error"),
            "content": {JSON: {"schema": {"$ref": REF.format(name="ErrorBody")}}},
        }
    op["responses"] = responses
    if r.public:
        op["security"] = []  # overrides the document's default: no credential needed
    return op


def error_statuses(r: Route) -> list[int]:
    """The route's declared errors and those the app adds: 421 for every route (the Host
    allowlist), 401 (and 403 for the cookie's origin check) for routes behind the token, 429
    for rate-limited ones, 413 for bodies."""
    out = [*r.errors, 421]
    if not r.public:
        out.append(401)
        if r.mutating:
            out.append(403)
    if rate_limited(r):
        out.append(429)
    if r.body is not None and not r.lenient:
        out.append(413)
    return out


def query_parameters(typ: Any) -> list[dict[str, Any]]:
    if typ is None:
        return []
    schema = msgspec.json.schema(typ)
    schema = schema["$defs"][typ.__name__] if "$ref" in schema else schema
    required = set(schema.get("required", []))
    out = []
    for name, prop in schema.get("properties", {}).items():
        prop = dict(prop)
        param = {"name": name, "in": "query", "required": name in required}
        if "description" in prop:
            param["description"] = prop.pop("description")
        param["schema"] = prop
        out.append(param)
    return out


def _operation_id(r: Route, taken: set[str]) -> str:
    name = r.handler.__name__
    if name in taken:
        name = f"{r.method.lower()}_{name}"
    taken.add(name)
    return name


def _version() -> str:
    try:
        return metadata.version("baton")
    except metadata.PackageNotFoundError:
        return "0.0.0"

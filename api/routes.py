"""The control API's JSON endpoints: thin doors onto the control operations (control/).

Each handler decodes its body (msgspec, api/app.read_body), runs the operation in a thread
(Ops is synchronous redis-py) and encodes the result. The operations audit themselves and
raise OpError subclasses, which the app turns into JSON errors with their status. A route
that takes no parameters still reads its body as EmptyBody, so that a misspelt field is a
400 rather than silently ignored. The stops (halt, pause) are the exception: never refused
for their body, they report what was wrong with it in the answer's `warnings`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
from aiohttp import web

from api.app import actor, json_response, read_body, read_stop_body
from api.context import ctx_of
from api.spec import route
from baton.errors import BadRequest
from control import commands as c
from control import decisions
from state.shadow import LOG_LEN, ShadowDiff, ShadowRepo

# Every operation can find Redis (or supervisord) unreachable: 503.
_DOWN = 503


class Health(msgspec.Struct, kw_only=True):
    # The api process answers (always true when there is an answer at all).
    ok: bool
    # Redis answered a PING within a second.
    redis: bool


class AuditQuery(msgspec.Struct, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=1000, description="How many entries, newest first")] = 50


def query_of(request: web.Request, typ: type[Any]) -> Any:
    try:
        # strict=False: query values are strings; "5" is the integer 5.
        return msgspec.convert(dict(request.query), typ, strict=False)
    except msgspec.ValidationError as e:
        raise BadRequest(f"bad query string: {e}") from None


async def _actor_only(request: web.Request, op: Callable[[c.Actor], Any]) -> web.StreamResponse:
    """An operation that takes nothing but who asked: its body must be empty."""
    ctx = ctx_of(request)
    await read_body(request, c.EmptyBody)
    return json_response(await ctx.call(op, actor(request)))


# --- reading ----------------------------------------------------------------------------------
@route(
    "GET",
    "/health",
    tags=("status",),
    response=Health,
    public=True,
    summary="Liveness, and whether Redis answers",
)
async def health(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    try:
        redis_ok = bool(await asyncio.wait_for(ctx.redis.ping(), 1.0))
    except Exception:  # any failure means the same thing here: Redis does not answer
        redis_ok = False
    return json_response(Health(ok=True, redis=redis_ok))


@route(
    "GET",
    "/status",
    tags=("status",),
    response=dict[str, Any],
    errors=(_DOWN,),
    summary="Everything `baton status --json` reports (what var/status.json holds)",
)
async def status(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    return json_response(await ctx.call(ctx.ops.status))


@route(
    "GET", "/control", tags=("control",), response=c.ControlView, errors=(_DOWN,), summary="The control flags"
)
async def control(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    return json_response(await ctx.call(ctx.ops.control))


@route(
    "GET",
    "/slots",
    tags=("slots",),
    response=c.SlotsResult,
    errors=(_DOWN,),
    summary="Every slot, with its window",
)
async def slots(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    return json_response(await ctx.call(ctx.ops.slots))


@route("GET", "/slots/{id}", tags=("slots",), response=c.SlotView, errors=(404, _DOWN), summary="One slot")
async def slot(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    return json_response(await ctx.call(ctx.ops.slot, request.match_info["id"]))


@route(
    "GET",
    "/audit",
    tags=("audit",),
    response=c.AuditResult,
    query=AuditQuery,
    errors=(400, _DOWN),
    summary="The audit stream, newest first: every mutating call, carried out or refused",
)
async def audit(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    q = query_of(request, AuditQuery)
    return json_response(await ctx.call(ctx.ops.audit_tail, q.count))


@route(
    "GET",
    "/decisions",
    tags=("decisions",),
    response=decisions.DecisionsResult,
    query=decisions.DecisionsQuery,
    errors=(400, 404, _DOWN),
    summary="The decision log, newest first: every evaluation (buy, sell, pass) with its reason",
)
async def decision_log(request: web.Request) -> web.StreamResponse:
    """`slot`: one slot's log (404 for a slot that is not configured, not removed and has
    none); without it every slot's, merged by time. `limit`: 1 to 1000, default 50."""
    ctx = ctx_of(request)
    q = query_of(request, decisions.DecisionsQuery)
    return json_response(await ctx.call(ctx.ops.decisions, q.slot or None, q.limit))


class ShadowQuery(msgspec.Struct, kw_only=True):
    count: Annotated[int, msgspec.Meta(ge=1, le=LOG_LEN, description="How many differences, the newest")] = (
        LOG_LEN
    )


@route(
    "GET",
    "/shadow",
    tags=("deploys",),
    response=ShadowDiff,
    query=ShadowQuery,
    errors=(400, _DOWN),
    summary="The shadow release's counters and the decisions it made differently from the live ones",
)
async def shadow(request: web.Request) -> web.StreamResponse:
    """What `baton shadow diff --json` prints: the running (or last) shadow deploy's ticks,
    decisions, differences with both answers and reasons, and orders posted (always 0)."""
    ctx = ctx_of(request)
    q = query_of(request, ShadowQuery)
    return json_response(await ctx.call(ShadowRepo(ctx.ops.r, ctx.ops.k).diff, q.count))


# --- flags --------------------------------------------------------------------------------------
@route(
    "POST",
    "/halt",
    tags=("control",),
    body=c.HaltBody,
    response=c.HaltResult,
    mutating=True,
    lenient=True,
    errors=(_DOWN,),
    summary="Emergency halt: no strategy code runs, open orders are cancelled; never rate-limited",
)
async def halt(request: web.Request) -> web.StreamResponse:
    """Never refused for its body: a body that is not JSON (or not UTF-8), an unknown field, a
    reason over 200 characters or a body over 64 KiB still halts, keeping what can be kept of
    the reason (cut to 200 characters, bad bytes replaced, the body's text when it is not
    JSON), and the answer's `warnings` say what was wrong, e.g. `["reason truncated to 200
    characters (it had 250)", "unknown field 'foo' ignored"]`. The token is still required: a
    halt anyone could send would be a way to stop the bot at will."""
    ctx = ctx_of(request)
    body, warnings = await read_stop_body(request, c.HaltBody)
    return json_response(await ctx.call_urgent(ctx.ops.halt, actor(request), body, warnings))


@route(
    "POST",
    "/pause",
    tags=("control",),
    body=c.PauseBody,
    response=c.FlagResult,
    mutating=True,
    lenient=True,
    errors=(_DOWN,),
    summary="Pause: no new entries; open positions still settle",
)
async def pause(request: web.Request) -> web.StreamResponse:
    """Like POST /halt, never refused for its body (a pause only makes the bot do less); the
    answer's `warnings` say what was wrong with it."""
    ctx = ctx_of(request)
    body, warnings = await read_stop_body(request, c.PauseBody)
    return json_response(await ctx.call(ctx.ops.pause, actor(request), body, warnings))


@route(
    "POST",
    "/resume",
    tags=("control",),
    body=c.EmptyBody,
    response=c.FlagResult,
    mutating=True,
    errors=(400, 409, _DOWN),
    summary="Lift a halt or a pause (409 when neither is set)",
)
async def resume(request: web.Request) -> web.StreamResponse:
    return await _actor_only(request, ctx_of(request).ops.resume)


@route(
    "POST",
    "/reload",
    tags=("lifecycle",),
    body=c.EmptyBody,
    response=c.ReloadResult,
    mutating=True,
    errors=(400, 409, _DOWN),
    summary="Hot-reload the strategies of the active worker (409 when no worker holds the lease)",
)
async def reload(request: web.Request) -> web.StreamResponse:
    return await _actor_only(request, ctx_of(request).ops.reload)


# --- lifecycle ----------------------------------------------------------------------------------
@route(
    "POST",
    "/start",
    tags=("lifecycle",),
    body=c.EmptyBody,
    response=c.LifecycleResult,
    mutating=True,
    errors=(400, 409, _DOWN),
    summary="Start the worker of the colour that traded last (409 when one runs)",
)
async def start(request: web.Request) -> web.StreamResponse:
    return await _actor_only(request, ctx_of(request).ops.start)


@route(
    "POST",
    "/stop",
    tags=("lifecycle",),
    body=c.EmptyBody,
    response=c.LifecycleResult,
    mutating=True,
    errors=(400, 409, _DOWN),
    summary="Stop the workers gracefully: the tick in progress finishes (409 when none runs)",
)
async def stop(request: web.Request) -> web.StreamResponse:
    return await _actor_only(request, ctx_of(request).ops.stop)


# --- slots --------------------------------------------------------------------------------------
_SLOT_ERRORS = (400, 404, 409, _DOWN)


@route(
    "POST",
    "/slots/{id}/enable",
    tags=("slots",),
    body=c.EmptyBody,
    response=c.SlotResult,
    mutating=True,
    errors=_SLOT_ERRORS,
    summary="Enable a slot: it may enter positions again",
)
async def enable_slot(request: web.Request) -> web.StreamResponse:
    return await _set_enabled(request, True)


@route(
    "POST",
    "/slots/{id}/disable",
    tags=("slots",),
    body=c.EmptyBody,
    response=c.SlotResult,
    mutating=True,
    errors=_SLOT_ERRORS,
    summary="Disable a slot: no new entries; its open position still settles",
)
async def disable_slot(request: web.Request) -> web.StreamResponse:
    return await _set_enabled(request, False)


async def _set_enabled(request: web.Request, enabled: bool) -> web.StreamResponse:
    ctx = ctx_of(request)
    await read_body(request, c.EmptyBody)
    res = await ctx.call(ctx.ops.set_slot_enabled, actor(request), request.match_info["id"], enabled)
    return json_response(res)


@route(
    "PATCH",
    "/slots/{id}",
    tags=("slots",),
    body=c.SlotPatch,
    response=c.SlotResult,
    mutating=True,
    errors=_SLOT_ERRORS,
    summary="Change a slot's stake and/or strategy parameters (validated against its strategy)",
)
async def patch_slot(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    body = await read_body(request, c.SlotPatch)
    res = await ctx.call(ctx.ops.patch_slot, actor(request), request.match_info["id"], body)
    return json_response(res)


@route(
    "POST",
    "/slots",
    tags=("slots",),
    body=c.SlotNew,
    response=c.SlotResult,
    mutating=True,
    errors=_SLOT_ERRORS,
    summary="Add a slot (any id, asset, timeframe and strategy): it trades from the worker's next tick",
)
async def add_slot(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    body = await read_body(request, c.SlotNew)
    return json_response(await ctx.call(ctx.ops.add_slot, actor(request), body))


@route(
    "DELETE",
    "/slots/{id}",
    tags=("slots",),
    body=c.EmptyBody,
    query=c.SlotRemove,
    response=c.SlotRemoved,
    mutating=True,
    errors=_SLOT_ERRORS,
    summary="Remove a slot (refused while it holds a position or an order in its window, unless force)",
)
async def remove_slot(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    await read_body(request, c.EmptyBody)
    body = query_of(request, c.SlotRemove)
    return json_response(await ctx.call(ctx.ops.remove_slot, actor(request), request.match_info["id"], body))


@route(
    "GET",
    "/strategies",
    tags=("slots",),
    response=c.StrategiesResult,
    errors=(_DOWN,),
    summary="The strategies a slot may use, with their declared parameters, defaults and bounds",
)
async def strategies(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    return json_response(await ctx.call(ctx.ops.strategies))

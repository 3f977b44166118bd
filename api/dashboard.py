"""The dashboard: one page (api/static/dashboard.html) that shows what the system is doing and
carries the emergency buttons, its login form, and the data it is drawn from.

The page never holds the token: the login form trades it for the session cookie (see
api/auth.py), which authenticates the page's `fetch` calls to the JSON API and its
EventSource. Everything the page shows is one `DashboardData` snapshot, served whole at
GET /dashboard/data (first paint, tests) and pushed on GET /events (server-sent events):
at once on connect, after every tick journaled, after every change of the control flags,
and when a slower poll finds something else changed (a worker gone, a slot disabled from the
CLI). The PnL series (GET /pnl) reads the whole ledger, so it is not in the snapshot: the
page fetches it again when the snapshot's ledger entry count moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import secrets
import time
from functools import cache
from pathlib import Path
from typing import Any, cast

import msgspec
import redis
from aiohttp import web

from api.app import ROUTE_KEY, json_response
from api.auth import SESSION_COOKIE, authenticate, set_session_cookie
from api.context import ApiContext, ctx_of
from api.spec import route
from baton.errors import OpError, Unauthorized
from control import commands as c
from control.views import control_view
from kernel.clock import wall_ms
from kernel.lease import Lease, decode_lease
from state.control import parse_control
from state.keys import Keys
from state.structs import POSITION, micros_to_usd

log = logging.getLogger("baton.api.dashboard")

STATIC = Path(__file__).parent / "static"
TAGS = ("dashboard",)
TICKS_SHOWN = 20
# The PnL chart has at most this many points; a longer ledger is thinned evenly.
PNL_POINTS_MAX = 1000
# /events: how long to wait for a tick or a control change before looking anyway (a worker
# that stopped journals nothing), and how often an idle stream sends a comment so that
# proxies and browsers keep it open.
IDLE_POLL_S = 2.0
HEARTBEAT_S = 15.0
# XREAD BLOCK on the shared async client: short, so a client with a socket timeout of a few
# seconds never times out while waiting, and the follower notices cancellation soon.
XREAD_BLOCK_MS = 1000
# SSE: how long a browser waits before reconnecting a dropped stream.
SSE_RETRY_MS = 3000

_ENC = msgspec.json.Encoder()
# ctx.extra keys: the wake events of the open /events streams, and "the app is stopping".
STREAMS = "dashboard_streams"
CLOSING = "dashboard_closing"


# --- what the page shows ------------------------------------------------------------------------
class LeaseView(msgspec.Struct, kw_only=True):
    color: str
    release: str
    epoch: int
    holder: str
    expires_ms: int
    # The lease has not expired: a worker holds it and trades (or is halted/paused).
    active: bool


class WorkerView(msgspec.Struct, kw_only=True):
    color: str
    # starting/checking/ready/active/handed-over/lost-lease/failed/stopped
    state: str
    release: str
    pid: int
    epoch: int
    last_tick: int
    heartbeat_ms: int
    # Why readiness failed, when it did.
    error: str


class TickView(msgspec.Struct, kw_only=True):
    id: str
    tick: int
    color: str
    epoch: int
    started_ms: int
    duration_ms: int
    jitter_ms: int
    missed_before: int
    orders: int
    errors: int
    halted: bool
    paused: bool


class PnlSummary(msgspec.Struct, kw_only=True):
    realized_usd: float
    cash_usd: float
    # Ledger entries booked so far: the page fetches GET /pnl again when this moves.
    ledger_entries: int


class DashboardData(msgspec.Struct, kw_only=True):
    """Everything the dashboard shows, read in one go."""

    # The server's clock: the page counts down to window ends and ages heartbeats with it,
    # whatever the browser's clock says.
    server_ms: int
    mode: str
    tick_ms: int
    # The lease as Redis holds it (null before any worker ever ran).
    lease: LeaseView | None
    control: c.ControlView
    workers: list[WorkerView]
    ticks_done: int
    ticks_missed: int
    # The newest journal entries, newest first.
    ticks: list[TickView]
    slots: list[c.SlotView]
    pnl: PnlSummary


class PnlPoint(msgspec.Struct, kw_only=True):
    at_ms: int
    # Realised PnL so far (cumulative) and what this settlement added.
    pnl_usd: float
    delta_usd: float
    ref: str


class PnlResult(msgspec.Struct, kw_only=True):
    # When the ledger stream starts (its first entry: the deposit, or after BATON_HISTORY_DAYS the
    # oldest entry kept, the chart then starting from the sums of what was trimmed).
    start_ms: int | None
    # Realised PnL after each settlement, oldest first (thinned to at most 1000 points).
    points: list[PnlPoint]
    realized_usd: float
    cash_usd: float
    deposits_usd: float
    ledger_entries: int
    # Positions opened (one per filled entry) in the history kept (BATON_HISTORY_DAYS), settled
    # ones, and how many of those won.
    trades: int
    open: int
    settled: int
    wins: int
    # wins / settled; null before the first settlement.
    win_rate: float | None


# --- reading Redis -----------------------------------------------------------------------------
def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _tick_view(entry_id: str, f: dict[str, str]) -> TickView:
    return TickView(
        id=entry_id,
        tick=_int(f.get("tick")),
        color=f.get("color", ""),
        epoch=_int(f.get("epoch")),
        started_ms=_int(f.get("started_ms")),
        duration_ms=_int(f.get("duration_ms")),
        jitter_ms=_int(f.get("jitter_ms")),
        missed_before=_int(f.get("missed_before")),
        orders=_int(f.get("orders")),
        errors=_int(f.get("errors")),
        halted=f.get("halted") == "1",
        paused=f.get("paused") == "1",
    )


def _lease_view(lease: Lease | None, now_ms: int) -> LeaseView | None:
    if lease is None:
        return None
    return LeaseView(
        color=lease.color,
        release=lease.release,
        epoch=lease.epoch,
        holder=lease.holder,
        expires_ms=lease.expires_ms,
        active=lease.live(now_ms),
    )


def _worker_view(h: dict[str, str]) -> WorkerView:
    return WorkerView(
        color=h.get("color", ""),
        state=h.get("state", ""),
        release=h.get("release", ""),
        pid=_int(h.get("pid")),
        epoch=_int(h.get("epoch")),
        last_tick=_int(h.get("last_tick")),
        heartbeat_ms=_int(h.get("heartbeat_ms")),
        error=h.get("error", ""),
    )


async def snapshot(ctx: ApiContext) -> DashboardData:
    """One pipeline for the journal, lease, flags and heartbeats, beside the slot views of
    Ops (its own pipeline, in a thread), so that the page shows slots exactly as GET /slots does."""
    k = Keys(ctx.s.prefix)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hgetall(k.lease())
    pipe.hgetall(k.control())
    pipe.hgetall(k.worker("blue"))
    pipe.hgetall(k.worker("green"))
    pipe.hgetall(k.stats())
    pipe.hgetall(k.ledger_totals())
    pipe.xrevrange(k.journal_ticks(), count=TICKS_SHOWN)
    (lease, control, blue, green, stats, totals, ticks), slots = await asyncio.gather(
        pipe.execute(), ctx.call(ctx.ops.slots)
    )
    now_ms = wall_ms()
    return DashboardData(
        server_ms=now_ms,
        mode=ctx.s.mode + (" (dry run)" if ctx.s.dry_run else ""),
        tick_ms=ctx.s.tick_ms,
        lease=_lease_view(decode_lease(lease), now_ms),
        control=control_view(parse_control(control)),
        workers=[_worker_view(h) for h in (blue, green) if h],
        ticks_done=_int(stats.get("ticks_done")),
        ticks_missed=_int(stats.get("ticks_missed")),
        ticks=[_tick_view(i, f) for i, f in ticks],
        slots=slots.slots,
        pnl=PnlSummary(
            realized_usd=micros_to_usd(_int(totals.get("realized_pnl_micros"))),
            cash_usd=micros_to_usd(_int(totals.get("cash_micros"))),
            ledger_entries=_int(totals.get("entries")),
        ),
    )


async def pnl_series(ctx: ApiContext) -> PnlResult:
    k = Keys(ctx.s.prefix)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.xrange(k.ledger())
    pipe.hvals(k.positions())
    pipe.hgetall(k.ledger_totals())
    ledger, positions, totals = await pipe.execute()
    realized = cash = deposits = 0
    moves: list[tuple[int, int, int, str]] = []  # (at_ms, realised so far, delta, ref)
    for _id, f in ledger:
        amount, pnl = _int(f.get("amount_micros")), _int(f.get("pnl_micros"))
        cash += amount
        if f.get("kind") == "deposit":
            deposits += amount
        # Realised PnL moves at settlements only (a buy turns cash into a position).
        if pnl or f.get("kind") == "payout":
            realized += pnl
            moves.append((_int(f.get("at_ms")), realized, pnl, f.get("ref", "")))

    # Entries past BATON_HISTORY_DAYS are trimmed from the stream (kernel/history.py); the
    # running totals still hold their sums. What the trimmed part adds up to (0 while nothing
    # is trimmed) is where the chart starts, and the figures end on the totals.
    def trimmed(name: str, in_stream: int) -> int:
        return _int(totals[name]) - in_stream if name in totals else 0

    base = trimmed("realized_pnl_micros", realized)
    points = [
        PnlPoint(at_ms=at, pnl_usd=micros_to_usd(base + r), delta_usd=micros_to_usd(d), ref=ref)
        for at, r, d, ref in moves
    ]
    realized += base
    cash += trimmed("cash_micros", cash)
    deposits += trimmed("deposit_micros", deposits)
    entries = len(ledger) + max(0, trimmed("entries", len(ledger)))
    trades = opened = settled = wins = 0
    for raw in positions:
        try:
            p = POSITION.decode(raw)
        except msgspec.DecodeError:
            continue  # `baton status` reports unreadable positions; the chart shows the rest
        trades += 1
        opened += p.status == "open"
        if p.status == "settled":
            settled += 1
            wins += bool(p.won)
    return PnlResult(
        start_ms=_int(ledger[0][1].get("at_ms")) if ledger else None,
        points=_thin(points, PNL_POINTS_MAX),
        realized_usd=micros_to_usd(realized),
        cash_usd=micros_to_usd(cash),
        deposits_usd=micros_to_usd(deposits),
        ledger_entries=entries,
        trades=trades,
        open=opened,
        settled=settled,
        wins=wins,
        win_rate=round(wins / settled, 4) if settled else None,
    )


def _thin(points: list[PnlPoint], most: int) -> list[PnlPoint]:
    """At most `most` points, evenly spaced, always keeping the last (the current PnL)."""
    if len(points) <= most:
        return points
    step = len(points) / most
    kept = [points[int(i * step)] for i in range(most - 1)]
    return [*kept, points[-1]]


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
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
    )
    return resp


def _signed_in(request: web.Request) -> bool:
    try:
        authenticate(request, ctx_of(request).token, request[ROUTE_KEY])
    except Unauthorized:
        return False
    return True


def _see_other(location: str) -> web.Response:
    # Returned, not raised: the app's error middleware answers raised HTTP errors as JSON.
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


@route(
    "GET", "/", tags=TAGS, public=True, content_type="text/html", summary="The dashboard (or the login form)"
)
async def page(request: web.Request) -> web.StreamResponse:
    # Public, so that a browser without the cookie gets the login form rather than a JSON 401.
    if _signed_in(request):
        return _page("dashboard.html")
    if SESSION_COOKIE in request.cookies:
        return _page("login.html", message="Signed out: the API token changed. Sign in with the new one.")
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
    errors=(401,),
    summary="Sign in to the dashboard: form field `token`; sets the session cookie, 303 to /",
)
async def login(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    form = await request.post()
    presented = form.get("token")
    if isinstance(presented, str) and ctx.token.matches(presented.strip()):
        resp = _see_other("/")
        set_session_cookie(resp, ctx.token, secure=request.secure)
        log.info("dashboard sign-in from %s (token %s)", request.remote, ctx.token.id)
        return resp
    # Never the presented value: a mistyped token is most of a real one.
    log.warning("dashboard sign-in refused from %s: wrong token", request.remote)
    return _page("login.html", status=401, message="Wrong token. `baton token` prints the right one.")


@route(
    "POST",
    "/logout",
    tags=TAGS,
    public=True,
    content_type="text/html",
    summary="Sign out: drops the session cookie",
)
async def logout(request: web.Request) -> web.StreamResponse:
    resp = _see_other("/")
    resp.del_cookie(SESSION_COOKIE, path="/")
    return resp


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
    errors=(503,),
    summary="Realised PnL after every settlement (from the ledger), win rate and trade count",
)
async def pnl(request: web.Request) -> web.StreamResponse:
    return json_response(await pnl_series(ctx_of(request)))


@route(
    "GET",
    "/events",
    tags=TAGS,
    response=DashboardData,
    content_type="text/event-stream",
    summary="Server-sent events: a DashboardData snapshot on connect, after every tick and control "
    "change, and when anything else changed; `event: problem` when Redis cannot be read",
)
async def events(request: web.Request) -> web.StreamResponse:
    ctx = ctx_of(request)
    resp = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            # nginx buffers responses by default, which would hold events back.
            "X-Accel-Buffering": "no",
        }
    )
    await resp.prepare(request)
    await resp.write(f"retry: {SSE_RETRY_MS}\n\n".encode())
    wake = asyncio.Event()
    k = Keys(ctx.s.prefix)
    followers = [
        asyncio.create_task(_follow_ticks(ctx, k.journal_ticks(), wake)),
        asyncio.create_task(_follow_control(ctx, k.control_events(), wake)),
    ]
    streams = ctx.extra.setdefault(STREAMS, set())
    streams.add(wake)
    last_sent, last_problem = b"", ""
    last_write = time.monotonic()
    try:
        while not ctx.extra.get(CLOSING) and not _gone(request):
            try:
                data = await snapshot(ctx)
            except Exception as e:  # Redis down (or a bug): say so on the page, keep the stream
                problem = _problem(e)
                if problem != last_problem:  # logged once, not at every poll
                    log.warning("dashboard snapshot failed: %s", problem, exc_info=_unexpected(e))
                await resp.write(_sse(_ENC.encode({"error": problem}), event="problem"))
                last_sent, last_problem, last_write = b"", problem, time.monotonic()
            else:
                # Compared without what moves by itself (clock, countdowns): an idle system sends
                # comments, not the same snapshot over and over.
                fingerprint = _fingerprint(data)
                if fingerprint != last_sent:
                    await resp.write(_sse(_ENC.encode(data)))
                    last_sent, last_problem, last_write = fingerprint, "", time.monotonic()
                elif time.monotonic() - last_write >= HEARTBEAT_S:
                    await resp.write(b": heartbeat\n\n")
                    last_write = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_POLL_S)
            wake.clear()
    except ConnectionResetError:
        pass  # the browser went away (tab closed, page reloaded)
    finally:
        streams.discard(wake)
        for t in followers:
            t.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return resp


def _gone(request: web.Request) -> bool:
    # Checked every loop: aiohttp does not cancel a handler whose client went away.
    return request.transport is None or request.transport.is_closing()


def setup(app: web.Application, ctx: ApiContext) -> None:
    """End the open event streams when the app stops."""
    app.on_shutdown.append(close_streams)


async def close_streams(app: web.Application) -> None:
    """For the app's on_shutdown: end every open event stream now. An SSE handler never ends
    by itself, so without this a stop waits for aiohttp's shutdown timeout."""
    ctx = ctx_of(app)
    ctx.extra[CLOSING] = True
    for wake in ctx.extra.get(STREAMS, ()):
        wake.set()


def _sse(payload: bytes, event: str = "") -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"  # JSON has no raw newlines: one data line


def _fingerprint(d: DashboardData) -> bytes:
    slots = [msgspec.structs.replace(s, remaining_s=0.0) for s in d.slots]
    return _ENC.encode(msgspec.structs.replace(d, server_ms=0, slots=slots))


def _unexpected(e: Exception) -> bool:
    return not isinstance(e, (OpError, redis.RedisError, OSError))


def _problem(e: Exception) -> str:
    if isinstance(e, OpError):
        return e.message
    if _unexpected(e):
        return f"internal error: {type(e).__name__}: {e} (the api program's log has the traceback)"
    return f"cannot read Redis: {type(e).__name__}: {e}"


async def _follow_ticks(ctx: ApiContext, key: str, wake: asyncio.Event) -> None:
    """Wakes the stream when a tick is journaled."""
    last = "$"
    while True:
        try:
            got = cast(
                list[tuple[str, list[tuple[str, dict[str, str]]]]],
                await ctx.redis.xread({key: last}, block=XREAD_BLOCK_MS, count=100),
            )
        except Exception as e:  # Redis away: the stream loop reports it; try again shortly
            log.debug("journal follower: %s", e)
            await asyncio.sleep(1.0)
            continue
        if got:
            last = got[0][1][-1][0]
            wake.set()


async def _follow_control(ctx: ApiContext, channel: str, wake: asyncio.Event) -> None:
    """Wakes the stream when the control flags change (halt, pause, resume)."""
    while True:
        try:
            async with ctx.redis.pubsub() as ps:
                await ps.subscribe(channel)
                while True:
                    msg = await ps.get_message(ignore_subscribe_messages=True, timeout=HEARTBEAT_S)
                    if msg is not None:
                        wake.set()
        except Exception as e:
            log.debug("control follower: %s", e)
            await asyncio.sleep(1.0)

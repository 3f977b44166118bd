"""The dashboard's live stream (GET /events): server-sent `DashboardData` snapshots, woken by
the tick journal and the control-flag channel, polled when idle, ended when the app stops or
the session that opened it ends (sign-out, expiry, a token rotation). Streams that wake
together share one snapshot read; at most BATON_DASHBOARD_STREAMS_MAX run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import cast

import msgspec
import redis
from aiohttp import web

from api.context import ApiContext, ctx_of
from api.dashboard_data import DashboardData, snapshot
from api.sessions import RECHECK_S, SESSION_COOKIE, sessions_of
from baton.errors import OpError, Unavailable
from state.keys import Keys

log = logging.getLogger("baton.api.dashboard")

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
SNAPSHOT = "dashboard_snapshot"


async def serve_events(request: web.Request) -> web.StreamResponse:
    """The body of GET /events: streams until the browser goes or the app stops; refused
    (503) while BATON_DASHBOARD_STREAMS_MAX streams are open: each reads Redis after every tick."""
    ctx = ctx_of(request)
    streams = ctx.extra.setdefault(STREAMS, set())
    if len(streams) >= ctx.s.dashboard_streams_max:
        raise Unavailable(
            f"{len(streams)} dashboard streams are open, the most BATON_DASHBOARD_STREAMS_MAX "
            f"({ctx.s.dashboard_streams_max}) allows: close a dashboard tab, or raise the setting"
        )
    # Counted from here (no await before): two requests at once cannot both take the last place.
    wake = asyncio.Event()
    streams.add(wake)
    try:
        return await _stream(request, ctx, wake)
    finally:
        streams.discard(wake)


async def _stream(request: web.Request, ctx: ApiContext, wake: asyncio.Event) -> web.StreamResponse:
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
    k = Keys(ctx.s.prefix)
    followers = [
        asyncio.create_task(_follow_ticks(ctx, k.journal_ticks(), wake)),
        asyncio.create_task(_follow_control(ctx, k.control_events(), wake)),
    ]
    last_sent, last_problem = b"", ""
    last_write = time.monotonic()
    # A stream opened with the cookie lives no longer than its session.
    cookie = None if "Authorization" in request.headers else request.cookies.get(SESSION_COOKIE)
    next_check = time.monotonic() + RECHECK_S
    try:
        while not ctx.extra.get(CLOSING) and not _gone(request):
            if cookie is not None and time.monotonic() >= next_check:
                next_check = time.monotonic() + RECHECK_S
                with contextlib.suppress(Unavailable):  # Redis away: the problem event says so
                    if not await sessions_of(ctx).still_open(cookie):
                        break
            try:
                data = await shared_snapshot(ctx)
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
        for t in followers:
            t.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
    return resp


async def shared_snapshot(ctx: ApiContext) -> DashboardData:
    """A snapshot for a stream: the one being read now if there is one (the open streams all
    wake at the same tick: one read serves them), else a new one. One started before what woke
    the caller may miss it, but then the same wake-up has set the caller's event again, and its
    next loop reads anew."""
    task = ctx.extra.get(SNAPSHOT)
    if task is None or task.done():
        task = ctx.extra[SNAPSHOT] = asyncio.ensure_future(snapshot(ctx))
        # Its failure is each waiter's to report; none left waiting must not log it as lost.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    # Shielded: a stream that goes away must not cancel the read the others wait for.
    return await asyncio.shield(task)


def _gone(request: web.Request) -> bool:
    # Checked every loop: aiohttp does not cancel a handler whose client went away.
    return request.transport is None or request.transport.is_closing()


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

"""The sim's Binance-format market data server: kline WebSocket streams and REST klines.

WebSocket: combined `/stream?streams=btcusdt@kline_1s/...` (events wrapped as
{"stream", "data"}) and raw `/ws/<stream>`, plus SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS
messages. A 1s stream sends each candle once, closed, ~20 ms after its second (Binance's
"Update Speed: 1000ms for `1s`"); longer intervals send in-progress updates every 2 s and
the closed candle at the boundary. REST: `/api/v3/klines` (the candle still open as the last
row, as Binance serves it: its close is the last price so far and its close time is in the
future), `/ping`, `/time`, each answer with the IP's used weight (`X-MBX-USED-WEIGHT-1M`).

Fault injection for the stream: `BinanceSim.drop_streams()` (or `POST /_sim/binance/drop?
refuse_ms=N`) cuts every kline WebSocket as a network failure would, and can refuse new ones
for a while, so that a client must reconnect and backfill the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from baton.errors import BinanceBadRequest
from kernel.clock import wall_ms
from sim import faults as sim_faults
from sim.klines import Klines
from sim.model import BASE_PRICES, PriceModel
from venues.binance import INTERVALS_S, asset_of_symbol

log = logging.getLogger("sim.binance")

SEND_OFFSET_MS = 20  # after the boundary, as Binance's events trail the candle close
HEARTBEAT_S = 20.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 500
# An asset the sim prices (the settings' rule for BATON_ASSETS).
ASSET_NAME = re.compile(r"[a-z0-9]{1,16}")
_STREAM_RE = re.compile(r"^([a-z0-9]+)@kline_([0-9]+[smhdwM])$")


@dataclass(frozen=True)
class Stream:
    name: str
    asset: str
    interval: str


class BinanceSim:
    def __init__(
        self,
        model: PriceModel,
        assets: tuple[str, ...] = (),
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.klines = Klines(model)
        # Every USDT symbol of an asset-like name is served (a price model per asset): a slot
        # may be added on any asset while the stack runs. These are only the usual ones.
        self.assets = frozenset(BASE_PRICES) | frozenset(assets)
        self.clock_ms = clock_ms
        self.sockets: weakref.WeakSet[web.WebSocketResponse] = weakref.WeakSet()
        # The live WebSockets' transports, for drop_streams; and until when new ones are refused.
        self._transports: set[asyncio.Transport] = set()
        self.refuse_until_ms = 0
        # REST request weight used per client IP in the current minute: (minute, weight).
        self._weight: dict[str, tuple[int, int]] = {}

    def drop_streams(self, refuse_ms: int = 0) -> int:
        """Cut every kline WebSocket without a close frame (as a network failure would) and
        refuse new ones for `refuse_ms` of this sim's clock; returns how many were cut."""
        self.refuse_until_ms = self.clock_ms() + refuse_ms
        cut = list(self._transports)
        self._transports.clear()
        for t in cut:
            t.abort()
        log.info("binance sim: cut %d stream(s); refusing new ones for %d ms", len(cut), refuse_ms)
        return len(cut)

    def use_weight(self, ip: str, weight: int) -> int:
        """Count a request's weight against its IP's minute (Binance's REQUEST_WEIGHT limit is
        per IP and per fixed minute); returns the weight the IP has used in it."""
        minute = self.clock_ms() // 60_000
        start, used = self._weight.get(ip, (minute, 0))
        used = (used if start == minute else 0) + weight
        self._weight[ip] = (minute, used)
        return used

    def asset(self, sym: str) -> str:
        asset = asset_of_symbol(sym)
        if asset is None or not ASSET_NAME.fullmatch(asset) or not sym.isalnum():
            raise BinanceBadRequest(-1121, "Invalid symbol.")
        return asset

    def stream(self, name: str) -> Stream:
        m = _STREAM_RE.match(name)
        if not m:
            raise BinanceBadRequest(
                -1100, f"Invalid stream name {name!r}: expected <symbol>@kline_<interval>"
            )
        if m.group(2) not in INTERVALS_S:
            raise BinanceBadRequest(-1120, f"Invalid interval {m.group(2)!r} in stream {name!r}.")
        return Stream(name, self.asset(m.group(1).upper()), m.group(2))

    def events(self, st: Stream, boundary_ms: int, event_ms: int) -> list[dict[str, Any]]:
        """The events a stream sends at one second's boundary."""
        s = boundary_ms // 1000
        k = self.klines
        if st.interval == "1s":
            # Binance pushes a 1s candle once a second, closed ("Update Speed: 1000ms for
            # `1s`"): a strategy never sees the second still forming.
            return [k.second(st.asset, s - 1).ws_event(event_ms)]
        size = INTERVALS_S[st.interval]
        if s % size == 0:
            return [k.kline(st.asset, st.interval, s - size).ws_event(event_ms)]
        if s % 2 == 0:
            return [k.kline(st.asset, st.interval, s - s % size, s).ws_event(event_ms)]
        return []


SIM = web.AppKey("binance_sim", BinanceSim)


def _bad(code: int, msg: str) -> web.Response:
    return web.json_response({"code": code, "msg": msg}, status=400)


def _int_param(q: Any, name: str) -> int | None:
    raw = q.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 20:
        raise BinanceBadRequest(
            -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'."
        )
    return int(raw)


async def klines(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    q = request.query
    try:
        for name in ("symbol", "interval"):
            if not q.get(name):
                raise BinanceBadRequest(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        asset = sim.asset(q["symbol"])
        interval = q["interval"]
        if interval not in INTERVALS_S:
            raise BinanceBadRequest(-1120, "Invalid interval.")
        start_ms, end_ms = _int_param(q, "startTime"), _int_param(q, "endTime")
        limit = _int_param(q, "limit")
        if limit is not None and limit < 1:
            raise BinanceBadRequest(-1100, "Illegal value for parameter 'limit': must be 1 to 1000.")
        if start_ms is not None and end_ms is not None and start_ms > end_ms:
            raise BinanceBadRequest(-1023, "Start time is greater than end time.")
    except BinanceBadRequest as e:
        return _bad(e.code, e.msg)
    limit = min(limit or DEFAULT_LIMIT, MAX_LIMIT)  # Binance caps a larger limit at 1000
    size = INTERVALS_S[interval]
    now_ms = sim.clock_ms()
    current = now_ms // 1000 // size * size  # the candle still open: Binance serves it last
    last = current
    if end_ms is not None:
        last = min(last, end_ms // 1000 // size * size)
    if start_ms is not None:
        first = -(-start_ms // (size * 1000)) * size  # the first open at or after startTime
        opens = range(first, min(last, first + (limit - 1) * size) + 1, size)
    else:
        opens = range(max(0, last - (limit - 1) * size), last + 1, size)
    k = sim.klines
    rows = [
        (k.open_kline(asset, interval, now_ms) if o == current else k.kline(asset, interval, o)).rest_row()
        for o in opens
    ]
    return web.json_response(rows)


async def ping(request: web.Request) -> web.Response:
    return web.json_response({})


async def server_time(request: web.Request) -> web.Response:
    return web.json_response({"serverTime": request.app[SIM].clock_ms()})


async def ws_handler(request: web.Request) -> web.StreamResponse:
    sim = request.app[SIM]
    combined = request.path.startswith("/stream")
    names = request.query.get("streams", "") if combined else request.match_info.get("stream", "")
    try:
        streams = {st.name: st for st in map(sim.stream, filter(None, names.split("/")))}
    except BinanceBadRequest as e:
        return _bad(e.code, e.msg)  # refused before the upgrade, as Binance does
    if sim.clock_ms() < sim.refuse_until_ms:
        return web.Response(status=503, text="stream unavailable (sim: drop_streams)")
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    await ws.prepare(request)
    sim.sockets.add(ws)
    transport = request.transport
    if transport is not None:
        sim._transports.add(transport)
    pump = asyncio.create_task(_pump(sim, ws, streams, combined))
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await _command(sim, ws, streams, msg.data)
    finally:
        if transport is not None:
            sim._transports.discard(transport)
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
    return ws


async def _command(sim: BinanceSim, ws: web.WebSocketResponse, streams: dict[str, Stream], raw: str) -> None:
    try:
        cmd = json.loads(raw)
        method, cid = cmd["method"], cmd.get("id")
        params = cmd.get("params") or []
        if method == "LIST_SUBSCRIPTIONS":
            await ws.send_json({"result": list(streams), "id": cid})
            return
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE") or not isinstance(params, list):
            raise BinanceBadRequest(2, f"Invalid request: unknown method {method!r}")
        parsed = [sim.stream(str(p)) for p in params]
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        await ws.send_json({"error": {"code": 3, "msg": f"Invalid JSON: {e}"}, "id": None})
        return
    except BinanceBadRequest as e:
        await ws.send_json({"error": {"code": 2, "msg": f"Invalid request: {e.msg}"}, "id": None})
        return
    for st in parsed:
        if method == "SUBSCRIBE":
            streams[st.name] = st
        else:
            streams.pop(st.name, None)
    await ws.send_json({"result": None, "id": cid})


async def _pump(
    sim: BinanceSim, ws: web.WebSocketResponse, streams: dict[str, Stream], combined: bool
) -> None:
    boundary = sim.clock_ms() // 1000 * 1000 + 1000
    try:
        while not ws.closed:
            delay_ms = boundary + SEND_OFFSET_MS - sim.clock_ms()
            if delay_ms > 0:
                await asyncio.sleep(delay_ms / 1000)
            now = sim.clock_ms()
            for st in list(streams.values()):
                for ev in sim.events(st, boundary, now):
                    await ws.send_str(json.dumps({"stream": st.name, "data": ev} if combined else ev))
            # A stalled loop skips to the present rather than bursting: the feed backfills
            # gaps over REST, as it must for real Binance.
            boundary = max(boundary + 1000, (sim.clock_ms() - 1000) // 1000 * 1000)
    except (ConnectionError, RuntimeError) as e:
        log.debug("binance sim: stream ended: %s", e)


async def drop(request: web.Request) -> web.Response:
    try:
        refuse_ms = _int_param(request.query, "refuse_ms") or 0
    except BinanceBadRequest as e:
        return _bad(e.code, e.msg)
    return web.json_response({"dropped": request.app[SIM].drop_streams(refuse_ms)})


async def _close_sockets(app: web.Application) -> None:
    for ws in list(app[SIM].sockets):
        await ws.close(code=1001, message=b"server shutdown")


# Request weights of the REST endpoints the sim serves (spot rest-api.md: klines 2, ping and
# time 1); every answer says what its IP has used this minute, as Binance's do.
WEIGHTS = {"/api/v3/klines": 2, "/api/v3/ping": 1, "/api/v3/time": 1}
USED_WEIGHT_HEADERS = ("X-MBX-USED-WEIGHT-1M", "X-MBX-USED-WEIGHT")


@web.middleware
async def used_weight(request: web.Request, handler: sim_faults.Handler) -> web.StreamResponse:
    # "Every request will contain X-MBX-USED-WEIGHT-(intervalNum)(intervalLetter) in the
    # response headers which has the current used weight for the IP for all request rate
    # limiters defined" (binance-spot-api-docs rest-api.md, "IP Limits"): spot defines one,
    # REQUEST_WEIGHT per minute (1M); the legacy header without the interval is its twin.
    weight = WEIGHTS.get(request.path)
    if weight is None:
        return await handler(request)
    used = request.app[SIM].use_weight(request.remote or "", weight)
    resp = await handler(request)
    for name in USED_WEIGHT_HEADERS:
        resp.headers[name] = str(used)
    return resp


def fault_body(request: web.Request, status: int) -> dict[str, Any]:
    # Binance's error shape, for an injected error without a body of its own (sim/faults.py).
    return {"code": -1000, "msg": f"sim fault injected: {request.method} {request.path} -> {status}"}


def create_app(sim: BinanceSim, faults: sim_faults.Faults | None = None) -> web.Application:
    faults = faults or sim_faults.Faults("binance", fault_body)
    app = web.Application(middlewares=[faults.middleware, used_weight])
    app[SIM] = sim
    sim_faults.install(app, faults)
    app.router.add_get("/stream", ws_handler)
    app.router.add_get("/ws", ws_handler)
    app.router.add_get("/ws/{stream}", ws_handler)
    app.router.add_get("/api/v3/klines", klines)
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_post("/_sim/binance/drop", drop)
    app.on_shutdown.append(_close_sockets)
    return app

"""The sim CLOB's order endpoints: posting (one order or a batch), look-ups and listings of
orders and trades (paged as the live API pages them, the caller's own with the L2 headers),
and cancels. Registered by sim/clob.py's create_app.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from sim import auth
from sim.clob_http import SIM, error, l2, l2_error

PAGE_LIMIT = 500
INITIAL_CURSOR = "MA=="  # base64("0"), as on the real CLOB
END_CURSOR = "LTE="  # base64("-1"): no more pages


@l2
async def post_order(request: web.Request) -> web.Response:
    status, body = request.app[SIM].exchange.post(await request.read())
    return web.json_response(body, status=status)


@l2
async def post_orders(request: web.Request) -> web.Response:
    try:
        items = json.loads(await request.read())
        if not isinstance(items, list):
            raise TypeError("not a list")
    except (ValueError, TypeError):
        return error(400, "Invalid payload: expected a JSON list of orders")
    ex = request.app[SIM].exchange
    out = []
    for item in items:
        status, body = ex.post(json.dumps(item).encode())
        # One answer per order, in the order response shape: a refused order in a batch is
        # success false with its reason, the batch itself is still a 200.
        out.append(body if status == 200 else {**body, "success": False, "errorMsg": body["error"]})
    return web.json_response(out)


@l2
async def get_order(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    order = sim.exchange.orders.get(request.match_info["order_id"])
    if order is None:
        return error(404, f"order {request.match_info['order_id']} not found")
    return web.json_response(_live(order.record(sim.clock_ms() // 1000)))


def _page(request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
    limit = request.app[SIM].page_limit or PAGE_LIMIT
    cursor = request.query.get("next_cursor", "") or INITIAL_CURSOR
    try:
        offset = int(base64.b64decode(cursor, validate=True).decode())
    except ValueError:
        return error(400, f"invalid next_cursor {cursor!r}")
    if offset < 0:
        offset = len(rows)
    page = rows[offset : offset + limit]
    end = offset + len(page)
    next_cursor = base64.b64encode(str(end).encode()).decode() if end < len(rows) else END_CURSOR
    return web.json_response({"data": page, "next_cursor": next_cursor, "limit": limit, "count": len(page)})


def _filtered(request: web.Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query
    for key in ("id", "market", "asset_id"):
        if q.get(key):
            rows = [r for r in rows if r[key] == q[key]]
    if q.get("maker_address"):
        rows = [r for r in rows if r["maker_address"].lower() == q["maker_address"].lower()]
    # Trades only: match times as seconds (the client's TradeParams.before/after).
    for key, keep in (("before", lambda t, b: t < b), ("after", lambda t, b: t > b)):
        if q.get(key, "").isdigit():
            rows = [r for r in rows if "match_time" not in r or keep(int(r["match_time"]), int(q[key]))]
    return rows


def _live(record: dict[str, Any]) -> dict[str, Any]:
    """An order as the live CLOB shows it to its owner: without the sim's own `received_ms`
    (kept for the listing without credentials, which tools read)."""
    record.pop("received_ms", None)
    return record


def _caller(request: web.Request) -> tuple[str, str] | None:
    """(API key, address) of a caller with the L2 headers; None for one with none of them
    (the sim's own listing of everything, DESIGN.md's observable contract)."""
    if len(auth.missing(request.headers, auth.L2_HEADERS)) == len(auth.L2_HEADERS):
        return None
    return request.headers.get("POLY_API_KEY", ""), request.headers.get("POLY_ADDRESS", "").lower()


def _of(caller: tuple[str, str], row: dict[str, Any]) -> bool:
    key, address = caller
    return row.get("owner") == key or str(row.get("maker_address", "")).lower() == address


async def list_orders(request: web.Request) -> web.Response:
    # With the L2 headers, as the live CLOB answers them: the caller's open orders only (a
    # filled or killed order is no longer listed). Without them, the sim's own listing of
    # every order it ever accepted, whoever's (tools count duplicates with it).
    sim = request.app[SIM]
    now_s = sim.clock_ms() // 1000
    caller = _caller(request)
    why = "" if caller is None else await l2_error(request)
    if why:
        return error(401, why)  # headers, but not good ones: refused, as the live CLOB
    if caller is None:
        rows = [o.record(now_s) for o in sim.exchange.orders.values()]
    else:
        resting = [_live(o.record(now_s)) for o in sim.exchange.orders.values() if o.resting(now_s)]
        rows = [r for r in resting if _of(caller, r)]
    return _page(request, _filtered(request, rows))


async def list_trades(request: web.Request) -> web.Response:
    # With the L2 headers: the caller's trades only, as the live CLOB answers (the sim's
    # makers are anonymous, so the caller is always the taker); without them, every trade.
    rows = list(request.app[SIM].exchange.trades.values())
    caller = _caller(request)
    why = "" if caller is None else await l2_error(request)
    if why:
        return error(401, why)
    if caller is not None:
        rows = [r for r in rows if _of(caller, r)]
    return _page(request, _filtered(request, rows))


def _cancel(request: web.Request, ids: list[str]) -> web.Response:
    # The live CancelOrdersResponse: {"canceled": [ids], "not_canceled": {id: reason}}.
    ex = request.app[SIM].exchange
    out: dict[str, Any] = {"canceled": [], "not_canceled": {}}
    for oid in ids:
        reason = ex.cancel(oid)
        if reason:
            out["not_canceled"][oid] = reason
        else:
            out["canceled"].append(oid)
    return web.json_response(out)


@l2
async def cancel_order(request: web.Request) -> web.Response:
    try:
        oid = str((await request.json())["orderID"])
    except (ValueError, TypeError, KeyError):
        return error(400, 'Invalid payload: expected {"orderID": "0x..."}')
    return _cancel(request, [oid])


@l2
async def cancel_orders(request: web.Request) -> web.Response:
    try:
        ids = [str(i) for i in await request.json()]
    except (ValueError, TypeError):
        return error(400, 'Invalid payload: expected ["0x...", ...]')
    return _cancel(request, ids)


@l2
async def cancel_all(request: web.Request) -> web.Response:
    ex = request.app[SIM].exchange
    return _cancel(request, ex.resting_ids(request.headers["POLY_ADDRESS"]))


@l2
async def cancel_market_orders(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        market, asset_id = str(body.get("market", "")), str(body.get("asset_id", ""))
    except (ValueError, TypeError, AttributeError):
        return error(400, 'Invalid payload: expected {"market": "0x...", "asset_id": "..."}')
    ex = request.app[SIM].exchange
    return _cancel(request, ex.resting_ids(request.headers["POLY_ADDRESS"], market, asset_id))

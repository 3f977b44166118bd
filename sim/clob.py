"""The sim's Polymarket-CLOB-format REST API (plus Gamma discovery) as one aiohttp app.

Good enough for the real py-clob-client-v2: API-key creation, market parameters (tick size,
minimum size, fees), books, signed V2 orders against a balance, cancels, order and trade
look-ups, balance/allowance and market resolution, in the live API's shapes
(tests/fast/test_clob_contract.py holds them to that). It is lenient where DESIGN.md says
so: `GET /data/orders` answers without credentials and lists every order ever accepted (with
the L2 headers it lists the caller's open orders, as the live one), and L2 headers are
checked for presence only. Latency and errors can be injected per endpoint
(sim/faults.py); docs/sim.md has the knobs. The state it serves is sim/clob_state.py's ClobSim.
"""

from __future__ import annotations

import base64
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from sim import faults as faults_mod
from sim import gamma
from sim.accounts import MAX_ALLOWANCE
from sim.clob_state import ClobSim, api_creds
from sim.markets import TICK_SIZE, Window
from sim.orders import MICRO

log = logging.getLogger("sim.clob")

L1_HEADERS = ("POLY_ADDRESS", "POLY_SIGNATURE", "POLY_TIMESTAMP")
L2_HEADERS = (*L1_HEADERS, "POLY_API_KEY", "POLY_PASSPHRASE")
PAGE_LIMIT = 500
INITIAL_CURSOR = "MA=="  # base64("0"), as on the real CLOB
END_CURSOR = "LTE="  # base64("-1"): no more pages


SIM = web.AppKey("sim", ClobSim)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _missing(request: web.Request, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not request.headers.get(n)]


def _l2(handler: Handler) -> Handler:
    """The endpoint answers only a request with the L2 headers (checked for presence only)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        missing = _missing(request, L2_HEADERS)
        if missing:
            return _error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
        return await handler(request)

    return wrapped


async def auth_key(request: web.Request) -> web.Response:
    missing = _missing(request, L1_HEADERS)
    if missing:
        return _error(401, f"Invalid L1 Request headers: missing {', '.join(missing)}")
    nonce = request.headers.get("POLY_NONCE", "0")
    return web.json_response(api_creds(request.headers["POLY_ADDRESS"], nonce))


def _window_of_token(request: web.Request, token: str) -> Window | None:
    sim = request.app[SIM]
    return sim.catalogue.by_token(token, sim.clock_ms() // 1000) if token else None


async def get_book(request: web.Request) -> web.Response:
    token = request.query.get("token_id", "").strip()
    if not token.isdigit():
        return _error(400, "Invalid token id: token_id must be a decimal integer string")
    w = _window_of_token(request, token)
    if w is None:
        return _error(404, f"No orderbook exists for the requested token id {token}")
    return web.json_response(request.app[SIM].book_json(w, token))


async def post_books(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        tokens = [str(item["token_id"]) for item in body]
    except (ValueError, TypeError, KeyError):
        return _error(400, 'Invalid payload: expected a JSON list of {"token_id": "..."}')
    out = []
    for token in tokens:
        w = _window_of_token(request, token)
        if w is not None:  # unknown tokens are left out, as the real endpoint does
            out.append(request.app[SIM].book_json(w, token))
    return web.json_response(out)


def _token_param(handler: Callable[[web.Request, Window, str], dict[str, Any]]):
    async def wrapped(request: web.Request) -> web.Response:
        token = request.query.get("token_id", "").strip()
        w = _window_of_token(request, token)
        if w is None:
            return _error(404, f"market not found for token id {token!r}")
        return web.json_response(handler(request, w, token))

    return wrapped


@_l2
async def post_order(request: web.Request) -> web.Response:
    status, body = request.app[SIM].exchange.post(await request.read())
    return web.json_response(body, status=status)


@_l2
async def post_orders(request: web.Request) -> web.Response:
    try:
        items = json.loads(await request.read())
        if not isinstance(items, list):
            raise TypeError("not a list")
    except (ValueError, TypeError):
        return _error(400, "Invalid payload: expected a JSON list of orders")
    ex = request.app[SIM].exchange
    out = []
    for item in items:
        status, body = ex.post(json.dumps(item).encode())
        # One answer per order, in the order response shape: a refused order in a batch is
        # success false with its reason, the batch itself is still a 200.
        out.append(body if status == 200 else {**body, "success": False, "errorMsg": body["error"]})
    return web.json_response(out)


@_l2
async def get_order(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    order = sim.exchange.orders.get(request.match_info["order_id"])
    if order is None:
        return _error(404, f"order {request.match_info['order_id']} not found")
    return web.json_response(_live(order.record(sim.clock_ms() // 1000)))


def _page(request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
    limit = request.app[SIM].page_limit or PAGE_LIMIT
    cursor = request.query.get("next_cursor", "") or INITIAL_CURSOR
    try:
        offset = int(base64.b64decode(cursor, validate=True).decode())
    except ValueError:
        return _error(400, f"invalid next_cursor {cursor!r}")
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
    """(API key, address) of a caller with the L2 headers; None for one without (the sim's
    own listing of everything, DESIGN.md's observable contract)."""
    if _missing(request, L2_HEADERS):
        return None
    return request.headers["POLY_API_KEY"], request.headers["POLY_ADDRESS"].lower()


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


@_l2
async def cancel_order(request: web.Request) -> web.Response:
    try:
        oid = str((await request.json())["orderID"])
    except (ValueError, TypeError, KeyError):
        return _error(400, 'Invalid payload: expected {"orderID": "0x..."}')
    return _cancel(request, [oid])


@_l2
async def cancel_orders(request: web.Request) -> web.Response:
    try:
        ids = [str(i) for i in await request.json()]
    except (ValueError, TypeError):
        return _error(400, 'Invalid payload: expected ["0x...", ...]')
    return _cancel(request, ids)


@_l2
async def cancel_all(request: web.Request) -> web.Response:
    ex = request.app[SIM].exchange
    return _cancel(request, ex.resting_ids(request.headers["POLY_ADDRESS"]))


@_l2
async def cancel_market_orders(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        market, asset_id = str(body.get("market", "")), str(body.get("asset_id", ""))
    except (ValueError, TypeError, AttributeError):
        return _error(400, 'Invalid payload: expected {"market": "0x...", "asset_id": "..."}')
    ex = request.app[SIM].exchange
    return _cancel(request, ex.resting_ids(request.headers["POLY_ADDRESS"], market, asset_id))


def _window_of_condition(request: web.Request) -> Window | None:
    sim = request.app[SIM]
    return sim.catalogue.by_condition(request.match_info["condition_id"], sim.clock_ms() // 1000)


async def get_market(request: web.Request) -> web.Response:
    w = _window_of_condition(request)
    if w is None:
        return _error(404, f"market {request.match_info['condition_id']} not found")
    return web.json_response(request.app[SIM].market_json(w))


async def get_clob_market(request: web.Request) -> web.Response:
    w = _window_of_condition(request)
    if w is None:
        return _error(404, f"market {request.match_info['condition_id']} not found")
    return web.json_response(request.app[SIM].clob_market_json(w))


async def market_by_token(request: web.Request) -> web.Response:
    token = request.match_info["token_id"]
    w = _window_of_token(request, token)
    if w is None:
        return _error(404, "market not found")
    # primary is the first outcome (Up), as in the live MarketByTokenResponse.
    return web.json_response(
        {"condition_id": w.condition_id, "primary_token_id": w.up_token, "secondary_token_id": w.down_token}
    )


async def fee_rate(request: web.Request) -> web.Response:
    token = request.query.get("token_id", "").strip()
    w = _window_of_token(request, token)
    if w is None:
        return _error(404, "market not found")
    return web.json_response({"base_fee": request.app[SIM].fee(w).base_fee})


@_l2
async def balance_allowance(request: web.Request) -> web.Response:
    # Live shape (rs-clob-client-v2's BalanceAllowanceResponse): the balance as a string of
    # micro-units, and the allowance per spender contract. The account is the caller's
    # POLY_ADDRESS, which is the orders' maker for EOA (signature type 0) wallets.
    sim = request.app[SIM]
    now_s = sim.clock_ms() // 1000
    address = request.headers["POLY_ADDRESS"]
    asset_type = request.query.get("asset_type", "COLLATERAL").upper()
    if asset_type == "COLLATERAL":
        balance = sim.accounts.cash(address, now_s)
    elif asset_type == "CONDITIONAL":
        token = request.query.get("token_id", "").strip()
        if not token.isdigit():
            return _error(400, "invalid token_id: a CONDITIONAL balance needs the token's id")
        balance = sim.accounts.shares(address, token, now_s)
    else:
        return _error(400, f"invalid asset_type {asset_type!r}: expected COLLATERAL or CONDITIONAL")
    return web.json_response(
        {"balance": str(balance), "allowances": dict.fromkeys(sim.spenders, MAX_ALLOWANCE)}
    )


@_l2
async def update_balance_allowance(request: web.Request) -> web.Response:
    # Live, this asks the venue to re-read the chain, and answers with an empty body.
    return web.Response(status=200)


async def admin_balance(request: web.Request) -> web.Response:
    """POST /_sim/balance {"address": "0x...", "usd": 12.5}: set an account's collateral, so
    that a test or a chaos run can make an account run dry (never faulted)."""
    try:
        body = await request.json()
        address, usd = str(body["address"]), float(body["usd"])
    except (ValueError, TypeError, KeyError):
        return _error(400, 'Invalid payload: expected {"address": "0x...", "usd": <number>}')
    if not address.startswith("0x") or not 0.0 <= usd < 1e12:
        return _error(400, "address must be 0x-prefixed and usd between 0 and 1e12")
    sim = request.app[SIM]
    sim.accounts.set_cash(address, round(usd * MICRO))
    return web.json_response({"address": address, "balance": str(sim.accounts.cash(address, 0))})


async def events(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    slug = request.query.get("slug", "").strip()
    w = sim.catalogue.register(slug) if slug else None
    if w is None:
        return web.json_response([])  # Gamma answers an unknown slug with an empty list
    now_ms = sim.clock_ms()
    return web.json_response([gamma.event(w, sim.up_price(w, now_ms), now_ms // 1000)])


async def ok(request: web.Request) -> web.Response:
    return web.json_response("OK")


async def server_time(request: web.Request) -> web.Response:
    return web.json_response(request.app[SIM].clock_ms() // 1000)


async def version(request: web.Request) -> web.Response:
    # 2 keeps py-clob-client-v2 on V2 orders.
    return web.json_response({"version": 2})


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Every failure answers JSON naming what was wrong; none takes the server down.
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        return _error(e.status, f"{e.reason}: {request.method} {request.path}")
    except Exception as e:
        log.exception("sim clob: %s %s failed", request.method, request.path)
        return _error(500, f"internal error: {type(e).__name__}: {e}")


@web.middleware
async def catch_up(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Resting orders are matched against the books of the seconds gone by before anything
    # reads or changes orders or balances (sim/resting.py).
    request.app[SIM].exchange.sweep()
    return await handler(request)


def fault_body(request: web.Request, status: int) -> dict[str, Any]:
    # The CLOB's error shape, for an injected error without a body of its own.
    return {"error": f"sim fault injected: {request.method} {request.path} -> {status}"}


def create_app(sim: ClobSim, faults: faults_mod.Faults | None = None) -> web.Application:
    faults = faults or faults_mod.Faults("clob", fault_body, sim.seed)
    # Faults outermost: an injected delay or drop happens whatever the handler does.
    app = web.Application(middlewares=[faults.middleware, json_errors, catch_up])
    app[SIM] = sim
    faults_mod.install(app, faults)
    r = app.router
    r.add_get("/", ok)
    r.add_get("/ok", ok)
    r.add_get("/time", server_time)
    r.add_get("/version", version)
    r.add_post("/auth/api-key", auth_key)
    r.add_get("/auth/derive-api-key", auth_key)
    r.add_get("/tick-size", _token_param(lambda q, w, t: {"minimum_tick_size": TICK_SIZE}))
    r.add_get("/neg-risk", _token_param(lambda q, w, t: {"neg_risk": False}))
    r.add_get("/fee-rate", fee_rate)
    r.add_get("/book", get_book)
    r.add_post("/books", post_books)
    r.add_post("/order", post_order)
    r.add_post("/orders", post_orders)
    r.add_delete("/order", cancel_order)
    r.add_delete("/orders", cancel_orders)
    r.add_delete("/cancel-all", cancel_all)
    r.add_delete("/cancel-market-orders", cancel_market_orders)
    r.add_get("/balance-allowance", balance_allowance)
    r.add_get("/balance-allowance/update", update_balance_allowance)
    r.add_post("/_sim/balance", admin_balance)
    r.add_get("/data/order/{order_id}", get_order)
    r.add_get("/data/orders", list_orders)
    r.add_get("/data/trades", list_trades)
    r.add_get("/markets/{condition_id}", get_market)
    r.add_get("/clob-markets/{condition_id}", get_clob_market)
    r.add_get("/markets-by-token/{token_id}", market_by_token)
    r.add_get("/events", events)
    return app

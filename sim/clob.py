"""The sim's Polymarket-CLOB-format REST API (plus Gamma discovery) as one aiohttp app.

Good enough for the real py-clob-client-v2: API-key creation, market parameters (tick size,
minimum size, fees), books, signed V2 orders against a balance, cancels, order and trade
look-ups, balance/allowance and market resolution, in the live API's shapes
(tests/fast/test_clob_contract.py holds them to that). It is lenient where DESIGN.md says
so: `GET /data/orders` answers without credentials and lists every order ever accepted (with
the L2 headers it lists the caller's open orders, as the live one). Both levels of
authentication are verified as the live CLOB verifies them (sim/auth.py). Latency and errors
can be injected per endpoint (sim/faults.py); docs/sim.md has the knobs. The state it serves
is sim/clob_state.py's ClobSim.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sim import auth, gamma
from sim import faults as faults_mod
from sim.accounts import MAX_ALLOWANCE
from sim.clob_http import SIM, Handler, error, l2, window_of_token
from sim.clob_orders import (
    cancel_all,
    cancel_market_orders,
    cancel_order,
    cancel_orders,
    get_order,
    list_orders,
    list_trades,
    post_order,
    post_orders,
)
from sim.clob_state import ClobSim
from sim.markets import TICK_SIZE, Window
from sim.orders import MICRO

log = logging.getLogger("sim.clob")


async def auth_key(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    why = auth.l1_error(request.headers, sim.chain_id)
    if why:
        return error(401, why)
    nonce = request.headers.get("POLY_NONCE", "0")
    return web.json_response(sim.creds.issue(request.headers["POLY_ADDRESS"], nonce))


async def get_book(request: web.Request) -> web.Response:
    token = request.query.get("token_id", "").strip()
    if not token.isdigit():
        return error(400, "Invalid token id: token_id must be a decimal integer string")
    w = window_of_token(request, token)
    if w is None:
        return error(404, f"No orderbook exists for the requested token id {token}")
    return web.json_response(request.app[SIM].book_json(w, token))


async def post_books(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        tokens = [str(item["token_id"]) for item in body]
    except (ValueError, TypeError, KeyError):
        return error(400, 'Invalid payload: expected a JSON list of {"token_id": "..."}')
    out = []
    for token in tokens:
        w = window_of_token(request, token)
        if w is not None:  # unknown tokens are left out, as the real endpoint does
            out.append(request.app[SIM].book_json(w, token))
    return web.json_response(out)


def _token_param(handler: Callable[[web.Request, Window, str], dict[str, Any]]):
    async def wrapped(request: web.Request) -> web.Response:
        token = request.query.get("token_id", "").strip()
        w = window_of_token(request, token)
        if w is None:
            return error(404, f"market not found for token id {token!r}")
        return web.json_response(handler(request, w, token))

    return wrapped


def _window_of_condition(request: web.Request) -> Window | None:
    sim = request.app[SIM]
    return sim.catalogue.by_condition(request.match_info["condition_id"], sim.clock_ms() // 1000)


async def get_market(request: web.Request) -> web.Response:
    w = _window_of_condition(request)
    if w is None:
        return error(404, f"market {request.match_info['condition_id']} not found")
    return web.json_response(request.app[SIM].market_json(w))


async def get_clob_market(request: web.Request) -> web.Response:
    w = _window_of_condition(request)
    if w is None:
        return error(404, f"market {request.match_info['condition_id']} not found")
    return web.json_response(request.app[SIM].clob_market_json(w))


async def market_by_token(request: web.Request) -> web.Response:
    token = request.match_info["token_id"]
    w = window_of_token(request, token)
    if w is None:
        return error(404, "market not found")
    # primary is the first outcome (Up), as in the live MarketByTokenResponse.
    return web.json_response(
        {"condition_id": w.condition_id, "primary_token_id": w.up_token, "secondary_token_id": w.down_token}
    )


async def fee_rate(request: web.Request) -> web.Response:
    token = request.query.get("token_id", "").strip()
    w = window_of_token(request, token)
    if w is None:
        return error(404, "market not found")
    return web.json_response({"base_fee": request.app[SIM].fee(w).base_fee})


@l2
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
            return error(400, "invalid token_id: a CONDITIONAL balance needs the token's id")
        balance = sim.accounts.shares(address, token, now_s)
    else:
        return error(400, f"invalid asset_type {asset_type!r}: expected COLLATERAL or CONDITIONAL")
    return web.json_response(
        {"balance": str(balance), "allowances": dict.fromkeys(sim.spenders, MAX_ALLOWANCE)}
    )


@l2
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
        return error(400, 'Invalid payload: expected {"address": "0x...", "usd": <number>}')
    if not address.startswith("0x") or not 0.0 <= usd < 1e12:
        return error(400, "address must be 0x-prefixed and usd between 0 and 1e12")
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
        return error(e.status, f"{e.reason}: {request.method} {request.path}")
    except Exception as e:
        log.exception("sim clob: %s %s failed", request.method, request.path)
        return error(500, f"internal error: {type(e).__name__}: {e}")


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

"""The sim's Polymarket-CLOB-format REST API (plus Gamma discovery) as one aiohttp app.

Good enough for the real py-clob-client-v2: API-key creation, market parameters, books,
signed V2 orders, order look-ups and market resolution. It is lenient where DESIGN.md says
so: `GET /data/orders` answers without credentials, and L2 headers are checked for presence.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from py_clob_client_v2.clob_types import OrderBookSummary, OrderSummary
from py_clob_client_v2.utilities import generate_orderbook_summary_hash

from sim import gamma
from sim.book import BookParams, Level, maker_fair_up, tick_str
from sim.markets import MIN_ORDER_SIZE, TICK_SIZE, Catalogue, Window, iso
from sim.model import PriceModel
from sim.orders import MICRO, Exchange, micro_str

log = logging.getLogger("sim.clob")

L1_HEADERS = ("POLY_ADDRESS", "POLY_SIGNATURE", "POLY_TIMESTAMP")
L2_HEADERS = (*L1_HEADERS, "POLY_API_KEY", "POLY_PASSPHRASE")
PAGE_LIMIT = 500
INITIAL_CURSOR = "MA=="  # base64("0"), as on the real CLOB
END_CURSOR = "LTE="  # base64("-1"): no more pages


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class ClobSim:
    """All of the sim CLOB's state: in memory; the price model is the ground truth."""

    def __init__(
        self,
        model: PriceModel,
        *,
        seed: int,
        chain_id: int,
        params: BookParams | None = None,
        assets: tuple[str, ...] = (),
        timeframes: tuple[str, ...] = (),
        clock_ms: Callable[[], int] = wall_ms,
    ) -> None:
        self.model = model
        self.params = params or BookParams()
        self.seed = seed
        self.clock_ms = clock_ms
        self.catalogue = Catalogue(assets, timeframes)
        self.exchange = Exchange(model, self.catalogue, self.params, seed, chain_id, clock_ms)

    def up_price(self, w: Window, now_ms: int) -> float:
        if now_ms >= w.end_s * 1000:
            return 1.0 if self.model.outcome_up(w.asset, w.start_s, w.end_s) else 0.0
        return round(maker_fair_up(self.model, w, now_ms, self.params, self.seed), 3)

    def book_json(self, w: Window, token_id: str) -> dict[str, Any]:
        now_ms = self.clock_ms()
        bids, asks = self.exchange.book(w, token_id)
        last = self.up_price(w, now_ms)
        summary = OrderBookSummary(
            market=w.condition_id,
            asset_id=token_id,
            timestamp=str(now_ms),
            # The real CLOB lists bids ascending and asks descending: the best is last.
            bids=[_level(lv) for lv in reversed(bids)],
            asks=[_level(lv) for lv in reversed(asks)],
            min_order_size=f"{MIN_ORDER_SIZE:g}",
            neg_risk=False,
            tick_size=f"{TICK_SIZE:g}",
            last_trade_price=f"{(last if token_id == w.up_token else 1.0 - last):.3f}",
        )
        generate_orderbook_summary_hash(summary)
        out = dict(summary.__dict__)
        out["bids"] = [lv.__dict__ for lv in summary.bids or []]
        out["asks"] = [lv.__dict__ for lv in summary.asks or []]
        return out

    def market_json(self, w: Window) -> dict[str, Any]:
        now_ms = self.clock_ms()
        ended = now_ms >= w.end_s * 1000
        up = self.up_price(w, now_ms)
        up_won = ended and up == 1.0
        return {
            "enable_order_book": True,
            "active": True,
            "closed": ended,
            "archived": False,
            "accepting_orders": not ended,
            "minimum_order_size": MIN_ORDER_SIZE,
            "minimum_tick_size": TICK_SIZE,
            "condition_id": w.condition_id,
            "question_id": "0x" + hashlib.sha256(f"{w.slug}:question".encode()).hexdigest(),
            "question": w.title,
            "description": f"Up if the {w.asset.upper()} price at the end of the window is "
            "greater than or equal to the price at its start.",
            "market_slug": w.slug,
            "end_date_iso": iso(w.end_s),
            "game_start_time": iso(w.start_s),
            "seconds_delay": 0,
            "maker_base_fee": 0,
            "taker_base_fee": 0,
            "neg_risk": False,
            "tags": ["Crypto", "Up or Down"],
            "tokens": [
                {"token_id": w.up_token, "outcome": "Up", "price": up, "winner": up_won},
                {
                    "token_id": w.down_token,
                    "outcome": "Down",
                    "price": round(1.0 - up, 3),
                    "winner": ended and not up_won,
                },
            ],
        }


def _level(lv: Level) -> OrderSummary:
    return OrderSummary(price=tick_str(lv[0]), size=micro_str(int(lv[1] * MICRO)))


SIM = web.AppKey("sim", ClobSim)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _missing(request: web.Request, names: tuple[str, ...]) -> list[str]:
    return [n for n in names if not request.headers.get(n)]


def api_creds(address: str, nonce: str) -> dict[str, str]:
    """Deterministic per (address, nonce), so a restarted sim derives the same key."""
    d = hashlib.sha256(f"sim-api-key:{address.lower()}:{nonce}".encode()).digest()
    return {
        "apiKey": str(uuid.UUID(bytes=d[:16])),
        # The client HMACs with urlsafe_b64decode(secret): it must be URL-safe base64.
        "secret": base64.urlsafe_b64encode(hashlib.sha256(d + b":secret").digest()).decode(),
        "passphrase": hashlib.sha256(d + b":passphrase").hexdigest(),
    }


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


async def post_order(request: web.Request) -> web.Response:
    missing = _missing(request, L2_HEADERS)
    if missing:
        return _error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
    status, body = request.app[SIM].exchange.post(await request.read())
    return web.json_response(body, status=status)


async def post_orders(request: web.Request) -> web.Response:
    missing = _missing(request, L2_HEADERS)
    if missing:
        return _error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
    try:
        items = json.loads(await request.read())
        if not isinstance(items, list):
            raise TypeError("not a list")
    except (ValueError, TypeError):
        return _error(400, "Invalid payload: expected a JSON list of orders")
    ex = request.app[SIM].exchange
    return web.json_response([ex.post(json.dumps(item).encode())[1] for item in items])


async def get_order(request: web.Request) -> web.Response:
    missing = _missing(request, L2_HEADERS)
    if missing:
        return _error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
    sim = request.app[SIM]
    order = sim.exchange.orders.get(request.match_info["order_id"])
    if order is None:
        return _error(404, f"order {request.match_info['order_id']} not found")
    return web.json_response(order.record(sim.clock_ms() // 1000))


def _page(request: web.Request, rows: list[dict[str, Any]]) -> web.Response:
    cursor = request.query.get("next_cursor", "") or INITIAL_CURSOR
    try:
        offset = int(base64.b64decode(cursor, validate=True).decode())
    except ValueError:
        return _error(400, f"invalid next_cursor {cursor!r}")
    if offset < 0:
        offset = len(rows)
    page = rows[offset : offset + PAGE_LIMIT]
    end = offset + len(page)
    next_cursor = base64.b64encode(str(end).encode()).decode() if end < len(rows) else END_CURSOR
    return web.json_response(
        {"data": page, "next_cursor": next_cursor, "limit": PAGE_LIMIT, "count": len(page)}
    )


def _filtered(request: web.Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    q = request.query
    for key, field in (("id", "id"), ("market", "market"), ("asset_id", "asset_id")):
        if q.get(key):
            rows = [r for r in rows if r[field] == q[key]]
    return rows


async def list_orders(request: web.Request) -> web.Response:
    sim = request.app[SIM]
    now_s = sim.clock_ms() // 1000
    rows = [o.record(now_s) for o in sim.exchange.orders.values()]
    return _page(request, _filtered(request, rows))


async def list_trades(request: web.Request) -> web.Response:
    rows = list(request.app[SIM].exchange.trades.values())
    return _page(request, _filtered(request, rows))


async def cancel_order(request: web.Request) -> web.Response:
    missing = _missing(request, L2_HEADERS)
    if missing:
        return _error(401, f"Unauthorized/Invalid api key: missing {', '.join(missing)}")
    try:
        oid = str((await request.json())["orderID"])
    except (ValueError, TypeError, KeyError):
        return _error(400, 'Invalid payload: expected {"orderID": "0x..."}')
    order = request.app[SIM].exchange.orders.get(oid)
    if order is None or order.status != "LIVE":
        reason = "order not found" if order is None else f"order is {order.status}"
        return web.json_response({"canceled": [], "not_canceled": {oid: reason}})
    order.status = "CANCELED"
    return web.json_response({"canceled": [oid], "not_canceled": {}})


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
    tokens = [{"t": w.up_token, "o": "Up"}, {"t": w.down_token, "o": "Down"}]
    return web.json_response(
        {"c": w.condition_id, "t": tokens, "mts": TICK_SIZE, "nr": False, "fd": {"r": 0, "e": 0}}
    )


async def market_by_token(request: web.Request) -> web.Response:
    token = request.match_info["token_id"]
    w = _window_of_token(request, token)
    if w is None:
        return _error(404, f"market not found for token id {token!r}")
    return web.json_response({"condition_id": w.condition_id})


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
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
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


def create_app(sim: ClobSim) -> web.Application:
    app = web.Application(middlewares=[json_errors])
    app[SIM] = sim
    r = app.router
    r.add_get("/", ok)
    r.add_get("/ok", ok)
    r.add_get("/time", server_time)
    r.add_get("/version", version)
    r.add_post("/auth/api-key", auth_key)
    r.add_get("/auth/derive-api-key", auth_key)
    r.add_get("/tick-size", _token_param(lambda q, w, t: {"minimum_tick_size": TICK_SIZE}))
    r.add_get("/neg-risk", _token_param(lambda q, w, t: {"neg_risk": False}))
    r.add_get("/fee-rate", _token_param(lambda q, w, t: {"base_fee": 0}))
    r.add_get("/book", get_book)
    r.add_post("/books", post_books)
    r.add_post("/order", post_order)
    r.add_post("/orders", post_orders)
    r.add_delete("/order", cancel_order)
    r.add_get("/data/order/{order_id}", get_order)
    r.add_get("/data/orders", list_orders)
    r.add_get("/data/trades", list_trades)
    r.add_get("/markets/{condition_id}", get_market)
    r.add_get("/clob-markets/{condition_id}", get_clob_market)
    r.add_get("/markets-by-token/{token_id}", market_by_token)
    r.add_get("/events", events)
    return app

"""The sim CLOB's state, all in memory (the price model is the ground truth): its markets,
accounts and exchange, and its books and markets in the live API's JSON shapes. sim/clob.py
serves it over HTTP."""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from typing import Any

from py_clob_client_v2.clob_types import OrderBookSummary, OrderSummary
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.utilities import generate_orderbook_summary_hash

from kernel.clock import wall_ms
from sim.accounts import DEFAULT_BALANCE_USD, Accounts
from sim.auth import Creds
from sim.book import BookParams, Level, maker_fair_up, tick_str
from sim.fees import DEFAULT_FEES, NO_FEE, Fee
from sim.markets import MIN_ORDER_SIZE, TICK_SIZE, Catalogue, Window, iso
from sim.model import PriceModel
from sim.orders import MICRO, Exchange, micro_str


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
        balance_micro: int = int(DEFAULT_BALANCE_USD * MICRO),
        fees: dict[str, Fee] | None = None,
        page_limit: int | None = None,
    ) -> None:
        self.model = model
        self.params = params or BookParams()
        self.seed = seed
        self.clock_ms = clock_ms
        self.fees = dict(DEFAULT_FEES if fees is None else fees)
        # None: sim/clob.py's PAGE_LIMIT (read per request, so a test can patch it).
        self.page_limit = page_limit
        self.chain_id = chain_id
        self.creds = Creds(api_creds)
        contracts = get_contract_config(chain_id)
        # Spenders of the collateral, as the live /balance-allowance lists them: the V2
        # exchanges and the neg-risk adapter, each approved for the maximum.
        self.spenders = (contracts.exchange_v2, contracts.neg_risk_exchange_v2, contracts.neg_risk_adapter)
        self.catalogue = Catalogue(assets, timeframes)
        self.accounts = Accounts(balance_micro, lambda w: model.outcome_up(w.asset, w.start_s, w.end_s))
        self.exchange = Exchange(
            model, self.catalogue, self.params, seed, chain_id, clock_ms, self.accounts, self.fee
        )

    def fee(self, w: Window) -> Fee:
        return self.fees.get(w.timeframe, NO_FEE)

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
        # Every field of the live Market (Polymarket's rs-clob-client-v2 MarketResponse).
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
            "accepting_order_timestamp": None,
            "minimum_order_size": _num(MIN_ORDER_SIZE),
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
            "fpmm": "",
            "maker_base_fee": 0,
            "taker_base_fee": self.fee(w).base_fee,
            "notifications_enabled": True,
            "neg_risk": False,
            "neg_risk_market_id": "",
            "neg_risk_request_id": "",
            "icon": "",
            "image": "",
            "rewards": {"rates": None, "min_size": 0, "max_spread": 0},
            "is_50_50_outcome": False,
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

    def clob_market_json(self, w: Window) -> dict[str, Any]:
        # The live short-key shape (rs-clob-client-v2's ClobMarketInfoResponse, and a live answer
        # recorded in a public client's tests): where the runtime reads tick size (mts), minimum
        # size (mos), neg risk (nr) and the V2 fee parameters (fd).
        fee = self.fee(w)
        accepting = self.clock_ms() < w.end_s * 1000
        return {
            "c": w.condition_id,
            "t": [{"t": w.up_token, "o": "Up"}, {"t": w.down_token, "o": "Down"}],
            "mts": TICK_SIZE,
            "mos": _num(MIN_ORDER_SIZE),
            "nr": False,
            "fd": {"r": _num(fee.rate), "e": _num(fee.exponent), "to": True},
            "mbf": 0,
            "tbf": fee.base_fee,
            "rfqe": False,
            "itode": False,
            "ibce": False,
            "ao": accepting,
            "aot": None,
            "sd": 0,
            "oas": 0,
            "cbos": False,
            "gst": iso(w.start_s),
            "r": {},
        }


def _num(x: float) -> int | float:
    # JSON numbers as the live API writes them: 5, not 5.0 (0.01 stays 0.01).
    return int(x) if float(x).is_integer() else x


def _level(lv: Level) -> OrderSummary:
    return OrderSummary(price=tick_str(lv[0]), size=micro_str(int(lv[1] * MICRO)))


def api_creds(address: str, nonce: str) -> dict[str, str]:
    """Deterministic per (address, nonce), so a restarted sim derives the same key."""
    d = hashlib.sha256(f"sim-api-key:{address.lower()}:{nonce}".encode()).digest()
    return {
        "apiKey": str(uuid.UUID(bytes=d[:16])),
        # The client HMACs with urlsafe_b64decode(secret): it must be URL-safe base64.
        "secret": base64.urlsafe_b64encode(hashlib.sha256(d + b":secret").digest()).decode(),
        "passphrase": hashlib.sha256(d + b":passphrase").hexdigest(),
    }

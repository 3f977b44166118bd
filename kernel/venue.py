"""The runtime's client of the venue: Gamma discovery and the Polymarket CLOB.

CLOB calls go through the real py-clob-client-v2 (signing, L1/L2 headers, order JSON); only
its transport is ours, so that each venue has its own timeout and connection pool. Methods
are synchronous: the worker calls them through asyncio.to_thread. Credentials are derived
lazily on the first authenticated call and are never logged.
"""

from __future__ import annotations

import json
import logging
import threading
from enum import IntEnum
from typing import Any

import httpx
import msgspec
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.clob_types import BookParams, OrderArgsV2
from py_clob_client_v2.config import get_contract_config
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.order_utils import ExchangeOrderBuilderV2
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2

from state.structs import Market

log = logging.getLogger("baton.venue")

# Statuses worth retrying: the venue may not have seen the request, or asks us to wait.
_RETRYABLE = frozenset({408, 425, 429})
ORDER_TYPES = ("FOK", "FAK", "GTC", "GTD")


class VenueError(Exception):
    """A venue call that failed; `retryable` says whether the same call may succeed later."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class Book(msgspec.Struct, frozen=True):
    """One token's book, best level first: asks ascending, bids descending (price, size)."""

    token_id: str
    asks: list[tuple[float, float]]
    bids: list[tuple[float, float]]

    @property
    def best_ask(self) -> float | None:
        return self.asks[0][0] if self.asks else None

    @property
    def best_bid(self) -> float | None:
        return self.bids[0][0] if self.bids else None


class OrderResult(msgspec.Struct, frozen=True):
    """What the venue says of an order. `price` is the limit price; `avg_price` the average
    fill price when the venue reported one (0.0 otherwise)."""

    order_id: str
    status: str  # "matched" | "live" | "canceled" | "delayed" | "unmatched" | "rejected"
    size_matched: float
    price: float
    error: str = ""
    avg_price: float = 0.0


class SignedBuy(msgspec.Struct, frozen=True):
    """A signed order, not yet posted. `order_id` is the id the venue will know it by, so an
    intent can record it first; posting the same SignedBuy again never fills twice."""

    order_id: str
    token_id: str
    price: float
    size: float
    order: dict[str, Any]


class _Client(ClobClient):
    """py-clob-client-v2 with our own transport, and without its post-order trade polling."""

    def __init__(self, http: httpx.Client, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http = http

    def _request(self, method: str, url: str, headers: Any, data: Any, params: Any) -> Any:
        headers = {**(headers or {}), "Accept": "*/*", "Content-Type": "application/json"}
        content = data.encode() if isinstance(data, str) else None
        body = None if isinstance(data, str) or data is None else data
        try:
            resp = self._http.request(method, url, headers=headers, content=content, json=body, params=params)
        except httpx.HTTPError as e:
            path = httpx.URL(url).path
            raise VenueError(f"{method} {path}: {type(e).__name__}: {e}", retryable=True) from e
        if resp.status_code != 200:
            raise PolyApiException(resp)
        try:
            return resp.json()
        except ValueError:
            return resp.text

    def _get(self, endpoint: str, headers: Any = None, params: Any = None) -> Any:
        return self._request("GET", endpoint, headers, None, params)

    def _post(self, endpoint: str, headers: Any = None, data: Any = None, params: Any = None) -> Any:
        return self._request("POST", endpoint, headers, data, params)

    def _delete(self, endpoint: str, headers: Any = None, data: Any = None, params: Any = None) -> Any:
        return self._request("DELETE", endpoint, headers, data, params)

    def _resolve_transactions_hashes(self, response: Any) -> Any:
        # The stock client polls /data/trades for up to 30 s when a match has trade ids but no
        # transaction hashes yet; a worker thread must not hang on that. Reconciliation reads
        # the order later instead.
        return response


def _venue_message(e: PolyApiException) -> str:
    msg = e.error_msg
    if isinstance(msg, dict):
        return str(msg.get("error") or msg.get("errorMsg") or json.dumps(msg))
    return str(msg)


def _translate(e: PolyApiException, what: str) -> VenueError:
    status = e.status_code
    retryable = status is None or status >= 500 or status in _RETRYABLE
    return VenueError(f"{what}: HTTP {status}: {_venue_message(e)}", retryable=retryable)


class ClobVenue:
    def __init__(
        self,
        clob_url: str,
        gamma_url: str,
        private_key: str,
        chain_id: int,
        timeout_s: float = 5.0,
    ) -> None:
        self.clob_url = clob_url.rstrip("/")
        self.gamma_url = gamma_url.rstrip("/")
        self.chain_id = chain_id
        self._clob_http = httpx.Client(timeout=timeout_s)
        self._gamma_http = httpx.Client(timeout=timeout_s)
        self._client = _Client(self._clob_http, host=self.clob_url, chain_id=chain_id, key=private_key)
        self._creds_lock = threading.Lock()
        self._hashers: dict[bool, ExchangeOrderBuilderV2] = {}

    def __repr__(self) -> str:  # never show the key or the API secret
        return f"ClobVenue(clob_url={self.clob_url!r}, gamma_url={self.gamma_url!r})"

    # -- discovery ----------------------------------------------------------------------

    def discover(self, slug: str) -> Market | None:
        """The market of a slug from Gamma's `GET /events?slug=`, or None if there is none."""
        what = f"GET {self.gamma_url}/events?slug={slug}"
        try:
            resp = self._gamma_http.get(f"{self.gamma_url}/events", params={"slug": slug})
        except httpx.HTTPError as e:
            raise VenueError(f"{what}: {type(e).__name__}: {e}", retryable=True) from e
        if resp.status_code != 200:
            retryable = resp.status_code >= 500 or resp.status_code in _RETRYABLE
            raise VenueError(f"{what}: HTTP {resp.status_code}: {resp.text[:300]}", retryable=retryable)
        try:
            events = resp.json()
            market = _parse_event_market(events, slug)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise VenueError(f"{what}: unexpected answer: {e}", retryable=False) from e
        if market is not None:
            self._warm(market)
        return market

    def _warm(self, market: Market) -> None:
        # Fill the client's per-token caches now, so that buy() is one POST when it counts.
        try:
            for token in (market.up_token, market.down_token):
                self._client.get_tick_size(token)
                self._client.get_neg_risk(token)
        except (PolyException, VenueError) as e:
            log.info("venue: could not warm market %s (buy will ask later): %s", market.slug, e)

    # -- books --------------------------------------------------------------------------

    def books(self, token_ids: list[str]) -> dict[str, Book]:
        """Books of the tokens, in one `POST /books`; a token the venue does not know is absent."""
        if not token_ids:
            return {}
        try:
            raw = self._client.get_order_books([BookParams(token_id=t) for t in token_ids])
        except PolyApiException as e:
            raise _translate(e, "POST /books") from e
        out = {}
        for b in raw or []:
            asks = sorted((float(x["price"]), float(x["size"])) for x in b.get("asks") or [])
            bids = sorted(((float(x["price"]), float(x["size"])) for x in b.get("bids") or []), reverse=True)
            out[str(b["asset_id"])] = Book(token_id=str(b["asset_id"]), asks=asks, bids=bids)
        return out

    # -- orders -------------------------------------------------------------------------

    def _ensure_creds(self) -> None:
        if self._client.creds is not None:
            return
        with self._creds_lock:
            if self._client.creds is None:
                try:
                    creds = self._client.create_or_derive_api_key()
                except PolyApiException as e:
                    raise _translate(e, "GET /auth/derive-api-key") from e
                self._client.set_api_creds(creds)

    def sign_buy(self, token_id: str, price: float, size: float) -> SignedBuy:
        """Sign a BUY limit order without posting it; its order_id is known from now on."""
        try:
            order = self._client.create_order(
                OrderArgsV2(token_id=token_id, price=price, size=size, side="BUY")
            )
            neg_risk = self._client.get_neg_risk(token_id)  # cached by create_order
        except PolyApiException as e:
            raise _translate(e, "create_order") from e
        except PolyException as e:
            raise VenueError(f"create_order: {e.msg}", retryable=False) from e
        # Plain JSON types (enums as ints), so that a SignedBuy can be stored in Redis.
        payload = {k: int(v) if isinstance(v, IntEnum) else v for k, v in vars(order).items()}
        return SignedBuy(
            order_id=self._order_hash(order, neg_risk),
            token_id=token_id,
            price=price,
            size=size,
            order=payload,
        )

    def post(self, signed: SignedBuy, order_type: str = "FOK") -> OrderResult:
        """Post a signed order; safe to repeat. A venue rejection comes back as status
        "rejected"; a transport failure or 5xx raises VenueError(retryable=True)."""
        if order_type not in ORDER_TYPES:
            raise ValueError(f"order_type {order_type!r} is not one of {ORDER_TYPES}")
        self._ensure_creds()
        order = SignedOrderV2(**signed.order)
        try:
            resp = self._client.post_order(order, order_type)
        except PolyApiException as e:
            err = _translate(e, "POST /order")
            if e.status_code == 401:
                self._client.set_api_creds(None)  # stale key: derive again on the next call
                err.retryable = True
            if err.retryable or e.status_code == 403:
                raise err from e
            return OrderResult(signed.order_id, "rejected", 0.0, signed.price, _venue_message(e))
        if not isinstance(resp, dict):
            raise VenueError(f"POST /order: unexpected answer {resp!r:.300}", retryable=True)
        oid = str(resp.get("orderID") or signed.order_id)
        if not resp.get("success", True) or resp.get("error"):
            msg = str(resp.get("errorMsg") or resp.get("error") or "rejected")
            return OrderResult(oid, "rejected", 0.0, signed.price, msg)
        taking = float(resp.get("takingAmount") or 0)
        making = float(resp.get("makingAmount") or 0)
        return OrderResult(
            order_id=oid,
            status=str(resp.get("status") or "live").lower(),
            size_matched=taking,
            price=signed.price,
            avg_price=making / taking if taking > 0 else 0.0,
        )

    def buy(self, token_id: str, price: float, size: float, order_type: str = "FOK") -> OrderResult:
        """Sign and post a BUY of `size` shares at limit `price`."""
        return self.post(self.sign_buy(token_id, price, size), order_type)

    def _order_hash(self, order: SignedOrderV2, neg_risk: bool) -> str:
        # The id the CLOB will give the order: its EIP-712 hash on the exchange it is signed for.
        hasher = self._hashers.get(neg_risk)
        if hasher is None:
            cfg = get_contract_config(self.chain_id)
            address = cfg.neg_risk_exchange_v2 if neg_risk else cfg.exchange_v2
            hasher = ExchangeOrderBuilderV2(address, self.chain_id, signer=None)
            self._hashers[neg_risk] = hasher
        return hasher.build_order_hash(hasher.build_order_typed_data(order))

    def order(self, order_id: str) -> OrderResult | None:
        """The venue's view of an order (`GET /data/order/{id}`), or None if it has none."""
        self._ensure_creds()
        try:
            o = self._client.get_order(order_id)
        except PolyApiException as e:
            if e.status_code == 404:
                return None
            raise _translate(e, f"GET /data/order/{order_id}") from e
        if not isinstance(o, dict) or not o.get("id"):
            return None
        return OrderResult(
            order_id=str(o["id"]),
            status=str(o.get("status", "")).lower(),
            size_matched=float(o.get("size_matched") or 0),
            price=float(o.get("price") or 0),
        )

    # -- resolution ---------------------------------------------------------------------

    def resolution(self, condition_id: str) -> bool | None:
        """True if Up won, False if Down won, None while the market is unresolved."""
        try:
            m = self._client.get_market(condition_id)
        except PolyApiException as e:
            raise _translate(e, f"GET /markets/{condition_id}") from e
        if not isinstance(m, dict) or not m.get("closed"):
            return None
        for t in m.get("tokens") or []:
            if t.get("winner"):
                return str(t.get("outcome", "")).lower() == "up"
        return None

    def close(self) -> None:
        self._clob_http.close()
        self._gamma_http.close()


def _parse_event_market(events: Any, slug: str) -> Market | None:
    if not isinstance(events, list) or not events:
        return None
    markets = events[0].get("markets") or []
    # An event may hold several markets; prefer the one with our slug.
    for m in sorted(markets, key=lambda m: m.get("slug") != slug)[:1]:
        tokens = _json_list(m["clobTokenIds"])
        outcomes = [str(o).lower() for o in _json_list(m.get("outcomes", '["Up","Down"]'))]
        if len(tokens) != 2 or sorted(outcomes) != ["down", "up"]:
            raise ValueError(f"market {slug}: outcomes {outcomes} / tokens {tokens}")
        by_outcome = dict(zip(outcomes, map(str, tokens), strict=True))
        return Market(
            slug=slug,
            condition_id=str(m["conditionId"]),
            up_token=by_outcome["up"],
            down_token=by_outcome["down"],
            tick_size=float(m.get("orderPriceMinTickSize") or 0.01),
            min_size=float(m.get("orderMinSize") or 1.0),
        )
    return None


def _json_list(value: Any) -> list[Any]:
    # Gamma sends list fields as JSON-encoded strings; accept real lists as well.
    out = json.loads(value) if isinstance(value, str) else value
    if not isinstance(out, list):
        raise ValueError(f"expected a list, got {value!r}")
    return out

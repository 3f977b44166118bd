"""The runtime's client of the venue: the Polymarket CLOB, with Gamma for discovery.

CLOB calls go through the real py-clob-client-v2 (signing, L1/L2 headers, order JSON); only
its transport is ours, so that each venue has its own timeout and connection pool. Methods
are synchronous: the worker calls them through asyncio.to_thread. Credentials are derived
lazily on the first authenticated call and are never logged.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, TypeVar

import httpx
import msgspec
from py_clob_client_v2.clob_types import (
    AssetType,
    BalanceAllowanceParams,
    BookParams,
    OpenOrderParams,
    OrderArgsV2,
    OrderPayload,
    TradeParams,
)
from py_clob_client_v2.exceptions import PolyApiException, PolyException
from py_clob_client_v2.order_utils.model.order_data_v2 import SignedOrderV2

from baton.errors import VenueError
from baton.settings import Settings, credentials
from kernel.venue import DRY_RUN, AccountOrder, Book, OrderResult, SignedOrder
from state.structs import Market
from venues.budgets import venue_throttle
from venues.clob_orders import account_orders
from venues.clob_results import GTD_THRESHOLD_S, check_order, check_post, order_result, post_result
from venues.clob_transport import RESET_ON_CLOSE, ClobTransport, translate
from venues.gamma import Gamma, parse_gamma_event
from venues.http import VERSION_MISMATCH, Throttle
from venues.order_ids import OrderIdFn, OrderIds, check_order_ids

log = logging.getLogger("baton.venue")
T = TypeVar("T")

# A venue call failing fast (refused connection, 5xx, 429) is tried again within this much
# time, at most RETRY_ATTEMPTS times; a slow failure (a timeout) uses the budget up at once,
# so that a retry never stretches a tick. Reposting a signed order is idempotent, so a
# retried POST /order can never fill twice.
RETRY_ATTEMPTS = 3
RETRY_BUDGET_S = 2.0
RETRY_BACKOFF_S = (0.1, 0.3)


class ClobVenue:
    def __init__(
        self,
        clob_url: str,
        gamma_url: str,
        private_key: str | None,
        chain_id: int,
        timeout_s: float = 5.0,
        *,
        funder: str | None = None,
        signature_type: int = 0,
        dry_run: bool = False,
        throttle: Throttle | None = None,
        order_ids: OrderIdFn | None = None,
    ) -> None:
        self.clob_url = clob_url.rstrip("/")
        self.gamma_url = gamma_url.rstrip("/")
        self.chain_id = chain_id
        self.dry_run = dry_run
        self._clob_http = httpx.Client(
            timeout=timeout_s, transport=httpx.HTTPTransport(socket_options=RESET_ON_CLOSE)
        )
        self._gamma = Gamma(self.gamma_url, timeout_s, throttle)
        self._client = ClobTransport(
            self._clob_http,
            host=self.clob_url,
            chain_id=chain_id,
            key=private_key,
            funder=funder,
            signature_type=signature_type,
        )
        self._client.throttle = throttle
        self._creds_lock = threading.Lock()
        # Per token, the taker fee schedule (rate, exponent) learnt when signing for it.
        self._fees: dict[str, tuple[float, float]] = {}
        self._order_id = order_ids or OrderIds(chain_id)
        if self._client.signer is not None:  # a client without a key signs nothing
            check_order_ids(self._client.builder, chain_id, self._order_id)

    def __repr__(self) -> str:  # never show the key or the API secret
        return f"ClobVenue(clob_url={self.clob_url!r}, gamma_url={self.gamma_url!r}, dry_run={self.dry_run})"

    def _call(self, what: str, fn: Callable[[], T], may_retry: Callable[[], bool] | None = None) -> T:
        """Run one venue call with bounded retries of retryable errors (each request in it
        takes its cost from the shared budget first: `_Client._request`). `may_retry`, asked
        right before each retry is sent: False raises the last error instead (an order's
        poster past its lease deadline sends nothing more; what was sent is reconciled)."""
        started = time.monotonic()
        for attempt in range(RETRY_ATTEMPTS):
            try:
                return fn()
            except PolyApiException as e:
                err = translate(e, what)
                err.__cause__ = e
                if e.status_code == 401:
                    self._client.set_api_creds(None)  # stale key: derive again on the next call
            except VenueError as e:
                err = e
            last = attempt == RETRY_ATTEMPTS - 1
            pause = RETRY_BACKOFF_S[min(attempt, len(RETRY_BACKOFF_S) - 1)]
            if not err.retryable or last or time.monotonic() - started + pause > RETRY_BUDGET_S:
                raise err
            log.info("venue: %s failed (%s), attempt %d, retrying", what, err.kind, attempt + 1)
            time.sleep(pause)
            if may_retry is not None and not may_retry():
                raise err
        raise AssertionError("unreachable")

    # -- discovery ----------------------------------------------------------------------

    def discover(self, slug: str) -> Market | None:
        """The market of a slug: token ids and outcomes from Gamma's `GET /events?slug=`;
        tick size, minimum size and fee rate from the CLOB (never assumed). None if Gamma
        has no such event."""
        what = self._gamma.what(slug)
        resp = self._call(what, lambda: self._gamma.get_events(slug))
        try:
            market = parse_gamma_event(resp.json(), slug)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise VenueError(f"{what}: unexpected answer: {e}", retryable=False, kind="bad_answer") from e
        if market is None:
            return None
        return self._with_clob_parameters(market)

    def _with_clob_parameters(self, market: Market) -> Market:
        # One GET /clob-markets fills the client's tick-size, neg-risk and fee caches for
        # both tokens (so buy() is one POST when it counts); GET /markets has the minimum size.
        cid = market.condition_id
        info = self._call(f"GET /clob-markets/{cid}", lambda: self._client.get_clob_market_info(cid))
        full = self._call(f"GET /markets/{cid}", lambda: self._client.get_market(cid))
        try:
            tick = float(info["mts"])
            fee = float((info.get("fd") or {}).get("r") or 0.0)
            min_size = float(full["minimum_order_size"])
        except (KeyError, TypeError, ValueError) as e:
            raise VenueError(
                f"market {market.slug}: CLOB market parameters unreadable: {e!r}",
                retryable=False,
                kind="bad_answer",
            ) from e
        if not 0 < tick < 1 or min_size <= 0:
            raise VenueError(
                f"market {market.slug}: CLOB says tick size {tick}, minimum size {min_size}",
                retryable=False,
                kind="bad_answer",
            )
        return msgspec.structs.replace(market, tick_size=tick, min_size=min_size, fee_rate=fee)

    # -- books --------------------------------------------------------------------------

    def books(self, token_ids: list[str]) -> dict[str, Book]:
        """Books of the tokens, in one `POST /books`; a token the venue does not know is absent."""
        if not token_ids:
            return {}
        params = [BookParams(token_id=t) for t in token_ids]
        raw = self._call("POST /books", lambda: self._client.get_order_books(params))
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
                creds = self._call("GET /auth/derive-api-key", self._client.create_or_derive_api_key)
                self._client.set_api_creds(creds)

    def sign_buy(self, token_id: str, price: float, size: float) -> SignedOrder:
        """Sign a BUY limit order without posting it (`sign("BUY", ...)`)."""
        return self.sign("BUY", token_id, price, size)

    def sign(self, side: str, token_id: str, price: float, size: float, expires_s: int = 0) -> SignedOrder:
        """Sign a limit order without posting it; its order_id is known from now on. `side`
        "BUY" or "SELL", `size` in shares either way (a SELL gives up that many shares for at
        least `price` each); `expires_s` when a GTD order stops resting (unix seconds; 0:
        none), written as the venue's `expiration` field plus its security threshold
        (GTD_THRESHOLD_S), since the venue stops a GTD order that long before the field. The
        field travels beside the signed struct (a V2 order does not sign it), so it does not
        change the id. Raises ValueError for terms that are wrong on their face."""
        check_order(side, price, size, expires_s)
        if self._client.signer is None:
            raise VenueError(
                "sign: this venue client holds no key, so it signs nothing", retryable=False, kind="auth"
            )
        expiration = expires_s + GTD_THRESHOLD_S if expires_s else 0
        try:
            # The taker fee schedule of the token: what post() reports as the fee of what
            # matched at once. Cached by discovery's GET /clob-markets; read first, so that a
            # token not discovered here costs that one read (with /markets-by-token), which
            # fills the tick size and neg-risk caches create_order would otherwise ask for.
            self._fees[token_id] = self._fee_schedule(token_id)
            order = self._client.create_order(
                OrderArgsV2(token_id=token_id, price=price, size=size, side=side, expiration=expiration)
            )
            neg_risk = self._client.get_neg_risk(token_id)  # cached by create_order
        except PolyApiException as e:
            raise translate(e, "create_order") from e
        except PolyException as e:
            raise VenueError(f"create_order: {e.msg}", retryable=False) from e
        # The client signs the order version the venue's GET /version names; Baton's ids
        # (and the start-up check) are those of version 2 orders: an order of another version
        # would be committed under an id the venue does not know. Refused before any commit.
        version = getattr(self._client, "_ClobClient__cached_version", 2)
        if version != 2 or not isinstance(order, SignedOrderV2):
            # A version cached from before a migration is read again, so that the next order
            # is signed for what the venue names now (or refused again, if that is not 2).
            self._refresh_version()
            raise VenueError(
                f"create_order: the venue asks for version {version} orders, whose ids Baton "
                "does not compute (venues/order_ids.py computes version 2 ids); nothing signed "
                "is committed",
                retryable=False,
                kind="version_mismatch",
            )
        # Plain JSON types (enums as ints), so that a SignedOrder can be stored in Redis.
        payload = {k: int(v) if isinstance(v, IntEnum) else v for k, v in vars(order).items()}
        return SignedOrder(
            order_id=self._order_id(order, neg_risk),
            token_id=token_id,
            price=price,
            size=size,
            order=payload,
            side=side,
            expires_s=expires_s,
        )

    def _fee_schedule(self, token_id: str) -> tuple[float, float]:
        """(rate, exponent) of the token's taker fee, from the client's cache of GET
        /clob-markets (filled there on a miss)."""
        exponent = float(self._client.get_fee_exponent(token_id) or 0.0)
        info = getattr(self._client, "_ClobClient__fee_infos", {}).get(token_id)
        return float(getattr(info, "rate", 0.0) or 0.0), exponent

    def post(
        self,
        signed: SignedOrder,
        order_type: str = "FOK",
        timeout_s: float | None = None,
    ) -> OrderResult:
        """Post a signed order; safe to repeat, and repeated (within a bound) on a retryable
        error. A final venue refusal comes back as status "rejected" with the venue's message;
        a retryable failure that outlasts the bound raises VenueError. `timeout_s` (the time
        left before the poster's lease deadline): every attempt is done or abandoned by then,
        its connection reset (RESET_ON_CLOSE), and no retry starts after it (the last attempt's
        error is raised: its fate is reconciled, never called unsent).
        `order_type` FOK/FAK (taken at once or killed) or GTC/GTD (what does not match rests;
        a GTD only, signed with its expiry); the answer reads as venues/clob_results.py says.
        In dry-run mode nothing is sent: the answer is status "dry_run"."""
        check_post(signed, order_type)
        if self.dry_run:
            return OrderResult(signed.order_id, DRY_RUN, 0.0, signed.price, "dry run: signed, not posted")
        self._ensure_creds()
        order = SignedOrderV2(**signed.order)
        try:
            end_s = None if timeout_s is None else time.monotonic() + timeout_s

            def send() -> Any:
                self._ensure_creds()  # again: a 401 on the previous attempt dropped the key
                if end_s is None:
                    return self._client.post_order(order, order_type)
                left_s = end_s - time.monotonic()
                if left_s <= 0:
                    raise VenueError(
                        "POST /order: the lease deadline came first: not sent",
                        retryable=True,
                        kind="deadline",
                    )
                self._client.limit.timeout_s = left_s
                try:
                    return self._client.post_order(order, order_type)
                finally:
                    self._client.limit.timeout_s = None

            may_retry = None if end_s is None else (lambda: time.monotonic() < end_s)
            resp = self._call("POST /order", send, may_retry)
        except VenueError as err:
            if err.kind == "version_mismatch":
                self._refresh_version()
            if err.retryable or err.kind == "auth":
                raise
            return OrderResult(signed.order_id, "rejected", 0.0, signed.price, err.detail)
        if not isinstance(resp, dict):
            raise VenueError(
                f"POST /order: unexpected answer {resp!r:.300}", retryable=True, kind="bad_answer"
            )
        oid = str(resp.get("orderID") or signed.order_id)
        if not resp.get("success", True) or resp.get("error"):
            msg = str(resp.get("errorMsg") or resp.get("error") or "rejected")
            if VERSION_MISMATCH in msg:
                self._refresh_version()
            return OrderResult(oid, "rejected", 0.0, signed.price, msg)
        return post_result(resp, signed, order_type, self._fees.get(signed.token_id, (0.0, 0.0)))

    def _refresh_version(self) -> None:
        # The client re-reads /version itself when post_order sees the mismatch in a 200
        # answer; our transport raises on the 400 first, so ask it here.
        try:
            self._client._ClobClient__resolve_version(force_update=True)
        except Exception as e:
            log.warning("venue: could not refresh the order version: %s", e)

    def buy(self, token_id: str, price: float, size: float, order_type: str = "FOK") -> OrderResult:
        """Sign and post a BUY of `size` shares at limit `price`."""
        return self.post(self.sign_buy(token_id, price, size), order_type)

    def order(self, order_id: str) -> OrderResult | None:
        """The venue's view of an order (`GET /data/order/{id}`), or None if it has none. Once
        it is final with something matched, its trades too (`GET /data/trades?id=`, one per
        trade it names), for the average price of its fills and the taker fee of what it took
        on arrival: what reconciliation books. A trade that cannot be read raises (asked again
        later), never a guess."""
        if self.dry_run:
            return None  # nothing was ever posted
        self._ensure_creds()
        try:
            o = self._call(f"GET /data/order/{order_id}", lambda: self._client.get_order(order_id))
        except VenueError as e:
            if e.status == 404:
                return None
            raise
        if not isinstance(o, dict) or not o.get("id"):
            return None
        res = order_result(o)
        trade_ids = [str(t) for t in o.get("associate_trades") or []]
        if res.size_matched <= 0 or not trade_ids or res.status in ("live", "delayed"):
            return res
        trades: list[dict[str, Any]] = []
        for tid in trade_ids:
            params = TradeParams(id=tid)
            got = self._call("GET /data/trades", functools.partial(self._client.get_trades, params))
            trades.extend(t for t in got or [] if isinstance(t, dict))
        token = str(o.get("asset_id", ""))
        try:
            fee = self._fees.get(token) or self._fee_schedule(token)
        except PolyApiException as e:
            raise translate(e, f"fee schedule of {token}") from e
        except PolyException as e:
            raise VenueError(f"fee schedule of {token}: {e.msg}", retryable=True) from e
        return order_result(o, trades, fee)

    def cancel(self, order_id: str) -> bool:
        """Cancel a resting order (`DELETE /order`): True when the venue cancelled it now, False
        when it was not resting (filled, expired, killed, cancelled before, or unknown: the
        venue's `not_canceled` reason is logged). Safe to repeat; what the order matched
        before the cancel stays matched, and `order()` tells it."""
        if self.dry_run:
            return False  # nothing was ever posted
        self._ensure_creds()
        res = self._call("DELETE /order", lambda: self._client.cancel_order(OrderPayload(orderID=order_id)))
        if not isinstance(res, dict):
            raise VenueError(
                f"DELETE /order: unexpected answer {res!r:.300}", retryable=True, kind="bad_answer"
            )
        if order_id in (res.get("canceled") or []):
            return True
        why = (res.get("not_canceled") or {}).get(order_id)
        if why is None:
            raise VenueError(
                f"DELETE /order: the answer names neither canceled nor not_canceled {order_id}: {res!r:.300}",
                retryable=True,
                kind="bad_answer",
            )
        log.info("venue: cancel %s: not cancelled: %s", order_id, why)
        return False

    def account_orders(self, markets: list[str], since_s: int) -> list[AccountOrder]:
        """This account's orders in `markets` (condition ids; empty: every market) that are
        open now or traded after `since_s`: its trades (`GET /data/trades?after=`) and its open
        orders (`GET /data/orders`), every page of each (venues/clob_orders.py). With one
        market the venue filters; with several, one listing of each serves them all."""
        if self.dry_run:
            return []  # nothing was ever posted
        self._ensure_creds()
        one = markets[0] if len(markets) == 1 else None
        trades = self._call(
            "GET /data/trades",
            lambda: self._client.get_trades(TradeParams(market=one, after=max(0, since_s - 1))),
        )
        opens = self._call(
            "GET /data/orders", lambda: self._client.get_open_orders(OpenOrderParams(market=one))
        )
        creds = self._client.creds
        return account_orders(
            trades or [],
            opens or [],
            owner=creds.api_key if creds is not None else "",
            address=str(self._client.builder.funder or ""),
            markets=markets,
        )

    def cancel_all(self) -> dict[str, Any]:
        """Cancel every resting order of this account (`DELETE /cancel-all`): the emergency
        halt's sweep. Returns the venue's {"canceled": [...], "not_canceled": {...}}."""
        if self.dry_run:
            return {"canceled": [], "not_canceled": {}}  # nothing was ever posted
        self._ensure_creds()
        res = self._call("DELETE /cancel-all", lambda: self._client.cancel_all())
        return res if isinstance(res, dict) else {"canceled": [], "not_canceled": {}, "answer": res}

    def collateral_micros(self) -> int:
        """The account's collateral (USDC) balance at the venue, in micro-units."""
        self._ensure_creds()
        params = BalanceAllowanceParams(asset_type=AssetType.COLLATERAL)
        res = self._call("GET /balance-allowance", lambda: self._client.get_balance_allowance(params))
        try:
            return int(res["balance"])
        except (KeyError, TypeError, ValueError) as e:
            raise VenueError(
                f"GET /balance-allowance: unexpected answer {res!r:.200}", retryable=False
            ) from e

    # -- resolution ---------------------------------------------------------------------

    def resolution(self, condition_id: str) -> bool | None:
        """True if Up won, False if Down won, None while the market is unresolved."""
        m = self._call(f"GET /markets/{condition_id}", lambda: self._client.get_market(condition_id))
        if not isinstance(m, dict) or not m.get("closed"):
            return None
        for t in m.get("tokens") or []:
            if t.get("winner"):
                return str(t.get("outcome", "")).lower() == "up"
        return None

    def close(self) -> None:
        self._clob_http.close()
        self._gamma.close()


def resolution_reader(s: Settings, redis: Any = None) -> ClobVenue:
    """The venue as the settle program needs it: market resolutions (`resolution`, the CLOB's
    public `GET /markets/<condition id>`) and nothing that signs. Built without credentials:
    no key is read or held, so anything that would sign or authenticate fails."""
    return ClobVenue(
        s.clob_url,
        s.gamma_url,
        None,
        s.chain_id,
        dry_run=True,  # nothing is ever posted from here
        throttle=venue_throttle(redis, s) if redis is not None else None,
    )


def venue_from_settings(s: Settings, env: Mapping[str, str] | None = None, redis: Any = None) -> ClobVenue:
    """The venue of this mode, with its credentials (raises CredentialsError when live mode
    has none) and, given a (sync) Redis client, the venues' request budgets shared in it."""
    creds = credentials(s, env)
    return ClobVenue(
        s.clob_url,
        s.gamma_url,
        creds.private_key,
        s.chain_id,
        funder=creds.funder,
        signature_type=creds.signature_type,
        dry_run=s.dry_run,
        throttle=venue_throttle(redis, s) if redis is not None else None,
    )

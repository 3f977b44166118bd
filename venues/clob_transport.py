"""The CLOB client's transport: py-clob-client-v2 with our own HTTP client (a per-venue
timeout and pool, connections reset on close, every request's cost taken from the shared
budget first, a post's own time limit), and the translation of its errors into VenueError.
venues/polymarket.py's ClobVenue builds on it.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from typing import Any

import httpx
from py_clob_client_v2 import ClobClient
from py_clob_client_v2.exceptions import PolyApiException

from baton.errors import VenueError
from venues.http import Throttle, classify, take

# Every connection to the CLOB is closed with a reset (SO_LINGER 0), never a graceful close: a
# post abandoned at its deadline (a partition: the request sits unacknowledged in the kernel's
# send queue) must die with its socket, not be delivered when the link heals, seconds after
# another worker took the lease over (found by make chaos-cluster: an order 5.3 s late).
RESET_ON_CLOSE = [(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))]


class ClobTransport(ClobClient):
    """py-clob-client-v2 with our own transport, and without its post-order trade polling."""

    def __init__(self, http: httpx.Client, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._http = http
        self.throttle: Throttle | None = None
        # A post's own time limit (its lease deadline), per lane thread; None: the client's.
        self.limit = threading.local()

    def _request(self, method: str, url: str, headers: Any, data: Any, params: Any) -> Any:
        # Every request the client makes (its own /tick-size, /version, ... included) takes
        # its cost from the shared budget first; a refusal means it is never sent.
        take(self.throttle, method, url)
        headers = {**(headers or {}), "Accept": "*/*", "Content-Type": "application/json"}
        content = data.encode() if isinstance(data, str) else None
        body = None if isinstance(data, str) or data is None else data
        limit_s = getattr(self.limit, "timeout_s", None)
        timeout = httpx.USE_CLIENT_DEFAULT if limit_s is None else httpx.Timeout(max(limit_s, 0.001))
        try:
            resp = self._http.request(
                method, url, headers=headers, content=content, json=body, params=params, timeout=timeout
            )
        except httpx.HTTPError as e:
            path = httpx.URL(url).path
            kind = "timeout" if isinstance(e, httpx.TimeoutException) else "transport"
            raise VenueError(f"{method} {path}: {type(e).__name__}: {e}", retryable=True, kind=kind) from e
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


def venue_message(e: PolyApiException) -> str:
    msg = e.error_msg
    if isinstance(msg, dict):
        return str(msg.get("error") or msg.get("errorMsg") or json.dumps(msg))
    return str(msg)


def translate(e: PolyApiException, what: str) -> VenueError:
    msg = venue_message(e)
    kind, retryable = classify(e.status_code, msg)
    return VenueError(
        f"{what}: HTTP {e.status_code}: {msg}",
        retryable=retryable,
        kind=kind,
        status=e.status_code,
        detail=msg,
    )

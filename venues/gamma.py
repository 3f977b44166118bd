"""Gamma, Polymarket's market discovery: the event of a slug (`GET /events?slug=`) and the
market in it, with its token ids by outcome. Tick size, minimum size and fee rate are not
Gamma's: the CLOB client asks the CLOB for them (venues/polymarket.py).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from baton.errors import VenueError
from state.structs import Market
from venues.http import Throttle, classify, take


class Gamma:
    """Gamma's client: its own timeout and connection pool, and the shared request budget."""

    def __init__(self, url: str, timeout_s: float = 5.0, throttle: Throttle | None = None) -> None:
        self.url = url.rstrip("/")
        self.throttle = throttle
        self._http = httpx.Client(timeout=timeout_s)

    def what(self, slug: str) -> str:
        """The request for `slug`, as errors name it."""
        return f"GET {self.url}/events?slug={slug}"

    def get_events(self, slug: str) -> httpx.Response:
        """One `GET /events?slug=` (no retry: the caller retries): its answer, or VenueError."""
        what = self.what(slug)
        take(self.throttle, "GET", f"{self.url}/events")
        try:
            resp = self._http.get(f"{self.url}/events", params={"slug": slug})
        except httpx.HTTPError as e:
            kind = "timeout" if isinstance(e, httpx.TimeoutException) else "transport"
            raise VenueError(f"{what}: {type(e).__name__}: {e}", retryable=True, kind=kind) from e
        if resp.status_code != 200:
            kind, retryable = classify(resp.status_code, resp.text)
            raise VenueError(
                f"{what}: HTTP {resp.status_code}: {resp.text[:300]}",
                retryable=retryable,
                kind=kind,
                status=resp.status_code,
                detail=resp.text[:300],
            )
        return resp

    def close(self) -> None:
        self._http.close()


def parse_gamma_event(events: Any, slug: str) -> Market | None:
    """The market of `slug` in a Gamma `GET /events?slug=` answer (a list of events), with
    its token ids by outcome; None for an empty answer. Tick size, minimum size and fee rate
    are left at their defaults: they come from the CLOB."""
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
        )
    return None


def _json_list(value: Any) -> list[Any]:
    # Gamma sends list fields as JSON-encoded strings; accept real lists as well.
    out = json.loads(value) if isinstance(value, str) else value
    if not isinstance(out, list):
        raise ValueError(f"expected a list, got {value!r}")
    return out

"""The sim's market catalogue: slug parsing, deterministic ids, and the id -> market maps.

Any slug `{asset}-updown-{tf}-{window_start_unix}` names a market; its condition id and token
ids are pure functions of the slug, so a restarted sim agrees with the ids a worker stored.
Ids are one-way hashes, so the reverse maps are filled on discovery and by scanning recent
windows of the configured slots when an unknown id is asked for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from baton.errors import SettingsError
from baton.settings import timeframe_seconds
from sim.model import BASE_PRICES

_SLUG_RE = re.compile(r"^([a-z0-9]{1,16})-updown-(\d+[smh])-(\d{1,12})$")

ASSET_NAMES = {
    "btc": "Bitcoin",
    "eth": "Ethereum",
    "sol": "Solana",
    "xrp": "XRP",
    "doge": "Dogecoin",
    "bnb": "BNB",
    "hype": "Hyperliquid",
    "link": "Chainlink",
}

TICK_SIZE = 0.01
MIN_ORDER_SIZE = 5.0
# How far back an unknown id makes the catalogue look: settlement may run hours late.
SCAN_BACK_S = 24 * 3600
SCAN_AHEAD_S = 3600
# ...but never more windows than this per slot, so that a 1s timeframe stays cheap.
SCAN_MAX_WINDOWS = 2000
# The windows the venue lists up/down markets for (control/slot_rules.py lets slots have them).
VENUE_TIMEFRAMES = ("5m", "15m", "1h", "4h")


@dataclass(frozen=True)
class Window:
    slug: str
    asset: str
    timeframe: str
    start_s: int
    end_s: int
    condition_id: str
    up_token: str
    down_token: str

    def token(self, outcome: str) -> str:
        return self.up_token if outcome == "Up" else self.down_token

    def outcome_of(self, token_id: str) -> str:
        return "Up" if token_id == self.up_token else "Down"

    @property
    def title(self) -> str:
        name = ASSET_NAMES.get(self.asset, self.asset.upper())
        return f"{name} Up or Down - {iso(self.start_s)} to {iso(self.end_s)}"


def iso(t_s: int) -> str:
    return datetime.fromtimestamp(t_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition_id(slug: str) -> str:
    return "0x" + hashlib.sha256(slug.encode()).hexdigest()


def token_id(slug: str, outcome: str) -> str:
    # Decimal integer strings, as the client requires (it casts tokenId to uint256).
    digest = hashlib.sha256(f"{slug}:{outcome.lower()}".encode()).digest()
    return str(int.from_bytes(digest[:16], "big"))


def slug_for(asset: str, timeframe: str, start_s: int) -> str:
    return f"{asset}-updown-{timeframe}-{start_s}"


class Catalogue:
    """Every market the sim has seen, by slug, condition id and token id."""

    def __init__(self, assets: tuple[str, ...] = (), timeframes: tuple[str, ...] = ()) -> None:
        # Any asset and timeframe a slug names is a market (a slot may be added on any); these
        # are what a scan for an unknown id looks through, with those discovered since.
        self.assets = frozenset(BASE_PRICES) | frozenset(assets)
        self._scan_timeframes = tuple(dict.fromkeys((*timeframes, *VENUE_TIMEFRAMES)))
        self._scan_assets = tuple(dict.fromkeys((*assets, *BASE_PRICES)))
        self._by_slug: dict[str, Window] = {}
        self._by_cid: dict[str, Window] = {}
        self._by_token: dict[str, Window] = {}
        # (asset, tf) -> (lo, hi) window starts already registered by scans.
        self._scanned: dict[tuple[str, str], tuple[int, int]] = {}

    def parse(self, slug: str) -> Window | None:
        """The window a slug names, or None if it names no market the sim can price."""
        m = _SLUG_RE.match(slug)
        if not m:
            return None
        try:
            tf_s = timeframe_seconds(m.group(2))
        except SettingsError:
            return None
        start_s = int(m.group(3))
        return Window(
            slug=slug,
            asset=m.group(1),
            timeframe=m.group(2),
            start_s=start_s,
            end_s=start_s + tf_s,
            condition_id=condition_id(slug),
            up_token=token_id(slug, "Up"),
            down_token=token_id(slug, "Down"),
        )

    def register(self, slug: str) -> Window | None:
        w = self._by_slug.get(slug)
        if w is not None:
            return w
        w = self.parse(slug)
        if w is None:
            return None
        self._by_slug[slug] = w
        if w.asset not in self._scan_assets:
            self._scan_assets += (w.asset,)
        if w.timeframe not in self._scan_timeframes:
            self._scan_timeframes += (w.timeframe,)
        self._by_cid[w.condition_id] = w
        self._by_token[w.up_token] = w
        self._by_token[w.down_token] = w
        return w

    def by_token(self, token: str, now_s: int) -> Window | None:
        w = self._by_token.get(token)
        if w is None:
            self._scan(now_s)
            w = self._by_token.get(token)
        return w

    def by_condition(self, cid: str, now_s: int) -> Window | None:
        w = self._by_cid.get(cid.lower())
        if w is None:
            self._scan(now_s)
            w = self._by_cid.get(cid.lower())
        return w

    def _scan(self, now_s: int) -> None:
        # A sim restarted under a running worker must still know the markets the worker
        # discovered from its predecessor: register recent windows of the usual slots.
        for tf in self._scan_timeframes:
            tf_s = timeframe_seconds(tf)
            lo = (now_s - SCAN_BACK_S) // tf_s * tf_s
            hi = (now_s + SCAN_AHEAD_S) // tf_s * tf_s
            lo = max(lo, hi - SCAN_MAX_WINDOWS * tf_s)
            for asset in self._scan_assets:
                done = self._scanned.get((asset, tf))
                for start in range(lo, hi + 1, tf_s):
                    if done is None or not done[0] <= start <= done[1]:
                        self.register(slug_for(asset, tf, start))
                self._scanned[(asset, tf)] = (
                    (lo, hi) if done is None else (min(lo, done[0]), max(hi, done[1]))
                )

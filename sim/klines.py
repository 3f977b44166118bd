"""Binance-shaped klines from the sim's price model, for the REST and WebSocket servers.

A kline of any interval aggregates the model's 1s candles (volumes and trade counts are
seeded per second), so a 1m candle agrees exactly with the sixty 1s candles inside it.
Aggregates are memoised and extended incrementally, so an in-progress 1h candle costs only
the seconds since its last update.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sim.model import PriceModel
from venues.binance import INTERVALS_S, symbol

# Quote volume traded per second, on average (USDT).
QUOTE_VOL_PER_S = 50_000.0
_MEMO_MAX = 20_000


@dataclass(frozen=True)
class Kline:
    asset: str
    interval: str
    open_s: int
    upto_s: int  # seconds aggregated: [open_s, upto_s)
    o: float
    h: float
    low: float
    c: float
    v: float
    q: float
    n: int
    taker_v: float
    taker_q: float
    first_id: int
    last_id: int

    @property
    def interval_s(self) -> int:
        return INTERVALS_S[self.interval]

    @property
    def closed(self) -> bool:
        return self.upto_s >= self.open_s + self.interval_s

    @property
    def open_ms(self) -> int:
        return self.open_s * 1000

    @property
    def close_ms(self) -> int:
        return (self.open_s + self.interval_s) * 1000 - 1

    def rest_row(self) -> list[Any]:
        return [
            self.open_ms,
            _p(self.o),
            _p(self.h),
            _p(self.low),
            _p(self.c),
            _p(self.v),
            self.close_ms,
            _p(self.q),
            self.n,
            _p(self.taker_v),
            _p(self.taker_q),
            "0",
        ]

    def ws_event(self, event_ms: int) -> dict[str, Any]:
        sym = symbol(self.asset)
        return {
            "e": "kline",
            "E": event_ms,
            "s": sym,
            "k": {
                "t": self.open_ms,
                "T": self.close_ms,
                "s": sym,
                "i": self.interval,
                "f": self.first_id,
                "L": self.last_id,
                "o": _p(self.o),
                "c": _p(self.c),
                "h": _p(self.h),
                "l": _p(self.low),
                "v": _p(self.v),
                "n": self.n,
                "x": self.closed,
                "q": _p(self.q),
                "V": _p(self.taker_v),
                "Q": _p(self.taker_q),
                "B": "0",
            },
        }


def _p(x: float) -> str:
    # Binance sends 8 decimals; rounding to the symbol's tick could turn a model Down into
    # a tie (Up) at resolution, so the sim keeps all 8.
    return f"{x:.8f}"


class Klines:
    def __init__(self, model: PriceModel) -> None:
        self.model = model
        self._memo: dict[tuple[str, str, int], Kline] = {}

    def second(self, asset: str, s: int) -> Kline:
        """The 1s kline opening at s (closed once s + 1 has begun)."""
        o, h, low, c = self.model.candle(asset, s)
        d = hashlib.sha256(f"{self.model.seed}:{asset}:{s}:volume".encode()).digest()
        quote = QUOTE_VOL_PER_S * (0.2 + 1.6 * d[0] / 255.0)
        mid = (o + c) / 2.0
        taker = 0.3 + 0.4 * d[1] / 255.0
        n = 1 + d[2] % 60
        first = s * 100  # increasing across seconds, like Binance's trade ids
        return Kline(
            asset, "1s", s, s + 1, o, h, low, c, quote / mid, quote, n,
            quote / mid * taker, quote * taker, first, first + n - 1,
        )  # fmt: skip

    def kline(self, asset: str, interval: str, open_s: int, upto_s: int | None = None) -> Kline:
        """The kline of `interval` opening at open_s, aggregated over [open_s, upto_s)
        (the whole interval by default); at least one second is always included."""
        size = INTERVALS_S[interval]
        end = open_s + size if upto_s is None else min(open_s + size, max(upto_s, open_s + 1))
        if size == 1:
            return self.second(asset, open_s)
        key = (asset, interval, open_s)
        k = self._memo.get(key)
        if k is None or k.upto_s > end:
            k, start = self.second(asset, open_s), open_s + 1
        else:
            start = k.upto_s
        for s in range(start, end):
            k = _merge(k, self.second(asset, s))
        k = Kline(
            asset, interval, open_s, end, k.o, k.h, k.low, k.c, k.v, k.q, k.n,
            k.taker_v, k.taker_q, k.first_id, k.last_id,
        )  # fmt: skip
        if len(self._memo) >= _MEMO_MAX:
            self._memo.clear()
        self._memo[key] = k
        return k

    def open_kline(self, asset: str, interval: str, now_ms: int) -> Kline:
        """The kline of `interval` still open at now_ms, as Binance's REST serves it as the last
        row: the whole seconds since it opened and the current second so far (its close is the
        last price; `closed` is false and its close time is in the future)."""
        part = self.in_progress_1s(asset, now_ms)
        size = INTERVALS_S[interval]
        open_s = part.open_s // size * size
        if size == 1:
            return part
        k = part if open_s == part.open_s else _merge(self.kline(asset, interval, open_s, part.open_s), part)
        return Kline(
            asset, interval, open_s, part.open_s, k.o, k.h, k.low, k.c, k.v, k.q, k.n,
            k.taker_v, k.taker_q, k.first_id, k.last_id,
        )  # fmt: skip

    def in_progress_1s(self, asset: str, now_ms: int) -> Kline:
        """The 1s kline of the current second, part way through it."""
        s, frac_ms = divmod(now_ms, 1000)
        full = self.second(asset, s)
        o, c = full.o, self.model.price_at_ms(asset, now_ms)
        part = frac_ms / 1000.0
        n = max(1, round(full.n * part))
        return Kline(
            asset, "1s", s, s, o, max(o, c), min(o, c), c, full.v * part, full.q * part, n,
            full.taker_v * part, full.taker_q * part, full.first_id, full.first_id + n - 1,
        )  # fmt: skip


def _merge(a: Kline, b: Kline) -> Kline:
    return Kline(
        a.asset, a.interval, a.open_s, b.upto_s, a.o, max(a.h, b.h), min(a.low, b.low), b.c,
        a.v + b.v, a.q + b.q, a.n + b.n, a.taker_v + b.taker_v, a.taker_q + b.taker_q,
        a.first_id, b.last_id,
    )  # fmt: skip

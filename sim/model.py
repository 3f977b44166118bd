"""The sim's one seeded price model: every sim venue prices from it.

The price of an asset is a deterministic function of (seed, asset, second): a geometric
random walk whose per-second steps come from a generator seeded per (seed, asset, UTC day).
A restarted sim therefore agrees with itself, the Binance stream and the CLOB's resolution
always see the same path, and tests can compute the true outcome of any window.

Candle k (1s interval) spans [k, k+1): open = price(k), close = price(k+1). A window
[s, e) opens at price(s) and closes at price(e); Up wins when price(e) >= price(s).
"""

from __future__ import annotations

import hashlib
import math
import random
from array import array

DAY_S = 86_400

BASE_PRICES = {
    "btc": 95_000.0,
    "eth": 3_500.0,
    "sol": 200.0,
    "xrp": 2.5,
    "doge": 0.35,
    "bnb": 650.0,
    "hype": 30.0,
    "link": 22.0,
}


def base_price(asset: str) -> float:
    """The model's price level of an asset: the real one's for the usual assets, and for any
    other (a slot on an asset the sim was not told of) one of 0.01 to 10,000 chosen by its name."""
    known = BASE_PRICES.get(asset)
    if known is not None:
        return known
    h = int.from_bytes(hashlib.sha256(f"asset:{asset}".encode()).digest()[:8], "big") / 2**64
    return round(10 ** (-2 + 6 * h), 4)


# Per-second log-return volatility. Larger than the real market's so that short test
# windows (15 s) see moves worth trading.
BASE_VOL_PER_S = 0.0004


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


class PriceModel:
    def __init__(self, seed: int = 42, vol_scale: float = 1.0) -> None:
        self.seed = seed
        self.vol_scale = vol_scale
        # (asset, day) -> cumulative log returns for each second of the day (86,401 values).
        self._days: dict[tuple[str, int], array] = {}

    def vol_per_s(self, asset: str) -> float:
        return BASE_VOL_PER_S * self.vol_scale

    def _day_start_log_price(self, asset: str, day: int) -> float:
        # Each day starts from the base price moved by a seeded daily drift, so that a day's
        # path never depends on computing the days before it.
        h = hashlib.sha256(f"{self.seed}:{asset}:{day}:open".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        return math.log(base_price(asset)) + (u - 0.5) * 0.1

    def _day(self, asset: str, day: int) -> array:
        key = (asset, day)
        path = self._days.get(key)
        if path is None:
            seed = int.from_bytes(hashlib.sha256(f"{self.seed}:{asset}:{day}".encode()).digest()[:8], "big")
            rng = random.Random(seed)
            sigma = self.vol_per_s(asset)
            path = array("d", [0.0]) * (DAY_S + 1)
            acc = self._day_start_log_price(asset, day)
            path[0] = acc
            for i in range(1, DAY_S + 1):
                acc += rng.gauss(0.0, sigma)
                path[i] = acc
            if len(self._days) > 64:
                self._days.clear()
            self._days[key] = path
        return path

    def price(self, asset: str, t_s: int) -> float:
        """Price at the start of whole second t_s (unix seconds)."""
        day, sec = divmod(t_s, DAY_S)
        return math.exp(self._day(asset, day)[sec])

    def price_at_ms(self, asset: str, t_ms: int) -> float:
        """Price inside a second: linear between the two whole-second prices."""
        s, frac = divmod(t_ms, 1000)
        p0, p1 = self.price(asset, s), self.price(asset, s + 1)
        return p0 + (p1 - p0) * frac / 1000.0

    def candle(self, asset: str, open_s: int) -> tuple[float, float, float, float]:
        """(open, high, low, close) of the 1s candle opening at open_s."""
        o, c = self.price(asset, open_s), self.price(asset, open_s + 1)
        # A little seeded wick beyond the body, so high/low are not always open/close.
        h = hashlib.sha256(f"{self.seed}:{asset}:{open_s}:wick".encode()).digest()
        wick = self.vol_per_s(asset) * 0.3 * (h[0] / 255.0)
        return o, max(o, c) * (1 + wick), min(o, c) * (1 - wick), c

    def fair_up(self, asset: str, start_s: int, end_s: int, t_ms: int) -> float:
        """Probability that window [start_s, end_s) closes Up, seen at time t_ms."""
        p0 = self.price(asset, start_s)
        if t_ms >= end_s * 1000:
            return 1.0 if self.price(asset, end_s) >= p0 else 0.0
        if t_ms < start_s * 1000:
            return 0.5
        tau_s = (end_s * 1000 - t_ms) / 1000.0
        move = math.log(self.price_at_ms(asset, t_ms) / p0)
        return _phi(move / (self.vol_per_s(asset) * math.sqrt(tau_s)))

    def outcome_up(self, asset: str, start_s: int, end_s: int) -> bool:
        return self.price(asset, end_s) >= self.price(asset, start_s)

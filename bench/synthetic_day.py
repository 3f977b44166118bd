"""A seeded synthetic day of 1 s candles for the backtest and replay benchmarks: what the feed
would have recorded, without a day of waiting or a network.

Like the sim's price model (sim/model.py) it is a geometric random walk, seeded per (seed,
asset), but closer to a real market's seconds than the sim's (whose volatility is inflated so
that 15 s test windows move): per-second volatility of about 1e-4 for BTC (a daily move of
about 2.6 %), more for the smaller assets; volatility that clusters (its log follows a
mean-reverting walk with a half-life of about half an hour) and rises in the US session
(13:30-20:00 UTC); a few jumps a day; wicks and volumes per second. Same seed, same candles.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from sim.model import base_price
from state.structs import Candle

DAY_S = 86_400
# Per-second log-return volatility by asset (BTC's about 1e-4: 0.0001 * sqrt(86400) = 2.9 % a day).
VOL_PER_S = {
    "btc": 1.0e-4,
    "eth": 1.3e-4,
    "sol": 1.7e-4,
    "xrp": 1.6e-4,
    "doge": 1.9e-4,
    "bnb": 1.1e-4,
    "hype": 2.4e-4,
    "link": 1.8e-4,
}
DEFAULT_VOL_PER_S = 1.5e-4
# Mean reversion of log-volatility per second (half-life ln 2 / k: about 30 minutes), and its noise.
LOGVOL_K = 3.8e-4
LOGVOL_NOISE = 0.012
# US session volatility multiplier (13:30 to 20:00 UTC).
US_SESSION = (48_600, 72_000, 1.35)
# Jumps: about this many a day, each a move of this many sigmas (a sign at random).
JUMPS_PER_DAY = 6
JUMP_SIGMAS = 12.0
ASSETS = ("btc", "eth", "sol", "xrp", "doge", "bnb", "hype", "link")


def asset_candles(asset: str, from_s: int, seconds: int, seed: int) -> list[Candle]:
    """`seconds` closed 1 s candles of `asset` from `from_s` (unix seconds), oldest first. The
    random draws depend on (seed, asset) only, not on `from_s`: a later start is nearly the same
    market moved in time (only the US session's hours stay where they are), which keeps the
    replay benchmark's day, the 24 h before it runs, alike from run to run."""
    rng = random.Random(f"{seed}:{asset}")
    sigma0 = VOL_PER_S.get(asset, DEFAULT_VOL_PER_S)
    price = base_price(asset) * math.exp(rng.uniform(-0.05, 0.05))
    logvol = 0.0
    # exp(logvol - var) has a mean square of 1: clustering moves volatility around sigma0, not above it.
    logvol_var = LOGVOL_NOISE**2 / (2 * LOGVOL_K)
    jump_p = JUMPS_PER_DAY / DAY_S
    lo_s, hi_s, us_mult = US_SESSION
    gauss, rand = rng.gauss, rng.random
    out: list[Candle] = []
    append = out.append
    for i in range(seconds):
        t = from_s + i
        logvol += -LOGVOL_K * logvol + LOGVOL_NOISE * gauss(0.0, 1.0)
        sigma = sigma0 * math.exp(logvol - logvol_var) * (us_mult if lo_s <= t % DAY_S < hi_s else 1.0)
        r = gauss(0.0, sigma)
        if rand() < jump_p:
            r += JUMP_SIGMAS * sigma * (1 if rand() < 0.5 else -1)
        o = price
        c = price * math.exp(r)
        wick = sigma * 0.4 * rand()
        hi = (o if o > c else c) * (1.0 + wick)
        lo = (o if o < c else c) * (1.0 - wick)
        # Volume in the asset's units: about $50k a second, more when the market moves.
        v = 50_000.0 / o * (0.3 + rand()) * (1.0 + abs(r) / sigma0)
        append(Candle(t * 1000, o, hi, lo, c, round(v, 6), True))
        price = c
    return out


def synthetic_day(
    day_start_s: int, assets: Sequence[str] = ASSETS, seed: int = 42, lead_s: int = 3600
) -> dict[str, list[Candle]]:
    """Every asset's candles from `lead_s` before the day (the look-back a strategy reads at the
    day's first tick) to its end."""
    return {a: asset_candles(a, day_start_s - lead_s, DAY_S + lead_s, seed) for a in assets}

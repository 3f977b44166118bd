"""Candle history and configurations for the backtest's tests: a seeded random walk of 1 s
candles (fast to make: a few hours of eight assets in well under a second)."""

from __future__ import annotations

import math
import random

from kernel.backtest.types import BacktestConfig, FeeRate, SlotSpec
from state.structs import Candle

DAY0_S = 1_765_152_000  # a UTC midnight (2025-12-08)
ASSETS = ("btc", "eth", "sol", "xrp")


def walk(
    asset: str, from_s: int, to_s: int, seed: int = 7, vol: float = 0.0004, price: float = 100.0
) -> list[Candle]:
    """1 s candles [from_s, to_s) of a geometric random walk seeded by (seed, asset)."""
    rng = random.Random(f"{seed}:{asset}")
    out = []
    p = price
    for s in range(from_s, to_s):
        q = p * math.exp(rng.gauss(0.0, vol))
        out.append(Candle(s * 1000, p, max(p, q), min(p, q), q, 1.0, True))
        p = q
    return out


def history(assets: tuple[str, ...] = ASSETS, hours: float = 1.0, seed: int = 7) -> dict[str, list[Candle]]:
    """An hour before DAY0 (look-back) to `hours` after it and an hour more (resolution)."""
    end = DAY0_S + int(hours * 3600) + 3600
    return {a: walk(a, DAY0_S - 3600, end, seed) for a in assets}


def config(
    strategy: str = "snipe", hours: float = 1.0, assets: tuple[str, ...] = ASSETS, **kw: object
) -> BacktestConfig:
    slots = tuple(
        SlotSpec(id=f"{a}-{tf}", asset=a, timeframe=tf, stake_usd=5.0) for a in assets for tf in ("5m", "15m")
    )
    args: dict[str, object] = {
        "strategy": strategy,
        "from_ms": DAY0_S * 1000,
        "to_ms": (DAY0_S + int(hours * 3600)) * 1000,
        "slots": slots,
        "fees": {"15m": FeeRate(0.072, 1.0)},
    }
    args.update(kw)
    return BacktestConfig(**args)  # type: ignore[arg-type]

"""The venue's taker fee, as a pure formula: the venue clients report it from the market's
published schedule (venues/clob_results.py), and the backtest charges it (kernel/backtest/),
so that the two can never disagree on what a fill cost."""

from __future__ import annotations

import math


def taker_fee_usd(shares: float, price: float, rate: float, exponent: float) -> float:
    """The taker fee of `shares` matched at `price` (USDC): shares * rate * (p * (1 - p)) **
    exponent, as the venue publishes it (`fd` of GET /clob-markets; py-clob-client-v2's
    fees.py), floored to 5 decimals (the venue's charge)."""
    if shares <= 0 or rate <= 0 or not 0.0 < price < 1.0:
        return 0.0
    fee = shares * rate * (price * (1.0 - price)) ** exponent
    return math.floor(fee * 100_000 + 1e-9) / 100_000

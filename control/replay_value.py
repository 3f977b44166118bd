"""What a replay's differing decisions would have earned: each slot-window holding a difference
is valued twice, once with the live answers and once with the replayed ones, on the inputs live
had, under the assumptions of ASSUMPTIONS (a report states them). The window's result comes
from the feed's 1 s candles in Redis, as the settle program's market resolves it (Up wins when
the price at the window's end is at least the price at its start), or is unknown.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from baton.settings import CANDLE_INTERVAL
from kernel.decide import exit_size
from kernel.input_log import Evaluation
from kernel.strategy_check import decision_problem
from kernel.windows import slug
from sim.fees import DEFAULT_FEES
from state.keys import Keys
from state.structs import CANDLE, MARKET, MICROS
from venues.clob_results import taker_fee_usd

ASSUMPTIONS = (
    "each window is valued on the inputs live had; the first Buy of a window that the kernel "
    "would take fills whole at its limit price (stake/price shares; later ones are refused: "
    "one entry per window; a Buy the kernel refused live, or a replayed one staking at least "
    "as much where live's was refused by the risk checks, fills nothing), each Exit of a "
    "position sells its shares at its limit price "
    "(valued against holding them to resolution; never more in a window than the most held); "
    "the taker fee shares*rate*p*(1-p) at the market's cached rate, else the published default "
    "(15m: 0.072, others 0); a winning share pays 1 USD; the window's result from the 1 s "
    "candles in Redis (close at its end >= open at its start), unknown when they are gone"
)
# The fee schedule's exponent (py-clob-client-v2's fees.py: the crypto markets' is 1).
FEE_EXPONENT = 1.0


class Outcomes(Protocol):
    def up_won(self, asset: str, start_ms: int, end_ms: int) -> bool | None:
        """Whether the window closed Up, None when unknown."""

    def fee_rate(self, asset: str, timeframe: str, window_start_s: int) -> float:
        """The taker fee rate of the window's market."""


class RedisOutcomes:
    """Window results and fee rates read from Redis (sync client), each asked once."""

    def __init__(self, r: Any, k: Keys) -> None:
        self.r = r
        self.k = k
        self._won: dict[tuple[str, int, int], bool | None] = {}

    def _candle(self, asset: str, open_ms: int) -> Any:
        got = self.r.zrangebyscore(self.k.candles(asset, CANDLE_INTERVAL), open_ms, open_ms)
        for raw in got or []:
            try:
                return CANDLE.decode(raw)
            except ValueError:  # msgspec's DecodeError: a garbage member tells nothing
                continue
        return None

    def up_won(self, asset: str, start_ms: int, end_ms: int) -> bool | None:
        key = (asset, start_ms, end_ms)
        if key not in self._won:
            first, last = self._candle(asset, start_ms), self._candle(asset, end_ms - 1000)
            self._won[key] = None if first is None or last is None else last.close >= first.open
        return self._won[key]

    def fee_rate(self, asset: str, timeframe: str, window_start_s: int) -> float:
        raw = self.r.get(self.k.market(slug(asset, timeframe, window_start_s)))
        if raw:
            try:
                return float(MARKET.decode(raw).fee_rate)
            except ValueError:
                pass
        return DEFAULT_FEES[timeframe].rate if timeframe in DEFAULT_FEES else 0.0


def entry_value_usd(e: Evaluation, up_won: bool, rate: float) -> float:
    """A Buy filled whole at its limit: what its shares pay at resolution less stake and fee."""
    b = e.buy
    assert b is not None
    shares = b.stake_usd / b.limit_price
    won = up_won if b.side == "up" else not up_won
    return (shares if won else 0.0) - b.stake_usd - taker_fee_usd(shares, b.limit_price, rate, FEE_EXPONENT)


def exit_value_usd(e: Evaluation, shares: float, up_won: bool, rate: float) -> float:
    """`shares` sold by an Exit at its limit, against holding them to resolution."""
    x, pos = e.sell, e.input.position
    assert x is not None and pos is not None
    won = up_won if pos.side == "up" else not up_won
    fee = taker_fee_usd(shares, x.limit_price, rate, FEE_EXPONENT)
    return shares * x.limit_price - fee - (shares if won else 0.0)


def window_value_usd(answers: Iterable[Evaluation], up_won: bool, rate: float) -> float:
    """One side's (live or replayed) answers in one slot-window, oldest first, valued. The
    inputs are live's: after live sold, they hold less; an answer of the other side may have
    sold already what they still show, so a side never sells more in a window than the most
    it was seen to hold."""
    total, entered, sold, most = 0.0, False, 0.0, 0.0
    for e in answers:
        if e.kind == "buy" and e.buy is not None:
            # A Buy the kernel refused (risk, limits) never traded.
            if (
                entered
                or e.input.entered
                or e.outcome.startswith("refused")
                or decision_problem(e.buy, e.input)
            ):
                continue
            entered = True
            total += entry_value_usd(e, up_won, rate)
        elif e.kind == "sell" and e.sell is not None and e.input.position is not None:
            pos = e.input.position
            most = max(most, pos.shares)
            if decision_problem(e.sell, e.input, sell_at_most_held=True):
                continue
            shares = min(exit_size(e.sell.shares, round(pos.shares * MICROS)), most - sold)
            if shares > 0:
                sold += shares
                total += exit_value_usd(e, shares, up_won, rate)
    return total

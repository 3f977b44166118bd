"""The backtest's configuration and report (msgspec structs: the CLI prints them as JSON, the
benchmark and the picture read them)."""

from __future__ import annotations

import msgspec

from kernel.backtest.fills import FillParams


class SlotSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One slot the backtest runs the strategy on (as `baton slots` configures one)."""

    id: str
    asset: str
    timeframe: str
    stake_usd: float = 5.0
    params: dict[str, float] = msgspec.field(default_factory=dict)


class FeeRate(msgspec.Struct, frozen=True):
    """A market's taker fee schedule: shares * rate * (p * (1 - p)) ** exponent (kernel/fees.py)."""

    rate: float = 0.0
    exponent: float = 1.0


# How long after a 1 s candle closes the live feed has written it, by default (BacktestConfig).
FEED_DELAY_MS = 100


class BacktestConfig(msgspec.Struct, frozen=True, kw_only=True):
    strategy: str
    from_ms: int
    to_ms: int
    slots: tuple[SlotSpec, ...]
    tick_ms: int = 5000
    cash_usd: float = 1000.0
    max_stake_usd: float = 25.0
    max_exposure_usd: float = 200.0
    daily_loss_limit_usd: float = 100.0
    stale_after_ms: int = 10_000
    # How long after a 1 s candle closes the live feed has it in Redis (Binance pushes a 1 s
    # candle once its second is over, the feed writes it some tens of ms later): a tick at T
    # sees the candles closed by T - feed_delay_ms. Any delay of 1 ms or more keeps the candle
    # that closes exactly on a tick's boundary out of that tick, as it is out of the live one;
    # 0 gives the strategy a second the live tick never has.
    feed_delay_ms: int = FEED_DELAY_MS
    fills: FillParams = msgspec.field(default_factory=FillParams)
    # timeframe -> its markets' taker fee (a timeframe not named is fee-free)
    fees: dict[str, FeeRate] = msgspec.field(default_factory=dict)
    # Skip the ticks at which no slot is awake, holding or resting an order (the same
    # answers, faster); False runs every tick (the benchmark compares the two).
    skip_idle: bool = True


class Trade(msgspec.Struct, frozen=True, kw_only=True):
    """One position: its entry's fill, what exits sold, and how it ended."""

    slot: str
    window_start_s: int
    side: str
    opened_ms: int
    closed_ms: int
    shares: float  # bought
    cost_usd: float  # paid, the taker fee included
    fees_usd: float  # every fee of it: the entry's and the exits'
    proceeds_usd: float  # what exits sold for, net of their fees
    payout_usd: float  # what resolution paid on the shares still held
    pnl_usd: float
    # "settled" (held to resolution), "sold" (exits sold it all), "unresolved" (no candle
    # to resolve its window by: not in the PnL)
    end: str
    won: bool | None = None


class SlotReport(msgspec.Struct, kw_only=True):
    trades: int = 0
    wins: int = 0
    losses: int = 0
    pnl_usd: float = 0.0
    fees_usd: float = 0.0
    win_rate: float = 0.0
    evaluations: int = 0
    entries: int = 0  # entry orders sent (filled or not)
    unfilled: int = 0  # orders the book could not fill (a FOK killed, a FAK with nothing)
    exits: int = 0  # exit orders sent
    refused: int = 0  # answers the kernel refused (its rules or the risk checks)
    errors: int = 0  # evaluations that raised


class BacktestReport(msgspec.Struct, kw_only=True):
    strategy: str
    from_ms: int
    to_ms: int
    tick_ms: int
    trades: int
    wins: int
    pnl_usd: float
    win_rate: float
    max_drawdown_usd: float
    fees_usd: float
    start_cash_usd: float
    end_cash_usd: float
    slots: dict[str, SlotReport]
    equity: list[tuple[int, float]]  # (ms, cash + open positions at cost), at each change
    ticks: int  # ticks in the period
    ticks_run: int  # ticks evaluated (the others had no slot awake, holding or resting)
    evaluations: int
    unresolved: int  # positions whose window could not be resolved from the candles
    halts: int  # days the daily loss limit halted trading (until the next UTC day)
    books_recorded: int  # evaluations given a book from the input log
    books_modelled: int  # evaluations given the model's book
    fill_model: FillParams
    feed_delay_ms: int = 0  # BacktestConfig's: the candles a tick saw closed this long before it
    trade_list: list[Trade]
    problems: list[str]
    wall_s: float = 0.0  # not part of the result: the CLI's --json leaves it out

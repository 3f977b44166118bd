"""The msgspec structs that Baton keeps in Redis, with one JSON codec per type.

Schema evolution rule (docs/state.md): new fields go at the end and have defaults; a field
is never renamed or retyped in place. Bump SCHEMA_VERSION when old readers could no longer
read what new writers write.

Money is held in integer micro-dollars (`*_micros`, 1e-6 USD, as USDC has 6 decimals) and
share amounts in micro-shares, so that ledger sums are exact to the cent and beyond.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

import msgspec

# What this code writes; the oldest version whose data it still reads; the oldest code
# version that can read what this code writes. Blue and green may run different versions
# only when each can read what the other writes (docs/state.md, "Version skew").
SCHEMA_VERSION = 1
SCHEMA_READS_FROM = 1
SCHEMA_READABLE_BY = 1
MICROS = 1_000_000

Side = Literal["up", "down"]


def usd_to_micros(usd: float) -> int:
    return round(usd * MICROS)


def micros_to_usd(m: int) -> float:
    return m / MICROS


class Candle(msgspec.Struct, array_like=True, frozen=True):
    """One kline, stored as a compact JSON array: [open_ms, o, h, l, c, v, closed]."""

    open_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    closed: bool


# The prices a candle may hold (the feed refuses frames outside them: venues/binance.py).
MAX_PRICE = 1e15


def candle_problem(c: Candle) -> str:
    """Why a decoded candle cannot be a kline ('' when it can): the feed writes none such, so
    one in Redis was written by hand, and a strategy must not read it as the price."""
    if not all(0 < p < MAX_PRICE for p in (c.open, c.high, c.low, c.close)):
        return f"prices out of (0, {MAX_PRICE:g}): o={c.open} h={c.high} l={c.low} c={c.close}"
    if c.high < max(c.open, c.close, c.low) or c.low > min(c.open, c.close):
        return f"inconsistent: o={c.open} h={c.high} l={c.low} c={c.close}"
    return ""


class FeedStatus(msgspec.Struct, frozen=True):
    """What the feed last wrote for one asset and interval."""

    updated_ms: int
    last_open_ms: int
    last_close: float


# How far ahead of this host's clock a candle's open time or a feed status's update may be
# and still be believed (clocks of two hosts, Binance's and ours, disagree a little).
FUTURE_TOLERANCE_MS = 2_000


def feed_stale(fs: FeedStatus | None, now_ms: int, stale_after_ms: int) -> bool:
    """The rule the kernel refuses new entries by (and `baton status` reports): no status,
    none written for longer than `stale_after_ms` (BATON_STALE_AFTER_MS), or one dated in the
    future (garbage: it would otherwise stay fresh until that date)."""
    return (
        fs is None or now_ms - fs.updated_ms > stale_after_ms or fs.updated_ms - now_ms > FUTURE_TOLERANCE_MS
    )


class Market(msgspec.Struct, frozen=True):
    """The venue market of one slot-window, found by slug."""

    slug: str
    condition_id: str
    up_token: str
    down_token: str
    tick_size: float = 0.01
    min_size: float = 1.0
    # The taker fee rate the CLOB reports for the market (a fraction; 0 on fee-free markets).
    fee_rate: float = 0.0


class Slot(msgspec.Struct, frozen=True):
    id: str
    asset: str
    timeframe: str
    enabled: bool = True
    stake_usd: float = 5.0
    strategy: str = "snipe"
    params: dict[str, float] = msgspec.field(default_factory=dict)


class ControlFlags(msgspec.Struct, frozen=True):
    halted: bool = False
    halt_reason: str = ""
    paused: bool = False
    # Values in the control hash that could not be read; halt and pause fail safe (on).
    problems: tuple[str, ...] = ()
    # Bumped by `baton reload` to force a strategy reload even when no file changed.
    reload_seq: int = 0
    # Bumped by every halt, pause and resume (state/lua/control_set.lua); halt_seq is the seq
    # of the halt in force, which the worker acknowledges.
    seq: int = 0
    halt_seq: int = 0
    halted_ms: int = 0
    halted_by: str = ""
    pause_reason: str = ""


# Intent legs: one entry per slot-window, then exit legs exit-1 .. exit-N (kernel/strategy_api.py
# MAX_EXIT_LEGS), each committed at most once.
ENTRY_LEG = "entry"
EXIT_LEG_PREFIX = "exit-"


def exit_leg(n: int) -> str:
    return f"{EXIT_LEG_PREFIX}{n}"


IntentStatus = Literal["committed", "posted", "filled", "rejected", "failed"]
FINAL_INTENT_STATUSES = frozenset({"filled", "rejected", "failed"})


class Intent(msgspec.Struct, frozen=True, kw_only=True):
    """A decision committed before it reaches the venue; id = slot:window_start_s:leg."""

    id: str
    slot: str
    window_start_s: int
    window_end_s: int
    leg: str
    side: Side
    limit_price: float
    size: float
    stake_usd: float
    epoch: int
    created_ms: int
    status: IntentStatus = "committed"
    token_id: str = ""
    condition_id: str = ""
    order_id: str = ""
    filled_size: float = 0.0
    avg_price: float = 0.0
    error: str = ""
    updated_ms: int = 0
    # When the lease holder adopted this intent from an order the venue had and no intent
    # knew (kernel/adopt.py: a write lost in a Redis failover); 0 for an intent committed
    # before its order was posted, as every other.
    adopted_ms: int = 0
    # The venue order type (FOK, FAK, GTC, GTD) and a GTD order's expiry (unix seconds).
    order_type: str = "FOK"
    expires_s: int = 0
    # Fee the venue charged on the fill, in micro-dollars (booked with it in the ledger).
    fee_micros: int = 0
    # The slot's asset (slot ids are free-form: the position a fill opens is of this asset);
    # "" in intents written before it existed (the id's first part was the asset then).
    asset: str = ""

    @property
    def is_exit(self) -> bool:
        """An exit leg (`exit-<n>`) sells shares held; every other leg buys."""
        return self.leg.startswith(EXIT_LEG_PREFIX)


class Position(msgspec.Struct, frozen=True, kw_only=True):
    """Shares held in one slot-window; id = slot:window_start_s."""

    id: str
    slot: str
    asset: str
    window_start_s: int
    window_end_s: int
    side: Side
    token_id: str
    condition_id: str
    shares_micros: int
    cost_micros: int
    opened_ms: int
    intent_id: str
    # "closed": every share was sold by exits before the window resolved (nothing to settle).
    status: Literal["open", "settled", "closed"] = "open"
    won: bool | None = None
    payout_micros: int = 0
    pnl_micros: int = 0
    settled_ms: int = 0
    # Exits: shares_micros and cost_micros are what is still held and what it cost; these say
    # what was sold, for how much (net of fees), the fees, and the PnL realised by the sales.
    sold_shares_micros: int = 0
    proceeds_micros: int = 0
    fees_micros: int = 0
    exit_pnl_micros: int = 0
    exits: int = 0  # exit legs booked


LedgerKind = Literal["deposit", "buy", "sell", "payout"]


class LedgerEntry(msgspec.Struct, frozen=True):
    """One ledger line; amount is signed (cash in > 0, cash out < 0)."""

    kind: LedgerKind
    amount_micros: int
    ref: str
    at_ms: int
    epoch: int = 0
    pnl_micros: int = 0
    # The venue's fee on this fill, included in amount_micros (a buy's cost, a sale's net).
    fee_micros: int = 0


class TickRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the tick journal stream (stored as stream fields, not JSON)."""

    tick: int
    color: str
    release: str
    epoch: int
    started_ms: int
    duration_ms: int
    jitter_ms: int
    orders: int
    missed_before: int = 0
    halted: bool = False
    paused: bool = False
    evaluated: int = 0
    settled: int = 0  # settlement jobs this tick enqueued (the settle program books them)
    errors: int = 0
    blocked: int = 0  # unreadable values new entries waited on (kernel/blocking.py)
    exits: int = 0  # exit orders sent to the venue (also counted in `orders`)
    unfilled: int = 0  # FOK/FAK orders the book could not fill: an outcome, not an error


class Blocker(msgspec.Struct, frozen=True, kw_only=True):
    """A value that a limit or a decision depends on and that could not be read: new entries
    wait while it is there (kernel/blocking.py), for one slot, one asset's slots, or every
    slot when both are empty (an account-wide value: the day's PnL, cash, an open position or
    intent of unknown size). Exits, settlement and reconciliation go on."""

    key: str  # the Redis key, prefix included, as redis-cli spells it
    field: str = ""  # the hash field or member ("" for the whole key)
    problem: str  # what is wrong with it, with a sample of the value
    slot: str = ""
    asset: str = ""
    source: str = "tick"  # who found it: the tick's read, or another reader (kernel/blocking.py)
    since_ms: int = 0  # when it was first found (kept while it stays)

    @property
    def id(self) -> str:
        """What tells one blocker from another: the value's place, not its text."""
        return f"{self.key} {self.field}" if self.field else self.key

    def blocks(self, slot_id: str, asset: str) -> bool:
        if self.slot:
            return self.slot == slot_id
        if self.asset:
            return self.asset == asset
        return True

    @property
    def scope(self) -> str:
        """'all', 'slot <id>' or 'asset <name>': what it blocks, for people."""
        if self.slot:
            return f"slot {self.slot}"
        if self.asset:
            return f"asset {self.asset}"
        return "all"


class DecisionRecord(msgspec.Struct, frozen=True):
    """A slot's last decision as the tick recorded it (keys.decisions(): the dashboard,
    `baton slots` and docs/state.md read it as JSON). It comes in three shapes, below, each
    encoding to the JSON the tick wrote from dict literals before, key for key in the same
    order (tests/fast/test_decision_records.py pins the bytes); the error's `reason` comes
    after its `outcome` and an entry's before it, which is why one struct cannot hold all
    three."""

    tick: int
    at_ms: int
    window_start_s: int


class StrategyErrorRecord(DecisionRecord, frozen=True):
    """The strategy raised: its exception's repr (at most 200 characters)."""

    outcome: str  # "error"
    reason: str


class PassRecord(DecisionRecord, frozen=True):
    """The strategy made no decision; the asks it saw (null when there was no book)."""

    outcome: str  # "pass"
    up_ask: float | None
    down_ask: float | None


class EntryRecord(DecisionRecord, frozen=True):
    """The strategy decided to enter: "entry", or "risk refused: <why>" when the risk checks
    refused it."""

    side: str
    price: float
    stake_usd: float
    p_up: float
    reason: str
    outcome: str


class ExitRecord(DecisionRecord, frozen=True):
    """The strategy decided to sell (some of) its position: "exit", or "refused: <why>"."""

    action: str  # "sell": tells it from an entry's record
    side: str
    price: float
    shares: float
    order_type: str
    reason: str
    outcome: str


DecisionAction = Literal["buy", "sell", "pass"]


class DecisionLogEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One evaluation of one slot, as the decision log keeps it (keys.decision_log(slot)):
    entries, exits and passes alike, with why, what came of it, and the figures it saw."""

    slot: str
    at_ms: int
    tick: int
    window_start_s: int
    strategy: str
    action: DecisionAction
    reason: str
    # What the kernel made of it: "intent" (committed to be posted), "refused: <why>" (risk,
    # limits, a bad answer), "error" (the strategy raised; reason is the exception), or ""
    # for a pass.
    outcome: str = ""
    side: str = ""
    price: float = 0.0
    stake_usd: float = 0.0
    shares: float = 0.0
    order_type: str = ""
    intent_id: str = ""
    # The inputs' key figures: last_price, open_price, remaining_s, up_ask, down_ask, up_bid,
    # down_bid, held_shares, cash_usd (those present).
    figures: dict[str, float] = msgspec.field(default_factory=dict)


T = TypeVar("T")


class Codec(Generic[T]):
    """A JSON encoder/decoder pair for one type, built once and reused."""

    def __init__(self, typ: type[T]) -> None:
        self.typ = typ
        self._enc = msgspec.json.Encoder()
        self._dec: msgspec.json.Decoder[T] = msgspec.json.Decoder(typ)

    def encode(self, value: T) -> bytes:
        return self._enc.encode(value)

    def decode(self, raw: bytes | str) -> T:
        return self._dec.decode(raw)


CANDLE = Codec(Candle)
FEED_STATUS = Codec(FeedStatus)
MARKET = Codec(Market)
SLOT = Codec(Slot)
INTENT = Codec(Intent)
POSITION = Codec(Position)
LEDGER_ENTRY = Codec(LedgerEntry)
BLOCKER = Codec(Blocker)
DECISION_LOG_ENTRY = Codec(DecisionLogEntry)


def tick_record_fields(rec: TickRecord) -> dict[str, Any]:
    """Stream fields for a tick record: flat strings so `redis-cli XRANGE` reads cleanly."""
    out: dict[str, Any] = {}
    for name in rec.__struct_fields__:
        v = getattr(rec, name)
        out[name] = int(v) if isinstance(v, bool) else v
    return out

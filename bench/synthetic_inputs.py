"""A day of recorded evaluations for the replay benchmark, made the way a worker would have
recorded them (kernel/input_log.py `evaluation`), from the synthetic day of 1 s candles
(bench/synthetic_day.py): at each tick (k * tick_ms), each slot its strategy's wake rule
(`quotes_from_ms`) says is awake gets a version-2 input (the last minute of closes, the bars
its CANDLES asks for via kernel.inputs.bars_from_candles, the window's open); those whose
`needs_quotes` then says yes get books (kernel.inputs.with_asks) and are evaluated, and the
strategy's answer is recorded with its input, as the tick records it.

The books are a model maker's, as a live book would look (the shape is what the log's size and
decoding cost depend on): P(up) from the move since the window's open seen one second late,
quoted 2 cents wide on the 0.01 tick, five levels a side, 200 shares at the touch and 100 more
per level. A slot-window that entered is not asked again, unless its strategy exits
(`EXITS`): then its input says `entered`. No fills, no positions: what is recorded is what
the strategy saw and answered, which is all a replay reads.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence
from types import ModuleType
from typing import Any

from kernel.input_log import Evaluation, evaluation
from kernel.inputs import bars_from_candles, with_asks
from kernel.strategy_api import API_VERSION, INTERVALS_S, BookSide, SlotInput
from state.structs import Candle

CLOSES = 60  # SlotInput.closes: the last minute of 1 s closes
VOL_PER_S = 1e-4
LAG_MS = 1000
SPREAD = 0.02
LEVELS = 5
DEPTH, DEPTH_STEP = 200.0, 100.0
TF_MS = {"5m": 300_000, "15m": 900_000, "1m": 60_000, "15s": 15_000}


def _phi(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _side(p: float) -> BookSide:
    ask0 = min(99, max(1, math.ceil((p + SPREAD / 2) * 100 - 1e-9)))
    bid0 = max(1, min(ask0 - 1, math.floor((p - SPREAD / 2) * 100 + 1e-9)))
    asks = tuple(
        (t / 100, DEPTH + i * DEPTH_STEP) for i, t in enumerate(range(ask0, min(ask0 + LEVELS, 100)))
    )
    bids = tuple(
        (t / 100, DEPTH + i * DEPTH_STEP) for i, t in enumerate(range(bid0, max(bid0 - LEVELS, 0), -1))
    )
    return BookSide(bids=bids, asks=asks)


class Slot:
    def __init__(self, slot_id: str, asset: str, timeframe: str, strategy: ModuleType, name: str) -> None:
        self.id, self.asset, self.timeframe = slot_id, asset, timeframe
        self.tf_ms = TF_MS[timeframe]
        self.strategy, self.name = strategy, name
        self.wake = getattr(strategy, "quotes_from_ms", None)
        self.exits = bool(getattr(strategy, "EXITS", False))
        self.needs = getattr(strategy, "needs_quotes", None)
        self.candles_decl = dict(getattr(strategy, "CANDLES", {}) or {})
        self.entered_window = -1


def evaluations(
    candles: Mapping[str, Sequence[Candle]],
    slots: list[Slot],
    from_ms: int,
    to_ms: int,
    tick_ms: int,
    release: str,
    stake_usd: float = 5.0,
) -> Iterator[tuple[int, int, list[Evaluation]]]:
    """(tick, at_ms, that tick's evaluations) for every tick in [from_ms, to_ms), oldest first
    (ticks that evaluated nothing included: the log has an entry for each)."""
    opens = {a: [c.open_ms for c in cs] for a, cs in candles.items()}
    first = -(-from_ms // tick_ms) * tick_ms
    for now in range(first, to_ms, tick_ms):
        tick = now // tick_ms
        shared: dict[tuple[str, str], Any] = {}
        batch: list[Evaluation] = []
        for s in slots:
            ws = now - now % s.tf_ms
            we = ws + s.tf_ms
            entered = s.entered_window == ws
            if entered and not s.exits:
                continue
            if s.wake is not None and now < s.wake(ws, we, {}):
                continue
            cs = candles[s.asset]
            hi = bisect.bisect_right(opens[s.asset], now - 1000)  # candles closed by now
            if hi == 0:
                continue
            base = shared.get((s.asset, "base"))
            if base is None:
                closes = tuple(c.close for c in cs[max(0, hi - CLOSES) : hi])
                base = shared[(s.asset, "base")] = (closes, cs[hi - 1].close)
            closes, last = base
            io = bisect.bisect_left(opens[s.asset], ws)
            open_price = cs[io].open if io < len(cs) else last
            bars = {}
            for iv, n in s.candles_decl.items():
                got = shared.get((s.asset, iv))
                if got is None:
                    got = shared[(s.asset, iv)] = bars_from_candles(cs[max(0, hi - INTERVALS_S[iv] * n) : hi],
                                                                    INTERVALS_S[iv], n, now)  # fmt: skip
                bars[iv] = got
            inp = SlotInput(
                slot_id=s.id,
                asset=s.asset,
                timeframe=s.timeframe,
                now_ms=now,
                window_start_ms=ws,
                window_end_ms=we,
                open_price=open_price,
                last_price=last,
                closes=closes,
                stake_usd=stake_usd,
                params={},
                api=API_VERSION,
                strategy=s.name,
                bars=bars,
                entered=entered,
                cash_usd=1000.0,
                exposure_room_usd=200.0,
                open_ref_price=open_price,
            )
            # As the tick does (kernel/entries.py): books, and the evaluation, only for a slot
            # whose strategy's needs_quotes says yes.
            if s.needs is not None and not s.needs(inp):
                continue
            # The maker's view, a second late.
            lag_i = max(0, bisect.bisect_right(opens[s.asset], now - 1000 - LAG_MS) - 1)
            tau = max((we - now) / 1000.0, 0.001)
            p = _phi(math.log(cs[lag_i].close / open_price) / (VOL_PER_S * math.sqrt(tau)))
            inp = with_asks(inp, _side(p), _side(1.0 - p))
            try:
                answer: Any = s.strategy.evaluate(inp)
            except Exception as err:  # recorded as the tick records it
                answer = err
            e = evaluation(tick, s.id, ws // 1000, now, s.name, release, inp, answer)
            if e.kind == "buy":
                s.entered_window = ws
                e = evaluation(
                    tick,
                    s.id,
                    ws // 1000,
                    now,
                    s.name,
                    release,
                    inp,
                    answer,
                    "intent",
                    f"{s.id}:{ws // 1000}",
                )
            batch.append(e)
        yield tick, now, batch

"""The backtest: the kernel's own tick path on a virtual clock over candle history.

Each tick k*tick_ms builds what the live tick reads from Redis (kernel/snapshot.py Snapshot)
from the history and the backtest's account, and hands it to the live code: which slots are
awake and want quotes (kernel/entries.py Entries._select: windows, the strategy's
quotes_from_ms wake rule, needs_quotes, EXITS), their inputs (kernel/inputs.py TickInputs),
the answer and what the kernel makes of it (Entries._decide: kernel/decide.py answer_problem,
kernel/risk.py check_entry), the order's size (kernel/executor.py make_intent, kernel/exits.py
make_exit_intent), and its booking (kernel/outcomes.py, state/positions.py sale,
kernel/settlement.py settled: kernel/backtest/ledger.py). What the venue would have done is
the fill model's (kernel/backtest/fills.py). Ticks at which no slot is awake, holding a
position its strategy may exit, or resting an order are skipped: they would change nothing.

Same inputs, same report: nothing here reads a clock (but wall_s) or a random source.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

from baton.errors import BacktestError, LookAheadError
from kernel.backtest import guard as guard_mod
from kernel.backtest.fills import BookSource, FillParams
from kernel.backtest.history import AssetHistory, CandleView
from kernel.backtest.ledger import Ledger
from kernel.backtest.types import BacktestConfig, BacktestReport, SlotReport
from kernel.backtest.venue import Venue
from kernel.candle_cache import VOL_LOOKBACK_S, candle_span_s
from kernel.decide import exit_size
from kernel.entries import Entries, Wanted
from kernel.executor import make_intent
from kernel.exits import Holdings, exits_on, make_exit_intent
from kernel.inputs import account, with_asks
from kernel.risk import RiskLimits, daily_loss_breach
from kernel.slot_list import SlotRef, SlotRefs
from kernel.snapshot import Snapshot
from kernel.strategy_api import MAX_EXIT_LEGS, Buy, Exit
from kernel.wakes import WakeSchedule
from state.structs import MICROS, Candle, ControlFlags, Position, Slot

DAY_MS = 86_400_000
EPOCH = 1  # the backtest's one lease holder


def run(
    config: BacktestConfig,
    candles: Mapping[str, Sequence[Candle] | AssetHistory],
    strategy: Any,
    books: BookSource | None = None,
) -> BacktestReport:
    """Backtest `strategy` (a module, or anything with its attributes) over `candles` (asset ->
    1 s candles, any order, or an AssetHistory made of them) as `config` says; `books`:
    recorded books where there are some. Raises BacktestError for what cannot run
    (LookAheadError for a strategy that reads outside its input)."""
    t0 = time.perf_counter()
    report = _Run(config, candles, strategy, books).go()
    report.wall_s = round(time.perf_counter() - t0, 3)
    return report


class _Run:
    def __init__(
        self,
        config: BacktestConfig,
        candles: Mapping[str, Sequence[Candle] | AssetHistory],
        strategy: Any,
        books: BookSource | None,
    ) -> None:
        if not config.slots:
            raise BacktestError("no slots to backtest")
        if config.to_ms <= config.from_ms:
            raise BacktestError(
                f"the period is empty: to ({config.to_ms}) is not after from ({config.from_ms})"
            )
        if config.tick_ms <= 0:
            raise BacktestError(f"tick_ms {config.tick_ms} is not positive")
        if not 0 <= config.feed_delay_ms < config.tick_ms:
            raise BacktestError(f"feed_delay_ms {config.feed_delay_ms} is not in [0, tick_ms)")
        self.c = config
        self.fp: FillParams = config.fills
        self.name = config.strategy
        self.strat, self.guard = guard_mod.guarded(strategy, config.strategy)
        self.hist: dict[str, AssetHistory] = {}
        for s in config.slots:
            if s.asset in self.hist:
                continue
            got = candles.get(s.asset)
            if got is None or len(got) == 0:
                raise BacktestError(f"no candles of {s.asset} (slot {s.id}) to backtest on")
            self.hist[s.asset] = got if isinstance(got, AssetHistory) else AssetHistory(s.asset, got)
        self.slots = {
            s.id: Slot(
                id=s.id,
                asset=s.asset,
                timeframe=s.timeframe,
                enabled=True,
                stake_usd=s.stake_usd,
                strategy=config.strategy,
                params=dict(s.params),
            )
            for s in config.slots
        }
        if len(self.slots) != len(config.slots):
            raise BacktestError("two slots have the same id")
        self.refs = SlotRefs([(s.id, s.asset, s.timeframe) for s in config.slots])
        self.limits = RiskLimits(config.max_stake_usd, config.max_exposure_usd, config.daily_loss_limit_usd)
        self.wakes = WakeSchedule(self._resolve)
        self.wakes.slots = self.slots
        self.entries = Entries(
            None,  # type: ignore[arg-type]  # no store: nothing here reads or writes Redis
            None,
            self.limits,
            config.stale_after_ms,
            None,  # type: ignore[arg-type]  # markets are made here (market())
            self.wakes,
            self._resolve,
        )
        self.lookback_ms = max(VOL_LOOKBACK_S, candle_span_s(self.strat)) * 1000
        self.ledger = Ledger(cash_micros=round(config.cash_usd * MICROS), start_ms=config.from_ms)
        for sid in self.slots:
            self.ledger.slots[sid] = SlotReport()
        self.venue = Venue(config, self.hist, self.ledger, self.slots, books)
        self.exits = exits_on(self.strat)
        self.hint = getattr(self.strat, "quotes_from_ms", None)
        self.halted_until = 0
        self.slot_now = ""  # the slot being evaluated (a refusal names it)
        self.halts = 0
        self.ticks_run = 0
        self.evaluations = 0
        self.problems: dict[str, int] = {}

    def _resolve(self, name: str) -> Any:
        if name != self.name:
            raise BacktestError(f"strategy {name!r} is not the one backtested ({self.name!r})")
        return self.strat

    # --- the clock -------------------------------------------------------------------------------

    def go(self) -> BacktestReport:
        c = self.c
        t = c.tick_ms
        k = -(-c.from_ms // t)
        k_end = -(-c.to_ms // t)  # ticks k*t < to_ms
        while k < k_end:
            now = k * t
            self.slot_now = ""
            try:
                self._tick(now)
                k = self._next_k(k, now) if c.skip_idle else k + 1
            except LookAheadError as e:
                where = f"slot {self.slot_now}, " if self.slot_now else ""
                raise LookAheadError(f"{e} ({where}tick at {_iso(now)})") from None
        self.venue.finish(c.to_ms)
        return self._report(max(0, k_end - -(-c.from_ms // t)))

    def _next_k(self, k: int, now: int) -> int:
        """The next tick at which something can happen: every tick while an order rests or a
        position is held that the strategy may exit; else the first at which a slot wakes
        (its strategy's quotes_from_ms, or its next window's start once it entered this one)."""
        t = self.c.tick_ms
        if now < self.halted_until:
            return max(k + 1, -(-self.halted_until // t))
        if self.ledger.resting or (self.exits and self.ledger.positions):
            return k + 1
        nxt = math.inf
        entered = self.entries.entered
        for ref in self.refs.at(now):
            if entered.get(ref.id) == ref.window_start_s:
                at = self._wake(
                    ref.id, ref.window_end_s, ref.window_end_s + (ref.window_end_s - ref.window_start_s)
                )
            else:
                at = self._wake(ref.id, ref.window_start_s, ref.window_end_s)
                if at <= now:
                    return k + 1
            nxt = min(nxt, at)
        if nxt == math.inf:
            return k + 1
        return max(k + 1, -(-int(nxt) // t))

    def _wake(self, slot_id: str, start_s: int, end_s: int) -> int:
        if self.hint is None:
            return start_s * 1000
        slot = self.slots[slot_id]
        return int(self.hint(start_s * 1000, end_s * 1000, dict(slot.params)))

    # --- one tick ----------------------------------------------------------------------------------

    def _tick(self, now: int) -> None:
        self.venue.close_ended(now)
        if now < self.halted_until:
            return
        if daily_loss_breach(self.limits, self.ledger.day_pnl_micros(now)):
            # Live, the worker halts until a person resumes; here, until the next UTC day.
            self.halted_until = (now // DAY_MS + 1) * DAY_MS
            self.halts += 1
            return
        self.ticks_run += 1
        snap = self._snapshot(now)
        problems: list[str] = []
        wanted = self.entries._select(snap, now, problems, Holdings(snap), False, [])
        self._check_guard()
        if wanted:
            acct = account(snap, now)
            for w in wanted:
                self._evaluate(w, snap, acct, now, problems)
        for p in problems:
            self.problems[p] = self.problems.get(p, 0) + 1

    def _check_guard(self) -> None:
        if self.guard.refused:
            raise LookAheadError(self.guard.refused)

    def _snapshot(self, now: int) -> Snapshot:
        refs = self.refs.at(now)
        recent: dict[str, Any] = {}
        closes: dict[str, tuple[float, ...]] = {}
        feed: dict[str, Any] = {}
        his = self.hist
        # What the live feed has written by the tick's read (BacktestConfig.feed_delay_ms).
        seen = now - self.c.feed_delay_ms
        for a, h in his.items():
            hi = h.closed_by(seen)
            lo = h.since(now - self.lookback_ms)
            recent[a] = CandleView(h, lo, hi) if hi > lo else []
            closes[a] = tuple(h.closes[max(lo, h.since(now - VOL_LOOKBACK_S * 1000)) : hi])
            feed[a] = h.feed_status(hi)
        opens = {r.id: his[r.asset].window_open(r.window_start_s * 1000, seen) for r in refs}
        positions = list(self.ledger.positions.values())
        return Snapshot(
            lease_ok=True,
            control=ControlFlags(),
            refs=refs,
            slots=self.slots,
            opens=opens,
            recent=recent,
            feed=feed,
            open_positions=positions,
            open_intents=[r.intent for r in self.ledger.resting],
            totals={"cash_micros": self.ledger.cash_micros},
            day_pnl_micros=self.ledger.day_pnl_micros(now),
            _closes=closes,
            # One generation per asset for the whole run: closed candles never change, so the
            # bars built from them are kept from tick to tick (kernel/inputs.py BarMemo).
            candle_gens=dict.fromkeys(his, 1),
        )

    def _evaluate(self, w: Wanted, snap: Snapshot, acct: Any, now: int, problems: list[str]) -> None:
        ref = w.ref
        self.slot_now = ref.id
        up, down, recorded = self.venue.books(
            ref.asset, ref.timeframe, ref.window_start_s, ref.window_end_s, now
        )
        inp = with_asks(w.inp, up, down)
        view = snap.recent.get(ref.asset)
        first = snap.opens.get(ref.id)
        guard_mod.check_input(
            inp,
            view.newest_open_ms if isinstance(view, CandleView) else -1,
            first.open_ms if first is not None else now,
        )
        if recorded:
            self.venue.recorded += 1
        else:
            self.venue.modelled += 1
        self.evaluations += 1
        stats = self.ledger.slots[ref.id]
        stats.evaluations += 1
        answer, outcome = self.entries._decide(w, inp, acct, problems)
        self._check_guard()
        if outcome == "error":
            stats.errors += 1
            return
        if outcome.startswith("refused"):
            stats.refused += 1
            return
        if outcome != "intent":
            return
        if isinstance(answer, Buy):
            self._enter(ref, answer, up if answer.side == "up" else down, now, stats, problems)
        elif isinstance(answer, Exit) and w.held is not None:
            self._exit(ref, w.held, answer, up if w.held.side == "up" else down, now, stats)

    def _enter(
        self, ref: SlotRef, d: Buy, book: Any, now: int, stats: SlotReport, problems: list[str]
    ) -> None:
        m = self.venue.market(ref)
        intent = make_intent(ref, m, d, EPOCH, now)
        if intent.size <= 0:
            problems.append(f"{intent.id}: stake buys less than the minimum size")
            return
        self.entries.entered[ref.id] = ref.window_start_s
        stats.entries += 1
        if self.venue.post(intent, book, now, ref.timeframe, ref.window_end_s):
            stats.unfilled += 1

    def _exit(self, ref: SlotRef, held: Position, d: Exit, book: Any, now: int, stats: SlotReport) -> None:
        size = exit_size(d.shares, held.shares_micros)
        if size < self.fp.min_order_shares:
            stats.refused += 1
            return
        n = (self.entries.legs.count(ref) or held.exits) + 1
        if n > MAX_EXIT_LEGS:
            stats.refused += 1
            return
        intent = make_exit_intent(ref, held, d, n, EPOCH, now)
        self.entries.legs.committed(intent)
        stats.exits += 1
        if self.venue.post(intent, book, now, ref.timeframe, ref.window_end_s):
            stats.unfilled += 1

    # --- the report --------------------------------------------------------------------------------

    def _report(self, ticks: int) -> BacktestReport:
        led = self.ledger
        for s in led.slots.values():
            s.pnl_usd = round(s.pnl_usd, 6)
            s.fees_usd = round(s.fees_usd, 6)
            s.win_rate = round(s.wins / s.trades, 4) if s.trades else 0.0
        done = [t for t in led.trades if t.end != "unresolved"]
        wins = sum(1 for t in done if t.pnl_usd > 0)
        peak, dd = -math.inf, 0.0
        for _, eq in led.equity:
            peak = max(peak, eq)
            dd = max(dd, peak - eq)
        problems = [f"{p} (x{n})" if n > 1 else p for p, n in sorted(self.problems.items())][:50]
        return BacktestReport(
            strategy=self.name,
            from_ms=self.c.from_ms,
            to_ms=self.c.to_ms,
            tick_ms=self.c.tick_ms,
            trades=len(done),
            wins=wins,
            pnl_usd=round(sum(t.pnl_usd for t in done), 6),
            win_rate=round(wins / len(done), 4) if done else 0.0,
            max_drawdown_usd=round(dd, 6),
            fees_usd=round(sum(t.fees_usd for t in done), 6),
            start_cash_usd=self.c.cash_usd,
            end_cash_usd=round(led.cash_micros / MICROS, 6),
            slots=led.slots,
            equity=[(t, round(e, 6)) for t, e in led.equity],
            ticks=ticks,
            ticks_run=self.ticks_run,
            evaluations=self.evaluations,
            unresolved=led.unresolved,
            halts=self.halts,
            books_recorded=self.venue.recorded,
            books_modelled=self.venue.modelled,
            fill_model=self.fp,
            feed_delay_ms=self.c.feed_delay_ms,
            trade_list=sorted(led.trades, key=lambda t: (t.opened_ms, t.slot)),
            problems=problems + led.problems[:20],
        )


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))

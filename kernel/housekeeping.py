"""Work between ticks that is not trading: the settlements a tick found due enqueued, the
candle windows of slots about to wake brought up to date, the look-up of their entry
intents, a step of history pruning, and the prefetch of the windows' markets.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kernel import lanes
from kernel.candle_cache import VOL_LOOKBACK_S, CandleCache, Lookbacks
from kernel.candle_read import read_candles
from kernel.clock import Clock
from kernel.entries import Entries
from kernel.history import HistoryPruner
from kernel.markets import MarketCache
from kernel.snapshot import SlotRef, SlotRefs
from kernel.wakes import WakeSchedule
from state.store import Store
from state.structs import Market

log = logging.getLogger("baton.tick")

# Market prefetch between ticks: stop this long before the next boundary; skip when less
# than PREFETCH_MIN_MS is left; try a slug the venue did not list at most this often.
PREFETCH_MARGIN_MS = 100
PREFETCH_MIN_MS = 50
PREFETCH_RETRY_MS = 10_000
PREFETCH_LANES = 2
# A history-pruning step between ticks needs at least this much time left before the boundary.
HISTORY_MIN_MS = 100
_LATER = object()  # a prefetch that ran out of time before this slug


class Housekeeping:
    def __init__(
        self,
        store: Store,
        venue: Any,
        clock: Clock,
        refs: SlotRefs,
        settler: Any,
        history: HistoryPruner,
        candles: CandleCache,
        markets: MarketCache,
        wakes: WakeSchedule,
        entries: Entries,
        lookbacks: Lookbacks | None = None,
    ) -> None:
        self.store = store
        self.venue = venue
        self.clock = clock
        self.refs = refs
        # kernel.settlement.Enqueuer, or None (no settlement: tests of entries alone).
        self.settler = settler
        # Pruning of history past its retention (kernel/history.py).
        self.history = history
        self.candles = candles
        self.markets = markets
        self.wakes = wakes
        self.entries = entries
        # How far back each asset's candles are read (None: VOL_LOOKBACK_S for all).
        self.lookbacks = lookbacks
        # The assets whose candles the last snapshot read (and the warm-up since).
        self.read_assets: set[str] = set()
        # (open positions, tick start) of the last tick that found settlements due.
        self._settle_next: tuple[list[Any], int] | None = None
        # slug -> ms before which the prefetch does not try to discover it again.
        self.prefetch_tried: dict[str, int] = {}
        # The market prefetch under way, on threads of its own (never the default executor's,
        # which the tick's venue calls use).
        self._prefetch: asyncio.Future[None] | None = None
        self._prefetch_pool: ThreadPoolExecutor | None = None  # made on first use

    def settlements_due(self, positions: list[Any], at_ms: int) -> int:
        """How many of the open positions are due for settlement (no I/O); they are enqueued
        between ticks, so that a thousand windows ending together do not delay the tick."""
        if self.settler is None:
            return 0
        settled = len(self.settler.due(positions, at_ms))
        self._settle_next = (positions, at_ms) if settled else None
        return settled

    async def between_ticks(self, next_boundary_ms: int, epoch: int) -> list[str]:
        """Work that is not trading, done after a tick's journal entry and before the next
        boundary (kernel/tick.py TickRunner.between_ticks says what and why). Returns the
        problems of all but the prefetch (also written to the error journal; the prefetch,
        in the background, reports its own)."""
        problems: list[str] = []
        pending, self._settle_next = self._settle_next, None
        if pending is not None and self.settler is not None:
            try:
                positions, at_ms = pending
                _, errs = await asyncio.to_thread(self.settler.enqueue_due, positions, at_ms)
                problems += errs
            except Exception as e:
                problems.append(f"settlement enqueue: {type(e).__name__}: {e}")
        try:
            problems += await self._warm_candles(next_boundary_ms)
        except Exception as e:
            problems.append(f"candle warm-up: {type(e).__name__}: {e}")
        try:
            await self.entries.look_ahead(self.refs.at(next_boundary_ms), next_boundary_ms, epoch)
        except Exception as e:
            problems.append(f"entry look-up: {type(e).__name__}: {e}")
        now = self.clock.now_ms()
        if self.history.due(now) and next_boundary_ms - now >= HISTORY_MIN_MS:
            try:
                problems += (await self.history.step(epoch, now)).problems
            except Exception as e:
                problems.append(f"history prune: {type(e).__name__}: {e}")
        if problems:
            await self._report("between ticks", problems)
        if self._prefetch is None or self._prefetch.done():
            self._prefetch = asyncio.ensure_future(self._prefetch_in_background(next_boundary_ms))
        return problems

    async def _warm_candles(self, next_ms: int) -> list[str]:
        refs = self.refs.at(next_ms)
        self.wakes.learn(refs)
        awake = self.wakes.awake_assets(refs, next_ms, self.entries.entered)
        waking = awake - self.read_assets
        # The windows awake at the next tick whose periodic whole read falls due then are read
        # whole now instead (a few per tick at 256 assets: 60 candles each to send and decode;
        # at the tick that wakes them, a tenth of the waking ones).
        due = self.candles.due_whole(awake, next_ms)
        if not waking and not due:
            return []
        self.read_assets |= waking
        assets = sorted(waking | set(due))
        # As far back as the tick that wakes them will read (else that read is a whole one).
        lookback: int | dict[str, int] = VOL_LOOKBACK_S
        if self.lookbacks is not None:
            lookback = self.lookbacks.of(refs, self.wakes.slots, assets)
        return await read_candles(self.store, assets, self.clock.now_ms(), lookback, self.candles)

    async def wait_prefetch(self) -> None:
        """Until the market prefetch under way (if any) is done."""
        if self._prefetch is not None:
            await asyncio.shield(self._prefetch)

    def close(self) -> None:
        """Forget the settlements due (a successor's ticks find them due themselves) and stop
        the background prefetch (its threads finish the call they are in)."""
        self._settle_next = None
        if self._prefetch is not None:
            self._prefetch.cancel()
            self._prefetch = None
        if self._prefetch_pool is not None:
            self._prefetch_pool.shutdown(wait=False, cancel_futures=True)
            self._prefetch_pool = None

    async def _report(self, what: str, problems: list[str]) -> None:
        for p in problems:
            log.warning("%s: %s", what, p)
        try:
            await self.store.record_errors("tick", problems, now_ms=self.clock.now_ms())
        except Exception as e:
            log.warning("%s: could not journal %d problem(s): %s", what, len(problems), e)

    async def _prefetch_in_background(self, next_boundary_ms: int) -> None:
        problems: list[str] = []
        try:
            await self._prefetch_markets(next_boundary_ms, problems)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            problems.append(f"market prefetch: {type(e).__name__}: {e}")
        if problems:
            await self._report("market prefetch", problems)

    async def _prefetch_markets(self, next_boundary_ms: int, problems: list[str]) -> None:
        """Discover the current windows' markets not known yet, within the time left before
        the next boundary (less a margin); each slug is tried at most every PREFETCH_RETRY_MS.
        A market the venue does not list yet is not a problem here: the entry path reports
        it if it is still missing when a strategy wants it."""
        now = self.clock.now_ms()
        deadline = next_boundary_ms - PREFETCH_MARGIN_MS
        if deadline - now < PREFETCH_MIN_MS:
            return
        self.prefetch_tried = {s: t for s, t in self.prefetch_tried.items() if t > now}
        todo: dict[str, SlotRef] = {}
        for r in self.refs.at(now):
            if r.slug not in self.markets.known and r.slug not in self.prefetch_tried:
                todo.setdefault(r.slug, r)
        if not todo:
            return
        refs = list(todo.values())
        for r in refs:
            self.prefetch_tried[r.slug] = now + PREFETCH_RETRY_MS
        cached, _ = await self.markets.cached(refs, problems)
        # A garbage cached market is not discovered past: its slot waits for the repair.
        refs = [r for r in refs if r.slug not in cached and r.slug not in self.markets.bad]
        clock = self.clock

        def discover(r: SlotRef) -> Any:
            if clock.now_ms() >= deadline:
                return _LATER  # out of time: the next gap between ticks goes on
            return self.venue.discover(r.slug)

        found: list[tuple[SlotRef, Market]] = []
        if self._prefetch_pool is None:
            self._prefetch_pool = ThreadPoolExecutor(PREFETCH_LANES, thread_name_prefix="prefetch")
        answers = await lanes.in_lanes(discover, refs, PREFETCH_LANES, self._prefetch_pool)
        for r, m in zip(refs, answers, strict=True):
            if m is _LATER:
                self.prefetch_tried.pop(r.slug, None)
            elif isinstance(m, BaseException):
                problems.append(f"market prefetch {r.slug}: {m}")
            elif m is not None:
                self.markets.remember(r, m)
                found.append((r, m))
        await self.markets.save(found)

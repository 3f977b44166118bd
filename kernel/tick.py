"""One tick of DESIGN.md: flags, one snapshot read, settlement, strategy, risk, fenced
commits, venue submission, journal.

The runner holds no state that matters between ticks: everything it decides from is in the
snapshot, so a replacement worker of another version continues exactly where it stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import msgspec

from baton.errors import LeaseLost, NotReady, SnapshotError
from baton.settings import Settings
from kernel import executor, lanes, reconcile, reload
from kernel.candle_cache import CandleCache
from kernel.clock import Clock
from kernel.halt import HaltResponder
from kernel.history import HistoryPruner
from kernel.risk import Account, RiskLimits, check_entry, daily_loss_breach
from kernel.snapshot import (
    DecodeMemo,
    SlotRef,
    SlotRefs,
    Snapshot,
    decode_reported,
    read_candles,
    read_snapshot,
    slot_refs,
)
from kernel.strategy_api import Decision, SlotInput
from state.store import Store
from state.structs import MARKET, MICROS, ControlFlags, Intent, Market, TickRecord, feed_stale

log = logging.getLogger("baton.tick")

# Market prefetch between ticks: stop this long before the next boundary; skip when less
# than PREFETCH_MIN_MS is left; try a slug the venue did not list at most this often.
PREFETCH_MARGIN_MS = 100
PREFETCH_MIN_MS = 50
PREFETCH_RETRY_MS = 10_000
PREFETCH_LANES = 2
# A history-pruning step between ticks needs at least this much time left before the boundary.
HISTORY_MIN_MS = 100
# An entry tick's orders go out in at most ENTRY_CHUNKS chunks (each two Redis round trips):
# every 1/ENTRY_CHUNKS of the slots to evaluate, the intents made so far are sent if there are
# at least ENTRY_CHUNK_MIN of them (fewer wait for the next chunk: a chunk costs thread hops
# and round trips, and below that there is too little to overlap). The evaluation yields every
# ENTRY_YIELD_EVERY slots to let the chunks under way move on (_entries).
ENTRY_CHUNKS = 4
ENTRY_CHUNK_MIN = 32
ENTRY_YIELD_EVERY = 32
# Seconds of 1s candles read per asset for the volatility estimate.
VOL_LOOKBACK_S = 60
STRATEGY_PACKAGE = "worker.strategies"
_LATER = object()  # a prefetch that ran out of time before this slug


class Venue(Protocol):
    """What the kernel needs of a venue (kernel/venue.py's ClobVenue); all calls block."""

    def discover(self, slug: str) -> Market | None: ...

    def books(self, token_ids: list[str]) -> dict[str, Any]: ...

    def sign_buy(self, token_id: str, price: float, size: float) -> Any: ...

    def post(self, signed: Any, order_type: str = "FOK") -> Any: ...

    def order(self, order_id: str) -> Any: ...

    def resolution(self, condition_id: str) -> bool | None: ...


@dataclass
class Identity:
    holder: str
    color: str
    release: str
    epoch: int


@dataclass
class TickOutcome:
    record: TickRecord
    problems: list[str] = field(default_factory=list)
    # The handover request read with this tick's snapshot (empty when none).
    handover: dict[str, str] = field(default_factory=dict)
    control: ControlFlags = field(default_factory=ControlFlags)


def resolve_strategy(name: str) -> ModuleType:
    """The strategy module, looked up on every call so that a reload is seen at once."""
    return importlib.import_module(f"{STRATEGY_PACKAGE}.{name}")


class TickRunner:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        venue: Venue,
        clock: Clock,
        ident: Identity,
        settler: Any = None,
        halt: HaltResponder | None = None,
    ) -> None:
        self.s = settings
        # kernel.halt.HaltResponder: hears a halt between two ticks' reads of the flags and
        # closes the gate that every strategy call and every post checks (None: flags only).
        self.halt = halt
        # kernel.settlement.Enqueuer, or None (no settlement: tests of entries alone).
        self.settler = settler
        self.store = store
        self.venue = venue
        self.clock = clock
        self.ident = ident
        self.limits = RiskLimits(
            settings.max_stake_usd, settings.max_exposure_usd, settings.daily_loss_limit_usd
        )
        # How long an order unknown to the venue may still arrive: a post in flight from a
        # holder that lost its lease meanwhile, or a slow request (the venue client's timeout).
        self.unknown_grace_ms = settings.lease_ms + 10_000
        self.configured = [(f"{a}-{tf}", a, tf) for a in settings.assets for tf in settings.timeframes]
        self.refs = SlotRefs(self.configured)
        # The last snapshot's slots, and the assets whose candles it read (_warm_candles).
        self._last_slots: dict[str, Any] = {}
        self._read_assets: set[str] = set()
        # slot id -> (slot record, quotes_from_ms, window start s, its answer, strategy name):
        # see _wake_ms and _awake_assets.
        self._wakes: dict[str, tuple[Any, Any, int, int, str]] = {}
        # slot id -> start of the window whose entry intent is known to be in Redis (committed
        # by this worker, or found there): at most one entry per slot-window, so the slot has
        # nothing left to do until its next window and is passed by like a sleeping one. An
        # intent, once committed, is never removed within its window: this only saves work
        # (intent_commit.lua is what refuses a second entry).
        self._entered: dict[str, int] = {}
        # slot id -> (window start, epoch): no entry intent of that window was in Redis when
        # this worker looked, between ticks, holding the lease of that epoch. While it holds
        # it, only its own commits can add one (they are fenced), and those land in _entered;
        # so the tick that wakes the slot need not ask again. A commit whose answer is lost
        # forgets them all. Again only work saved: intent_commit.lua refuses a second entry.
        self._absent: dict[str, tuple[int, int]] = {}
        # Pruning of history past its retention, a step between ticks (kernel/history.py).
        self.history = HistoryPruner(store, settings.history_days)
        # The candles read so far (only new ones are read each tick); warmed by dry_run.
        self.candles = CandleCache()
        # Slots, positions and intents decoded last tick, by their text (kernel/snapshot.py).
        self.memo = DecodeMemo()
        # slug -> (market, window end s): markets seen, kept in memory (they never change).
        self._known_markets: dict[str, tuple[Market, int]] = {}
        # Its size at which the next look for markets an hour gone is made (_remember_market).
        self._markets_cap = 0
        # slug -> ms before which between_ticks does not try to discover it again.
        self._prefetch_tried: dict[str, int] = {}
        # (open positions, tick start) of the last tick that found settlements due.
        self._settle_next: tuple[list[Any], int] | None = None
        # The market prefetch under way, on threads of its own (never the default executor's,
        # which the tick's venue calls use).
        self._prefetch: asyncio.Future[None] | None = None
        self._prefetch_pool: ThreadPoolExecutor | None = None  # made on first use

    async def run(self, tick: int, missed_before: int = 0) -> TickOutcome:
        started = self.clock.now_ms()
        jitter = started - tick * self.s.tick_ms
        refs = self.refs.at(started)
        snap = await read_snapshot(
            self.store,
            refs,
            started,
            (self.ident.holder, self.ident.epoch, self.s.lease_ms),
            VOL_LOOKBACK_S,
            self.candles,
            self.memo,
            candle_assets=self._awake_assets(refs, started),
        )
        if not snap.lease_ok:
            raise LeaseLost(f"lease of epoch {self.ident.epoch} is no longer ours")
        self._last_slots = snap.slots
        self._read_assets = set(snap.recent)
        problems = list(snap.problems)
        if self.halt is not None:
            # A halt whose message this worker missed (or made before it took the lease) is
            # acknowledged and swept here; a resume reopens the gate.
            await self.halt.sync(snap.control)
        halted = snap.control.halted or self._halted()
        paused = snap.control.paused or (self.halt is not None and self.halt.gate.paused)
        orders = settled = evaluated = 0
        # An intent whose post raised (timeout, 5xx) may or may not be at the venue: ask by its
        # order id before anything else, so its slot-window's fate is known (never re-sent).
        # Also intents the venue still works on, and any older than a tick whose answer was
        # never recorded (a Redis blip after the post).
        stuck = [
            i
            for i in snap.open_intents
            if i.error or i.status == "posted" or i.created_ms < started - self.s.tick_ms
        ]
        if stuck:
            _, errs = await reconcile.reconcile_open(
                self.store, self.venue, self.ident.epoch, started, stuck, self.unknown_grace_ms
            )
            problems += errs
        # Closed windows are settled by the settle program even under a halt: booking an
        # outcome is not trading. The tick only notes which are due (no I/O); they are
        # enqueued right after it, in between_ticks, so that a thousand windows ending
        # together do not delay the tick's orders.
        if self.settler is not None:
            settled = len(self.settler.due(snap.open_positions, started))
            self._settle_next = (snap.open_positions, started) if settled else None
        if not halted:
            breach = daily_loss_breach(self.limits, snap.day_pnl_micros)
            if breach:
                await self.store.set_halt(breach, started, who="worker:risk")
                log.error("halting: %s", breach)
                problems.append(breach)
                halted = True
            elif not paused:
                evaluated, orders, errs = await self._entries(snap, started, tick)
                problems += errs
        for p in problems:
            log.warning("tick %d: %s", tick, p)
        await self.store.record_errors("tick", problems, now_ms=started)
        rec = TickRecord(
            tick=tick,
            color=self.ident.color,
            release=self.ident.release,
            epoch=self.ident.epoch,
            started_ms=started,
            duration_ms=self.clock.now_ms() - started,
            jitter_ms=jitter,
            orders=orders,
            missed_before=missed_before,
            halted=halted or self._halted(),
            paused=paused,
            evaluated=evaluated,
            settled=settled,
            errors=len(problems),
        )
        verdict = await self.store.append_tick(rec)
        if verdict == "STALE_EPOCH":
            raise LeaseLost(f"journal of tick {tick} refused: epoch {self.ident.epoch} is stale")
        return TickOutcome(rec, problems, snap.handover, snap.control)

    async def between_ticks(self, next_boundary_ms: int) -> list[str]:
        """Work that is not trading, done after a tick's journal entry and before the next
        boundary (the worker's loop calls it; a worker that hands over skips it and its
        successor's first tick finds the same work):

        - the settlements the tick found due are enqueued (kernel/settlement.py): Redis only,
          two round trips whatever the count;
        - the candle windows of the assets whose slots wake at the next tick (and were asleep
          at this one) are brought up to date (one round trip): the tick that wakes them
          reads only the candles written since, not every candle of the minutes they slept
          (or a whole window, when the periodic refresh fell due meanwhile); in the same
          read, the windows of every asset awake at the next tick whose periodic whole read
          falls due at it are read whole;
        - whether the slots awake at the next tick have entered their window already is
          looked up (one round trip), so that the tick does not;
        - a step of history pruning, while a pass is due and there is time (kernel/history.py:
          two round trips);
        - the markets of the slots' current windows are discovered ahead of their entry zone
          and cached, so that the tick that enters does not wait for discovery (a thousand
          slots entering together would otherwise discover a thousand markets inside it).
          This one runs in the background, on threads of its own, and is never waited for:
          a venue call may block on its rate budget or on the network, and the next tick
          must not wait for it.

        Returns the problems of the settlement enqueue (also written to the error journal;
        the prefetch reports its own)."""
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
            await self._look_for_entries(self.refs.at(next_boundary_ms), next_boundary_ms)
        except Exception as e:
            problems.append(f"entry look-up: {type(e).__name__}: {e}")
        now = self.clock.now_ms()
        if self.history.due(now) and next_boundary_ms - now >= HISTORY_MIN_MS:
            try:
                problems += (await self.history.step(self.ident.epoch, now)).problems
            except Exception as e:
                problems.append(f"history prune: {type(e).__name__}: {e}")
        if problems:
            await self._report("between ticks", problems)
        if self._prefetch is None or self._prefetch.done():
            self._prefetch = asyncio.ensure_future(self._prefetch_in_background(next_boundary_ms))
        return problems

    async def _warm_candles(self, next_ms: int) -> list[str]:
        refs = self.refs.at(next_ms)
        hints: dict[str, Any] = {}
        for r in refs:
            slot = self._last_slots.get(r.id)
            if slot is None or not slot.enabled:
                continue
            wake = _hint(slot.strategy, hints)
            if wake is not None:
                with contextlib.suppress(Exception):  # the tick asks again and reports it
                    self._wake_ms(wake, r, slot)
        awake = self._awake_assets(refs, next_ms)
        waking = awake - self._read_assets
        # The windows awake at the next tick whose periodic whole read falls due then are read
        # whole now instead (a few per tick at 256 assets: 60 candles each to send and decode;
        # at the tick that wakes them, a tenth of the waking ones).
        due = self.candles.due_whole(awake, next_ms)
        if not waking and not due:
            return []
        self._read_assets |= waking
        return await read_candles(
            self.store, sorted(waking | set(due)), self.clock.now_ms(), VOL_LOOKBACK_S, self.candles
        )

    async def _look_for_entries(self, refs: list[SlotRef], next_ms: int) -> None:
        """Whether the slots awake at the next tick, and not known to have entered their window,
        have an entry intent in Redis (one HMGET): the tick that wakes them then reads only
        what it must (_absent, _entry_state)."""
        epoch = self.ident.epoch
        ask: list[SlotRef] = []
        for r in refs:
            got = self._wakes.get(r.id)
            if (
                got is not None
                and got[2] == r.window_start_s
                and got[3] <= next_ms
                and self._entered.get(r.id) != r.window_start_s
                and self._absent.get(r.id) != (r.window_start_s, epoch)
            ):
                ask.append(r)
        if not ask:
            return
        raw = await self.store.r.hmget(self.store.k.intents(), [r.entry_intent_id for r in ask])
        for r, v in zip(ask, raw, strict=True):
            if v is None:
                self._absent[r.id] = (r.window_start_s, epoch)
            else:
                self._entered[r.id] = r.window_start_s

    async def wait_prefetch(self) -> None:
        """Until the market prefetch under way (if any) is done: tests and benchmarks that
        want each step's venue calls in a known order."""
        if self._prefetch is not None:
            await asyncio.shield(self._prefetch)

    def close(self) -> None:
        """Stop the background prefetch (its threads finish the call they are in). The runner
        stays usable: a worker that handed over and takes the lease back ticks with it again."""
        self._settle_next = None  # a successor's ticks find these due themselves
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
        self._prefetch_tried = {s: t for s, t in self._prefetch_tried.items() if t > now}
        todo: dict[str, SlotRef] = {}
        for r in self.refs.at(now):
            if r.slug not in self._known_markets and r.slug not in self._prefetch_tried:
                todo.setdefault(r.slug, r)
        if not todo:
            return
        refs = list(todo.values())
        for r in refs:
            self._prefetch_tried[r.slug] = now + PREFETCH_RETRY_MS
        cached, _ = await self._cached_markets(refs, problems)
        refs = [r for r in refs if r.slug not in cached]
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
                self._prefetch_tried.pop(r.slug, None)
            elif isinstance(m, BaseException):
                problems.append(f"market prefetch {r.slug}: {m}")
            elif m is not None:
                self._remember_market(r, m)
                found.append((r, m))
        await self._cache(found)

    def _halted(self) -> bool:
        return self.halt is not None and self.halt.gate.halted

    async def dry_run(self) -> int:
        """The readiness check's dry evaluation: read what a tick reads (candle windows,
        positions, intents; no lease), then run every configured slot's strategy on its real
        input where there is one and on synthetic ones besides. Nothing is committed.
        Returns the number of slots checked; raises NotReady naming the slot and the error."""
        now = self.clock.now_ms()
        refs = slot_refs(self.configured, now)
        snap = await read_snapshot(self.store, refs, now, None, VOL_LOOKBACK_S, self.candles)
        if snap.problems:
            log.warning("readiness: %d unreadable value(s): %s", len(snap.problems), snap.problems[:3])
        for ref in refs:
            slot = snap.slots.get(ref.id)
            if slot is None:
                raise NotReady(f"slot {ref.id} is not in Redis (or unreadable)")
            inputs = reload.sample_inputs(now)
            real = self._inputs(snap, ref, now)
            if real is not None:
                inputs.insert(0, _with_asks(real, None, None))
                inputs.insert(0, msgspec.structs.replace(real, up_ask=0.5, down_ask=0.5))
            try:
                reload.dry_evaluate(resolve_strategy(slot.strategy), inputs)
            except Exception as e:
                raise NotReady(
                    f"slot {ref.id}: strategy {slot.strategy!r} failed its dry evaluation: {e!r}"
                ) from e
        # The Redis connections an entry tick uses at once (its chunks', the decisions') are
        # opened now, not by the first entry burst (a handshake each, inside the tick).
        await asyncio.gather(*(self.store.r.ping() for _ in range(ENTRY_CHUNKS + 2)))
        return len(refs)

    # --- entries ----------------------------------------------------------------------
    def _awake_assets(self, refs: list[SlotRef], now_ms: int) -> set[str]:
        """Assets whose candles this tick may need: those with a slot whose strategy's
        quotes_from_ms (as the last tick found it for this window) has come, or that nothing
        is known of (a new window, a strategy without the hint). The others' windows are not
        read: at a thousand slots that is most of an idle tick. A slot the last tick found
        disabled sleeps too (no strategy runs for it). A slot whose record changed since (its
        entry_s, enabled again) is known again one tick later."""
        awake: set[str] = set()
        wakes, entered, slots = self._wakes, self._entered, self._last_slots
        hints: dict[str, Any] = {}  # strategy name -> its quotes_from_ms now (a reload changes it)
        for r in refs:
            if r.asset in awake or entered.get(r.id) == r.window_start_s:
                continue
            slot = slots.get(r.id)
            if slot is not None and not slot.enabled:
                continue
            got = wakes.get(r.id)
            if got is None or got[2] != r.window_start_s or now_ms >= got[3]:
                awake.add(r.asset)
                continue
            if _hint(got[4], hints) is not got[1]:
                awake.add(r.asset)
        return awake

    def _wake_ms(self, wake: Any, ref: SlotRef, slot: Any) -> int:
        """The strategy's quotes_from_ms for this slot's window, asked once per window (and
        again when the slot's record or the function changes: a reload)."""
        got = self._wakes.get(ref.id)
        if got is not None and got[0] is slot and got[1] is wake and got[2] == ref.window_start_s:
            return got[3]
        at = int(wake(ref.window_start_s * 1000, ref.window_end_s * 1000, dict(slot.params)))
        self._wakes[ref.id] = (slot, wake, ref.window_start_s, at, slot.strategy)
        return at

    def _inputs(self, snap: Snapshot, ref: SlotRef, now_ms: int) -> SlotInput | None:
        slot = snap.slots.get(ref.id)
        if slot is None or not slot.enabled:
            return None
        if feed_stale(snap.feed.get(ref.asset), now_ms, self.s.stale_after_ms):
            return None  # stale data never opens a position
        open_c = snap.opens.get(ref.id)
        recent = snap.recent.get(ref.asset) or []
        if open_c is None or not recent:
            return None
        return SlotInput(
            slot_id=ref.id,
            asset=ref.asset,
            timeframe=ref.timeframe,
            now_ms=now_ms,
            window_start_ms=ref.window_start_s * 1000,
            window_end_ms=ref.window_end_s * 1000,
            open_price=open_c.open,
            last_price=recent[-1].close,
            closes=snap.closes(ref.asset),
            stake_usd=slot.stake_usd,
            params=dict(slot.params),
        )

    async def _entries(self, snap: Snapshot, now_ms: int, tick: int = -1) -> tuple[int, int, list[str]]:
        problems: list[str] = []
        wanted: list[tuple[SlotRef, SlotInput, ModuleType]] = []
        # Each strategy module is looked up once per tick (a reload happens between ticks).
        modules: dict[str, ModuleType | Exception] = {}
        done = self._entered  # slots with nothing left to do in their window
        for ref in snap.refs:
            if self._halted():
                problems.append("halted during the tick: no strategy code runs after the halt")
                return 0, 0, problems
            if done.get(ref.id) == ref.window_start_s:
                continue
            slot = snap.slots.get(ref.id)
            if slot is None or not slot.enabled:
                continue
            name = slot.strategy
            try:
                strat = modules.get(name)
                if strat is None:
                    try:
                        strat = modules[name] = resolve_strategy(name)
                    except Exception as e:
                        strat = modules[name] = e
                if isinstance(strat, Exception):
                    raise strat
                # A slot before the part of its window where its strategy may trade is passed
                # by without building its input (strategy_api.py: quotes_from_ms).
                wake = getattr(strat, "quotes_from_ms", None)
                if wake is None:
                    self._wakes.pop(ref.id, None)
                elif now_ms < self._wake_ms(wake, ref, slot):
                    continue
                inp = self._inputs(snap, ref, now_ms)
                if inp is None:
                    continue
                needs = getattr(strat, "needs_quotes", None)
                if needs is None or needs(inp):
                    wanted.append((ref, inp, strat))
            except Exception as e:
                problems.append(f"slot {ref.id}: strategy {name!r}: {e!r}")
        if not wanted:
            return 0, 0, problems
        entered, cached = await self._entry_state([r for r, _, _ in wanted], problems)
        # At most one entry per slot-window (intent_commit.lua enforces it; this saves the
        # strategy call and the books of slots that entered already).
        wanted = [w for w in wanted if w[0].id not in entered]
        if not wanted:
            return 0, 0, problems
        markets = await self._markets(cached, [r for r, _, _ in wanted], problems)
        tokens = [t for r, _, _ in wanted if (m := markets.get(r.slug)) for t in (m.up_token, m.down_token)]
        try:
            books = await asyncio.to_thread(self.venue.books, tokens) if tokens else {}
        except Exception as e:
            problems.append(f"books: {e}")
            return 0, 0, problems
        # Intents of past windows whose outcome is unknown wait for reconciliation; only
        # those of live windows still hold cash back.
        pending = sum(
            round(i.stake_usd * MICROS) for i in snap.open_intents if i.window_end_s * 1000 > now_ms
        )
        acct = Account(
            cash_micros=snap.totals.get("cash_micros", 0),
            open_exposure_micros=sum(p.cost_micros for p in snap.open_positions) + pending,
            day_pnl_micros=snap.day_pnl_micros,
            pending_micros=pending,
        )
        intents: list[Intent] = []
        # Each slot's decision record, as the dashboard and `baton slots` show it (one dict
        # literal per slot: a thousand of them at the end of a window).
        decisions: dict[str, dict[str, Any]] = {}
        evaluated = 0
        gate = self.halt.gate if self.halt is not None else None
        epoch = self.ident.epoch
        # The entries go out in at most ENTRY_CHUNKS chunks, each as soon as its slots are
        # evaluated (executor.EntryStream); the loop yields now and then so that the chunks
        # under way move on (their Redis answers read, their posts started) while it goes on.
        chunk = -(-len(wanted) // ENTRY_CHUNKS)
        now_in_redis: set[str] = set()
        stream = executor.EntryStream(self.store, self.venue, epoch, gate, now_in_redis, ENTRY_CHUNKS)
        sent: list[Intent] = []
        try:
            for n, (ref, inp, strat) in enumerate(wanted, 1):
                if n > 1 and (n - 1) % chunk == 0 and len(intents) >= ENTRY_CHUNK_MIN:
                    await stream.send(intents)
                    sent += intents
                    intents = []
                elif n % ENTRY_YIELD_EVERY == 0 and stream.tasks:
                    await asyncio.sleep(0)
                if gate is not None and gate.halted:
                    # The halt arrived while this tick ran: not one more strategy call.
                    problems.append("halted during the tick: no strategy code runs after the halt")
                    intents = []
                    break
                m = markets.get(ref.slug)
                if m is None:
                    continue
                inp = _with_asks(inp, books.get(m.up_token), books.get(m.down_token))
                evaluated += 1
                try:
                    decision: Decision | None = strat.evaluate(inp)
                except Exception as e:
                    problems.append(f"slot {ref.id}: strategy raised {e!r}")
                    decisions[ref.id] = {
                        "tick": tick,
                        "at_ms": now_ms,
                        "window_start_s": ref.window_start_s,
                        "outcome": "error",
                        "reason": repr(e)[:200],
                    }
                    continue
                if decision is None:
                    decisions[ref.id] = {
                        "tick": tick,
                        "at_ms": now_ms,
                        "window_start_s": ref.window_start_s,
                        "outcome": "pass",
                        "up_ask": inp.up_ask,
                        "down_ask": inp.down_ask,
                    }
                    continue
                refused = check_entry(decision.stake_usd, self.limits, acct)
                decisions[ref.id] = {
                    "tick": tick,
                    "at_ms": now_ms,
                    "window_start_s": ref.window_start_s,
                    "side": decision.side,
                    "price": decision.limit_price,
                    "stake_usd": decision.stake_usd,
                    "p_up": round(decision.p_up, 4),
                    "reason": decision.reason[:200],
                    "outcome": f"risk refused: {refused}" if refused else "entry",
                }
                if refused:
                    problems.append(f"slot {ref.id}: risk refused entry: {refused}")
                    continue
                intents.append(executor.make_intent(ref, m, decision, epoch, now_ms))
            await stream.send(intents, last=True)
            sent += intents
        finally:
            # The decisions are written while the last chunk is under way: one round trip
            # less on the tick's path.
            noted = asyncio.ensure_future(self.store.record_decisions(decisions)) if decisions else None
            try:
                orders, errs = await stream.finish()
            except BaseException:
                self._absent.clear()  # a commit may have landed without its answer
                raise
            finally:
                for i in sent:
                    if i.id in now_in_redis:
                        self._entered[i.slot] = i.window_start_s
                if noted is not None:
                    await noted
        return evaluated, orders, problems + errs

    async def _entry_state(
        self, refs: list[SlotRef], problems: list[str]
    ) -> tuple[set[str], dict[str, Market]]:
        """For slots that want quotes this tick, in one round trip (none when everything is known
        already): which have an entry intent in their window already (their slot ids), and the
        markets the cache knows. Only entry ticks pay it; the snapshot does not read a thousand
        slots' keys every tick. Slots found without one between ticks (_absent) are not asked
        again. A market once read is kept in process memory until its window is an hour gone
        (a market's tokens never change)."""
        epoch = self.ident.epoch
        ask = [r for r in refs if self._absent.get(r.id) != (r.window_start_s, epoch)]
        found, raw_intents = await self._cached_markets(refs, problems, intents_of=ask)
        # Any value counts as entered, even one that cannot be decoded: never a second entry.
        entered = {r.id for r, raw in zip(ask, raw_intents, strict=True) if raw is not None}
        for r in ask:
            if r.id in entered:
                self._entered[r.id] = r.window_start_s
        return entered, found

    async def _cached_markets(
        self, refs: list[SlotRef], problems: list[str], intents_of: list[SlotRef] | None = None
    ) -> tuple[dict[str, Market], list[Any]]:
        """The markets of `refs` known in memory or in Redis's market cache, and the raw entry
        intents of `intents_of`: one round trip, none when there is nothing to read."""
        k = self.store.k
        unknown = [r for r in refs if r.slug not in self._known_markets]
        raw_intents: list[Any] = []
        if unknown or intents_of:

            def build(pipe: Any) -> None:
                if intents_of:
                    pipe.hmget(k.intents(), [r.entry_intent_id for r in intents_of])
                if unknown:
                    pipe.mget([k.market(r.slug) for r in unknown])

            res = await self.store.run_pipeline(build)
            for x in res:
                if isinstance(x, Exception):
                    raise SnapshotError(f"reading entry intents and markets: {x}") from x
            if intents_of:
                raw_intents = res.pop(0)
            for r, raw in zip(unknown, res[0] if unknown else [], strict=True):
                m = decode_reported(MARKET, raw, f"market {r.slug}", problems)
                if m is not None:
                    self._remember_market(r, m)
        found = {r.slug: self._known_markets[r.slug][0] for r in refs if r.slug in self._known_markets}
        return found, raw_intents

    async def _cache(self, fresh: list[tuple[SlotRef, Market]]) -> None:
        """Markets found at the venue, into Redis's cache (one command), for whoever reads
        them next (this worker's successor, the other colour's readiness check)."""
        if fresh:
            now_s = self.clock.now_ms() // 1000
            await self.store.cache_markets([(m, max(60, r.window_end_s - now_s + 3600)) for r, m in fresh])

    def _remember_market(self, ref: SlotRef, m: Market) -> None:
        known = self._known_markets
        if len(known) > max(self._markets_cap, 4 * len(self.configured) + 64):
            cutoff_s = self.clock.now_ms() // 1000 - 3600
            known = self._known_markets = {s: v for s, v in known.items() if v[1] > cutoff_s}
            # Short windows put more than the floor's worth of markets in an hour: the next
            # look waits until the map has doubled, or every new market would copy the map
            # (at 1,024 slots on 15 s windows that was most of the worker's CPU).
            self._markets_cap = 2 * len(known)
        known[ref.slug] = (m, ref.window_end_s)

    async def _markets(
        self, cached: dict[str, Market], refs: list[SlotRef], problems: list[str]
    ) -> dict[str, Market]:
        found = {r.slug: m for r in refs if (m := cached.get(r.slug)) is not None}
        missing = [r for r in refs if r.slug not in found]

        fresh: list[tuple[SlotRef, Market]] = []
        answers = await lanes.in_lanes(lambda r: self.venue.discover(r.slug), missing)
        for r, answer in zip(missing, answers, strict=True):
            if isinstance(answer, BaseException):
                problems.append(f"discover {r.slug}: {answer}")
            elif answer is None:
                problems.append(f"discover {r.slug}: no such market at the venue")
            else:
                found[r.slug] = answer
                self._remember_market(r, answer)
                fresh.append((r, answer))
        await self._cache(fresh)
        return found


def _hint(name: str, hints: dict[str, Any]) -> Any:
    """Strategy `name`'s quotes_from_ms as it is now (a reload replaces it in place), or None
    (no hint, or a module that cannot be loaded: the tick reports that); memoised in `hints`
    for one pass over the slots."""
    if name not in hints:
        try:
            hints[name] = getattr(resolve_strategy(name), "quotes_from_ms", None)
        except Exception:
            hints[name] = None
    return hints[name]


def _with_asks(inp: SlotInput, up: Any, down: Any) -> SlotInput:
    return msgspec.structs.replace(
        inp,
        up_ask=getattr(up, "best_ask", None) if up is not None else None,
        down_ask=getattr(down, "best_ask", None) if down is not None else None,
    )

"""One tick of DESIGN.md: flags, one snapshot read, settlement, strategy, risk, fenced
commits, venue submission, journal. The runner orchestrates; the steps live beside it:
kernel/entries.py (evaluate, risk check, commit, post), kernel/markets.py (the market cache),
kernel/wakes.py (the wake schedule), kernel/housekeeping.py (the work between ticks),
kernel/readiness.py (the dry evaluation before the first tick).

The runner holds no state that matters between ticks: everything it decides from is in the
snapshot, so a replacement worker of another version continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from baton.errors import LeaseLost, UnreadableValue
from baton.settings import Settings
from kernel import journal_guard, outcomes, readiness, reconcile
from kernel.adopt import Adopter
from kernel.blocking import EntryBlocks
from kernel.candle_cache import CandleCache, Lookbacks, lookback_cap_s
from kernel.clock import Clock
from kernel.entries import Entries
from kernel.halt import HaltResponder
from kernel.history import HistoryPruner
from kernel.housekeeping import Housekeeping
from kernel.lease import LeaseDeadline
from kernel.markets import MarketCache
from kernel.readiness import resolve_strategy
from kernel.risk import RiskLimits, daily_loss_breach
from kernel.snapshot import DecodeMemo, SlotRefs, read_snapshot
from kernel.venue import Venue
from kernel.wakes import WakeSchedule
from state import replication
from state.store import Store
from state.structs import SLOT, ControlFlags, Slot, TickRecord

log = logging.getLogger("baton.tick")


def market_floor(slot_count: int) -> int:
    """The market cache's size under which it is never pruned: a few windows of every slot."""
    return 4 * slot_count + 64


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
        resolve: Callable[[str], Any] = resolve_strategy,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        self.s = settings
        # Until when this worker may post (kernel/lease.py): re-armed by the lease heartbeat
        # and by each tick's renewal.
        # The worker's own, shared with its lease acquisition; a runner of its own otherwise.
        self.deadline = deadline or LeaseDeadline(settings.lease_ms, settings.lease_margin_ms)
        # kernel.halt.HaltResponder: hears a halt between two ticks' reads of the flags and
        # closes the gate that every strategy call and every post checks (None: flags only).
        self.halt = halt
        # kernel.settlement.Enqueuer, or None (no settlement: tests of entries alone).
        self.settler = settler
        self.store = store
        self._venue = venue
        self.clock = clock
        self.ident = ident
        # Strategy name -> its module: resolve_strategy, or a test's or a tool's own.
        self.resolve = resolve
        self.limits = RiskLimits(
            settings.max_stake_usd, settings.max_exposure_usd, settings.daily_loss_limit_usd
        )
        # How long an order unknown to the venue may still arrive: a post in flight from a
        # holder that lost its lease meanwhile, or a slow request (the venue client's timeout).
        self.unknown_grace_ms = settings.lease_ms + 10_000
        # The slot list: the slots hash in Redis, read by every tick (SlotRefs.follow); until
        # the first read, the settings' seeds (what a fresh Redis is given).
        self.refs = SlotRefs([(f"{a}-{tf}", a, tf) for a in settings.assets for tf in settings.timeframes])
        # The candles read so far (only new ones are read each tick); warmed by dry_run.
        self.candles = CandleCache()
        # How far back each asset's candles are read: what its slots' strategies declare.
        self.lookbacks = Lookbacks(resolve, lookback_cap_s(settings))
        # Slots, positions and intents decoded last tick, by their text (kernel/snapshot.py).
        self.memo = DecodeMemo()
        self.wakes = WakeSchedule(resolve)
        self.markets = MarketCache(store, venue, clock, floor=market_floor(len(self.refs.slot_ids)))
        # Unreadable values new entries wait on (kernel/blocking.py): the tick's own read's,
        # the market cache's, and any other reader's.
        self.blocks = EntryBlocks()
        # The last tick's problems (each is journaled once while it repeats tick after tick).
        self._reported: set[str] = set()
        self.entries = Entries(
            store,
            venue,
            self.limits,
            settings.stale_after_ms,
            self.markets,
            self.wakes,
            resolve,
            halt.gate if halt is not None else None,
            self.deadline,
            self.blocks,
            replicas=settings if replication.wanted(settings) else None,
            decision_log_len=settings.decision_log_len,
            release=ident.release,
            input_log_s=settings.input_log_redis_s,
            input_log_bytes=settings.input_log_redis_mb * 2**20,
        )
        # Orders the venue has and no intent knows, after a takeover or a primary change
        # (kernel/adopt.py): swept before the slots trade again.
        self.adopter = Adopter(store, self.markets, self.refs, self.blocks, budget_s=settings.tick_ms / 2000)
        self.housekeeping = Housekeeping(
            store,
            venue,
            clock,
            self.refs,
            settler,
            HistoryPruner(store, settings.history_days),
            self.candles,
            self.markets,
            self.wakes,
            self.entries,
            self.lookbacks,
        )

    @property
    def configured(self) -> list[tuple[str, str, str]]:
        """The slots this runner trades: (id, asset, timeframe), as the slots hash last read."""
        return self.refs.slot_ids

    async def load_slots(self) -> list[str]:
        """Read the slot list from the slots hash now (one round trip): before the first tick,
        so that it reads and trades every slot, not the settings' seeds (later ticks follow the
        hash as their snapshot reads it; the adoption sweep runs after that). Returns the
        problems (unreadable slots are the tick's to report, as blockers)."""
        try:
            raw = await self.store.r.hgetall(self.store.k.slots())
        except ResponseError as e:  # not a hash: the tick's read makes it a blocker
            return [f"slots: {e}"]
        slots = {}
        for sid, value in raw.items():
            with contextlib.suppress(msgspec.DecodeError):
                slots[sid] = SLOT.decode(value)
        return self.follow_slots(slots)[1]

    def follow_slots(self, slots: dict[str, Slot]) -> tuple[bool, list[str]]:
        """The slot list from the slots hash as read: (whether it changed, problems)."""
        changed, problems = self.refs.follow(slots)
        if changed:
            self.markets.floor = market_floor(len(self.refs.slot_ids))
            log.info("slot list changed: %d slots", len(self.refs.slot_ids))
        return changed, problems

    @property
    def venue(self) -> Venue:
        return self._venue

    @venue.setter
    def venue(self, venue: Venue) -> None:
        """Another venue for every step from now on (tests swap in a failing one)."""
        self._venue = self.markets.venue = self.entries.venue = self.housekeeping.venue = venue

    async def run(self, tick: int, missed_before: int = 0) -> TickOutcome:
        # Stamped before the renewal's now_ms is taken: the deadline is never later than the
        # lease's expiry in Redis.
        if not self.refs.followed:
            await self.load_slots()
        renewal = self.deadline.stamp()
        started = self.clock.now_ms()
        jitter = started - tick * self.s.tick_ms
        refs = self.refs.at(started)
        awake = self.wakes.awake_assets(refs, started, self.entries.entered)
        snap = await read_snapshot(
            self.store,
            refs,
            started,
            (self.ident.holder, self.ident.epoch, self.s.lease_ms),
            self.lookbacks.of(refs, self.wakes.slots, awake),
            self.candles,
            self.memo,
            candle_assets=awake,
            primary=True,
        )
        if not snap.lease_ok:
            self.deadline.lost()
            raise LeaseLost(f"lease of epoch {self.ident.epoch} is no longer ours")
        # Every tick of the holder has its input log entry, evaluations or not (written
        # between ticks): a follower of the log counts ticks by it.
        self.entries.notes.ticked(tick, started)
        if not replication.wanted(self.s):
            # With replicas to wait for, only the heartbeat's acknowledged renewals extend the
            # deadline (kernel/lease_heartbeat.py): a WAIT here would hold up every tick's read.
            self.deadline.renewed(renewal)
        self.wakes.slots = snap.slots
        self.housekeeping.read_assets = set(snap.recent)
        problems = list(snap.problems)
        # A slot added since the last read runs from the next tick; one removed (or moved to
        # another asset or timeframe) stops now.
        # (Not when the hash could not be read at all: the list stands until it can.)
        slots_key = self.store.k.slots()
        if not any(b.key == slots_key and not b.field for b in snap.blockers):
            changed, found = self.follow_slots(snap.slots)
            problems += found
            if changed:
                snap.refs = [r for r in snap.refs if self.refs.keeps(r)]
        # An asset whose candles this tick did not read (its slots asleep) keeps the blockers
        # of its last read: they clear when a read finds its window clean.
        unread = self.store.k.feed_status() if not snap.recent else None  # read with candles only
        kept = [
            b
            for b in self.blocks.of("tick")
            if (b.asset and b.asset not in snap.recent) or (not b.asset and b.key == unread)
        ]
        self.blocks.found("tick", snap.blockers + kept)
        # Garbage the market prefetch found between ticks, until its window ends.
        self.blocks.found("markets", self.markets.blockers(started))
        # What the tick journal depends on: an untrustworthy guard holds this tick's entries
        # back; the journal rebuilds it at the tick's end (kernel/journal_guard.py).
        stats = self.store.k.stats()
        self.blocks.found("journal", journal_guard.blockers(stats, snap.journal_stats, tick, self.s.tick_ms))
        # A new Redis primary may have lost writes made before it: what the venue has that no
        # intent knows is adopted before any slot trades (until then, the slots wait).
        self.adopter.primary_seen(snap.primary_id)
        if self.adopter.due(started):
            problems += await self.adopt(started)
        if self.halt is not None:
            # A halt whose message this worker missed (or made before it took the lease) is
            # acknowledged and swept here; a resume reopens the gate.
            await self.halt.sync(snap.control)
        halted = snap.control.halted or self._halted()
        paused = snap.control.paused or (self.halt is not None and self.halt.gate.paused)
        orders = settled = evaluated = exits = 0
        # Orders the book could not fill (FOK killed, FAK unmatched): outcomes, not problems.
        tally = outcomes.Tally()
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
                self.store,
                self.venue,
                self.ident.epoch,
                started,
                stuck,
                self.unknown_grace_ms,
                self.blocks,
                positions={p.id: p for p in snap.open_positions},
                tally=tally,
            )
            problems += errs
        # Closed windows are settled by the settle program even under a halt: booking an
        # outcome is not trading. The tick only notes which are due (no I/O); they are
        # enqueued right after it, in between_ticks, so that a thousand windows ending
        # together do not delay the tick's orders.
        settled = self.housekeeping.settlements_due(snap.open_positions, started)
        if not halted:
            breach = daily_loss_breach(self.limits, snap.day_pnl_micros)
            if breach:
                await self.store.set_halt(breach, started, who="worker:risk")
                log.error("halting: %s", breach)
                problems.append(breach)
                halted = True
            else:
                # A pause stops new entries; the exits of positions held go on.
                got = await self.entries.run(snap, started, tick, self.ident.epoch, exits_only=paused)
                evaluated, orders, exits = got.evaluated, got.orders, got.exits
                tally.unfilled += got.unfilled
                problems += got.problems
        # The blockers are journaled when they change (not every tick), with status and
        # /metrics reading the set in Redis.
        problems += await self.blocks.publish(self.store, self.ident.epoch, started, lazy=True)
        # A problem that stands (garbage in a control field, a market the venue lacks) is
        # logged and journaled when it appears, not again every tick while it stays.
        fresh = [p for p in problems if p not in self._reported]
        self._reported = set(problems)
        for p in fresh:
            log.warning("tick %d: %s", tick, p)
        await self.store.record_errors("tick", fresh, now_ms=started)
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
            blocked=len(self.blocks.current()),
            exits=exits,
            unfilled=tally.unfilled,
        )
        try:
            verdict = await self.store.append_tick(rec)
        except UnreadableValue as e:
            verdict = e
        if verdict == "STALE_EPOCH":
            self.deadline.lost()
            raise LeaseLost(f"journal of tick {tick} refused: epoch {self.ident.epoch} is stale")
        if verdict != "OK":
            why = journal_guard.journal_problem(tick, verdict)
            log.error("tick %d: %s", tick, why)
            problems.append(why)
            # A garbage counter the tick's read found already stands as a blocker, journaled
            # once; a tick not journaled for it is not repeated in the error journal each tick.
            known = {b.id for b in self.blocks.of("journal")}
            if not (isinstance(verdict, UnreadableValue) and f"{verdict.key} {verdict.field}" in known):
                await self.store.record_errors("journal", [why], now_ms=started)
        return TickOutcome(rec, problems, snap.handover, snap.control)

    async def adopt(self, now_ms: int) -> list[str]:
        """The adoption sweep owed (kernel/adopt.py), if any; returns its problems. The slots
        whose windows it adopted count as entered from now on, and an adopted exit leg's
        number as used."""
        adopted, problems = await self.adopter.settle(self.ident.epoch, now_ms)
        if adopted:
            self.entries.absent.clear()
            for i in adopted:
                if i.window_start_s >= self.entries.entered.get(i.slot, 0):
                    self.entries.entered[i.slot] = i.window_start_s
                if i.is_exit:
                    self.entries.legs.committed(i)
        return problems

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
          must not wait for it;
        - the slots' wake times that changed (asked by the tick or the look-ahead) are written
          to keys.slot_wakes() in one HSET, so that status can say "asleep until".

        Before all that, the decision log's entries of the tick and its input log entry are
        appended (one round trip).

        Returns the problems of the settlement enqueue (also written to the error journal;
        the prefetch reports its own)."""
        problems = await self.blocks.publish(self.store, self.ident.epoch, self.clock.now_ms())
        # The tick's decision log and input log (kept off the tick's path: a burst's thousand
        # entries, their encoding).
        try:
            logged = await self.entries.notes.flush()
        except Exception as e:
            logged = [f"decision log not appended: {e}"]
        for p in logged:
            log.warning("%s", p)
        problems += logged
        problems += await self.housekeeping.between_ticks(next_boundary_ms, self.ident.epoch)
        # The wake times asked by this tick and by the look-ahead, for status ("asleep until").
        try:
            await self.wakes.publish(self.store)
        except Exception as e:
            problems.append(f"writing slots' wake times: {e}")
        return problems

    async def wait_prefetch(self) -> None:
        """Until the market prefetch under way (if any) is done: tests and benchmarks that
        want each step's venue calls in a known order."""
        await self.housekeeping.wait_prefetch()

    def close(self) -> None:
        """Stop the background prefetch (its threads finish the call they are in). The runner
        stays usable: a worker that handed over and takes the lease back ticks with it again."""
        self.housekeeping.close()

    def _halted(self) -> bool:
        return self.halt is not None and self.halt.gate.halted

    async def dry_run(self) -> int:
        """The readiness check's dry evaluation (kernel/readiness.py), on the slot list read
        from the slots hash now. Returns the number of slots checked; raises NotReady naming
        the slot and the error."""
        for p in await self.load_slots():
            log.warning("readiness: %s", p)
        return await readiness.dry_run(
            self.store,
            self.clock.now_ms(),
            self.configured,
            self.candles,
            self.wakes,
            self.lookbacks,
            self.resolve,
            self.entries,
        )

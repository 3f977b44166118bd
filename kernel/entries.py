"""A tick's evaluation of its slots: which slots want quotes (not entered in their window and
awake, or holding a position their strategy may exit), their markets and books, the
strategy's answer and what the kernel makes of it (kernel/decide.py), the risk check, the
decision log, and the fenced commit and post of the intents (in chunks, while the evaluation
goes on: kernel/entry_stream.py EntryStream). Exit legs: kernel/exits.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from msgspec.structs import replace

from baton.settings import Settings
from kernel import entry_stream, executor
from kernel.adopt import HOLD as ADOPT_HOLD
from kernel.blocking import EntryBlocks
from kernel.decide import answer_problem, record, record_outcome
from kernel.exits import ExitLegs, Holdings, exit_intents, exits_on
from kernel.halt import HaltGate
from kernel.inputs import TickInputs, account, with_asks
from kernel.lease import LeaseDeadline
from kernel.markets import MarketCache
from kernel.notes import INPUT_LOG_BYTES, INPUT_LOG_S, DecisionNotes
from kernel.raised import plain
from kernel.risk import Account, RiskLimits, check_entry
from kernel.snapshot import SlotRef, Snapshot
from kernel.strategy_api import Buy, Exit, SlotInput
from kernel.wakes import WakeSchedule
from state.store import Store
from state.structs import DecisionRecord, Intent, Market, Position

# An entry tick's orders go out in at most ENTRY_CHUNKS chunks (each two Redis round trips):
# every 1/ENTRY_CHUNKS of the slots to evaluate, the intents made so far are sent if there are
# at least ENTRY_CHUNK_MIN of them (fewer wait for the next chunk: a chunk costs thread hops
# and round trips, and below that there is too little to overlap). The evaluation yields every
# ENTRY_YIELD_EVERY slots to let the chunks under way move on (Entries._evaluate_and_post).
ENTRY_CHUNKS = 4
ENTRY_CHUNK_MIN = 32
ENTRY_YIELD_EVERY = 32
HALTED_MID_TICK = "halted during the tick: no strategy code runs after the halt"
# Decision log entries kept per slot when the settings do not say (BATON_DECISION_LOG_LEN).
DECISION_LOG_LEN = 500


class Wanted(NamedTuple):
    """A slot that wants quotes this tick: its window, its input (without asks), its strategy
    (module and name), and the open position it may exit (None: it may only enter)."""

    ref: SlotRef
    inp: SlotInput
    strat: Any
    name: str
    held: Position | None = None


@dataclass
class EntryTick:
    """What a tick's evaluation came to: slots evaluated, orders sent (exits included), exit
    orders sent, orders the book could not fill (an outcome, not a problem), problems."""

    evaluated: int = 0
    orders: int = 0
    problems: list[str] = field(default_factory=list)
    exits: int = 0
    unfilled: int = 0


class Entries:
    def __init__(
        self,
        store: Store,
        venue: Any,
        limits: RiskLimits,
        stale_after_ms: int,
        markets: MarketCache,
        wakes: WakeSchedule,
        resolve: Callable[[str], Any],
        gate: HaltGate | None = None,
        deadline: LeaseDeadline | None = None,
        blocks: EntryBlocks | None = None,
        replicas: Settings | None = None,
        decision_log_len: int = DECISION_LOG_LEN,
        release: str = "",
        input_log_s: int = INPUT_LOG_S,
        input_log_bytes: int = INPUT_LOG_BYTES,
    ) -> None:
        self.store = store
        self.venue = venue
        self.limits = limits
        self.stale_after_ms = stale_after_ms
        self.markets = markets
        self.wakes = wakes
        self.resolve = resolve
        # The halt gate every strategy call and every post checks (None: flags only).
        self.gate = gate
        # The lease deadline every commit and every post checks (None: not checked).
        self.deadline = deadline
        # Unreadable values that block new entries (kernel/blocking.py): checked before any
        # strategy call, for the whole account and per slot.
        self.blocks = blocks if blocks is not None else EntryBlocks()
        # The settings when every commit must be acknowledged by replicas before its post
        # (Settings.redis_min_replicas > 0, state/replication.py); None: one Redis, no WAIT.
        self.replicas = replicas
        # slot id -> start of the window whose entry intent is known to be in Redis (committed
        # by this worker, or found there): at most one entry per slot-window, so the slot has
        # nothing left to do until its next window and is passed by like a sleeping one. An
        # intent, once committed, is never removed within its window: this only saves work
        # (intent_commit.lua is what refuses a second entry).
        self.entered: dict[str, int] = {}
        # slot id -> (window start, epoch): no entry intent of that window was in Redis when
        # this worker looked, between ticks, holding the lease of that epoch. While it holds
        # it, only its own commits can add one (they are fenced), and those land in `entered`;
        # so the tick that wakes the slot need not ask again. A commit whose answer is lost
        # forgets them all. Again only work saved: intent_commit.lua refuses a second entry.
        self.absent: dict[str, tuple[int, int]] = {}
        # Exit legs committed per slot-window (kernel/exits.py).
        self.legs = ExitLegs()
        # Each slot's last decision, the decision log and the input log (kernel/notes.py).
        self.notes = DecisionNotes(store, decision_log_len, release, input_log_s, input_log_bytes)
        # What the inputs of the current tick share (kernel/inputs.py), built on first use.
        self._inputs: TickInputs | None = None

    def _halted(self) -> bool:
        return self.gate is not None and self.gate.halted

    async def run(
        self, snap: Snapshot, now_ms: int, tick: int, epoch: int, exits_only: bool = False
    ) -> EntryTick:
        """The tick's evaluation: slots evaluated, orders placed, exits, unfilled, problems.
        `exits_only` (a pause): only slots holding a position their strategy may exit."""
        out = EntryTick()
        problems = out.problems
        # A value every slot's entries depend on is unreadable: no entries (reported once, by
        # kernel/blocking.py, not every tick). Exits of positions that read go on.
        only_held = exits_only or self.blocks.blocks_all() is not None
        holdings = Holdings(snap)
        if only_held and not holdings.by_slot:
            return out
        failed: list[list[Any]] = []
        wanted = self._select(snap, now_ms, problems, holdings, only_held, failed)
        self.notes.keep(tick, now_ms, failed)
        if not wanted:
            return out
        entered, cached = await self._entry_state(
            [w.ref for w in wanted], epoch, problems, {w.ref.id for w in wanted if w.held is not None}
        )
        self.blocks.found("markets", self.markets.blockers(now_ms))
        # At most one entry per slot-window (intent_commit.lua enforces it; this saves the
        # strategy call and the books of slots that entered already); a slot whose cached
        # market is garbage waits (never discovered past it). A slot that holds a position
        # its strategy may exit goes on: it entered, and sells what it holds.
        wanted = [w for w in wanted if w.held is not None or w.ref.id not in entered]
        if self.blocks.any():
            wanted = [
                w for w in wanted if w.held is not None or self.blocks.blocks(w.ref.id, w.ref.asset) is None
            ]
        if not wanted:
            return out
        markets = await self.markets.discover(cached, [w.ref for w in wanted], problems)
        tokens = [t for w in wanted if (m := markets.get(w.ref.slug)) for t in (m.up_token, m.down_token)]
        try:
            books = await asyncio.to_thread(self.venue.books, tokens) if tokens else {}
        except Exception as e:
            problems.append(f"books: {e}")
            return out
        acct = account(snap, now_ms)
        await self._evaluate_and_post(wanted, markets, books, acct, now_ms, tick, epoch, holdings, out)
        return out

    def _select(
        self,
        snap: Snapshot,
        now_ms: int,
        problems: list[str],
        holdings: Holdings,
        only_held: bool = False,
        failed: list[list[Any]] | None = None,
    ) -> list[Wanted]:
        """The slots that want quotes now: enabled, and either holding a position in their
        window that their strategy may exit (EXITS) and no exit leg of it still working at the
        venue, or not entered in this window, awake (their strategy's quotes_from_ms has
        come), with fresh data, and whose strategy's needs_quotes says yes. None at all when
        a halt is heard meanwhile."""
        wanted: list[Wanted] = []
        failed = failed if failed is not None else []
        # Each strategy module is looked up once per tick (a reload happens between ticks).
        modules: dict[str, Any] = {}
        done = self.entered  # slots with nothing left to do in their window (but exits)
        by_slot = holdings.by_slot
        # An adoption sweep owed (kernel/adopt.py) holds exits too: an exit leg Redis lost
        # may be at the venue, and the next leg's number and size wait for it to be known.
        unswept = self.blocks.of(ADOPT_HOLD) if self.blocks.any() else []
        ctx = self._tick_inputs(snap, now_ms)
        legs = self.legs
        for ref in snap.refs:
            if self._halted():
                problems.append(HALTED_MID_TICK)
                return []
            # (inlined Holdings.held: asked of every slot at every tick, asleep or not)
            held = by_slot.get(ref.id) if by_slot else None
            if held is not None and held.window_start_s != ref.window_start_s:
                held = None
            if held is None and (only_held or done.get(ref.id) == ref.window_start_s):
                continue
            slot = snap.slots.get(ref.id)
            # A disabled slot opens nothing, but the position it holds may still be exited
            # (as under a pause): switching a slot off must not strand a stop loss.
            if slot is None or (not slot.enabled and held is None):
                continue
            # The market cache's blockers are looked at once its entries are read again.
            if (
                held is None
                and self.blocks.any()
                and self.blocks.blocks(ref.id, ref.asset, but_not="markets") is not None
            ):
                continue
            name = slot.strategy
            try:
                strat = modules.get(name)
                if strat is None:
                    try:
                        strat = modules[name] = self.resolve(name)
                    except Exception as e:
                        strat = modules[name] = e
                if isinstance(strat, Exception):
                    raise strat
                if held is not None:
                    # Entered, with a position: evaluated every tick whatever its wake time
                    # when its strategy exits, and while no exit leg of it is still working.
                    done[ref.id] = ref.window_start_s
                    if not exits_on(strat) or holdings.exit_pending(ref):
                        continue
                    if unswept and any(b.blocks(ref.id, ref.asset) for b in unswept):
                        continue
                    # (slot_input inlined: entered, as `done` now says)
                    inp = ctx.slot(ref, strat, True, legs.count(ref))
                    if inp is None:
                        continue
                    wanted.append(Wanted(ref, inp, strat, name, held))
                    continue
                # A slot before the part of its window where its strategy may trade is passed
                # by without building its input (strategy_api.py: quotes_from_ms).
                wake = getattr(strat, "quotes_from_ms", None)
                if wake is None:
                    self.wakes.forget(ref.id)
                elif now_ms < self.wakes.wake_ms(wake, ref, slot):
                    continue
                # (slot_input inlined: not entered, or `done` would have passed it by)
                inp = ctx.slot(ref, strat, False, legs.count(ref))
                if inp is None:
                    continue
                needs = getattr(strat, "needs_quotes", None)
                if needs is None or needs(inp):
                    wanted.append(Wanted(ref, inp, strat, name))
            except Exception as raised:
                err = plain(raised)
                problems.append(f"slot {ref.id}: strategy {name!r}: {err!r}")
                # An evaluation that raised before evaluate (loading the module, its
                # needs_quotes or quotes_from_ms): in the decision log as evaluate's would be.
                failed.append([ref, name, None, err, "error", ""])
        return wanted

    def slot_input(self, snap: Snapshot, ref: SlotRef, now_ms: int, strat: Any = None) -> SlotInput | None:
        """The strategy's input for this slot (without books: kernel/inputs.py with_asks), or
        None when the slot is disabled or its data is missing or stale. What slots share is
        built once per snapshot (kernel/inputs.py TickInputs)."""
        entered = self.entered.get(ref.id) == ref.window_start_s
        return self._tick_inputs(snap, now_ms).slot(ref, strat, entered, self.legs.count(ref))

    def _tick_inputs(self, snap: Snapshot, now_ms: int) -> TickInputs:
        ctx = self._inputs
        if ctx is None or ctx.snap is not snap or ctx.now_ms != now_ms:
            max_exposure = self.limits.max_exposure_usd if self.limits is not None else None
            memo = ctx.memo if ctx is not None else None  # bars kept between ticks
            ctx = self._inputs = TickInputs(snap, now_ms, self.stale_after_ms, max_exposure, memo)
        return ctx

    async def _entry_state(
        self, refs: list[SlotRef], epoch: int, problems: list[str], held: set[str] | None = None
    ) -> tuple[set[str], dict[str, Market]]:
        """For slots that want quotes this tick, in one round trip (none when everything is known
        already): which have an entry intent in their window already (their slot ids), and the
        markets the cache knows. Only entry ticks pay it; the snapshot does not read a thousand
        slots' keys every tick. Slots found without one between ticks (`absent`), and slots
        `held` (holding a position: entered), are not asked."""
        held = held or set()
        ask = [r for r in refs if r.id not in held and self.absent.get(r.id) != (r.window_start_s, epoch)]
        found, raw_intents = await self.markets.cached(refs, problems, intents_of=ask)
        # Any value counts as entered, even one that cannot be decoded: never a second entry.
        entered = {r.id for r, raw in zip(ask, raw_intents, strict=True) if raw is not None}
        for r in ask:
            if r.id in entered:
                self.entered[r.id] = r.window_start_s
        return entered, found

    async def look_ahead(self, refs: list[SlotRef], next_ms: int, epoch: int) -> None:
        """Whether the slots awake at the next tick, and not known to have entered their window,
        have an entry intent in Redis (one HMGET): the tick that wakes them then reads only
        what it must (`absent`, _entry_state)."""
        ask: list[SlotRef] = []
        for r in refs:
            if (
                self.wakes.due_by(r, next_ms)
                and self.entered.get(r.id) != r.window_start_s
                and self.absent.get(r.id) != (r.window_start_s, epoch)
            ):
                ask.append(r)
        if not ask:
            return
        there = await self.store.committed([r.entry_intent_id for r in ask])
        for r, committed in zip(ask, there, strict=True):
            if not committed:
                self.absent[r.id] = (r.window_start_s, epoch)
            else:
                self.entered[r.id] = r.window_start_s

    async def _evaluate_and_post(
        self,
        wanted: list[Wanted],
        markets: dict[str, Market],
        books: dict[str, Any],
        acct: Account,
        now_ms: int,
        tick: int,
        epoch: int,
        holdings: Holdings,
        out: EntryTick,
    ) -> None:
        """Each wanted slot evaluated and its answer judged (_decide); the entry intents
        committed and posted in at most ENTRY_CHUNKS chunks, each as soon as its slots are
        evaluated: the loop yields now and then so that the chunks under way move on (their
        Redis answers read, their posts started) while it goes on. Exit legs go with the last
        chunk, once their numbers are known (kernel/exits.py). Each slot's last decision is
        written while the last chunk is under way; every evaluation is one entry of the
        decision log, kept for the notes' flush between ticks. Fills `out`."""
        problems = out.problems
        intents: list[Intent] = []
        # Each slot's decision record, as the dashboard and `baton slots` show it (a thousand
        # of them at the end of a window), and the decision log's entries.
        decisions: dict[str, DecisionRecord] = {}
        # The decision log's entries, built and appended between ticks (kernel/notes.py):
        # [ref, strategy, input, answer, outcome, intent id].
        logs: list[list[Any]] = []
        # Exits judged fit: (the slot, its position, its input, the answer, the index of its
        # log entry, the market's minimum order size).
        exits: list[tuple[SlotRef, Position, SlotInput, Exit, int, float]] = []
        gate = self.gate
        chunk = -(-len(wanted) // ENTRY_CHUNKS)
        now_in_redis: set[str] = set()
        stream = entry_stream.EntryStream(
            self.store,
            self.venue,
            epoch,
            gate,
            now_in_redis,
            ENTRY_CHUNKS,
            self.deadline,
            self.blocks,
            replicas=self.replicas,
            positions=holdings.by_id,
        )
        sent: list[Intent] = []
        try:
            for n, w in enumerate(wanted, 1):
                if n > 1 and (n - 1) % chunk == 0 and len(intents) >= ENTRY_CHUNK_MIN:
                    await stream.send(intents)
                    sent += intents
                    intents = []
                elif n % ENTRY_YIELD_EVERY == 0 and stream.tasks:
                    await asyncio.sleep(0)
                if gate is not None and gate.halted:
                    # The halt arrived while this tick ran: not one more strategy call, and
                    # the intents not sent yet never are (the log says so).
                    problems.append(HALTED_MID_TICK)
                    unsent = {i.id for i in intents} | {logs[x[4]][0].id for x in exits}
                    for log in logs:
                        if log[4] == "intent" and (log[5] in unsent or log[0].id in unsent):
                            log[4], log[5] = f"refused: {HALTED_MID_TICK}", ""
                            decisions[log[0].id] = record(log[0], tick, now_ms, log[2], log[3], log[4])
                    intents, exits = [], []
                    break
                ref = w.ref
                m = markets.get(ref.slug)
                if m is None:
                    continue
                inp = with_asks(w.inp, books.get(m.up_token), books.get(m.down_token))
                out.evaluated += 1
                answer, outcome = self._decide(w, inp, acct, problems)
                intent_id = ""
                if outcome == "intent" and isinstance(answer, Exit) and w.held is not None:
                    exits.append((ref, w.held, inp, answer, len(logs), m.min_size))
                elif outcome == "intent":
                    intent = executor.make_intent(ref, m, answer, epoch, now_ms)
                    intents.append(intent)
                    intent_id = intent.id
                decisions[ref.id] = record(ref, tick, now_ms, inp, answer, record_outcome(answer, outcome))
                logs.append([ref, w.name, inp, answer, outcome, intent_id])
            if exits:
                intents += await exit_intents(
                    self.legs, self.store, exits, logs, decisions, tick, epoch, now_ms
                )
            await stream.send(intents, last=True)
            sent += intents
        finally:
            # The decisions are written while the last chunk is under way: one round trip
            # less on the tick's path. The log's entries wait for the flush between ticks.
            self.notes.keep(tick, now_ms, logs)
            noted = asyncio.ensure_future(self.notes.note(decisions)) if decisions else None
            try:
                out.orders, errs = await stream.finish()
                problems += errs
            except BaseException:
                self.absent.clear()  # a commit may have landed without its answer
                raise
            finally:
                out.exits, out.unfilled = stream.tally.exits, stream.tally.unfilled
                for i in sent:
                    if i.id in now_in_redis:
                        self.entered[i.slot] = i.window_start_s
                        if i.is_exit:
                            self.legs.committed(i)
                if noted is not None:
                    problems += await noted

    def _decide(self, w: Wanted, inp: SlotInput, acct: Account, problems: list[str]) -> tuple[Any, str]:
        """The strategy's answer for one slot and what the kernel makes of it: "intent" (an
        entry the risk checks allow, or an exit), "refused: <why>", "error" (the strategy
        raised: the exception is the answer), or "" (a pass)."""
        # A copy of what a strategy could change in place (its dicts): the input log records
        # `inp`, which must be what evaluate was given, not what it left behind.
        given = (
            inp
            if not (inp.params or inp.bars)
            else replace(inp, params=dict(inp.params), bars=dict(inp.bars))
        )
        try:
            answer = w.strat.evaluate(given)
        except Exception as e:
            err = plain(e)  # its repr is strategy code: taken once, safely
            problems.append(f"slot {w.ref.id}: strategy raised {err!r}")
            return err, "error"
        why = answer_problem(answer, inp, w.held, w.held is not None or getattr(inp, "entered", False))
        if why:
            return answer, f"refused: {why}"
        if isinstance(answer, Buy):
            refused = check_entry(answer.stake_usd, self.limits, acct)
            if refused:
                problems.append(f"slot {w.ref.id}: risk refused entry: {refused}")
                return answer, f"refused: risk: {refused}"
            return answer, "intent"
        return answer, "intent" if isinstance(answer, Exit) else ""

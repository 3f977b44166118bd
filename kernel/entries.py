"""A tick's entries: which slots want quotes, whether they entered their window already, their
markets and books, the strategy's decision, the risk check, and the fenced commit and post of
the intents (in chunks, while the evaluation goes on: kernel/executor.py EntryStream).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from baton.settings import Settings
from kernel import executor
from kernel.blocking import EntryBlocks
from kernel.halt import HaltGate
from kernel.inputs import TickInputs, account, with_asks
from kernel.lease import LeaseDeadline
from kernel.markets import MarketCache
from kernel.risk import Account, RiskLimits, check_entry
from kernel.snapshot import SlotRef, Snapshot
from kernel.strategy_api import Decision, SlotInput
from kernel.wakes import WakeSchedule
from state.store import Store
from state.structs import (
    DecisionRecord,
    EntryRecord,
    Intent,
    Market,
    PassRecord,
    StrategyErrorRecord,
)

# An entry tick's orders go out in at most ENTRY_CHUNKS chunks (each two Redis round trips):
# every 1/ENTRY_CHUNKS of the slots to evaluate, the intents made so far are sent if there are
# at least ENTRY_CHUNK_MIN of them (fewer wait for the next chunk: a chunk costs thread hops
# and round trips, and below that there is too little to overlap). The evaluation yields every
# ENTRY_YIELD_EVERY slots to let the chunks under way move on (Entries._evaluate_and_post).
ENTRY_CHUNKS = 4
ENTRY_CHUNK_MIN = 32
ENTRY_YIELD_EVERY = 32
HALTED_MID_TICK = "halted during the tick: no strategy code runs after the halt"

# A slot that wants quotes this tick: its window, its input (without asks), its strategy.
Wanted = tuple[SlotRef, SlotInput, Any]


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
        # What the inputs of the current tick share (kernel/inputs.py), built on first use.
        self._inputs: TickInputs | None = None

    def _halted(self) -> bool:
        return self.gate is not None and self.gate.halted

    async def run(self, snap: Snapshot, now_ms: int, tick: int, epoch: int) -> tuple[int, int, list[str]]:
        """The tick's entries: (slots evaluated, orders placed, problems)."""
        problems: list[str] = []
        if self.blocks.blocks_all() is not None:
            return 0, 0, problems  # reported once, by kernel/blocking.py, not every tick
        wanted = self._select(snap, now_ms, problems)
        if not wanted:
            return 0, 0, problems
        entered, cached = await self._entry_state([r for r, _, _ in wanted], epoch, problems)
        self.blocks.found("markets", self.markets.blockers(now_ms))
        # At most one entry per slot-window (intent_commit.lua enforces it; this saves the
        # strategy call and the books of slots that entered already); a slot whose cached
        # market is garbage waits (never discovered past it).
        wanted = [w for w in wanted if w[0].id not in entered]
        if self.blocks.any():
            wanted = [w for w in wanted if self.blocks.blocks(w[0].id, w[0].asset) is None]
        if not wanted:
            return 0, 0, problems
        markets = await self.markets.discover(cached, [r for r, _, _ in wanted], problems)
        tokens = [t for r, _, _ in wanted if (m := markets.get(r.slug)) for t in (m.up_token, m.down_token)]
        try:
            books = await asyncio.to_thread(self.venue.books, tokens) if tokens else {}
        except Exception as e:
            problems.append(f"books: {e}")
            return 0, 0, problems
        acct = account(snap, now_ms)
        evaluated, orders, errs = await self._evaluate_and_post(
            wanted, markets, books, acct, now_ms, tick, epoch, problems
        )
        return evaluated, orders, problems + errs

    def _select(self, snap: Snapshot, now_ms: int, problems: list[str]) -> list[Wanted]:
        """The slots that want quotes now: enabled, not entered in this window, awake (their
        strategy's quotes_from_ms has come), with fresh data, and whose strategy's needs_quotes
        says yes. None at all when a halt is heard meanwhile."""
        wanted: list[Wanted] = []
        # Each strategy module is looked up once per tick (a reload happens between ticks).
        modules: dict[str, Any] = {}
        done = self.entered  # slots with nothing left to do in their window
        for ref in snap.refs:
            if self._halted():
                problems.append(HALTED_MID_TICK)
                return []
            if done.get(ref.id) == ref.window_start_s:
                continue
            slot = snap.slots.get(ref.id)
            if slot is None or not slot.enabled:
                continue
            # The market cache's blockers are looked at once its entries are read again.
            if self.blocks.any() and self.blocks.blocks(ref.id, ref.asset, but_not="markets") is not None:
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
                # A slot before the part of its window where its strategy may trade is passed
                # by without building its input (strategy_api.py: quotes_from_ms).
                wake = getattr(strat, "quotes_from_ms", None)
                if wake is None:
                    self.wakes.forget(ref.id)
                elif now_ms < self.wakes.wake_ms(wake, ref, slot):
                    continue
                inp = self.slot_input(snap, ref, now_ms, strat)
                if inp is None:
                    continue
                needs = getattr(strat, "needs_quotes", None)
                if needs is None or needs(inp):
                    wanted.append((ref, inp, strat))
            except Exception as e:
                problems.append(f"slot {ref.id}: strategy {name!r}: {e!r}")
        return wanted

    def slot_input(self, snap: Snapshot, ref: SlotRef, now_ms: int, strat: Any = None) -> SlotInput | None:
        """The strategy's input for this slot (without books: kernel/inputs.py with_asks), or
        None when the slot is disabled or its data is missing or stale. What slots share is
        built once per snapshot (kernel/inputs.py TickInputs)."""
        ctx = self._inputs
        if ctx is None or ctx.snap is not snap or ctx.now_ms != now_ms:
            max_exposure = self.limits.max_exposure_usd if self.limits is not None else None
            ctx = self._inputs = TickInputs(snap, now_ms, self.stale_after_ms, max_exposure)
        return ctx.slot(ref, strat, entered=self.entered.get(ref.id) == ref.window_start_s)

    async def _entry_state(
        self, refs: list[SlotRef], epoch: int, problems: list[str]
    ) -> tuple[set[str], dict[str, Market]]:
        """For slots that want quotes this tick, in one round trip (none when everything is known
        already): which have an entry intent in their window already (their slot ids), and the
        markets the cache knows. Only entry ticks pay it; the snapshot does not read a thousand
        slots' keys every tick. Slots found without one between ticks (`absent`) are not asked
        again."""
        ask = [r for r in refs if self.absent.get(r.id) != (r.window_start_s, epoch)]
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
        problems: list[str],
    ) -> tuple[int, int, list[str]]:
        """Each wanted slot evaluated and risk-checked (_decide); the intents committed and
        posted in at most ENTRY_CHUNKS chunks, each as soon as its slots are evaluated: the
        loop yields now and then so that the chunks under way move on (their Redis answers
        read, their posts started) while it goes on. Returns (evaluated, orders, the chunks'
        problems)."""
        intents: list[Intent] = []
        # Each slot's decision record, as the dashboard and `baton slots` show it (a thousand
        # of them at the end of a window).
        decisions: dict[str, DecisionRecord] = {}
        evaluated = 0
        gate = self.gate
        chunk = -(-len(wanted) // ENTRY_CHUNKS)
        now_in_redis: set[str] = set()
        stream = executor.EntryStream(
            self.store,
            self.venue,
            epoch,
            gate,
            now_in_redis,
            ENTRY_CHUNKS,
            self.deadline,
            self.blocks,
            replicas=self.replicas,
        )
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
                    problems.append(HALTED_MID_TICK)
                    intents = []
                    break
                m = markets.get(ref.slug)
                if m is None:
                    continue
                inp = with_asks(inp, books.get(m.up_token), books.get(m.down_token))
                evaluated += 1
                decision = self._decide(ref, inp, strat, acct, tick, now_ms, decisions, problems)
                if decision is not None:
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
                self.absent.clear()  # a commit may have landed without its answer
                raise
            finally:
                for i in sent:
                    if i.id in now_in_redis:
                        self.entered[i.slot] = i.window_start_s
                if noted is not None:
                    await noted
        return evaluated, orders, errs

    def _decide(
        self,
        ref: SlotRef,
        inp: SlotInput,
        strat: Any,
        acct: Account,
        tick: int,
        now_ms: int,
        decisions: dict[str, DecisionRecord],
        problems: list[str],
    ) -> Decision | None:
        """The strategy's decision for one slot, recorded in `decisions`, and returned when it
        is an entry the risk checks allow (None: an error, a pass or a refusal)."""
        try:
            decision: Decision | None = strat.evaluate(inp)
        except Exception as e:
            problems.append(f"slot {ref.id}: strategy raised {e!r}")
            decisions[ref.id] = StrategyErrorRecord(
                tick=tick,
                at_ms=now_ms,
                window_start_s=ref.window_start_s,
                outcome="error",
                reason=repr(e)[:200],
            )
            return None
        if decision is None:
            decisions[ref.id] = PassRecord(
                tick=tick,
                at_ms=now_ms,
                window_start_s=ref.window_start_s,
                outcome="pass",
                up_ask=inp.up_ask,
                down_ask=inp.down_ask,
            )
            return None
        refused = check_entry(decision.stake_usd, self.limits, acct)
        decisions[ref.id] = EntryRecord(
            tick=tick,
            at_ms=now_ms,
            window_start_s=ref.window_start_s,
            side=decision.side,
            price=decision.limit_price,
            stake_usd=decision.stake_usd,
            p_up=round(decision.p_up, 4),
            reason=decision.reason[:200],
            outcome=f"risk refused: {refused}" if refused else "entry",
        )
        if refused:
            problems.append(f"slot {ref.id}: risk refused entry: {refused}")
            return None
        return decision

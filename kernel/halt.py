"""The emergency halt inside one worker: hear it at once, stop posting, say so, sweep the venue.

Three layers keep a halted system from trading; any one of them suffices:
1. the halt flag in Redis, read at the top of every tick (no strategy code runs) and checked
   again inside the intent-commit script (no order is committed after the flag is set);
2. `HaltGate`, this process's copy of the flag, closed the moment the pub/sub message
   arrives (kernel/entries.py checks it between strategy evaluations; kernel/executor.py before
   every post, so an intent committed just before the halt is never sent);
3. the acknowledgement: once the gate is closed and every post already on its way has come
   back, the worker pushes {"halted": true} onto `control:ack:<seq>`; whoever asked for the halt
   (control/halt.py) waits for it. After the acknowledgement no order can reach the venue.
Then the worker cancels resting orders at the venue (`DELETE /cancel-all`) and pushes the
outcome as a second answer. A message lost while the worker was disconnected or not yet
running is caught by the tick's own read of the flags: the first tick that sees the halt
acknowledges and sweeps too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from kernel.clock import wall_ms
from kernel.lease import LeaseDeadline
from state.store import Store
from state.structs import ControlFlags

log = logging.getLogger("baton.halt")

# How long an acknowledgement waits for posts already on their way to the venue (each is
# bounded by the venue client's own timeout and retries, venues/polymarket.py).
DRAIN_TIMEOUT_S = 10.0


class HaltGate:
    """This process's copy of the halt and pause flags, and the count of posts in flight."""

    def __init__(self) -> None:
        self.halted = False
        self.paused = False
        # The control seq of the change that closed the gate: only a later change reopens it,
        # so a snapshot read before the halt cannot undo it.
        self.closed_seq = 0
        # The control seq of the resume that last reopened it: a halted snapshot read before
        # that resume is stale and must not close the gate (and sweep the venue) again.
        self.reopened_seq = 0
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def close(self, seq: int) -> None:
        self.halted = True
        self.closed_seq = max(self.closed_seq, seq)

    def reopen(self, seq: int) -> bool:
        """Open again for flags read at control seq `seq` that say "not halted" — unless they
        were read before the halt that closed the gate (a stale snapshot)."""
        if self.halted and seq > self.closed_seq:
            self.halted = False
            self.reopened_seq = max(self.reopened_seq, seq)
        return not self.halted

    def begin_post(self, n: int = 1) -> bool:
        """Take places for `n` posts; False (and no place) once halted."""
        if self.halted:
            return False
        self._inflight += n
        self._idle.clear()
        return True

    def end_post(self, n: int = 1) -> None:
        self._inflight -= n
        if self._inflight <= 0:
            self._inflight = 0
            self._idle.set()

    @property
    def inflight(self) -> int:
        return self._inflight

    async def drained(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
            return True
        except TimeoutError:
            return False


class HaltResponder:
    """Carries out halts, pauses and resumes in the active worker (see the module doc)."""

    def __init__(
        self,
        store: Store,
        venue: Any,
        gate: HaltGate,
        identity: Callable[[], dict[str, Any]],
        on_change: Callable[[], Awaitable[None]] | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        deadline: LeaseDeadline | None = None,
    ) -> None:
        self.store = store
        # The cancel-all is a call to the venue like a post: not made past the lease deadline
        # (kernel/lease.py), when it could cancel the orders of the worker that holds the
        # lease now. That worker sweeps the halt itself at its first tick under it.
        self.deadline = deadline
        self.venue = venue
        self.gate = gate
        self.identity = identity
        self.on_change = on_change
        self.drain_timeout_s = drain_timeout_s
        self.handled_seq = 0
        self._lock = asyncio.Lock()
        self._sweeps: set[asyncio.Task[None]] = set()

    async def sync(self, flags: ControlFlags) -> None:
        """Bring the gate in line with flags read from Redis (the tick's snapshot, a read after
        (re)subscribing, or one prompted by a message): a halt nobody acknowledged yet is
        carried out now."""
        self.gate.paused = flags.paused
        if flags.halted:
            if flags.seq < self.gate.reopened_seq:
                return  # read before the last resume: that halt is over
            await self.on_halt(flags.halt_seq, flags.seq)
        elif self.gate.halted and self.gate.reopen(flags.seq):
            log.info("resumed (control seq %d)", flags.seq)

    async def on_event(self, raw: Any) -> None:
        """One message from the control channel. It is only a wake-up: the flags are read
        from Redis, the truth, so a forged or garbled message can neither halt nor resume
        anything by itself. Garbage is reported and otherwise ignored."""
        try:
            msg = json.loads(raw)
            action = msg["action"]
            if not isinstance(action, str):
                raise TypeError(f"action is {type(action).__name__}, not a string")
        except Exception as e:
            log.warning("control channel: unreadable message %.120r: %s", raw, e)
            with contextlib.suppress(RedisError):
                await self.store.record_error(
                    "control", f"unreadable control message: {e}", str(raw)[:200], now_ms=wall_ms()
                )
            return
        if action in ("halt", "pause", "resume"):
            await self.sync(await self.store.read_control())
        if self.on_change is not None:
            await self.on_change()

    async def on_halt(self, halt_seq: int, seq: int) -> None:
        """Carry out the halt of control seq `halt_seq` (0: set by hand, not through
        control_set.lua): close the gate, wait for posts in flight, acknowledge, sweep."""
        async with self._lock:
            if halt_seq > 0 and halt_seq <= self.handled_seq:
                return  # this halt was carried out already
            if halt_seq == 0 and self.gate.halted:
                return  # a hand-set halt: nobody waits for an acknowledgement of it
            t0 = time.monotonic()
            self.gate.close(seq)
            self.handled_seq = max(self.handled_seq, halt_seq)
            drained = await self.gate.drained(self.drain_timeout_s)
            ack = {
                **self.identity(),
                # Only the lease holder's acknowledgement counts (control/halt.py checks it).
                "halted": drained,
                "seq": halt_seq,
                "at_ms": wall_ms(),
                "drain_ms": round((time.monotonic() - t0) * 1000, 2),
                # Posts still unanswered after the drain timeout (0 unless the venue hangs).
                "inflight": self.gate.inflight,
            }
            if not drained:
                log.error(
                    "halt %d: %d post(s) still in flight after %.0f s",
                    halt_seq,
                    self.gate.inflight,
                    self.drain_timeout_s,
                )
            await self._answer(halt_seq, ack)
            log.warning("halted (control seq %d); acknowledged after %.1f ms", halt_seq, ack["drain_ms"])
            task = asyncio.ensure_future(self._sweep(halt_seq))
            self._sweeps.add(task)
            task.add_done_callback(self._sweeps.discard)

    async def _sweep(self, seq: int) -> None:
        """Cancel resting orders at the venue, and say what happened."""
        cancel_all = getattr(self.venue, "cancel_all", None)
        if cancel_all is None:
            outcome = "this venue has no cancel-all"
        elif self.deadline is not None and self.deadline.passed():
            outcome = (
                "open orders not cancelled by this worker: its lease deadline passed; the lease "
                "holder cancels them at its first tick under the halt"
            )
            log.error("halt %d: %s", seq, outcome)
            with contextlib.suppress(RedisError):
                await self.store.record_error("lease", outcome, now_ms=wall_ms())
        else:
            try:
                res = await asyncio.to_thread(cancel_all)
                done = res.get("canceled") or []
                refused = res.get("not_canceled") or {}
                outcome = f"{len(done)} open order(s) cancelled at the venue" + (
                    f", {len(refused)} not: {json.dumps(refused)[:200]}" if refused else ""
                )
            except Exception as e:
                outcome = f"cancelling open orders failed: {e}"
                log.error("halt %d: %s", seq, outcome)
                with contextlib.suppress(RedisError):
                    await self.store.record_error("halt", outcome, now_ms=wall_ms())
        with contextlib.suppress(RedisError):
            await self._answer(seq, {"cancel": outcome, "seq": seq})
            await self.store.record_halt_cancel(outcome)

    async def _answer(self, seq: int, value: dict[str, Any]) -> None:
        await self.store.answer_halt(seq, value)

    async def listen(self, stopping: asyncio.Event) -> None:
        """Follow the control channel until `stopping` is set; resubscribe after a Redis
        failure, and read the flags after every (re)subscription: a message published while
        we were not listening is not replayed by pub/sub."""
        channel = self.store.k.control_events()
        while not stopping.is_set():
            pubsub = self.store.r.pubsub()
            try:
                await pubsub.subscribe(channel)
                await self.sync(await self.store.read_control())
                while not stopping.is_set():
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                    if msg is not None and msg.get("type") == "message":
                        await self.on_event(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                # Redis away, or a bug: never let the listener die quietly; the tick's own
                # read of the flags covers the second it takes to come back.
                log.warning("control channel lost (%s: %s); resubscribing", type(e).__name__, e)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), 1.0)
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()

    async def close(self) -> None:
        for t in list(self._sweeps):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(t, 5.0)

"""The lease heartbeat: the holder renews its lease on a cadence of its own
(Settings.lease_renew_ms, a quarter of the lease by default), an asyncio task beside the tick,
so that the lease's liveness never waits for a tick and a standby on another host takes over
a dead holder within about the lease's length, whatever the tick length.

It feeds the holder's `LeaseDeadline` (kernel/lease.py), the fence every post checks: a
renewal acknowledged by the replicas extends it; one not acknowledged extends nothing; one
that fails (Redis unreachable, no answer within the lease) drops it at once, so nothing is
posted until a renewal succeeds again; one refused (a newer epoch or another holder) drops it
and sets `lost`, on which the worker stands down. A holder cut off from Redis therefore stops
posting on its own monotonic clock, before its lease can expire for anyone else.

It renews only while the worker's tick loop makes progress (`progress()`, called by the loop):
a loop hung inside a tick (a call that never returns) would otherwise keep the lease alive
forever, and no standby could take over (seen in make chaos-cluster: a holder renewing for six
minutes without a tick). Past `stall_ms` without progress the lease is let go: the deadline is
dropped, `lost` is set, and it expires for the standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.exceptions import RedisError

from baton.errors import UnreadableValue
from baton.settings import Settings
from kernel.clock import Clock, monotonic_ms
from kernel.lease import LeaseDeadline, Renewal, renew_replicated
from state.lease import LeaseRepo

log = logging.getLogger("baton.lease")


class LeaseHeartbeat:
    """Renews `holder`'s lease of `epoch` every `renew_ms` until stopped or lost."""

    def __init__(
        self,
        s: Settings,
        repo: LeaseRepo,
        clock: Clock,
        deadline: LeaseDeadline,
        holder: str,
        epoch: int,
        renew_ms: int | None = None,
        mono_ms: Callable[[], float] = monotonic_ms,
        stall_ms: int | None = None,
    ) -> None:
        self.s = s
        self.repo = repo
        self.clock = clock
        self.deadline = deadline
        self.holder = holder
        self.epoch = epoch
        self.renew_ms = renew_ms if renew_ms is not None else s.lease_renew_ms
        self._mono_ms = mono_ms
        # Three ticks (a sleep to the boundary, a tick, the work between ticks), the lease, and
        # a takeover's grace for a live predecessor's posts (kernel/tick.py unknown_grace_ms).
        self.stall_ms = stall_ms if stall_ms is not None else 3 * s.tick_ms + s.lease_ms + 10_000
        self._progress_ms = mono_ms()
        # Set when a renewal was refused: the lease belongs to a newer epoch.
        self.lost = asyncio.Event()
        self.why = ""
        # Counts, for tests and the log: acknowledged, not acknowledged, failed renewals.
        self.renewed = 0
        self.unacked = 0
        self.failed = 0
        self._reported = ""
        self._task: asyncio.Task[None] | None = None

    def progress(self) -> None:
        """The tick loop is alive (called at every step of it)."""
        self._progress_ms = self._mono_ms()

    def _stalled(self) -> bool:
        idle_ms = self._mono_ms() - self._progress_ms
        if idle_ms <= self.stall_ms:
            return False
        self.deadline.lost()
        self.why = (
            f"the tick loop made no progress for {idle_ms:.0f} ms (more than {self.stall_ms} ms): "
            "the lease is let go for a standby"
        )
        log.error("lease of epoch %d: %s", self.epoch, self.why)
        self.lost.set()
        return True

    def _report(self, why: str) -> None:
        # Once per distinct reason in a row: a Redis outage would otherwise log four lines a second.
        if why != self._reported:
            self._reported = why
            log.warning("lease of epoch %d not renewed: %s", self.epoch, why)

    async def renew_once(self) -> Renewal | None:
        """One renewal; its verdict (None: it failed, the deadline is dropped)."""
        stamp = self.deadline.stamp()
        try:
            got = await asyncio.wait_for(
                renew_replicated(
                    self.repo, self.s, self.holder, self.epoch, self.clock.now_ms(), self.s.lease_ms
                ),
                self.s.lease_ms / 1000,
            )
        except (RedisError, OSError, TimeoutError, UnreadableValue) as e:
            self.failed += 1
            self.deadline.lost()
            self._report(f"{type(e).__name__}: {e}; posting stops until a renewal succeeds")
            return None
        if not got.ours:
            self.deadline.lost()
            self.why = got.why
            self.lost.set()
            log.error("lease lost: %s", got.why)
            return got
        if got.acked:
            self.deadline.renewed(stamp)
            self.renewed += 1
            if self._reported:
                log.info("lease of epoch %d renewed again", self.epoch)
                self._reported = ""
        else:
            self.unacked += 1
            self._report(f"{got.why}; the deadline is not extended")
        return got

    async def run(self) -> None:
        """Renew every renew_ms (measured from each renewal's start) until lost."""
        while not self.lost.is_set():
            if self._stalled():
                return
            started = self._mono_ms()
            try:
                await self.renew_once()
            except Exception as e:
                # A bug must not end the heartbeat quietly: nothing is posted meanwhile.
                self.deadline.lost()
                log.exception("lease renewal failed: %s", e)
            if self.lost.is_set():
                return
            await asyncio.sleep(max(0.0, started + self.renew_ms - self._mono_ms()) / 1000)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self.run())

    async def stop(self) -> None:
        """Stop renewing (a renewal in flight is abandoned: the lease is handed over,
        released or lost, and the deadline is the caller's to drop)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

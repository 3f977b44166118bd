"""A standby worker's wait for the lease (`Standby`): it looks ten times a second (one read
while another holder's lease is live, aimed at that lease's expiry when it comes sooner) and
takes the lease when it is free or expired, when its holder's process is gone from this host
(a crash: no waiting for the expiry), or when a planned handover gives it over (a BLPOP on its
wake list notices at once). With replicas configured, held means acknowledged by them: an
epoch a failover could take back is never traded on (the next look extends the lease and
waits again). Redis away or refusing writes in a failover is a reason to look again, never
to die: that would cost the takeover a restart and a warm-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import msgspec
from redis.exceptions import RedisError

from baton.errors import UnreadableValue
from baton.settings import Settings
from kernel import lease
from kernel.clock import Clock, monotonic_ms, wall_ms
from state.store import Store

log = logging.getLogger("baton.worker")

# A standby looks at the lease this often: a dead holder on another host is taken over within
# the lease plus this. A live lease held elsewhere costs one HGETALL per look.
STANDBY_POLL_MS = 100
# ... and writes its heartbeat hash at most this often meanwhile.
STANDBY_BEAT_MS = 1000
# A look that outlasts this met a primary that answers nothing (cut off): it is dropped and
# made again, on a connection the Sentinels name anew, instead of waiting out the socket's
# timeout (two ticks). Not shorter: finding the new primary may first try a Sentinel that is
# cut off too (a second's connect timeout) before one that answers.
STANDBY_LOOK_MS = 3000


class Standby:
    """Looks at the lease for `holder` until it holds it or `stopping` is set. `beat` writes
    the worker's heartbeat; `report` sets the error it shows ('' clears it)."""

    def __init__(
        self,
        s: Settings,
        store: Store,
        clock: Clock,
        holder: str,
        color: str,
        deadline: lease.LeaseDeadline,
        stopping: asyncio.Event,
        beat: Callable[[], Awaitable[None]],
        report: Callable[[str], None],
    ) -> None:
        self.s, self.store, self.clock = s, store, clock
        self.holder, self.color = holder, color
        self.deadline, self.stopping = deadline, stopping
        self.beat, self.report = beat, report
        self._redis_was_away = False  # looks failing: said once per outage

    async def take(self) -> lease.Acquired | None:
        """The acquisition that made the lease ours, acknowledged, with `before` and `dead`
        as the first attempt that held it found them (a retry finds only us); None when asked
        to stop first. The deadline is armed from the moment that acquisition was asked."""
        reported = ""
        first: lease.Acquired | None = None
        beat_ms = -float(STANDBY_BEAT_MS)
        look_limit_s = max(STANDBY_LOOK_MS, self.s.lease_ms) / 1000
        while not self.stopping.is_set():
            stamp = self.deadline.stamp()
            try:
                got = await asyncio.wait_for(
                    lease.acquire(
                        self.store,
                        self.clock,
                        self.holder,
                        self.color,
                        self.s.release,
                        self.s.lease_ms,
                        self.s,
                    ),
                    look_limit_s,
                )
            except (RedisError, OSError, TimeoutError) as e:
                # Unreachable, or refusing writes for a while (NOREPLICAS, READONLY) in a failover.
                await self._redis_away(e)
                continue
            except UnreadableValue as e:
                # A garbage epoch counter or lease: nobody can hold a lease safely (every
                # fenced write compares the epoch). Stand by and say why, once per change,
                # until it is repaired; restarting would change nothing.
                if str(e) != reported:
                    reported = str(e)
                    log.error("cannot take the lease until this is repaired: %s", e)
                    with contextlib.suppress(RedisError, OSError):
                        await self.store.record_error("worker", f"lease not taken: {e}", now_ms=wall_ms())
                self.report(f"lease not taken: {e}")
                await self.beat()
                await self._wait(1.0)
                continue
            if got.held and (first is None or first.epoch != got.epoch):
                first = got
            if got.held and got.acked and first is not None:
                self.deadline.renewed(stamp)
                if reported:
                    self.report("")
                return msgspec.structs.replace(got, before=first.before, dead=first.dead)
            if got.held and got.why != reported:
                reported = got.why
                log.warning("not trading on the lease of epoch %d yet: %s", got.epoch, got.why)
            if monotonic_ms() - beat_ms >= STANDBY_BEAT_MS:
                beat_ms = monotonic_ms()
                await self.beat()
            # A handover pushes our wake list; otherwise look again soon (the holder may die),
            # at the live lease's expiry when that comes sooner: a dead holder on another host
            # is then taken over as its lease runs out, not up to a look later.
            look_ms = STANDBY_POLL_MS
            if got.expires_ms:
                look_ms = min(look_ms, max(1, got.expires_ms + 1 - self.clock.now_ms()))
            try:
                await asyncio.wait_for(
                    self.store.wait_wake(self.holder, look_ms / 1000), look_ms / 1000 + look_limit_s
                )
            except (RedisError, OSError, TimeoutError) as e:
                await self._redis_away(e)
                continue
            self._redis_was_away = False
        return None

    async def _redis_away(self, e: Exception) -> None:
        """A look failed (the primary failing over, or cut off: a read times out): look
        again shortly."""
        if not self._redis_was_away:
            self._redis_was_away = True
            log.warning("standby: Redis not reachable, looking again: %s", f"{type(e).__name__}: {e}")
        await self._wait(STANDBY_POLL_MS / 1000)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

"""The worker's life: readiness, standby, trading at wall-clock boundaries, and the three
ways out of trading (`Worker`). The process around it (arguments, clients, signals) is
worker/main.py.

1. readiness: schema compatible, Redis state readable, every slot's strategy dry-evaluated;
   a failure is written to its heartbeat (`state=failed`, `error`) and it exits 4;
2. standby (`state=ready`, worker/standby.py): looks ten times a second and takes the lease
   when it is free or expired, its holder died on this host, or a planned handover gives it
   over; with replicas configured, only once they acknowledged the acquisition;
3. active: the lease heartbeat renews the lease beside the ticks (kernel/lease_heartbeat.py);
   reconciles in-flight intents with the venue, then runs ticks; between ticks it hot-reloads
   changed strategy modules;
4. out: SIGTERM finishes the tick, releases the lease and records a clean stop; a handover
   request read with tick k is carried out right after it (the successor runs k+1); a lost
   lease (a newer epoch exists, found by the heartbeat or the tick) stops it at once, exit 3.
A worker that dies without a clean stop or a handover leaves its gap counted as missed ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from baton.coredumps import dumpable
from baton.errors import LeaseLost, NotReady, SchemaMismatch, UnreadableValue
from baton.settings import Settings
from kernel import boundaries, gcpolicy, lease
from kernel.candle_cache import lookback_cap_s
from kernel.clock import Clock, wall_ms
from kernel.halt import HaltGate, HaltResponder
from kernel.lease_heartbeat import LeaseHeartbeat
from kernel.readiness import STRATEGY_PACKAGE
from kernel.reload import StrategyReloader
from kernel.tick import Identity, TickRunner
from state.store import Store
from state.structs import ControlFlags, Slot
from state.system import WORKER_SETTINGS, published_fields
from worker import handover, placement, takeover
from worker.standby import Standby

log = logging.getLogger("baton.worker")

REDIS_RETRY_S = 1.0
# Exit codes supervisor.conf lists as expected (no restart): 0 clean stop, 4 not ready.
# Anything else (a crash, a lost lease: 3) is restarted, and the new process waits in standby.
EXIT_NOT_READY = 4
EXIT_LOST_LEASE = 3
HANDED_OVER = -1  # trade()'s answer after a planned handover (not an exit code)


def configured_slots(s: Settings, params: dict[str, float] | None = None) -> list[Slot]:
    """The slots a fresh Redis is seeded with (BATON_ASSETS x BATON_TIMEFRAMES, strategy
    snipe): with no parameters, the strategy's declared defaults apply. After the seeding the
    slots hash is the truth (`baton slots`), and an id removed there is not seeded again."""
    return [
        Slot(id=f"{a}-{tf}", asset=a, timeframe=tf, stake_usd=s.stake_usd, params=dict(params or {}))
        for a in s.assets
        for tf in s.timeframes
    ]


class Worker:
    """One worker process: readiness check, standby, trading, and the ways out of trading
    (clean stop, planned handover, lost lease)."""

    def __init__(
        self,
        s: Settings,
        store: Store,
        venue: Any,
        clock: Clock,
        color: str,
        reloader: StrategyReloader | None = None,
        settler: Any = None,
    ) -> None:
        self.s = s
        # kernel.settlement.Enqueuer: settlement jobs for the settle program (None: none).
        self.settler = settler
        self.store = store
        self.venue = venue
        self.clock = clock
        self.color = color
        self.holder = lease.new_holder(color, s.host)
        self.stopping = asyncio.Event()
        self.state = "starting"
        self.error = ""
        self.epoch = 0
        self.last_tick = -1
        self.ready_ms = 0
        self.reload_seq = 0
        self.reloader = reloader or StrategyReloader(STRATEGY_PACKAGE, max_lookback_s=lookback_cap_s(s))
        self.runner: TickRunner | None = None
        self.predecessor_maybe_alive = False
        # Why the lease came to us, when not by a planned handover: a sweep for orders that
        # Redis may have lost is owed before trading (kernel/adopt.py).
        self.takeover_reason = ""
        # The halt inside one tick (kernel/halt.py): the control channel is followed while
        # this worker trades, and its gate is checked before every strategy call and post.
        self.gate = HaltGate()
        self._listening = asyncio.Event()
        self._listener: asyncio.Future[None] | None = None
        # Until when this worker may post (kernel/lease.py): armed when it takes the lease and
        # by every tick's renewal, dropped when it loses, hands over or releases the lease.
        self.deadline = lease.LeaseDeadline(s.lease_ms, s.lease_margin_ms)
        # Renews the lease while this worker trades (one per holding: its epoch).
        self.heartbeat: LeaseHeartbeat | None = None
        # worker/placement.py: the lease off the Redis primary's host; `placed`: the last
        # handover was one of its requests.
        self.placement = placement.Placement(s, store, color)
        self.placed = False
        self.halt = HaltResponder(
            store, venue, self.gate, self._who, on_change=self._beat, deadline=self.deadline
        )

    def _who(self) -> dict[str, Any]:
        return {"color": self.color, "holder": self.holder, "epoch": self.epoch, "pid": os.getpid()}

    def request_stop(self) -> None:
        self.stopping.set()

    async def _beat(self) -> None:
        try:
            await self._heartbeat()
        except (RedisError, OSError) as e:
            # Redis is away, or refuses writes for a while (NOREPLICAS right after a failover,
            # READONLY from a demoted primary): the tick loop notices too; a missing heartbeat
            # is not a reason to die (make chaos-cluster found one that did).
            log.warning("heartbeat not written: %s", e)

    async def _heartbeat(self) -> None:
        hashes = self.reloader.running_hashes()
        await self.store.heartbeat(
            self.color,
            {
                "color": self.color,
                "release": self.s.release,
                "code_dir": os.environ.get("BATON_CODE_DIR", ""),
                "pid": os.getpid(),
                "state": self.state,
                "halted": int(self.gate.halted),
                "paused": int(self.gate.paused),
                "error": self.error[:1500],
                "epoch": self.epoch,
                "last_tick": self.last_tick,
                "holder": self.holder,
                "ready_ms": self.ready_ms,
                "strategies": " ".join(f"{k}={v}" for k, v in sorted(hashes.items())),
                "heartbeat_ms": self.clock.now_ms(),
                # Read from the kernel, not remembered: what docs/programs.md promises, as it is.
                "dumpable": {True: "1", False: "0", None: ""}[dumpable()],
            },
            ttl_ms=max(3 * self.s.tick_ms, 5000),
        )

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    def _lost(self) -> bool:
        return self.heartbeat is not None and self.heartbeat.lost.is_set()

    async def _sleep_until(self, t_ms: int) -> bool:
        """Sleep to the boundary; False when a stop request came first, or the heartbeat
        found the lease lost (no new tick then)."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until_ms(t_ms))
        waits = {sleeper, asyncio.ensure_future(self.stopping.wait())}
        if self.heartbeat is not None:
            waits.add(asyncio.ensure_future(self.heartbeat.lost.wait()))
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return sleeper in done and not self.stopping.is_set() and not self._lost()

    async def prepare(self) -> None:
        """Schema check and slot set-up; retried while Redis is not reachable yet."""
        while not self.stopping.is_set():
            try:
                await self.store.ensure_schema()
                await self.store.scripts.load()
                await self.store.ensure_slots(configured_slots(self.s))
                # What `baton status` reports as the stack's settings (state/system.py).
                fields = published_fields(self.s, WORKER_SETTINGS, self.clock.now_ms())
                await self.store.publish_system(f"worker-{self.color}", fields)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                log.warning("redis not reachable yet (%s); retrying", e)
            await self._wait(REDIS_RETRY_S)

    def _runner(self) -> TickRunner:
        if self.runner is None:
            self.runner = TickRunner(
                self.s,
                self.store,
                self.venue,
                self.clock,
                Identity(self.holder, self.color, self.s.release, 0),
                settler=self.settler,
                halt=self.halt,
                deadline=self.deadline,
            )
        return self.runner

    async def ready(self) -> None:
        """The readiness gate of a deploy: code imported (we are running), Redis reachable,
        schema compatible, candle windows and positions readable, every slot's strategy
        dry-evaluated. Raises NotReady or SchemaMismatch; only then may the lease be taken."""
        self.state = "checking"
        await self._beat()
        await self.prepare()
        if self.stopping.is_set():
            return
        self.reloader.baseline()
        self._code_running()
        # Reload requests from now on are ours (one made during a handover is not lost).
        self.reload_seq = (await self.store.read_control()).reload_seq
        checked = await self._runner().dry_run()
        self.state = "ready"
        self.ready_ms = self.clock.now_ms()
        await self._beat()
        log.info("ready: release %s, %d slot(s) dry-evaluated", self.s.release, checked)

    async def acquire(self) -> bool:
        """Standby until this worker holds the lease (worker/standby.py), or is asked to stop
        (False)."""
        if self.state != "handed-over":
            self.state = "ready"
        standby = Standby(
            self.s,
            self.store,
            self.clock,
            self.holder,
            self.color,
            self.deadline,
            self.stopping,
            self._beat,
            self._report,
        )
        got = await standby.take()
        if got is None:
            return False
        epoch, before, dead = got.epoch, got.before, got.dead
        self.predecessor_maybe_alive = bool(before) and before not in (self.holder, dead)
        # A handover made the lease ours before we asked: anything else is a takeover.
        taken = f"took the lease over from {before or 'nobody'}"
        self.takeover_reason = "" if before == self.holder else taken
        self.epoch = epoch
        self.state = "active"
        log.info("holding the lease with epoch %d%s", epoch, f" (holder {dead} had died)" if dead else "")
        return True

    def _report(self, error: str) -> None:
        self.error = error

    async def become_active(self) -> TickRunner:
        await self.store.adopt_schema()
        # Once after an upgrade (or after a release that did not keep them wrote): count the
        # history into the counts the views read; O(1) when they agree with the hashes.
        if await self.store.ensure_counts(self.clock.now_ms()):
            log.info("counted the intents and positions hashes into %s", self.store.k.counts())
        await takeover.open_books(self.s, self.store, self.venue, self.epoch, self.clock)
        # A predecessor that is gone (dead, stopped, or handed over after its tick) posts
        # nothing more: what the venue does not know never arrived. One whose lease merely
        # expired may still be posting: its unknown orders get the grace period.
        grace = self._runner().unknown_grace_ms if self.predecessor_maybe_alive else 0
        await takeover.adopt_orders(
            self._runner(), self.store, self.epoch, self.clock, self.takeover_reason, grace
        )
        await takeover.reconcile_in_flight(self.store, self.venue, self.epoch, self.clock, grace)
        runner = self._runner()
        runner.ident = Identity(self.holder, self.color, self.s.release, self.epoch)
        return runner

    async def maybe_reload(self, control: ControlFlags | None) -> None:
        """Between ticks: swap changed strategy modules in (or refuse them), and report."""
        forced = False
        # ready() took the request counter as it was: only requests made since are ours.
        if control is not None and control.reload_seq != self.reload_seq:
            self.reload_seq = control.reload_seq
            forced = True
        res = await self.reloader.check(force=forced)
        if res is None:
            return
        if res.state == "ok":
            log.info("strategies reloaded: %s", ", ".join(res.modules))
            self._code_running()
        else:
            log.error("strategy reload refused, the old code keeps running: %s", res.error)
            await self.store.record_error(
                "reload", f"refused {', '.join(res.modules)}: {res.error}", now_ms=wall_ms()
            )
        await self.store.record_reload(self.color, self.s.release, res)

    def _code_running(self) -> None:
        """The running strategies' code ids for the input log's records of the ticks from now
        on, and their files kept by content (kernel/strategy_store.py): hashed here, at load
        and reload, never on a tick's path."""
        self._runner().entries.notes.code = self.reloader.code_ids()
        for p in self.reloader.keep_running(Path(self.s.home)):
            log.warning("%s", p)

    async def _someone_else_trades(self) -> bool:
        current = await lease.fetch_lease(self.store)
        return lease.trades_elsewhere(current, self.holder, self.clock.now_ms())

    async def run(self) -> int:
        try:
            await self.ready()
        except SchemaMismatch as e:
            return await self.refuse(str(e))  # never write data this code cannot read
        except NotReady as e:
            if await self._someone_else_trades():
                return await self.refuse(str(e))  # a deploy: the active worker trades on
            # A restart after a crash with nobody else trading: a worker whose strategy fails
            # on some slots still settles, reconciles and obeys a halt (the tick isolates a
            # strategy's exception per slot); no worker at all would do none of that.
            self.error = str(e)
            log.error("readiness failed but nobody else trades, so trading anyway: %s", e)
            await self.store.record_error(
                "worker", f"readiness failed, trading anyway: {e}", now_ms=wall_ms()
            )
        while True:
            if not await self.acquire():
                await self.stand_down()
                return 0
            rc = await self.trade()
            if rc != HANDED_OVER:
                return rc
            # Handed over: stand by (as "handed-over") until stopped, so that if the successor
            # dies before we are stopped, its lease is taken back rather than left to expire.
            # Handed over for placement (worker/placement.py): a warm standby like any other.
            self.state = "ready" if self.placed else "handed-over"

    async def trade(self) -> int:
        """Hold the lease and tick until stopped (0), the lease is lost (3) or handed over."""
        # Renewing from the moment the lease is ours: the takeover's reconciliation may take
        # longer than the lease.
        self.heartbeat = LeaseHeartbeat(
            self.s, self.store, self.clock, self.deadline, self.holder, self.epoch
        )
        self.heartbeat.start()
        try:
            runner = await self.become_active()
            self._listening = asyncio.Event()
            self._listener = asyncio.ensure_future(self.halt.listen(self._listening))
            try:
                return await self._ticks(runner)
            finally:
                # Stopped, handed over or lost: whatever is still on its way posts nothing more.
                await self._stop_heartbeat()
                self._listening.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._listener, 2.0)
                await self.halt.close()
        finally:
            await self._stop_heartbeat()

    async def _stop_heartbeat(self) -> None:
        """No more renewals, and nothing posted from now on."""
        self.deadline.lost()
        if self.heartbeat is not None:
            await self.heartbeat.stop()

    async def _lost_lease(self, why: str) -> int:
        log.error("standing down: %s", why)
        self.state = "lost-lease"
        await self._beat()
        return EXIT_LOST_LEASE

    def _keep_listening(self) -> None:
        """The control listener survives Redis failures by itself; should it still end (a
        bug), it is restarted here, between ticks, and the end is reported."""
        if self._listener is not None and self._listener.done() and not self._listening.is_set():
            if not self._listener.cancelled() and self._listener.exception() is not None:
                log.error("control listener ended: %r; restarting it", self._listener.exception())
            self._listener = asyncio.ensure_future(self.halt.listen(self._listening))

    async def _ticks(self, runner: TickRunner) -> int:
        collector = gcpolicy.Collector()
        collector.start()
        try:
            return await self._tick_loop(runner, collector)
        finally:
            collector.stop()
            runner.close()

    async def _tick_loop(self, runner: TickRunner, collector: gcpolicy.Collector) -> int:
        tick = boundaries.next_tick(self.clock.now_ms(), self.s.tick_ms)
        missed = await takeover.takeover_gap(self.store, tick, self.clock.now_ms())
        await self.store.mark_clean_stop(None)
        await self._beat()
        while not self.stopping.is_set():
            if self.heartbeat is not None:
                self.heartbeat.progress()
            if not await self._sleep_until(boundaries.boundary_ms(tick, self.s.tick_ms)):
                if self._lost() and self.heartbeat is not None:
                    return await self._lost_lease(self.heartbeat.why)
                break
            out = None
            try:
                async with self.reloader.lock:  # a reload waits for the tick in progress
                    out = await runner.run(tick, missed)
                self.last_tick = tick
                if self.heartbeat is not None:
                    self.heartbeat.progress()
                if out.record.missed_before:
                    log.warning("tick %d: %d tick(s) missed before it", tick, out.record.missed_before)
            except LeaseLost as e:
                return await self._lost_lease(str(e))
            except Exception as e:
                # Redis hiccup or a bug inside one tick: report, keep the loop alive; the
                # lease heartbeat and the next tick's renewal decide whether we still trade.
                log.exception("tick %d failed: %s", tick, e)
                # Redis failing the tick may fail its journal line too: no reason to die.
                with contextlib.suppress(RedisError, OSError):
                    await self.store.record_error("worker", f"tick {tick} failed: {e!r}", now_ms=wall_ms())
            if self._lost() and self.heartbeat is not None:
                # Found by the heartbeat during the tick (whose posts the dropped deadline stopped).
                return await self._lost_lease(self.heartbeat.why)
            requested = out is not None and out.handover.get("state") == "requested"
            if requested and out is not None and await self.hand_over(out.handover, tick):
                self.last_tick = -1
                # The last tick's decision and input log entries: a record, not trading, so
                # written after the lease passed (the successor's first tick is a boundary away).
                await self._flush_log(runner)
                return HANDED_OVER
            try:
                # Settlements the tick found due, markets of windows ahead: not trading,
                # so done here, before the next boundary, not inside the tick.
                await runner.between_ticks(boundaries.boundary_ms(tick + 1, self.s.tick_ms))
            except Exception as e:
                log.exception("work between ticks failed: %s", e)
            try:
                # The lease off the Redis primary's host when another host can trade.
                await self.placement.check(self.holder, self.clock.now_ms())
            except Exception as e:
                log.warning("placement check failed: %s", e)
            halted = self.gate.halted or (out is not None and out.control.halted)
            try:
                # Under a halt no strategy code runs, not even a reload's dry evaluation: a
                # changed module waits for the resume (its request counter stays unseen).
                if not halted:
                    await self.maybe_reload(out.control if out is not None else None)
            except Exception as e:
                log.exception("strategy reload check failed: %s", e)
            self._keep_listening()
            await self._beat()
            tick, missed = boundaries.plan_next(tick, self.clock.now_ms(), self.s.tick_ms)
            # Garbage is collected here, in the slack before the next boundary, never inside
            # a tick (kernel/gcpolicy.py).
            collector.after_tick(boundaries.boundary_ms(tick, self.s.tick_ms) - self.clock.now_ms())
        await self.stand_down()
        return 0

    async def _flush_log(self, runner: TickRunner) -> None:
        try:
            problems = await runner.entries.notes.flush()
        except Exception as e:
            problems = [f"decision and input log of the last tick not appended: {e!r}"]
        for p in problems:
            log.warning("after the handover: %s", p)

    async def hand_over(self, req: dict[str, str], tick: int) -> bool:
        """Carry out a planned handover right after tick `tick` (worker/handover.py); False
        when it was refused (then this worker keeps trading, and the deploy reports why)."""
        handed = await handover.hand_over(
            self.s, self.store, self.clock, self.holder, self.epoch, self.heartbeat, req, tick
        )
        if handed:
            self.placed = req.get("kind") == placement.KIND
        return handed

    async def refuse(self, why: str) -> int:
        """Readiness failed: say why where the deploy looks (heartbeat, log), never trade."""
        self.state = "failed"
        self.error = why
        log.error("not ready, refusing to trade: %s", why)
        await self._beat()
        return EXIT_NOT_READY

    async def stand_down(self) -> None:
        prev = self.state
        self.state = "stopped"
        # Nothing posted and nothing renewed once the lease may be released.
        await self._stop_heartbeat()
        if prev == "active" and self.last_tick >= 0:
            await self.store.mark_clean_stop(self.last_tick)
        # Also when a stop came just as a handover gave us the lease: let the next one have it.
        try:
            if await lease.release(self.store, self.holder):
                log.info("stopped cleanly after tick %d, lease released", self.last_tick)
        except UnreadableValue as e:
            log.error("stopping with the lease unreadable, nothing to release: %s", e)
        await self._beat()

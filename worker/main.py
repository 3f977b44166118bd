"""The worker process: take the lease, run ticks at wall-clock boundaries, stand down cleanly.

`python -m worker --color blue|green`. On SIGTERM the worker finishes the tick in progress,
gives the lease up and records a clean stop, so that the gap until the next worker is not
counted as missed ticks. A worker that dies without that record leaves the gap counted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from baton import settings as settings_mod
from baton.settings import Settings
from kernel import ticks
from kernel.clock import Clock, SystemClock
from kernel.tick import Identity, LeaseLost, TickRunner
from state.keys import Keys
from state.store import SchemaMismatch, Store, connect
from state.structs import Slot, usd_to_micros

log = logging.getLogger("baton.worker")

REDIS_RETRY_S = 1.0


def configured_slots(s: Settings) -> list[Slot]:
    return [
        Slot(
            id=f"{a}-{tf}",
            asset=a,
            timeframe=tf,
            stake_usd=s.stake_usd,
            params={"edge": s.snipe_edge, "entry_s": float(s.snipe_entry_s)},
        )
        for a in s.assets
        for tf in s.timeframes
    ]


class Worker:
    def __init__(self, s: Settings, store: Store, venue: Any, clock: Clock, color: str) -> None:
        self.s = s
        self.store = store
        self.venue = venue
        self.clock = clock
        self.color = color
        self.holder = f"{color}:{os.getpid()}:{secrets.token_hex(4)}"
        self.stopping = asyncio.Event()
        self.state = "starting"
        self.epoch = 0
        self.last_tick = -1

    def request_stop(self) -> None:
        self.stopping.set()

    async def _beat(self) -> None:
        try:
            await self._heartbeat()
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            # Redis is away: the tick loop notices too; a missing heartbeat is not a reason to die.
            log.warning("heartbeat not written: %s", e)

    async def _heartbeat(self) -> None:
        await self.store.heartbeat(
            self.color,
            {
                "color": self.color,
                "release": self.s.release,
                "pid": os.getpid(),
                "state": self.state,
                "epoch": self.epoch,
                "last_tick": self.last_tick,
                "holder": self.holder,
                "heartbeat_ms": self.clock.now_ms(),
            },
            ttl_ms=max(3 * self.s.tick_ms, 5000),
        )

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    async def _sleep_until(self, t_ms: int) -> bool:
        """Sleep to the boundary; False when a stop request came first (no new tick then)."""
        sleeper = asyncio.ensure_future(self.clock.sleep_until_ms(t_ms))
        stopper = asyncio.ensure_future(self.stopping.wait())
        done, pending = await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return sleeper in done and not self.stopping.is_set()

    async def prepare(self) -> None:
        """Schema check and slot set-up; retried while Redis is not reachable yet."""
        while not self.stopping.is_set():
            try:
                await self.store.ensure_schema()
                await self.store.scripts.load()
                await self.store.ensure_slots(configured_slots(self.s))
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as e:
                log.warning("redis not reachable yet (%s); retrying", e)
            await self._wait(REDIS_RETRY_S)

    async def acquire(self) -> bool:
        """Wait until this worker holds the lease (or is asked to stop)."""
        self.state = "standby"
        while not self.stopping.is_set():
            got, epoch, _other = await self.store.acquire_lease(
                self.holder, self.color, self.s.release, self.clock.now_ms(), self.s.lease_ms
            )
            if got:
                self.epoch = epoch
                self.state = "active"
                log.info("holding the lease with epoch %d", epoch)
                return True
            await self._beat()
            await self._wait(min(self.s.tick_ms / 4000, 1.0))
        return False

    async def takeover_gap(self, first_tick: int) -> int:
        """Ticks lost between the previous holder's last journaled tick and our first one."""
        last, clean = await self.store.read_stop_marks()
        if last is None or clean == last:
            return 0
        return max(0, first_tick - last - 1)

    async def run(self) -> int:
        await self.prepare()
        if not await self.acquire():
            return 0
        if self.s.paper_cash_usd > 0:
            await self.store.deposit(
                self.epoch, "deposit:paper-initial", usd_to_micros(self.s.paper_cash_usd), self.clock.now_ms()
            )
        runner = TickRunner(
            self.s,
            self.store,
            self.venue,
            self.clock,
            Identity(self.holder, self.color, self.s.release, self.epoch),
        )
        tick = ticks.next_tick(self.clock.now_ms(), self.s.tick_ms)
        missed = await self.takeover_gap(tick)
        await self.store.mark_clean_stop(None)
        await self._beat()
        while not self.stopping.is_set():
            if not await self._sleep_until(ticks.boundary_ms(tick, self.s.tick_ms)):
                break
            try:
                out = await runner.run(tick, missed)
                self.last_tick = tick
                if out.record.missed_before:
                    log.warning("tick %d: %d tick(s) missed before it", tick, out.record.missed_before)
            except LeaseLost as e:
                log.error("standing down: %s", e)
                self.state = "lost-lease"
                await self._beat()
                return 3
            except Exception as e:
                # Redis hiccup or a bug inside one tick: report, keep the loop alive; the
                # lease renewal inside the next tick decides whether we still trade.
                log.exception("tick %d failed: %s", tick, e)
                await self.store.record_error("worker", f"tick {tick} failed: {e!r}")
            await self._beat()
            tick, missed = ticks.plan_next(tick, self.clock.now_ms(), self.s.tick_ms)
        await self.stand_down()
        return 0

    async def stand_down(self) -> None:
        self.state = "stopped"
        if self.last_tick >= 0:
            await self.store.mark_clean_stop(self.last_tick)
        await self.store.release_lease(self.holder, self.epoch)
        await self._beat()
        log.info("stopped cleanly after tick %d", self.last_tick)


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m worker", description="Baton trading worker")
    ap.add_argument("--color", choices=["blue", "green"], required=True)
    return ap.parse_args(argv)


async def amain(argv: list[str]) -> int:
    from kernel.venue import ClobVenue

    args = _parse(argv)
    s = settings_mod.load()
    store = Store(connect(s.redis_url), Keys(s.prefix))
    venue = ClobVenue(s.clob_url, s.gamma_url, settings_mod.private_key(), s.chain_id)
    w = Worker(s, store, venue, SystemClock(), args.color)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.request_stop)
    try:
        return await w.run()
    except SchemaMismatch as e:
        log.error("refusing to trade: %s", e)
        return 2
    finally:
        venue.close()
        await store.r.aclose()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: one line per venue call would drown the tick log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.exit(asyncio.run(amain(sys.argv[1:] if argv is None else argv)))

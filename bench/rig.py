"""The kernel as the worker builds it, against a benchmark's own Redis: a store, the lease, a
`TickRunner` with its settler and halt gate, and the worker's loop around it, recording what
every tick did and how much it cost."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, cast

from baton.settings import load
from bench.wire import Wire
from kernel import boundaries, gcpolicy
from kernel.halt import HaltGate, HaltResponder
from kernel.settlement import Enqueuer, settled
from kernel.tick import Identity, TickRunner
from state import connection
from state.keys import Keys
from state.store import Store
from state.structs import POSITION, usd_to_micros
from worker.lifecycle import configured_slots

PREFIX = "baton:"
WARMUP_TICKS = 3
# What the machine line says of `venues.stub.StubVenue`, the venue the tick benchmarks run on.
STUB_VENUE = "in-process stand-in (instant; every order fills at the ask)"


# snipe enters in the last 5 s of a window (a third of a 15 s one otherwise).
BENCH_PARAMS = {"entry_s": 5.0}


def bench_settings(url: str, assets: list[str], timeframes: tuple[str, ...], tick_ms: int, home: str) -> Any:
    return load(
        {
            "BATON_HOME": home,
            "BATON_REDIS_URL": url,
            "BATON_TICK_MS": str(tick_ms),
            "BATON_ASSETS": ",".join(assets),
            "BATON_TIMEFRAMES": ",".join(timeframes),
            "BATON_STAKE_USD": "1",
            # Every slot may enter every window: limits far above what N slots can stake.
            "BATON_MAX_EXPOSURE_USD": "1000000000",
            "BATON_PAPER_CASH_USD": "100000000",  # 1e14 micros: the ledger scripts take 15 digits
            "BATON_DAILY_LOSS_LIMIT_USD": "0",
        }
    )


@dataclass
class TickSample:
    tick: int
    kind: str  # entry | settle | idle | failed (the tick raised, as the worker would log it)
    duration_ms: float
    jitter_ms: float
    journal_duration_ms: int
    journal_jitter_ms: int
    missed_before: int
    evaluated: int
    orders: int
    settled: int
    errors: int
    failure: str
    async_rt: int
    sync_rt: int
    async_cmds: int
    sync_cmds: int
    # The worker's work after the tick, before the next boundary (TickRunner.between_ticks:
    # settlement enqueue, market prefetch): not part of the tick's duration.
    between_ms: float = 0.0

    @property
    def round_trips(self) -> int:
        return self.async_rt + self.sync_rt

    @property
    def commands(self) -> int:
        return self.async_cmds + self.sync_cmds


def kind_of(rec: Any) -> str:
    if rec.orders:
        return "entry"
    if rec.settled:
        return "settle"
    return "idle"


class Rig:
    """A store, a lease, and a TickRunner as the worker builds it (settler and halt gate)."""

    def __init__(self, settings: Any, venue: Any, clock: Any) -> None:
        self.s = settings
        self.venue = venue
        self.clock = clock

    async def start(self) -> None:

        s = self.s
        self.redis = connection.async_client(s, timeout_s=max(connection.TIMEOUT_S, 2 * s.tick_ms / 1000))
        self.store = Store(self.redis, Keys(s.prefix))
        self.sync = connection.client(s, decoded=False)
        await self.store.ensure_schema()
        await self.store.scripts.load()
        await self.store.ensure_slots(configured_slots(s, BENCH_PARAMS))
        now = self.clock.now_ms()
        holder = f"blue:bench:{os.getpid()}:0"
        got, self.epoch, _ = await self.store.acquire_lease(holder, "blue", "bench", now, s.lease_ms)
        if not got:
            raise RuntimeError("the bench could not take the lease")
        await self.store.adopt_schema()
        await self.store.ensure_counts(now)
        await self.store.deposit(self.epoch, "deposit:paper-initial", usd_to_micros(s.paper_cash_usd), now)
        self.gate = HaltGate()
        halt = HaltResponder(
            self.store, self.venue, self.gate, lambda: {"color": "blue", "epoch": self.epoch}
        )
        self.runner = TickRunner(
            s,
            self.store,
            self.venue,
            self.clock,
            Identity(holder, "blue", "bench", self.epoch),
            settler=Enqueuer(self.sync, s.prefix),
            halt=halt,
        )

    async def settle_closed(self, now_ms: int) -> int:
        """What the settle program's jobs would do with the settlements just enqueued (not
        timed): each position whose window has ended is booked by the real fenced script
        (state/lua/settle_position.lua: position settled, payout in the ledger), in one
        pipeline; the market resolves Up. The rq jobs themselves stay queued, unrun."""
        raw = cast(dict[str, str], await self.redis.hgetall(self.store.k.positions_open()))
        done = [(v, POSITION.decode(v)) for v in raw.values()]
        done = [(v, p) for v, p in done if p.window_end_s * 1000 <= now_ms]
        if done:
            await self.store.run_pipeline(
                lambda pipe: [
                    self.store.settle_position(v, settled(p, True, now_ms), pipeline=pipe) for v, p in done
                ]
            )
        return len(done)

    async def close(self) -> None:
        await self.redis.aclose()
        self.sync.close()


async def run_ticks(
    rig: Rig, wire: Wire, n_ticks: int, warmup: int = WARMUP_TICKS, profile: Any = None
) -> tuple[list[TickSample], int]:
    """The worker's loop: sleep to each boundary, run the tick, plan the next one, collect
    garbage in the slack (kernel/gcpolicy.py). Returns the measured samples (after `warmup`
    ticks) and the boundaries skipped because a tick overran."""
    collector = gcpolicy.Collector()
    collector.start()
    try:
        return await _run_ticks(rig, wire, n_ticks, warmup, profile, collector)
    finally:
        collector.stop()


async def _run_ticks(
    rig: Rig, wire: Wire, n_ticks: int, warmup: int, profile: Any, collector: Any
) -> tuple[list[TickSample], int]:
    s, clock, runner = rig.s, rig.clock, rig.runner
    tick = boundaries.next_tick(clock.now_ms(), s.tick_ms)
    missed = 0
    samples: list[TickSample] = []
    skipped = 0
    for i in range(warmup + n_ticks):
        boundary = boundaries.boundary_ms(tick, s.tick_ms)
        await clock.sleep_until_ms(boundary)
        w0 = wire.snapshot()
        wall0 = time.time_ns()
        p0 = time.perf_counter()
        if profile is not None and i >= warmup:
            profile.enable()
        rec, error = None, ""
        try:
            rec = (await runner.run(tick, missed)).record
        except Exception as e:
            # As the worker does (worker/lifecycle.py): the failure is reported, the loop goes on.
            error = f"{type(e).__name__}: {e}"[:300]
        if profile is not None:
            profile.disable()
        p1 = time.perf_counter()
        d = Wire.delta(w0, wire.snapshot())
        if i >= warmup:
            skipped += missed
            samples.append(
                TickSample(
                    tick=tick,
                    kind=kind_of(rec) if rec is not None else "failed",
                    duration_ms=round((p1 - p0) * 1000, 3),
                    jitter_ms=round(wall0 / 1e6 - boundary, 3),
                    journal_duration_ms=rec.duration_ms if rec is not None else -1,
                    journal_jitter_ms=rec.jitter_ms if rec is not None else -1,
                    missed_before=rec.missed_before if rec is not None else missed,
                    evaluated=rec.evaluated if rec is not None else 0,
                    orders=rec.orders if rec is not None else 0,
                    settled=rec.settled if rec is not None else 0,
                    errors=rec.errors if rec is not None else 1,
                    failure=error,
                    **d,
                )
            )
        if error:
            print(f"tick {tick} FAILED: {error}", flush=True)
        # As the worker: settlements enqueued and markets discovered between ticks (timed
        # apart: the `between` column).
        b0 = time.perf_counter()
        try:
            await runner.between_ticks(boundaries.boundary_ms(tick + 1, s.tick_ms))
        except Exception as e:
            print(f"between ticks {tick} FAILED: {type(e).__name__}: {e}", flush=True)
        between_ms = (time.perf_counter() - b0) * 1000
        if samples and i >= warmup:
            samples[-1].between_ms = round(between_ms, 3)
        if rec is not None and rec.settled:
            await rig.settle_closed(clock.now_ms())
        tick, missed = boundaries.plan_next(tick, clock.now_ms(), s.tick_ms)
        collector.after_tick(boundaries.boundary_ms(tick, s.tick_ms) - clock.now_ms())  # as the worker
    return samples, skipped

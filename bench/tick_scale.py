"""Tick cost vs scale: one worker's tick at 16, 256, 1,024 and 4,096 slots against a real
redis-server, on the system clock at real tick boundaries.

What runs is the kernel's own `kernel.tick.TickRunner` (snapshot read with the lease renewal
riding along, settlement enqueueing through rq, strategy, risk, fenced intent commits, venue
submission, journal), driven by a loop like the worker's (`worker/main.py`: sleep to the
boundary on `SystemClock`, run, plan the next tick), with:

- Redis: a `redis-server` of its own on a free port, in the production configuration of
  `deploy/supervisor/redis.conf` (AOF on, `appendfsync everysec`, no RDB snapshots), own temp dir;
- candles: a feeder process writing one closed 1 s candle per asset every second through the
  feed's own `feed.store.CandleStore` (one `feed_write.lua` call per second, as `python -m feed`
  does), `--feed-phase-ms` after each second's boundary (Binance closes a 1 s kline at the
  boundary; the frame lands some milliseconds later), with 70 s of history written first;
- the venue: `venues.stub.StubVenue`, in the process, which answers discover/books/sign/post
  at once (every order fills at the ask), so that the numbers are the kernel's and Redis's, not HTTP's
  or EIP-712 signing's;
- slots: `assets x timeframes` (default timeframes 15s,30s,1m,2m, so N slots = N/4 synthetic
  assets), snipe with `entry_s` 5: every 15 s the 15 s slots enter in the last 5 s of their
  window, every 30 s the 30 s ones too, and so on: the entry ticks carry N/4, N/2, 3N/4 or N
  entries, as 5 m and 15 m windows end together in production. The ask is 0.05 on both sides,
  so every slot enters at its first tick in the entry zone: each such tick evaluates the
  strategy, passes the risk checks, signs, commits (fenced Lua) and posts every one of them,
  and records the fills;
- settlement: the tick after a window's end finds its positions due, and right after that
  tick (`TickRunner.between_ticks`, as the worker's loop calls it) one rq job per position is
  enqueued, as in production (`kernel.settlement.Enqueuer`, through a thread, on its own
  synchronous connection); the jobs are not run: the bench then books those positions with
  the job's own fenced script (`settle_position.lua`), as the settle program would (not timed);
- between ticks the worker also discovers the markets of the current windows in the
  background (`between_ticks`' prefetch), and collects garbage (`kernel/gcpolicy.py`); the
  bench runs the same loop.

Per tick: duration (perf_counter around `TickRunner.run`), start jitter (wall clock at the start
of the run minus the boundary), Redis round trips (every `send_packed_command` of any redis-py
connection in the process, async and sync: a pipeline is one) and commands sent. Ticks are told
apart by what they did: `entry` (orders posted), `settle` (settlements found due), `idle`
(neither: snapshot, no strategy call, journal). `between ticks` is the time the loop then spends
in `between_ticks` (the settlement enqueue; the prefetch is not waited for), not part of the
tick. The measured span is `--seconds` ticks (default 120: one
cycle of every timeframe), after 3 warm-up ticks.

    python -m bench.tick_scale [--slots 16,256,1024,4096] [--seconds 120] [--tick-ms 1000]
                               [--profile DIR]   # cProfile the measured ticks: DIR/tick-<N>.prof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from baton.settings import load
from bench.machine import LoadSampler, machine_info, publish
from bench.numbers import rank
from deploy.ports import free_port
from feed.store import Batch, CandleStore
from kernel import boundaries, gcpolicy
from kernel.clock import SystemClock, wall_ms
from kernel.halt import HaltGate, HaltResponder
from kernel.settlement import Enqueuer, settled
from kernel.tick import Identity, TickRunner
from state import connection
from state.connection import PackedConnection
from state.keys import Keys
from state.store import Store
from state.structs import POSITION, Candle, usd_to_micros
from venues.stub import StubVenue
from worker.main import configured_slots

REPO = Path(__file__).resolve().parent.parent
PREFIX = "baton:"
TIMEFRAMES = ("15s", "30s", "1m", "2m")
SIZES = (16, 256, 1024, 4096)
TARGET_SLOTS, TARGET_P99_MS = 1024, 50.0  # the target docs/performance.md checks
WARMUP_TICKS = 3
HISTORY_S = 70


# --- a Redis of its own --------------------------------------------------------------------------


def _text(reply: dict[Any, Any], name: str) -> str:
    v = reply.get(name, reply.get(name.encode(), b""))
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisServer:
    """`redis-server` on a free port in its own temp dir; `aof` as production (everysec)."""

    def __init__(self, aof: bool = True) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is missing: `make bootstrap` installs it (package redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="baton-bench-redis-"))
        self.port = free_port()
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        r = connection.client(load({"BATON_REDIS_PORT": str(self.port)}))
        deadline = time.monotonic() + 20
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
        info = r.info("server")
        self.version = str(info.get("redis_version", ""))
        self.appendfsync = _text(r.config_get("appendfsync"), "appendfsync")
        self.appendonly = _text(r.config_get("appendonly"), "appendonly")
        r.close()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def describe(self) -> dict[str, str]:
        """The server's version and persistence, for a benchmark's machine line."""
        return {"redis_version": self.version, "appendonly": self.appendonly, "appendfsync": self.appendfsync}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- counting round trips and commands -----------------------------------------------------------


class Wire:
    """Counts what every redis-py connection of this process sends: round trips (one per
    `send_packed_command`: a command, or a whole pipeline) and commands, async and sync apart.
    Installed by patching the connection classes; `uninstall` puts them back."""

    def __init__(self) -> None:
        self.n = {"async_rt": 0, "sync_rt": 0, "async_cmds": 0, "sync_cmds": 0}
        self._saved: list[tuple[Any, str, Any]] = []

    def snapshot(self) -> dict[str, int]:
        return dict(self.n)

    @staticmethod
    def delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
        return {k: b[k] - a[k] for k in a}

    def _patch(self, cls: Any, name: str, make: Any) -> None:
        orig = cls.__dict__[name]
        self._saved.append((cls, name, orig))
        setattr(cls, name, make(orig))

    def install(self) -> Wire:
        import redis.asyncio.connection as aconn
        import redis.connection as sconn

        n = self.n

        def async_send(orig: Any) -> Any:
            async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
                n["async_rt"] += 1
                await orig(conn, command, check_health)

            return send_packed_command

        def async_pack(orig: Any) -> Any:
            def pack_command(conn: Any, *args: Any) -> Any:
                n["async_cmds"] += 1
                return orig(conn, *args)

            return pack_command

        def sync_send(orig: Any) -> Any:
            def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
                n["sync_rt"] += 1
                orig(conn, command, check_health)

            return send_packed_command

        def sync_one(orig: Any) -> Any:
            def send_command(conn: Any, *args: Any, **kw: Any) -> None:
                n["sync_cmds"] += 1
                orig(conn, *args, **kw)

            return send_command

        def sync_many(orig: Any) -> Any:
            def pack_commands(conn: Any, commands: Any) -> Any:
                commands = list(commands)
                n["sync_cmds"] += len(commands)
                return orig(conn, commands)

            return pack_commands

        self._patch(aconn.AbstractConnection, "send_packed_command", async_send)
        self._patch(aconn.AbstractConnection, "pack_command", async_pack)
        self._patch(PackedConnection, "pack_command", async_pack)  # state.connection's own packer
        self._patch(sconn.AbstractConnection, "send_packed_command", sync_send)
        self._patch(sconn.AbstractConnection, "send_command", sync_one)
        self._patch(sconn.AbstractConnection, "pack_commands", sync_many)
        return self

    def uninstall(self) -> None:
        for cls, name, orig in reversed(self._saved):
            setattr(cls, name, orig)
        self._saved.clear()


# --- the feeder ----------------------------------------------------------------------------------


def synthetic_assets(n: int) -> list[str]:
    return [f"a{i:04d}" for i in range(n)]


class Prices:
    """A random walk per asset, rounded as exchange prices are (8 significant digits)."""

    def __init__(self, assets: list[str], seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.p = {a: 10.0 ** (i % 5) * (1.0 + (i % 7) / 10) for i, a in enumerate(assets)}

    def candle(self, asset: str, open_s: int) -> Any:
        o = self.p[asset]
        c = o * math.exp(self.rng.gauss(0.0, 0.0004))
        self.p[asset] = c
        digits = max(0, 7 - math.floor(math.log10(o)))
        r = lambda x: round(x, digits)  # noqa: E731
        hi, lo = (
            max(o, c) * (1 + abs(self.rng.gauss(0, 0.0001))),
            min(o, c) * (1 - abs(self.rng.gauss(0, 0.0001))),
        )
        return Candle(open_s * 1000, r(o), r(hi), r(lo), r(c), round(self.rng.uniform(0.1, 50.0), 3), True)


def feeder_main(url: str, assets: list[str], phase_ms: int, retention_s: int, ready: Any, stop: Any) -> None:
    """One closed 1 s candle per asset every second, through the feed's own store (one
    feed_write.lua call per batch), `phase_ms` after the boundary that closes it."""
    asyncio.run(_feeder(url, assets, phase_ms, retention_s, ready, stop))


async def _feeder(
    url: str, assets: list[str], phase_ms: int, retention_s: int, ready: Any, stop: Any
) -> None:

    r = connection.async_client(load({"BATON_REDIS_URL": url}), decoded=False)
    store = CandleStore(r, Keys(PREFIX), interval="1s", retention_s=retention_s, clock_ms=wall_ms)
    prices = Prices(assets)
    now_s = wall_ms() // 1000
    for first in range(now_s - HISTORY_S, now_s, 10):
        batch = Batch()
        for sec in range(first, min(first + 10, now_s)):
            for a in assets:
                store.accept(batch, a, prices.candle(a, sec))
        await store.write(batch)
    ready.set()
    sec = now_s
    while not stop.is_set():
        due_ms = (sec + 1) * 1000 + phase_ms
        left = due_ms - wall_ms()
        if left > 0:
            await asyncio.sleep(min(left, 200) / 1000)
            continue
        batch = Batch()
        for a in assets:
            store.accept(batch, a, prices.candle(a, sec))
        await store.write(batch)
        sec += 1
    await r.aclose()


class Feeder:
    def __init__(self, url: str, assets: list[str], phase_ms: int, retention_s: int = 3600) -> None:
        ctx = mp.get_context("spawn")
        self.ready, self.stop_evt = ctx.Event(), ctx.Event()
        self.proc = ctx.Process(
            target=feeder_main,
            args=(url, assets, phase_ms, retention_s, self.ready, self.stop_evt),
            name="bench-feeder",
            daemon=True,
        )

    def __enter__(self) -> Feeder:
        self.proc.start()
        if not self.ready.wait(120):
            self.proc.kill()
            raise RuntimeError("the feeder wrote no history within 120 s")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_evt.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


# --- the rig -------------------------------------------------------------------------------------


def bench_settings(url: str, assets: list[str], timeframes: tuple[str, ...], tick_ms: int, home: str) -> Any:
    return load(
        {
            "BATON_HOME": home,
            "BATON_REDIS_URL": url,
            "BATON_TICK_MS": str(tick_ms),
            "BATON_ASSETS": ",".join(assets),
            "BATON_TIMEFRAMES": ",".join(timeframes),
            "BATON_SNIPE_ENTRY_S": "5",
            "BATON_STAKE_USD": "1",
            # Every slot may enter every window: limits far above what N slots can stake.
            "BATON_MAX_EXPOSURE_USD": "1000000000",
            "BATON_PAPER_CASH_USD": "1000000000",
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
        await self.store.ensure_slots(configured_slots(s))
        now = self.clock.now_ms()
        holder = f"blue:bench:{os.getpid()}:0"
        got, self.epoch, _ = await self.store.acquire_lease(holder, "blue", "bench", now, s.lease_ms)
        if not got:
            raise RuntimeError("the bench could not take the lease")
        await self.store.adopt_schema()
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
            # As the worker does (worker/main.py): the failure is reported, the loop goes on.
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


async def measure_size(
    n_slots: int,
    url: str,
    timeframes: tuple[str, ...],
    tick_ms: int,
    seconds: int,
    feed_phase_ms: int,
    wire: Wire,
    profile_dir: Path | None = None,
    warmup: int = WARMUP_TICKS,
    entry_rate: float = 1.0,
) -> dict[str, Any]:
    """One size: a fresh Redis database, its feeder, the rig, and `seconds` measured ticks."""

    if n_slots % len(timeframes):
        raise ValueError(f"{n_slots} slots is not a multiple of {len(timeframes)} timeframes")
    assets = synthetic_assets(n_slots // len(timeframes))
    r = connection.client(load({"BATON_REDIS_URL": url}))
    r.flushall()
    r.close()
    home = tempfile.mkdtemp(prefix="baton-bench-home-")
    settings = bench_settings(url, assets, timeframes, tick_ms, home)
    venue = StubVenue(entry_rate=entry_rate)
    n_ticks = max(1, seconds * 1000 // tick_ms)
    prof = None
    if profile_dir is not None:
        import cProfile

        prof = cProfile.Profile()
    try:
        with Feeder(url, assets, feed_phase_ms, settings.candle_retention_s):
            rig = Rig(settings, venue, SystemClock())
            await rig.start()
            try:
                checked = await rig.runner.dry_run()  # the readiness check, as a worker's (not timed)
                samples, skipped = await run_ticks(rig, wire, n_ticks, warmup, prof)
                info = await rig.redis.info("memory")
            finally:
                await rig.close()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if prof is not None and profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        path = profile_dir / f"tick-{n_slots}.prof"
        prof.dump_stats(str(path))
    return {
        "slots": n_slots,
        "assets": len(assets),
        "timeframes": list(timeframes),
        "dry_run_slots": checked,
        "ticks": len(samples),
        "skipped_boundaries": skipped,
        "venue_calls": venue.calls,
        "used_memory": int(info.get("used_memory", 0)),
        "samples": [asdict(x) for x in samples],
    }


# --- numbers -------------------------------------------------------------------------------------


def stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "p99": rank(values, 0.99),
        "max": max(values),
    }


KINDS = ("idle", "settle", "entry", "failed")


def summarise_size(res: dict[str, Any]) -> dict[str, Any]:
    samples = [TickSample(**x) for x in res["samples"]]

    def group(xs: list[TickSample]) -> dict[str, Any]:
        return {
            "n": len(xs),
            "duration_ms": stats([x.duration_ms for x in xs]),
            "jitter_ms": stats([x.jitter_ms for x in xs]),
            "round_trips": stats([float(x.round_trips) for x in xs]),
            "async_round_trips": stats([float(x.async_rt) for x in xs]),
            "sync_round_trips": stats([float(x.sync_rt) for x in xs]),
            "commands": stats([float(x.commands) for x in xs]),
            "orders": stats([float(x.orders) for x in xs]),
            "settled": stats([float(x.settled) for x in xs]),
            "between_ms": stats([x.between_ms for x in xs]),
        }

    out = {
        "slots": res["slots"],
        "assets": res["assets"],
        "timeframes": res["timeframes"],
        "skipped_boundaries": res["skipped_boundaries"],
        "errors": sum(x.errors for x in samples),
        "failures": sorted({x.failure for x in samples if x.failure}),
        "all": group(samples),
        "by_kind": {k: group([x for x in samples if x.kind == k]) for k in KINDS},
    }
    return out


def ratios(summaries: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each size's median and p99 duration over those of the smallest size."""
    if not summaries:
        return {}
    base = summaries[0]["all"]["duration_ms"]
    out = {}
    for s in summaries:
        d = s["all"]["duration_ms"]
        out[str(s["slots"])] = {
            "median": d["median"] / base["median"] if base["median"] else float("nan"),
            "p99": d["p99"] / base["p99"] if base["p99"] else float("nan"),
        }
    return out


def num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


def rt(g: dict[str, Any]) -> str:
    """Round trips as 'median' or 'median (max m)'."""
    s = g["round_trips"]
    if not s["n"]:
        return "-"
    med, mx = s["median"], s["max"]
    return f"{med:.0f}" if med == mx else f"{med:.0f} (max {mx:.0f})"


def render(summaries: list[dict[str, Any]], tick_ms: int, entry_rate: float = 1.0) -> str:
    if not summaries:
        return "(no sizes measured)"
    r = ratios(summaries)
    base = summaries[0]["slots"]
    n_all = max(s["all"]["n"] for s in summaries)
    p99 = "p99 (max)" if n_all < 100 else "p99"
    rows = [
        f"| slots (tick {tick_ms} ms) | assets × timeframes | ticks | tick ms median | {p99} | "
        f"× {base} slots median | p99 | Redis round trips/tick | start jitter ms median | p99 "
        "| skipped | failed |",
        "|" + "---|" * 12,
    ]
    for s in summaries:
        a, j = s["all"], s["all"]["jitter_ms"]
        rows.append(
            f"| {s['slots']:,} | {s['assets']} × {len(s['timeframes'])} | {a['n']} "
            f"| {num(a['duration_ms']['median'], 2)} | {num(a['duration_ms']['p99'], 2)} "
            f"| {r[str(s['slots'])]['median']:.1f}× | {r[str(s['slots'])]['p99']:.1f}× "
            f"| {rt(a)} | {num(j['median'], 2)} | {num(j['p99'], 2)} | {s['skipped_boundaries']} "
            f"| {s['by_kind']['failed']['n']} |"
        )
    rows += [
        "",
        "| slots | tick kind | n | ms median | p99 (max) | round trips/tick | of which sync (settlement) "
        "| commands/tick median | orders/tick median | between ticks ms median | max |",
        "|" + "---|" * 11,
    ]
    for s in summaries:
        for k in KINDS:
            g = s["by_kind"][k]
            if not g["n"]:
                continue
            sync_rt = g["sync_round_trips"]
            rows.append(
                f"| {s['slots']:,} | {k} | {g['n']} | {num(g['duration_ms']['median'], 2)} "
                f"| {num(g['duration_ms']['max'], 2)} | {rt(g)} | {num(sync_rt['median'], 0)} "
                f"| {num(g['commands']['median'], 0)} | {num(g['orders']['median'], 0)} "
                f"| {num(g['between_ms']['median'], 2)} | {num(g['between_ms']['max'], 2)} |"
            )
    lines = ["\n".join(rows), ""]
    target = next((s for s in summaries if s["slots"] == TARGET_SLOTS), None)
    if target is not None:
        p = target["all"]["duration_ms"]["p99"]
        verdict = "met" if p < TARGET_P99_MS else "MISSED"
        load = (
            "every slot enters at its first tick in the entry zone"
            if entry_rate >= 1.0
            else f"a slot in its entry zone finds an edge at a given second with probability {entry_rate:g}"
        )
        lines.append(
            f"target: {TARGET_SLOTS:,} slots under {TARGET_P99_MS:.0f} ms p99: {verdict} "
            f"(p99 {p:.1f} ms over {target['all']['n']} ticks of every kind; {load})"
        )
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


def top_functions(path: Path, n: int = 20) -> str:
    import io
    import pstats

    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.sort_stats("tottime").print_stats(n)
    return buf.getvalue()


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.slots.split(",") if x]
    timeframes = tuple(t for t in args.timeframes.split(",") if t)
    load = LoadSampler()
    results, summaries = [], []
    with load, RedisServer(aof=not args.no_aof) as server:
        wire = Wire().install()
        try:
            for n in sizes:
                print(f"{n} slots: measuring {args.seconds} s of {args.tick_ms} ms ticks ...", flush=True)
                res = await measure_size(
                    n,
                    server.url,
                    timeframes,
                    args.tick_ms,
                    args.seconds,
                    args.feed_phase_ms,
                    wire,
                    profile_dir=args.profile,
                    entry_rate=args.entry_rate,
                )
                results.append(res)
                s = summarise_size(res)
                summaries.append(s)
                d = s["all"]["duration_ms"]
                print(
                    f"{n} slots: median {d['median']:.2f} ms, p99 {d['p99']:.2f} ms, "
                    f"round trips {rt(s['all'])}, skipped {s['skipped_boundaries']}",
                    flush=True,
                )
                if args.profile is not None:
                    print(top_functions(args.profile / f"tick-{n}.prof"), flush=True)
        finally:
            wire.uninstall()
        redis_info = server.describe()
    return {
        "benchmark": "tick_scale",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.tick_scale", *sys.argv[1:]]),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            timeframes=list(timeframes),
            venue="in-process stand-in (instant; every order fills at the ask)",
            feed_phase_ms=args.feed_phase_ms,
            entry_rate=args.entry_rate,
            **load.summary(),
            profiled=args.profile is not None,
            **redis_info,
        ),
        "target": {"slots": TARGET_SLOTS, "p99_ms": TARGET_P99_MS},
        "summary": summaries,
        "ratios_over_smallest": ratios(summaries),
        "sizes": results,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.tick_scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", default=",".join(str(n) for n in SIZES), help="slot counts, comma-separated")
    ap.add_argument("--seconds", type=int, default=120, help="measured span per size (ticks x tick length)")
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument("--timeframes", default=",".join(TIMEFRAMES), help="N slots = N/len(timeframes) assets")
    ap.add_argument("--feed-phase-ms", type=int, default=20, help="feeder writes this long after each second")
    ap.add_argument(
        "--entry-rate",
        type=float,
        default=1.0,
        help="chance that a slot in its entry zone finds an edge at a given second "
        "(1: every slot enters at its first tick in the zone, the worst case)",
    )
    ap.add_argument("--no-aof", action="store_true", help="Redis without AOF (production has it on)")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the measured ticks into DIR")
    ap.add_argument(
        "--json-out",
        type=Path,
        default=None,
        help="default bench/results/tick_scale.json (tick_scale_spread.json with --entry-rate below 1)",
    )
    args = ap.parse_args(argv)
    if args.json_out is None:
        name = "tick_scale.json" if args.entry_rate >= 1.0 else "tick_scale_spread.json"
        args.json_out = REPO / "bench" / "results" / name
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the Redis server and the feeder of the run are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run_async(args))
    publish(result, render(result["summary"], args.tick_ms, args.entry_rate), args.json_out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

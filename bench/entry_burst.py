"""Entry bursts: where one entry tick's time goes, measured apart from the wall clock's noise.

`bench/tick_scale.py` measures ticks at real boundaries, with a feeder writing beside them; its
entry ticks are few (8 in 120 s) and move with whatever else the machine does. This benchmark
runs the same kernel on a virtual clock (`kernel.clock.VirtualClock`) and puts it, cycle after
cycle, at the one second where `k` of the 4 timeframes are in their entry zone together (256,
512, 768 or 1,024 of 1,024 slots), so that every measured tick is the same burst:

- the rig is tick_scale's (`Rig`: the worker's TickRunner with its settler and halt gate; the
  in-process venue that answers at once; a real `redis-server` with AOF on, on a free port);
- each cycle writes the last 70 s of 1 s candles (not timed), runs the 3 ticks before the burst
  and `between_ticks` after each (candle warm-up, entry look-up, market prefetch: as the worker
  does), then the burst tick (timed), then the tick after the windows' end and the settlements
  (not timed), with garbage collected between ticks (`kernel/gcpolicy.py`);
- per burst tick: wall time, the worker's main-thread CPU time, the CPU time of its other
  threads (the venue lanes' signing and posting), the Redis server's main-thread CPU time
  (`INFO cpu`: commands, scripts, AOF writes), orders and round trips; and the wall and
  main-thread CPU time of the `between_ticks` after it (where the burst's decision log and
  input log entries are built and appended).

An entry tick sends its orders in chunks while it evaluates (kernel/executor.py EntryStream),
so the worker's CPU and Redis's overlap instead of adding up, and the *other* column (wall
minus both) goes negative: the table says how much of a burst each is, and what a target would
need of them. `--entry-rate 0.2` gives the spread case beside it (every
slot in the zone is evaluated, a fifth of them enter).

    python -m bench.entry_burst [--slots 1024] [--bursts 1,2,3,4] [--cycles 10] [--entry-rate 1,0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.candles import HISTORY_S, Prices, synthetic_assets
from bench.machine import command_line, machine_info, publish
from bench.numbers import stats
from bench.redis_server import RedisServer, bare
from bench.rig import PREFIX, STUB_VENUE, Rig, bench_settings
from bench.tick_scale import TIMEFRAMES
from bench.wire import Wire
from feed.store import Batch, CandleStore
from kernel import gcpolicy
from kernel.clock import VirtualClock
from state import connection
from state.keys import Keys
from venues.stub import StubVenue

REPO = Path(__file__).resolve().parent.parent
ENTRY_S = 5  # tick_scale's snipe entry_s: a 15 s window's zone is its last 5 s
WARM_TICKS = 3  # ticks run before each burst (not timed)
WARMUP_CYCLES = 1  # cycles run before the measured ones (first reads, first allocations)


def _seconds(tf: str) -> int:
    unit = {"s": 1, "m": 60, "h": 3600}[tf[-1]]
    return int(tf[:-1]) * unit


def burst_offset(timeframes: tuple[str, ...], k: int) -> int:
    """The second, within a cycle of the longest timeframe, at which exactly the `k` shortest
    timeframes are in their entry zone (their last ENTRY_S seconds): the k-th one's first zone
    second. Needs each timeframe to divide the next (15s, 30s, 1m, 2m), and each to be at
    least 3 × ENTRY_S long (snipe's zone is the last third of a shorter window)."""
    spans = sorted(_seconds(t) for t in timeframes)
    if any(b % a for a, b in itertools.pairwise(spans)):
        raise ValueError(f"timeframes {timeframes}: each must divide the next")
    if spans[0] < 3 * ENTRY_S:
        raise ValueError(f"timeframes {timeframes}: each must be at least {3 * ENTRY_S} s")
    if not 1 <= k <= len(spans):
        raise ValueError(f"{k} timeframes in zone: between 1 and {len(spans)}")
    return spans[k - 1] - ENTRY_S


async def _redis_cpu_s(r: Any) -> float:
    info = await r.info("cpu")
    # The main thread's (Redis 6.2 and later): commands, scripts, the AOF's write(); not the
    # everysec fsync, which runs on a background thread. Older servers: the whole process.
    if "used_cpu_user_main_thread" in info:
        return float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def measure_burst(
    url: str,
    n_slots: int,
    timeframes: tuple[str, ...],
    k: int,
    cycles: int,
    entry_rate: float,
    wire: Wire,
    warmup: int = WARMUP_CYCLES,
) -> dict[str, Any]:
    """`cycles` measured bursts of the `k` shortest timeframes at `n_slots` slots (fresh
    Redis database, fresh rig)."""

    if n_slots % len(timeframes):
        raise ValueError(f"{n_slots} slots is not a multiple of {len(timeframes)} timeframes")
    assets = synthetic_assets(n_slots // len(timeframes))
    r = connection.client(bare(url))
    r.flushall()
    r.close()
    period = max(_seconds(t) for t in timeframes)
    offset = burst_offset(timeframes, k)
    base = (1_795_000_000 // period + 1) * period  # a cycle start; virtual time from here on
    clock = VirtualClock((base - HISTORY_S - 10) * 1000)
    feed_redis = connection.async_client(bare(url), decoded=False)
    home = tempfile.mkdtemp(prefix="baton-bench-home-")
    settings = bench_settings(url, assets, timeframes, 1000, home)
    retention_s = settings.candle_retention_s
    store = CandleStore(
        feed_redis, Keys(PREFIX), interval="1s", retention_s=retention_s, clock_ms=clock.now_ms
    )
    prices = Prices(assets)
    written = base - HISTORY_S - 10

    async def feed_until(sec: int) -> None:
        """Closed candles of every asset for every second before `sec` not written yet: no
        hole, so that every window's opening candle is there (the 2 m windows' too)."""
        nonlocal written
        # Those seconds have ended by then: the feed refuses candles dated after its clock.
        clock.t_ms = max(clock.t_ms, sec * 1000)
        for first in range(written, sec, 10):
            batch = Batch()
            for t in range(first, min(first + 10, sec)):
                for a in assets:
                    store.accept(batch, a, prices.candle(a, t))
            await store.write(batch)
        written = max(written, sec)

    samples: list[dict[str, Any]] = []
    collector = gcpolicy.Collector()
    # The venue's cheap asks (entry rate below 1) are drawn per virtual second: each cycle's
    # burst sees the books it saw in the last run.
    venue = StubVenue(entry_rate=entry_rate, now_s=lambda: clock.now_ms() // 1000)
    rig = Rig(settings, venue, clock)
    runner = None
    try:
        await feed_until(base - 5)
        clock.t_ms = (base - 5) * 1000
        await rig.start()
        await rig.runner.dry_run()
        runner = rig.runner
        collector.start()
        for c in range(warmup + cycles):
            burst = base + c * period + offset
            for t in range(burst - WARM_TICKS, burst + 1):
                await feed_until(t)
                clock.t_ms = t * 1000
                timed = t == burst
                if timed:
                    redis0 = await _redis_cpu_s(rig.redis)
                    w0 = wire.snapshot()
                    p0, c0, all0 = time.perf_counter(), time.thread_time(), time.process_time()
                rec = (await runner.run(t)).record
                if timed:
                    p1, c1, all1 = time.perf_counter(), time.thread_time(), time.process_time()
                    d = Wire.delta(w0, wire.snapshot())
                    redis_s = await _redis_cpu_s(rig.redis) - redis0
                    if c >= warmup:
                        samples.append(
                            {
                                "tick": t,
                                "wall_ms": round((p1 - p0) * 1000, 3),
                                "worker_cpu_ms": round((c1 - c0) * 1000, 3),
                                "lanes_cpu_ms": round(((all1 - all0) - (c1 - c0)) * 1000, 3),
                                "redis_cpu_ms": round(redis_s * 1000, 3),
                                "evaluated": rec.evaluated,
                                "orders": rec.orders,
                                "errors": rec.errors,
                                "round_trips": d["async_rt"] + d["sync_rt"],
                            }
                        )
                clock.t_ms = t * 1000 + 100
                b0, bc0 = time.perf_counter(), time.thread_time()
                await runner.between_ticks((t + 1) * 1000)
                if timed and c >= warmup:
                    # The work between ticks after the burst: its decision log and input log
                    # appends (kernel/notes.py), settlements, look-ahead, prefetch start.
                    samples[-1]["between_ms"] = round((time.perf_counter() - b0) * 1000, 3)
                    samples[-1]["between_cpu_ms"] = round((time.thread_time() - bc0) * 1000, 3)
                await runner.wait_prefetch()
                collector.after_tick(800)
            # The burst's windows end ENTRY_S seconds after it: the tick after finds them due.
            after = burst + ENTRY_S + 1
            await feed_until(after)
            clock.t_ms = after * 1000
            await runner.run(after)
            await runner.between_ticks((after + 1) * 1000)
            await runner.wait_prefetch()
            await rig.settle_closed((after + 1) * 1000)
            collector.after_tick(800)
    finally:
        collector.stop()
        if runner is not None:
            await runner.wait_prefetch()
            runner.close()
        await rig.close()
        await feed_redis.aclose()
        shutil.rmtree(home, ignore_errors=True)
    return {
        "slots": n_slots,
        "timeframes_in_zone": list(sorted(timeframes, key=_seconds)[:k]),
        "burst_slots": n_slots * k // len(timeframes),
        "entry_rate": entry_rate,
        "cycles": cycles,
        "samples": samples,
    }


def summarise(res: dict[str, Any]) -> dict[str, Any]:
    xs = res["samples"]
    out: dict[str, Any] = {
        k: res[k] for k in ("slots", "timeframes_in_zone", "burst_slots", "entry_rate", "cycles")
    }
    for f in ("wall_ms", "worker_cpu_ms", "lanes_cpu_ms", "redis_cpu_ms", "between_ms", "between_cpu_ms"):
        out[f] = stats([float(x[f]) for x in xs])
    for f in ("evaluated", "orders", "round_trips"):
        out[f] = stats([float(x[f]) for x in xs])
    out["errors"] = sum(x["errors"] for x in xs)
    # What is neither the worker's CPU nor Redis's: waits on threads and the loop, scheduling.
    out["other_ms"] = stats([x["wall_ms"] - x["worker_cpu_ms"] - x["redis_cpu_ms"] for x in xs])
    return out


def _n(v: Any, digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render(summaries: list[dict[str, Any]]) -> str:
    head = (
        "| slots | burst (slots in zone) | entry rate | orders median | wall ms median | min | max "
        "| worker CPU ms median | Redis CPU ms median | lanes CPU ms median | other ms median "
        "| worker µs per slot | Redis µs per slot | wall × first row of its rate "
        "| between ticks ms median | its worker CPU ms median | round trips | errors |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    base: dict[float, float] = {}
    for s in summaries:
        w, cpu, red = s["wall_ms"], s["worker_cpu_ms"], s["redis_cpu_ms"]
        rate = s["entry_rate"]
        base.setdefault(rate, w.get("median") or 0.0)
        ratio = (w["median"] / base[rate]) if base[rate] else float("nan")
        per = s["burst_slots"] or 1
        lines.append(
            f"| {s['slots']:,} | {s['burst_slots']:,} ({', '.join(s['timeframes_in_zone'])}) | {rate:g} "
            f"| {_n(s['orders'].get('median'), 0)} | {_n(w.get('median'))} | {_n(w.get('min'))} "
            f"| {_n(w.get('max'))} | {_n(cpu.get('median'))} | {_n(red.get('median'))} "
            f"| {_n(s['lanes_cpu_ms'].get('median'))} | {_n(s['other_ms'].get('median'))} "
            f"| {_n(cpu['median'] * 1000 / per, 0)} | {_n(red['median'] * 1000 / per, 0)} "
            f"| {ratio:.2f}× | {_n(s['between_ms'].get('median'))} | {_n(s['between_cpu_ms'].get('median'))} "
            f"| {_n(s['round_trips'].get('median'), 0)} | {s['errors']} |"
        )
    return "\n".join(lines)


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    timeframes = tuple(t for t in args.timeframes.split(",") if t)
    bursts = [int(x) for x in args.bursts.split(",") if x]
    rates = [float(x) for x in args.entry_rate.split(",") if x]
    results, summaries = [], []
    with RedisServer(aof=True) as server:
        wire = Wire().install()
        try:
            for rate in rates:
                for k in bursts:
                    print(
                        f"{args.slots} slots, {k} timeframe(s) in zone, entry rate {rate:g}: "
                        f"{args.cycles} bursts ...",
                        flush=True,
                    )
                    res = await measure_burst(server.url, args.slots, timeframes, k, args.cycles, rate, wire)
                    results.append(res)
                    s = summarise(res)
                    summaries.append(s)
                    print(
                        f"  orders {_n(s['orders'].get('median'), 0)}: "
                        f"wall {_n(s['wall_ms'].get('median'))} ms "
                        f"(worker CPU {_n(s['worker_cpu_ms'].get('median'))}, "
                        f"Redis CPU {_n(s['redis_cpu_ms'].get('median'))})",
                        flush=True,
                    )
        finally:
            wire.uninstall()
        redis_info = server.describe()
    return {
        "benchmark": "entry_burst",
        "command": command_line("entry_burst"),
        "machine": machine_info(
            clock="virtual (kernel.clock.VirtualClock)",
            timeframes=list(timeframes),
            venue=STUB_VENUE,
            **redis_info,
        ),
        "summary": summaries,
        "bursts": results,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.entry_burst", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=1024)
    ap.add_argument("--timeframes", default=",".join(TIMEFRAMES))
    ap.add_argument(
        "--bursts", default="1,2,3,4", help="how many of the shortest timeframes are in zone together"
    )
    ap.add_argument("--cycles", type=int, default=10, help="measured bursts per row (after one warm-up)")
    ap.add_argument(
        "--entry-rate",
        default="1,0.2",
        help="comma-separated: the chance that a slot in its zone finds an edge (1: every slot enters)",
    )
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "entry_burst.json")
    args = ap.parse_args(argv)
    if args.cycles < 1:
        ap.error("--cycles must be at least 1")
    try:
        for k in (int(x) for x in args.bursts.split(",") if x):
            burst_offset(tuple(t for t in args.timeframes.split(",") if t), k)
    except (ValueError, KeyError) as e:
        ap.error(f"--bursts/--timeframes: {e}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run_async(args))
    publish(result, render(result["summary"]), args.json_out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

"""What a tick costs Redis in commands: the kernel's own `TickRunner` on a virtual clock, one
tick at a time with nothing else touching Redis, `INFO commandstats` around each tick (what
Redis executed, inside Lua scripts too) beside what the clients sent and their round trips."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
from typing import Any

from bench.candles import InlineFeed, synthetic_assets
from bench.redis_memory import key_memory
from bench.redis_server import bare
from bench.rig import PREFIX, WARMUP_TICKS, Rig, bench_settings, kind_of
from bench.wire import Wire
from kernel import boundaries
from kernel.clock import VirtualClock, wall_ms
from state import connection
from venues.stub import StubVenue


def commandstats(r: Any) -> dict[str, int]:
    raw = r.info("commandstats")
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in raw.items()}


def cmd_delta(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = {k: b.get(k, 0) - a.get(k, 0) for k in set(a) | set(b)}
    out.pop("info", None)
    return {k: v for k, v in out.items() if v}


async def commands_per_tick(
    n_slots: int, url: str, timeframes: tuple[str, ...], tick_ms: int, cycle_ticks: int, wire: Wire
) -> dict[str, Any]:

    assets = synthetic_assets(n_slots // len(timeframes))
    r = connection.client(bare(url))
    r.flushall()
    empty = int(r.info("memory")["used_memory"])
    home = tempfile.mkdtemp(prefix="baton-bench-home-")
    settings = bench_settings(url, assets, timeframes, tick_ms, home)
    now = wall_ms()
    clock = VirtualClock(now - now % tick_ms)
    venue = StubVenue()
    feed = InlineFeed(url, assets, clock, settings.candle_retention_s)
    samples: list[dict[str, Any]] = []
    try:
        await feed.catch_up()
        rig = Rig(settings, venue, clock)
        await rig.start()
        try:
            await rig.runner.dry_run()
            tick = boundaries.next_tick(clock.now_ms(), tick_ms)
            for i in range(WARMUP_TICKS + cycle_ticks):
                await clock.sleep_until_ms(boundaries.boundary_ms(tick, tick_ms))
                await feed.catch_up()
                before, w0 = commandstats(r), wire.snapshot()
                rec, failure = None, ""
                try:
                    rec = (await rig.runner.run(tick)).record
                except Exception as e:  # as the worker: reported, the loop goes on
                    failure = f"{type(e).__name__}: {e}"[:200]
                # The worker's work after the tick (settlement enqueue, market prefetch) is
                # counted with the tick it follows.
                await rig.runner.between_ticks(boundaries.boundary_ms(tick + 1, tick_ms))
                await asyncio.sleep(0.05)  # stray tasks of a failed tick (discoveries) land
                w = Wire.delta(w0, wire.snapshot())
                executed = cmd_delta(before, commandstats(r))
                if i >= WARMUP_TICKS:
                    samples.append(
                        {
                            "tick": tick,
                            "kind": kind_of(rec) if rec is not None else "failed",
                            "failure": failure,
                            "orders": rec.orders if rec is not None else 0,
                            "settled": rec.settled if rec is not None else 0,
                            "executed": sum(executed.values()),
                            "executed_by_command": executed,
                            "sent": w["async_cmds"] + w["sync_cmds"],
                            "round_trips": w["async_rt"] + w["sync_rt"],
                        }
                    )
                if rec is not None and rec.settled:
                    await rig.settle_closed(clock.now_ms())
                tick += 1
            memory = key_memory(r)
            used = int(r.info("memory")["used_memory"])
            traded = len(r.hkeys(f"{PREFIX}positions"))
            journal = int(r.xlen(f"{PREFIX}journal:ticks"))
        finally:
            await rig.close()
    finally:
        await feed.close()
        r.close()
        shutil.rmtree(home, ignore_errors=True)
    return {
        "slots": n_slots,
        "assets": len(assets),
        "timeframes": list(timeframes),
        "ticks": len(samples),
        "traded_slot_windows": traded,
        "journal_entries": journal,
        "used_memory_empty": empty,
        "used_memory": used,
        "memory": memory,
        "samples": samples,
    }


def summarise_commands(res: dict[str, Any]) -> dict[str, Any]:
    xs = res["samples"]

    def group(g: list[dict[str, Any]]) -> dict[str, Any]:
        if not g:
            return {"n": 0}
        by_cmd: dict[str, int] = {}
        for x in g:
            for k, v in x["executed_by_command"].items():
                by_cmd[k] = by_cmd.get(k, 0) + v
        return {
            "n": len(g),
            "executed_mean": statistics.fmean(x["executed"] for x in g),
            "executed_max": max(x["executed"] for x in g),
            "sent_mean": statistics.fmean(x["sent"] for x in g),
            "round_trips_mean": statistics.fmean(x["round_trips"] for x in g),
            "round_trips_max": max(x["round_trips"] for x in g),
            "top_commands_per_tick": {
                k: round(v / len(g), 1) for k, v in sorted(by_cmd.items(), key=lambda kv: -kv[1])[:8]
            },
        }

    return {
        "slots": res["slots"],
        "assets": res["assets"],
        "all": group(xs),
        "by_kind": {
            k: group([x for x in xs if x["kind"] == k]) for k in ("idle", "settle", "entry", "failed")
        },
    }

"""Redis cost: commands and round trips per tick, memory per slot, and memory per day of candle
windows, against a real redis-server in the production configuration (AOF everysec).

Three measurements, side by side in one run:

1. Commands per tick, at each slot count (default 16 and 1,024; `--slots`): the kernel's own
   `TickRunner` (as in bench/tick_scale.py: the stand-in venue, settlement through rq, the
   closed windows booked by the settle script between ticks) runs one whole cycle of its
   timeframes (default 15s,30s,1m,2m: 120 ticks of 1 s) on a virtual clock, so that nothing
   else touches Redis while a tick runs: candles are written between ticks by the feed's own
   `CandleStore`. For each tick: `INFO commandstats` before and after (the commands Redis
   executed, those run inside Lua scripts included; the INFO calls themselves left out), and
   what the clients sent (commands and round trips, counted in redis-py's connections).
2. Memory per slot: after the cycle, `MEMORY USAGE` (SAMPLES 0: every element) of every key,
   grouped by what it holds, divided by what it grows with (slots, traded slot-windows, ticks),
   plus the `INFO memory` total; then a day of it at the production configuration.
3. Candle windows: one asset's 1 s candle window written by the feed's `CandleStore` (realistic
   prices) at 60, 600, 3,600 (the default `BATON_CANDLE_RETENTION_S`) and 14,400 candles: bytes
   per candle as Redis stores it, and a day per asset with and without the retention trim.

    python -m bench.redis_cost [--slots 16,1024] [--json-out bench/results/redis_cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import signal
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, cast

from baton.settings import load, timeframe_seconds
from bench.machine import LoadSampler, machine_info, publish
from bench.tick_scale import (
    PREFIX,
    TIMEFRAMES,
    Prices,
    RedisServer,
    Rig,
    Wire,
    bench_settings,
    kind_of,
    synthetic_assets,
)
from feed.store import Batch, CandleStore
from kernel import boundaries
from kernel.clock import VirtualClock, wall_ms
from state import connection
from state.keys import Keys
from venues.stub import StubVenue

REPO = Path(__file__).resolve().parent.parent
DAY_S = 86_400
WARMUP_TICKS = 3
CANDLE_COUNTS = (60, 600, 3600, 14_400)
# The production configuration the per-day figures are for (README: defaults).
PROD_ASSETS, PROD_TIMEFRAMES_S, PROD_TICK_MS = 8, (300, 900), 5000
JOURNAL_MAXLEN = 100_000  # state/journal.py: the tick journal's cap
RQ_RESULT_TTL_S = 24 * 3600  # kernel/settlement.py: a finished job is kept a day
MARKET_TTL_EXTRA_S = 3600  # kernel/markets.py: a market stays cached an hour past its window


# --- the key families ----------------------------------------------------------------------------

# The history (intents, positions, ledger) is pruned by the lease holder past BATON_HISTORY_DAYS
# (kernel/history.py); the day table says what it levels off at with the default.
HISTORY_DAYS = load({"BATON_HOME": tempfile.gettempdir()}).history_days
HISTORY_KEPT = f"BATON_HISTORY_DAYS ({HISTORY_DAYS:g} days)"
# (family, what it grows with, how long it is kept), matched on the key without the prefix.
FAMILIES: list[tuple[str, str, str, str]] = [
    # name, key match (prefix of the key after `baton:`, or `rq:`), grows with, kept
    ("slots", "slots", "slot", "until the slot is removed"),
    ("decisions", "decisions", "slot", "one per slot, overwritten"),
    ("candle marks", "candles:marks", "asset", "one field per asset, overwritten"),
    ("candle windows", "candles:", "asset", "BATON_CANDLE_RETENTION_S (1 h)"),
    ("feed status", "feed:", "asset", "one per asset, overwritten"),
    ("market cache", "market:", "slot-window", "its window's end + 1 h (TTL)"),
    ("intents", "intents", "slot-window", HISTORY_KEPT),
    ("positions", "positions", "slot-window", HISTORY_KEPT),
    ("ledger", "ledger", "slot-window", HISTORY_KEPT),
    ("settle claims", "settle:claim:", "slot-window", "15 min (TTL)"),
    ("rq jobs and queue", "rq:", "slot-window", "24 h after the job ran (result TTL)"),
    ("tick journal", "journal:ticks", "tick", f"the last {JOURNAL_MAXLEN:,} ticks"),
    ("the rest", "", "fixed", "control, lease, stats, schema, errors, settle stats"),
]


def family(key: str) -> str:
    rest = key[len(PREFIX) :] if key.startswith(PREFIX) else key
    for name, match, _, _ in FAMILIES:
        if match and rest.startswith(match):
            return name
    return "the rest"


def key_memory(r: Any) -> dict[str, dict[str, int]]:
    """Bytes and key count per family: MEMORY USAGE ... SAMPLES 0 of every key."""
    out: dict[str, dict[str, int]] = {name: {"bytes": 0, "keys": 0} for name, *_ in FAMILIES}
    keys = [k.decode() if isinstance(k, bytes) else k for k in r.scan_iter(count=1000)]
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    for k, used in zip(keys, pipe.execute(), strict=True):
        f = out[family(k)]
        f["bytes"] += int(used or 0)
        f["keys"] += 1
    return out


# --- commands per tick ---------------------------------------------------------------------------


class InlineFeed:
    """The feed's writes between ticks on the virtual clock: one closed 1 s candle per asset for
    every second that has ended, through the feed's own CandleStore (feed_write.lua)."""

    def __init__(self, url: str, assets: list[str], clock: Any, retention_s: int) -> None:

        self.r = connection.async_client(load({"BATON_REDIS_URL": url}), decoded=False)
        self.store = CandleStore(
            self.r, Keys(PREFIX), interval="1s", retention_s=retention_s, clock_ms=clock.now_ms
        )
        self.assets = assets
        self.clock = clock
        self.prices = Prices(assets)
        self.next_s = clock.now_ms() // 1000 - 70

    async def catch_up(self) -> None:
        end_s = self.clock.now_ms() // 1000
        while self.next_s < end_s:
            batch = Batch()
            for sec in range(self.next_s, min(self.next_s + 10, end_s)):
                for a in self.assets:
                    self.store.accept(batch, a, self.prices.candle(a, sec))
            self.next_s = min(self.next_s + 10, end_s)
            await self.store.write(batch)

    async def close(self) -> None:
        await self.r.aclose()


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
    r = connection.client(load({"BATON_REDIS_URL": url}))
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


# --- memory per slot -----------------------------------------------------------------------------


def memory_per_unit(res: dict[str, Any], cycle_s: int, timeframes_s: list[int]) -> dict[str, Any]:
    """Bytes per slot, per traded slot-window, per asset and per tick, by family."""
    units = {
        "slot": res["slots"],
        "asset": res["assets"],
        "slot-window": max(1, res["traded_slot_windows"]),
        "tick": max(1, res["journal_entries"]),
        "fixed": 1,
    }
    out = {}
    for name, _, grows, kept in FAMILIES:
        m = res["memory"][name]
        out[name] = {
            "bytes": m["bytes"],
            "keys": m["keys"],
            "grows_with": grows,
            "per_unit": m["bytes"] / units[grows],
            "kept": kept,
        }
    # The market cache holds each window's market until an hour after its end: at the end of a
    # cycle of these short windows not one has expired yet, so per window is what it costs.
    return out


def per_day(
    per_unit: dict[str, Any],
    slots: int,
    assets: int,
    timeframes_s: tuple[int, ...],
    tick_ms: int,
    retention_s: int,
    bytes_per_candle: float,
) -> dict[str, Any]:
    """What a day adds (unbounded families) and what the bounded ones level off at, for `slots`
    slots over `timeframes_s` windows with every slot trading every window (the worst case)."""
    windows_per_slot_day = statistics.fmean(DAY_S / tf for tf in timeframes_s)
    slot_windows_day = slots * windows_per_slot_day
    u = {k: v["per_unit"] for k, v in per_unit.items()}
    history_day = (u["intents"] + u["positions"] + u["ledger"]) * slot_windows_day
    rq_kept = u["rq jobs and queue"] * slot_windows_day * RQ_RESULT_TTL_S / DAY_S
    market_kept = (
        u["market cache"] * slots * statistics.fmean((tf + MARKET_TTL_EXTRA_S) / tf for tf in timeframes_s)
    )
    claims_kept = u["settle claims"] * slots * statistics.fmean(900 / tf for tf in timeframes_s)
    journal_kept = u["tick journal"] * min(JOURNAL_MAXLEN, DAY_S * 1000 / tick_ms)
    candles_kept = bytes_per_candle * retention_s * assets
    fixed = (u["slots"] + u["decisions"]) * slots + u["feed status"] * assets
    return {
        "slots": slots,
        "assets": assets,
        "slot_windows_per_day": slot_windows_day,
        # What a day of trading adds to the history, kept HISTORY_DAYS (then pruned).
        "unbounded_bytes_per_day": history_day,
        "bounded_bytes": {
            f"intents, positions, ledger ({HISTORY_DAYS:g} days)": history_day * HISTORY_DAYS,
            "rq jobs (24 h)": rq_kept,
            "market cache (window + 1 h)": market_kept,
            "settle claims (15 min)": claims_kept,
            "tick journal (capped)": journal_kept,
            "candle windows (retention)": candles_kept,
            "slots, decisions, feed status": fixed,
        },
    }


# --- candle windows ------------------------------------------------------------------------------


async def candle_bytes(url: str, counts: tuple[int, ...]) -> list[dict[str, Any]]:
    """One asset's window of `n` 1 s candles, written as the feed writes them; its MEMORY USAGE."""

    r = connection.async_client(load({"BATON_REDIS_URL": url}), decoded=False)
    out = []
    try:
        for n in counts:
            await r.flushall()
            start_s = 1_790_000_000
            end_ms = (start_s + n) * 1000

            def clock_ms(end_ms: int = end_ms) -> int:
                return end_ms

            store = CandleStore(r, Keys(PREFIX), interval="1s", retention_s=10**8, clock_ms=clock_ms)
            prices = Prices(["btc"])
            prices.p["btc"] = 95_000.0
            for first in range(start_s, start_s + n, 600):
                batch = Batch()
                for sec in range(first, min(first + 600, start_s + n)):
                    store.accept(batch, "btc", prices.candle("btc", sec))
                await store.write(batch)
            key = f"{PREFIX}candles:btc:1s"
            used = int(cast(int, await r.memory_usage(key, samples=0)))
            members = cast(list[bytes], await r.zrange(key, -3, -1))  # a client without decoding
            enc = await r.object("encoding", key)
            out.append(
                {
                    "candles": n,
                    "bytes": used,
                    "bytes_per_candle": used / n,
                    "encoding": enc.decode() if isinstance(enc, bytes) else str(enc),
                    "member_bytes": statistics.fmean(len(m) for m in members),
                    "example": members[-1].decode() if members else "",
                }
            )
    finally:
        await r.aclose()
    return out


# --- rendering -----------------------------------------------------------------------------------


def human(b: float) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(b) >= size:
            return f"{b / size:,.1f} {unit}"
    return f"{b:,.0f} B"


def render(out: dict[str, Any]) -> str:
    lines = []
    cmds = out["commands"]
    base = cmds[0] if cmds else None
    rows = [
        "| slots | tick kind | ticks | Redis commands executed/tick mean | max | sent by the clients/tick "
        "| round trips/tick mean | max | most executed (per tick) |",
        "|" + "---|" * 9,
    ]
    for c in cmds:
        for kind in ("all", "idle", "settle", "entry", "failed"):
            g = c["all"] if kind == "all" else c["by_kind"][kind]
            if not g.get("n"):
                continue
            top = ", ".join(f"{k} {v:g}" for k, v in list(g["top_commands_per_tick"].items())[:4])
            rows.append(
                f"| {c['slots']:,} | {kind} | {g['n']} | {g['executed_mean']:,.1f} | {g['executed_max']:,} "
                f"| {g['sent_mean']:,.1f} | {g['round_trips_mean']:.1f} | {g['round_trips_max']} | {top} |"
            )
    lines += ["\n".join(rows), ""]
    if base is not None and len(cmds) > 1:
        last = cmds[-1]
        a, b = base["all"], last["all"]
        lines.append(
            f"{last['slots']:,} / {base['slots']:,} slots ({last['slots'] // base['slots']}x): "
            "commands executed "
            f"{b['executed_mean'] / a['executed_mean']:.1f}x, sent {b['sent_mean'] / a['sent_mean']:.1f}x, "
            f"round trips {b['round_trips_mean'] / a['round_trips_mean']:.1f}x (means over the cycle)"
        )
        for kind in ("idle", "settle", "entry"):
            ga, gb = base["by_kind"][kind], last["by_kind"][kind]
            if ga.get("n") and gb.get("n"):
                lines.append(
                    f"  {kind}: round trips {ga['round_trips_mean']:.1f} -> {gb['round_trips_mean']:.1f}, "
                    f"commands executed {ga['executed_mean']:,.0f} -> {gb['executed_mean']:,.0f}"
                )
        lines.append("")
    mem = out["memory"]
    rows = [
        "| state | grows with | kept | "
        + " | ".join(f"bytes at {m['slots']:,} slots" for m in mem)
        + " | bytes per unit |",
        "|" + "---|" * (4 + len(mem)),
    ]
    for name, _, grows, kept in FAMILIES:
        per = mem[-1]["per_unit"][name]["per_unit"]
        rows.append(
            f"| {name} | {grows} | {kept} | "
            + " | ".join(human(m["per_unit"][name]["bytes"]) for m in mem)
            + f" | {per:,.0f} |"
        )
    rows.append(
        "| **INFO used_memory − empty** | | | "
        + " | ".join(human(m["used_memory"] - m["used_memory_empty"]) for m in mem)
        + " | |"
    )
    lines += ["\n".join(rows), ""]
    for m in mem:
        lines.append(
            f"{m['slots']:,} slots ({m['assets']} assets): {m['traded_slot_windows']:,} slot-windows "
            f"traded in the cycle, {m['journal_entries']} ticks journaled; "
            "all state per slot (INFO, candles included): "
            f"{human((m['used_memory'] - m['used_memory_empty']) / m['slots'])}"
        )
    lines.append("")
    rows = [
        "| candles in one window | bytes (MEMORY USAGE) | bytes per candle | member bytes | encoding |",
        "|---|---|---|---|---|",
    ]
    for c in out["candles"]:
        rows.append(
            f"| {c['candles']:,} | {human(c['bytes'])} | {c['bytes_per_candle']:.1f} "
            f"| {c['member_bytes']:.0f} "
            f"| {c['encoding']} |"
        )
    lines += ["\n".join(rows), ""]
    cd = out["candle_day"]
    lines.append(
        f"candle windows: {cd['bytes_per_candle']:.0f} B per 1 s candle; an asset-day untrimmed "
        f"{human(cd['asset_day_untrimmed'])}; with the {cd['retention_s']:,} s retention an asset levels "
        f"off at {human(cd['asset_retained'])} ({human(cd['retained_default_assets'])} for the "
        f"{PROD_ASSETS} default assets)"
    )
    lines.append("")
    rows = [
        "| a day of trading (every slot trades every window) | "
        + " | ".join(f"{d['slots']:,} slots ({d['assets']} assets × 5m, 15m)" for d in out["per_day"])
        + " |",
        "|---|" + "---|" * len(out["per_day"]),
    ]
    rows.append(
        "| slot-windows per day | "
        + " | ".join(f"{d['slot_windows_per_day']:,.0f}" for d in out["per_day"])
        + " |"
    )
    rows.append(
        "| intents, positions, ledger added per day | "
        + " | ".join(human(d["unbounded_bytes_per_day"]) for d in out["per_day"])
        + " |"
    )
    for name in out["per_day"][0]["bounded_bytes"]:
        rows.append(
            f"| {name}, levels off at | "
            + " | ".join(human(d["bounded_bytes"][name]) for d in out["per_day"])
            + " |"
        )
    lines.append("\n".join(rows))
    return "\n".join(lines)


# --- the run -------------------------------------------------------------------------------------


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.slots.split(",") if x]
    timeframes = tuple(t for t in args.timeframes.split(",") if t)
    tf_s = [timeframe_seconds(t) for t in timeframes]
    cycle_s = math.lcm(*tf_s)
    cycle_ticks = args.ticks or cycle_s * 1000 // args.tick_ms
    load = LoadSampler()
    results = []
    with load, RedisServer(aof=True) as server:
        wire = Wire().install()
        try:
            for n in sizes:
                print(f"{n} slots: {cycle_ticks} ticks on a virtual clock ...", flush=True)
                results.append(
                    await commands_per_tick(n, server.url, timeframes, args.tick_ms, cycle_ticks, wire)
                )
        finally:
            wire.uninstall()
        print("candle windows ...", flush=True)
        candles = await candle_bytes(server.url, tuple(int(x) for x in args.candles.split(",")))
        info = server.describe()
    retention = 3600
    at_retention = min(candles, key=lambda c: abs(c["candles"] - retention))
    bpc = at_retention["bytes_per_candle"]
    candle_day = {
        "bytes_per_candle": bpc,
        "retention_s": retention,
        "asset_day_untrimmed": bpc * DAY_S,
        "asset_retained": bpc * retention,
        "retained_default_assets": bpc * retention * PROD_ASSETS,
    }
    mem = []
    for res in results:
        mem.append(
            {
                "slots": res["slots"],
                "assets": res["assets"],
                "traded_slot_windows": res["traded_slot_windows"],
                "journal_entries": res["journal_entries"],
                "used_memory": res["used_memory"],
                "used_memory_empty": res["used_memory_empty"],
                "per_unit": memory_per_unit(res, cycle_s, tf_s),
            }
        )
    per_unit = mem[-1]["per_unit"]
    days = [
        per_day(
            per_unit,
            PROD_ASSETS * len(PROD_TIMEFRAMES_S),
            PROD_ASSETS,
            PROD_TIMEFRAMES_S,
            PROD_TICK_MS,
            retention,
            bpc,
        ),
        per_day(per_unit, 1024, PROD_ASSETS * 64, PROD_TIMEFRAMES_S, PROD_TICK_MS, retention, bpc),
    ]
    return {
        "benchmark": "redis_cost",
        "command": " ".join([Path(sys.executable).name, "-m", "bench.redis_cost", *sys.argv[1:]]),
        "machine": machine_info(
            tick_ms=args.tick_ms,
            timeframes=list(timeframes),
            venue="in-process stand-in (instant; every order fills at the ask)",
            clock="virtual (one tick at a time; nothing else touches Redis during a tick)",
            **load.summary(),
            **info,
        ),
        "commands": [summarise_commands(r) for r in results],
        "memory": mem,
        "candles": candles,
        "candle_day": candle_day,
        "per_day": days,
        "per_day_assumptions": {
            "timeframes_s": PROD_TIMEFRAMES_S,
            "tick_ms": PROD_TICK_MS,
            "every_slot_trades_every_window": True,
            "per_unit_costs_from_slots": results[-1]["slots"],
        },
        "sizes": [
            {k: v for k, v in r.items() if k != "samples"} | {"samples": r["samples"]} for r in results
        ],
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.redis_cost", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", default="16,1024", help="slot counts, comma-separated")
    ap.add_argument("--timeframes", default=",".join(TIMEFRAMES))
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument(
        "--ticks", type=int, default=0, help="ticks per size (default: one cycle of the timeframes)"
    )
    ap.add_argument("--candles", default=",".join(str(n) for n in CANDLE_COUNTS), help="candle window sizes")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "redis_cost.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C: the Redis server and the feeder of the run are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run_async(args))
    publish(result, render(result), args.json_out)


if __name__ == "__main__":
    main()

"""Replay speed: a day of recorded inputs evaluated again with the code that made them, read
from where the input log keeps them. Target (issue #26): a day in under 10 s.

The day is made, not waited for: the synthetic day of 1 s candles (bench/synthetic_day.py),
and at every 5 s tick the evaluations a worker would have recorded for the default 16 slots
(8 assets x 5m, 15m), each with its input and answer (bench/synthetic_inputs.py; the strategies
are worker/strategies/'s). The day is the 24 h before the benchmark starts, so that the stream
ids Redis gives the entries fall inside the range a reader asks for. It is stored in the input
log's own formats (part A): one stream entry per tick in a real `redis-server` of its own
(state/inputs.py `append_inputs`, encode_batch), and day files under var/inputs/ (one
to_json_line per line, a gzip member per 5 minutes as the settle program's roll appends them:
worker/input_files.py's format). Side by side, in one run:

- the default retention: the first 18 h from the files, the last 6 h from Redis
  (BATON_INPUT_LOG_REDIS_S = 21600);
- all of it from the files (the day rolled);
- all of it from Redis (a retention of a day);

each for snipe (awake in the last 30 s of a window: the default configuration) and momentum
(no wake rule: about three times as many evaluations). Per row: the evaluations, the time to read
them back (control/input_archive.py iter_evaluations: files, then Redis, deduplicated) and the
time to replay them (the same iterator into control/replay.py `replay` with the records'
own code: load, evaluate, compare, value), median and p99 over the repeats; and the parity:
every decision equal.

    python -m bench.replay [--repeats 3] [--hours 24] [--seed 42] [--only snipe,momentum]
                           [--profile DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gzip
import importlib
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.machine import LoadSampler, command_line, machine_info, publish
from bench.numbers import stats
from bench.redis_server import RedisServer
from bench.synthetic_day import ASSETS, asset_candles
from bench.synthetic_inputs import Slot, evaluations
from control.input_archive import iter_evaluations
from control.replay import Code, replay
from kernel.input_log import encode_batch, to_json_line
from state.inputs import InputsRepo
from state.keys import Keys
from state.structs import Candle
from worker.input_files import GZIP_LEVEL, day_file, inputs_dir

REPO = Path(__file__).resolve().parent.parent
TICK_MS = 5000
TIMEFRAMES = ("5m", "15m")
REDIS_KEEP_MS = 21_600_000  # BATON_INPUT_LOG_REDIS_S's default, 6 h
ROLL_MS = 300_000  # a roll every 5 minutes: one gzip member each
TARGET_S = 10.0
RELEASE = "bench"
STORES = ("default", "files", "redis")
STORE_LABEL = {
    "default": "18 h files + 6 h Redis",
    "files": "all from the files",
    "redis": "all from Redis",
}


class CandleOutcomes:
    """What a window resolved to, from the synthetic candles (control/replay_value.py Outcomes):
    Up when the close at the window's end is at least the open at its start."""

    def __init__(self, candles: dict[str, list[Candle]]) -> None:
        self.by = {a: {c.open_ms: c for c in cs} for a, cs in candles.items()}

    def up_won(self, asset: str, start_ms: int, end_ms: int) -> bool | None:
        got = self.by.get(asset, {})
        first, last = got.get(start_ms), got.get(end_ms - 1000)
        return None if first is None or last is None else last.close >= first.open

    def fee_rate(self, asset: str, timeframe: str, window_start_s: int) -> float:
        return 0.0


def append_lines(path: Path, lines: list[bytes]) -> None:
    """A roll's member: the lines as one gzip member at the end of the day file, as
    worker/input_files.py's roll appends them (without its bookkeeping, which a reader skips)."""
    with open(path, "ab") as f:
        f.write(gzip.compress(b"".join(line + b"\n" for line in lines), GZIP_LEVEL, mtime=0))


def store(
    days: list[tuple[int, int, list[Any]]], r: redis.Redis, prefix: str, home: Path, files_before_ms: int
) -> dict[str, Any]:
    """The ticks before `files_before_ms` into `home`'s var/inputs/, the rest into Redis under
    `prefix`; returns what was written."""
    repo = InputsRepo(r, Keys(prefix))
    inputs_dir(home).mkdir(parents=True, exist_ok=True)
    chunk: list[bytes] = []
    chunk_end = -1
    n_files = n_redis = 0
    rows: list[tuple[int, int, str, int, bytes]] = []
    for tick, at_ms, batch in days:
        if at_ms < files_before_ms:
            if at_ms >= chunk_end and chunk:
                append_lines(day_file(home, chunk_end - 1), chunk)
                chunk = []
            if at_ms >= chunk_end:
                chunk_end = at_ms - at_ms % ROLL_MS + ROLL_MS
            chunk.extend(to_json_line(e) for e in batch)
            n_files += len(batch)
        else:
            # As the worker appends (kernel/notes.py): one entry per tick, empty ones too.
            rows.append((tick, at_ms, RELEASE, len(batch), encode_batch(batch) if batch else b""))
            n_redis += len(batch)
            if len(rows) >= 500:
                repo.append_inputs(rows, 0)
                rows = []
    if chunk:
        append_lines(day_file(home, chunk_end - 1), chunk)
    if rows:
        repo.append_inputs(rows, 0)
    file_bytes = sum(p.stat().st_size for p in inputs_dir(home).glob("*.jsonl.gz"))
    redis_bytes = int(r.memory_usage(Keys(prefix).input_log(), samples=0) or 0) if n_redis else 0
    return {"in_files": n_files, "in_redis": n_redis, "file_bytes": file_bytes, "redis_bytes": redis_bytes}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    strategies = [s for s in ("snipe", "momentum") if not args.only or s in args.only.split(",")]
    span_ms = round(args.hours * 3_600_000)
    # On a 5-minute boundary (the same windows' phase run after run, as far as the stream ids
    # allow: a reader takes entries appended up to 10 minutes after the range's end).
    to_ms = time.time_ns() // 1_000_000 // 300_000 * 300_000
    from_ms = to_ms - span_ms
    lead_s, tail_s = 3600, 900
    t = time.perf_counter()
    candles = {
        a: asset_candles(a, from_ms // 1000 - lead_s, span_ms // 1000 + lead_s + tail_s, args.seed)
        for a in ASSETS
    }
    print(f"synthetic candles: {time.perf_counter() - t:.1f} s", flush=True)
    outcomes = CandleOutcomes(candles)
    setup: dict[str, Any] = {"from_ms": from_ms, "to_ms": to_ms, "strategies": {}}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp, RedisServer(aof=False) as server:
        r = redis.Redis.from_url(server.url)
        targets: dict[tuple[str, str], tuple[str, Path]] = {}
        for name in strategies:
            mod = importlib.import_module(f"worker.strategies.{name}")
            slots = [Slot(f"{a}-{tf}", a, tf, mod, name) for a in ASSETS for tf in TIMEFRAMES]
            t = time.perf_counter()
            day = list(evaluations(candles, slots, from_ms, to_ms, TICK_MS, RELEASE))
            made_s = time.perf_counter() - t
            n = sum(len(b) for _, _, b in day)
            kinds: dict[str, int] = {}
            for _, _, b in day:
                for e in b:
                    kinds[e.kind] = kinds.get(e.kind, 0) + 1
            setup["strategies"][name] = {
                "evaluations": n,
                "ticks": len(day),
                "kinds": kinds,
                "made_s": round(made_s, 2),
            }
            print(
                f"{name}: {n:,} evaluations in {len(day):,} ticks made in {made_s:.1f} s ({kinds})",
                flush=True,
            )
            for where in STORES:
                home = Path(tmp) / f"{name}-{where}"
                prefix = f"b{name}{where}:"
                before = {"default": to_ms - REDIS_KEEP_MS, "files": to_ms + 1, "redis": from_ms}[where]
                t = time.perf_counter()
                wrote = store(day, r, prefix, home, before)
                wrote["store_s"] = round(time.perf_counter() - t, 2)
                setup["strategies"][name][where] = wrote
                targets[(name, where)] = (prefix, home)
            del day
        samples: dict[tuple[str, str], list[dict[str, Any]]] = {key: [] for key in targets}
        for i in range(args.repeats):
            for (name, where), (prefix, home) in targets.items():
                k = Keys(prefix)
                problems: list[str] = []
                t = time.perf_counter()
                n_read = sum(1 for _ in iter_evaluations(r, k, home, from_ms, to_ms - 1, None, problems))
                read_s = time.perf_counter() - t
                prof = cProfile.Profile() if args.profile and i == 0 else None
                cpu0, t = time.process_time(), time.perf_counter()
                if prof is not None:
                    prof.enable()
                rep = replay(
                    iter_evaluations(r, k, home, from_ms, to_ms - 1, None, problems),
                    Code(home=home),
                    outcomes,
                    from_ms,
                    to_ms - 1,
                )
                if prof is not None:
                    prof.disable()
                    args.profile.mkdir(parents=True, exist_ok=True)
                    prof.dump_stats(args.profile / f"replay-{name}-{where}.prof")
                replay_s, cpu_s = time.perf_counter() - t, time.process_time() - cpu0
                samples[(name, where)].append(
                    {
                        "read_s": round(read_s, 3),
                        "replay_s": round(replay_s, 3),
                        "cpu_s": round(cpu_s, 3),
                        "read": n_read,
                        "decisions": rep.decisions,
                        "equal": rep.equal,
                        "differ": rep.differ,
                        "problems": len(problems),
                        "profiled": prof is not None,
                    }
                )
                print(
                    f"  {name:8s} {where:8s} run {i + 1}: read {read_s:5.2f} s, replay {replay_s:5.2f} s, "
                    f"{rep.decisions:,} decisions, {rep.differ} differ",
                    flush=True,
                )
        for (name, where), got in samples.items():
            timed = [s for s in got if not s["profiled"]] or got
            last = got[-1]
            rows.append(
                {
                    "strategy": name,
                    "store": where,
                    "label": f"{name}, {STORE_LABEL[where]}",
                    "evaluations": setup["strategies"][name]["evaluations"],
                    "read": last["read"],
                    "decisions": last["decisions"],
                    "equal": last["equal"],
                    "differ": last["differ"],
                    "problems": last["problems"],
                    "read_s": stats([s["read_s"] for s in timed]),
                    "replay_s": stats([s["replay_s"] for s in timed]),
                    "cpu_s_median": round(statistics.median(s["cpu_s"] for s in timed), 3),
                    "samples": got,
                    **{k: setup["strategies"][name][where][k] for k in ("file_bytes", "redis_bytes")},
                }
            )
        redis_info = server.describe()
    return {"setup": setup, "span_s": span_ms / 1000, "rows": rows, "redis": redis_info}


def render(result: dict[str, Any]) -> str:
    hours = result["span_s"] / 3600
    lines = [
        f"| {hours:g} h of recorded inputs, 16 slots | evaluations | read s median | p99 (max) "
        "| replay s median | p99 (max) | CPU s | x real time | evaluations/s | equal "
        "| stored MB (files + Redis) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        m = r["replay_s"]["median"]
        read, replayed = r["read_s"], r["replay_s"]
        mb = f"{r['file_bytes'] / 1e6:.1f} + {r['redis_bytes'] / 1e6:.1f}"
        lines.append(
            f"| {r['label']} | {r['evaluations']:,} | {read['median']:.2f} | {read['p99']:.2f} "
            f"| {m:.2f} | {replayed['p99']:.2f} | {r['cpu_s_median']:.2f} | {result['span_s'] / m:,.0f}x "
            f"| {r['decisions'] / m:,.0f} "
            f"| {r['equal']:,} of {r['decisions']:,} | {mb} |"
        )
    notes = []
    for r in result["rows"]:
        if r["decisions"] != r["evaluations"] or r["equal"] != r["decisions"] or r["problems"]:
            notes.append(
                f"{r['label']}: {r['decisions']:,} decisions of {r['evaluations']:,} recorded, "
                f"{r['differ']} differ, {r['problems']} problems: NOT parity"
            )
    if hours >= 24:
        for r in result["rows"]:
            if r["store"] == "default":
                m = r["replay_s"]["median"]
                notes.append(
                    f"target: a day of {r['strategy']} in under {TARGET_S:.0f} s: {m:.1f} s, "
                    f"{'met' if m < TARGET_S else 'not met'}"
                )
    return "\n".join([*lines, "", *notes])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.replay", description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hours", type=float, default=24.0, help="hours of recorded inputs (the last of them)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--only", default="", help="strategies, comma-separated: snipe,momentum")
    ap.add_argument("--cpu", type=int, default=(os.cpu_count() or 1) - 1, help="the core to pin to")
    ap.add_argument("--profile", type=Path, default=None, help="cProfile the first replay of each into DIR")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "replay.json")
    args = ap.parse_args(argv)
    if args.repeats < 1 or not 0 < args.hours <= 24:
        ap.error("--repeats must be at least 1 and --hours in (0, 24]")
    if set(filter(None, args.only.split(","))) - {"snipe", "momentum"}:
        ap.error("--only: snipe and/or momentum")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})  # one core: the target is "on one core"
    with LoadSampler() as load:
        result = measure(args)
    result["machine"] = machine_info(
        command=command_line("replay"), pinned_cpu=args.cpu, **result.pop("redis"), **load.summary()
    )
    publish(result, render(result), args.json_out)
    if args.profile:
        for path in sorted(args.profile.glob("replay-*.prof")):
            print(f"\n--- {path} (top 12 by own time)")
            pstats.Stats(str(path)).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

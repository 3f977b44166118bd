"""Bounded reads: the worker's tick with a week of history in Redis, alone and with the api's
readers beside it — its status.json writer (after every tick), a dashboard (GET /events, and
GET /pnl whenever the ledger moves, as the page does) and `--scrapers` concurrent GET /metrics
every second — and the same readers of the code before the bounded reads on a smaller history.

What runs:
- Redis: a `redis-server` of its own in the production configuration (AOF everysec), own dir;
- history: `--days` of settled trades of every slot (half of them 5-minute windows, half
  15-minute, as production's timeframes: about 1,350 trades per slot-week), each a filled
  intent, a settled position, a buy and a payout in the ledger and their refs, written straight
  into Redis, then counted once (`counts_recount.lua`, the upgrade's one-time backfill: timed),
  then the AOF rewritten, so that no rewrite falls into a measurement;
- the worker: bench/rig.py's `TickRunner` at `--slots` slots, as bench/tick_scale.py runs it
  (stub venue, every slot enters at its first tick in its zone, a feeder writing candles every
  second, settlement of closed windows), on 1 s ticks;
- readers: `python -m api` (the api program: HTTP API, dashboard, /metrics, status.json writer)
  and bench/read_load.py (the scrapers and the dashboard), each a process of its own.
  "new" runs this checkout's api; "old" the api of `--old-ref` (default: the commit before the
  bounded reads), from a git worktree of it, against the same Redis (the worker is this
  checkout's in every condition).

Conditions alternate round by round (`--rounds`, the order rotated), so that the machine's
noise hits each: `alone` (the worker only), `new readers`, and, while the history is still
`--old-days` long, `old readers`. Then the rest of the history is loaded and `alone` and `new
readers` alternate again on the whole week. The old readers are not run on the whole week: each
of their reads would hold gigabytes in the api process (6 scrapes at once), more than this
machine can spare.

    python -m bench.reads [--slots 1024] [--days 7] [--old-days 1] [--seconds 60] [--rounds 2]
                          [--scrapers 50] [--old-ref REF] [--json-out F]
    python -m bench.reads --quick     # tiny sizes, a smoke run of a minute or two
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
import redis

from bench.candles import Feeder, synthetic_assets
from bench.machine import LoadSampler, command_line, machine_info, publish
from bench.numbers import stats
from bench.redis_server import RedisServer
from bench.rig import STUB_VENUE, Rig, TickSample, bench_settings, run_ticks
from bench.wire import Wire
from deploy.ports import free_port
from kernel.clock import SystemClock
from state.counts import recount_sync
from state.keys import Keys
from state.structs import INTENT, POSITION, Intent, Position
from venues.stub import StubVenue

REPO = Path(__file__).resolve().parent.parent
TIMEFRAMES = ("15s", "30s", "1m", "2m")
KEYS = Keys("baton:")
DAY_S = 86_400
# The history's windows: production's timeframes, half the slots each.
HISTORY_TF_S = (300, 900)
BATCH = 1000
START_TIMEOUT_S = 120.0


# --- the history -----------------------------------------------------------------------------------
def _trade(slot: str, asset: str, start: int, tf: int, rng: random.Random) -> tuple[Intent, Position]:
    at_ms = start * 1000 + tf * 1000 - 5000
    token = str(rng.getrandbits(250))  # token ids are 77-digit decimal strings
    condition = "0x" + secrets.token_hex(32)
    i = Intent(
        id=f"{slot}:{start}:entry",
        slot=slot,
        window_start_s=start,
        window_end_s=start + tf,
        leg="entry",
        side="up",
        limit_price=0.55,
        size=9.09,
        stake_usd=5.0,
        epoch=1,
        created_ms=at_ms,
        status="filled",
        token_id=token,
        condition_id=condition,
        order_id="0x" + secrets.token_hex(32),
        filled_size=9.09,
        avg_price=0.55,
        updated_ms=at_ms + 40,
    )
    won = rng.random() < 0.5
    p = Position(
        id=f"{slot}:{start}",
        slot=slot,
        asset=asset,
        window_start_s=start,
        window_end_s=start + tf,
        side="up",
        token_id=token,
        condition_id=condition,
        shares_micros=9_090_000,
        cost_micros=5_000_000,
        opened_ms=at_ms + 40,
        intent_id=i.id,
        status="settled",
        won=won,
        payout_micros=9_090_000 if won else 0,
        pnl_micros=4_090_000 if won else -5_000_000,
        settled_ms=(start + tf) * 1000 + 60_000,
    )
    return i, p


def _entry(kind: str, amount: int, ref: str, at_ms: int, pnl: int) -> Any:
    """A ledger stream entry as the ledger scripts write it."""
    return {"kind": kind, "amount_micros": amount, "ref": ref, "at_ms": at_ms, "epoch": 1, "pnl_micros": pnl}


def load_history(url: str, slots: list[tuple[str, str]], now_s: int, from_days: float, to_days: float) -> int:
    """Settled trades of every slot in windows that started between `to_days` and `from_days`
    ago (and ended an hour ago at the latest), with the running sums the ledger scripts would
    have kept: the trades written."""
    r = redis.Redis.from_url(url)
    rng = random.Random(int(from_days * 1000))
    newest = now_s - 3600
    pipe = r.pipeline(transaction=False)
    n = buys = payouts = pnl = 0
    for k, (slot, asset) in enumerate(slots):
        tf = HISTORY_TF_S[k % len(HISTORY_TF_S)]
        first = (now_s - int(to_days * DAY_S)) // tf * tf + tf
        last = min(newest - tf, now_s - int(from_days * DAY_S) - tf)
        for start in range(first, last + 1, tf):
            i, p = _trade(slot, asset, start, tf, rng)
            pipe.hset(KEYS.intents(), i.id, INTENT.encode(i))
            pipe.hset(KEYS.positions(), p.id, POSITION.encode(p))
            pipe.sadd(KEYS.ledger_refs(), f"buy:{i.id}", f"settle:{p.id}")
            pipe.xadd(KEYS.ledger(), _entry("buy", -p.cost_micros, f"buy:{i.id}", p.opened_ms, 0))
            pipe.xadd(
                KEYS.ledger(), _entry("payout", p.payout_micros, f"settle:{p.id}", p.settled_ms, p.pnl_micros)
            )
            buys -= p.cost_micros
            payouts += p.payout_micros
            pnl += p.pnl_micros
            n += 1
            if n % BATCH == 0:
                pipe.execute()
    pipe.hincrby(KEYS.ledger_totals(), "cash_micros", buys + payouts)
    pipe.hincrby(KEYS.ledger_totals(), "buy_micros", buys)
    pipe.hincrby(KEYS.ledger_totals(), "payout_micros", payouts)
    pipe.hincrby(KEYS.ledger_totals(), "realized_pnl_micros", pnl)
    pipe.execute()
    r.close()
    return n


def count_once(url: str) -> dict[str, float]:
    """The upgrade's one-time backfill (counts_recount.lua, a page per call, forced): its wall
    time, its calls and the longest (how long it held Redis at once)."""
    r = redis.Redis.from_url(url)
    took: list[float] = []
    t = time.perf_counter()
    recount_sync(r, KEYS, int(time.time() * 1000), took_s=took)
    wall = time.perf_counter() - t
    r.hset(KEYS.ledger_totals(), "entries", r.xlen(KEYS.ledger()))
    r.close()
    return {"wall_s": round(wall, 3), "calls": len(took), "longest_call_ms": round(max(took) * 1000, 1)}


def rewrite_aof(url: str) -> None:
    """BGREWRITEAOF now and wait for it: no rewrite of the load falls into a measurement."""
    r = redis.Redis.from_url(url, decode_responses=True)
    with contextlib.suppress(redis.ResponseError):  # one already running
        r.bgrewriteaof()
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        p = r.info("persistence")
        if not int(p.get("aof_rewrite_in_progress", 0)) and not int(p.get("aof_rewrite_scheduled", 0)):
            break
        time.sleep(0.5)
    r.close()


# --- the readers ---------------------------------------------------------------------------------------
def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class Readers:
    """The api program of `code_dir` and bench/read_load.py against it, for one segment."""

    def __init__(self, code_dir: Path, env: dict[str, str], scrapers: int, every_s: float) -> None:
        self.code_dir = code_dir
        self.env = env
        self.scrapers = scrapers
        self.every_s = every_s
        self.dir = Path(tempfile.mkdtemp(prefix="baton-bench-readers-"))
        self.port = free_port()
        self.token = secrets.token_urlsafe(24)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Readers:
        home = self.env["BATON_HOME"]
        env = {
            **os.environ,
            **self.env,
            "BATON_API_PORT": str(self.port),
            "BATON_API_TOKEN": self.token,
            "PYTHONPATH": str(self.code_dir),
        }
        self.api_log = (self.dir / "api.log").open("w")
        self.api = subprocess.Popen(
            [sys.executable, "-m", "api"],
            cwd=self.code_dir,
            env=env,
            stdout=self.api_log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.api.poll() is not None:
                self._stop_api()
                raise RuntimeError(f"the api did not start: see {self.dir / 'api.log'}")
            time.sleep(0.2)
        self.cpu0 = _cpu_s(self.api.pid)
        ready = self.dir / "ready"
        self.out = self.dir / "load.json"
        self.load = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.read_load",
                "--url",
                self.url,
                "--out",
                str(self.out),
                "--scrapers",
                str(self.scrapers),
                "--every-s",
                str(self.every_s),
                "--status-file",
                str(Path(home) / "var" / "status.json"),
                "--ready",
                str(ready),
            ],
            cwd=REPO,
            env={**os.environ, "BENCH_TOKEN": self.token, "PYTHONPATH": str(REPO)},
        )
        while not ready.exists():
            if time.monotonic() > deadline or self.load.poll() is not None:
                raise RuntimeError("the readers did not start")
            time.sleep(0.1)
        self.t0 = time.monotonic()
        return self

    def _stop_api(self) -> None:
        if self.api.poll() is None:
            self.api.send_signal(signal.SIGTERM)
            try:
                self.api.wait(30)
            except subprocess.TimeoutExpired:
                self.api.kill()
                self.api.wait(10)
        self.api_log.close()

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.t0
        self.api_cpu_s = _cpu_s(self.api.pid) - self.cpu0
        if self.load.poll() is None:
            self.load.send_signal(signal.SIGTERM)
            try:
                self.load.wait(60)
            except subprocess.TimeoutExpired:
                self.load.kill()
                self.load.wait(10)
        self._stop_api()
        try:
            self.seen = json.loads(self.out.read_text())
        except (OSError, ValueError) as e:
            self.seen = {"failed": [f"no result: {e}"]}
        self.seen["api_cpu_s"] = round(self.api_cpu_s, 2)
        self.seen["api_log"] = str(self.dir / "api.log")


def old_tree(ref: str) -> Path:
    """A git worktree of `ref` (detached) in a temp dir; removed by `drop_tree`."""
    path = Path(tempfile.mkdtemp(prefix="baton-bench-old-"))
    path.rmdir()
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(path), ref],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return path


def drop_tree(path: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
        check=False,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shutil.rmtree(path, ignore_errors=True)


# --- the run ----------------------------------------------------------------------------------------------
def _redis_cpu_s(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def segment(
    rig: Rig, wire: Wire, feeder: Feeder, url: str, seconds: int, readers: Readers | None
) -> dict[str, Any]:
    """`seconds` ticks of the worker, with `readers` running beside it (or none)."""
    r = redis.Redis.from_url(url)
    with readers if readers is not None else contextlib.nullcontext():
        cpu0, t0, feed0 = _redis_cpu_s(r), time.monotonic(), feeder.failed.value
        samples, skipped = await run_ticks(rig, wire, max(1, seconds * 1000 // rig.s.tick_ms))
        redis_cpu = (_redis_cpu_s(r) - cpu0) / (time.monotonic() - t0)
        feed_failed = feeder.failed.value - feed0
    mem = int(r.info("memory")["used_memory"])
    r.close()
    return {
        "samples": [asdict(x) for x in samples],
        "skipped_boundaries": skipped,
        "redis_cpu_share": round(redis_cpu, 3),
        "redis_used_memory": mem,
        "feed_writes_failed": feed_failed,
        "readers": readers.seen if readers is not None else None,
    }


def summarise(segments: list[dict[str, Any]]) -> dict[str, Any]:
    samples = [TickSample(**x) for seg in segments for x in seg["samples"]]
    out: dict[str, Any] = {
        "segments": len(segments),
        "ticks": len(samples),
        "duration_ms": stats([x.duration_ms for x in samples]),
        "jitter_ms": stats([x.jitter_ms for x in samples]),
        "entry_ms": stats([x.duration_ms for x in samples if x.kind == "entry"]),
        "failed": sum(x.kind == "failed" for x in samples),
        "skipped_boundaries": sum(seg["skipped_boundaries"] for seg in segments),
        "feed_writes_failed": sum(seg.get("feed_writes_failed", 0) for seg in segments),
        "redis_cpu_share": stats([seg["redis_cpu_share"] for seg in segments]),
        "redis_used_memory": max(seg["redis_used_memory"] for seg in segments),
    }
    seen = [seg["readers"] for seg in segments if seg["readers"]]
    if seen:
        secs = sum(x.get("seconds", 0) for x in seen) or 1.0
        scrape = [v for x in seen for v in [x.get("scrape_ms", {})] if v.get("n")]
        pnl = [v for x in seen for v in [x.get("pnl_ms", {})] if v.get("n")]
        out["readers"] = {
            "scrapes_per_s": round(sum(x.get("scrapes", 0) for x in seen) / secs, 1),
            "scrape_errors": sum(x.get("scrape_errors", 0) for x in seen),
            "scrape_ms_median": _worst(scrape, "median"),
            "scrape_ms_p99": _worst(scrape, "p99"),
            "pnl_fetches": sum(x.get("pnl_fetches", 0) for x in seen),
            "pnl_ms_median": _worst(pnl, "median"),
            "status_writes_per_s": round(sum(x.get("status_writes", 0) for x in seen) / secs, 2),
            "status_bytes": max(x.get("status_bytes", 0) for x in seen),
            "api_cpu_share": round(sum(x.get("api_cpu_s", 0) for x in seen) / secs, 3),
            "failed": [f for x in seen for f in x.get("failed", [])],
        }
    return out


def _worst(groups: list[dict[str, Any]], q: str) -> float | None:
    """Of the segments' stats, the largest `q` (the medians are per segment, not pooled)."""
    return max((g[q] for g in groups), default=None)


async def run_phase(
    rig: Rig,
    wire: Wire,
    feeder: Feeder,
    args: argparse.Namespace,
    env: dict[str, str],
    tree: Path | None,
    slots: list[tuple[str, str]],
    now_s: int,
    loaded: float,
    days: float,
    conditions: list[str],
) -> dict[str, Any]:
    """Load the history from `loaded` to `days` days back, count it once, then alternate the
    conditions for `args.rounds` rounds."""
    url = env["BATON_REDIS_URL"]
    print(f"loading history: {loaded:g} .. {days:g} days of {len(slots):,} slots ...", flush=True)
    t = time.perf_counter()
    trades = await asyncio.to_thread(load_history, url, slots, now_s, loaded, days)
    load_s = time.perf_counter() - t
    counted = await asyncio.to_thread(count_once, url)
    await asyncio.to_thread(rewrite_aof, url)
    r = redis.Redis.from_url(url)
    kept = {
        "intents": r.hlen(KEYS.intents()),
        "positions": r.hlen(KEYS.positions()),
        "ledger": r.xlen(KEYS.ledger()),
        "used_memory": int(r.info("memory")["used_memory"]),
    }
    r.close()
    print(
        f"  {trades:,} trades written in {load_s:.0f} s, counted in {counted['wall_s']:.2f} s "
        f"({counted['calls']} calls, the longest {counted['longest_call_ms']:.0f} ms); Redis holds "
        f"{kept['positions']:,} positions, {kept['used_memory'] / 2**30:.2f} GiB",
        flush=True,
    )
    by: dict[str, list[dict[str, Any]]] = {c: [] for c in conditions}
    for rnd in range(args.rounds):
        k = rnd % len(conditions)
        for cond in conditions[k:] + conditions[:k]:
            readers = None
            if cond != "alone":
                code = tree if cond == "old readers" else REPO
                assert code is not None
                readers = Readers(code, env, args.scrapers, args.every_s)
            print(f"  round {rnd + 1}: {cond}: {args.seconds} s of ticks ...", flush=True)
            seg = await segment(rig, wire, feeder, url, args.seconds, readers)
            by[cond].append(seg)
            d = summarise([seg])
            print(
                f"    tick median {d['duration_ms'].get('median', 0):.2f} ms, "
                f"p99 {d['duration_ms'].get('p99', 0):.2f} ms"
                + (f"; {d['readers']}" if "readers" in d else ""),
                flush=True,
            )
    return {
        "history_days": days,
        "history": kept,
        "trades_written": trades,
        "load_s": round(load_s, 1),
        "count_once": counted,
        "conditions": {c: summarise(v) for c, v in by.items()},
        "segments": by,
    }


async def run_async(args: argparse.Namespace) -> dict[str, Any]:
    assets = synthetic_assets(args.slots // len(TIMEFRAMES))
    slots = [(f"{a}-{tf}", a) for a in assets for tf in TIMEFRAMES]
    load = LoadSampler()
    phases: list[dict[str, Any]] = []
    tree = old_tree(args.old_ref) if args.old_ref and args.old_days > 0 else None
    home = tempfile.mkdtemp(prefix="baton-bench-home-")
    plan = []
    if tree is not None:
        plan.append((args.old_days, ["alone", "new readers", "old readers"]))
    plan.append((args.days, ["alone", "new readers"]))
    try:
        with load, RedisServer(aof=True) as server:
            url = server.url
            s = bench_settings(url, assets, TIMEFRAMES, 1000, home)
            env = {
                "BATON_HOME": home,
                "BATON_REDIS_URL": url,
                "BATON_TICK_MS": "1000",
                "BATON_ASSETS": ",".join(assets),
                "BATON_TIMEFRAMES": ",".join(TIMEFRAMES),
            }
            now_s = int(time.time())
            wire = Wire().install()
            try:
                with Feeder(url, assets, 20, s.candle_retention_s) as feeder:
                    rig = Rig(s, StubVenue(), SystemClock())
                    await rig.start()
                    await rig.runner.dry_run()
                    try:
                        loaded = 0.0
                        for days, conditions in plan:
                            phases.append(
                                await run_phase(
                                    rig, wire, feeder, args, env, tree, slots, now_s, loaded, days, conditions
                                )
                            )
                            loaded = days
                    finally:
                        await rig.close()
            finally:
                wire.uninstall()
            redis_info = server.describe()
    finally:
        shutil.rmtree(home, ignore_errors=True)
        if tree is not None:
            drop_tree(tree)
    return {
        "benchmark": "reads",
        "command": command_line("reads"),
        "machine": machine_info(
            tick_ms=1000,
            slots=args.slots,
            timeframes=list(TIMEFRAMES),
            venue=STUB_VENUE,
            scrapers=args.scrapers,
            scrape_every_s=args.every_s,
            old_ref=args.old_ref,
            **load.summary(),
            **redis_info,
        ),
        "phases": phases,
    }


def _n(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def render(result: dict[str, Any]) -> str:
    rows = [
        "| history | readers | ticks | tick ms median | p99 | × alone median | × alone p99 "
        "| entry ticks ms p99 | skipped | failed | Redis CPU | scrapes/s | scrape ms median "
        "| p99 (worst segment) | /pnl ms median "
        "| status.json writes/s | api CPU |",
        "|" + "---|" * 17,
    ]
    for ph in result["phases"]:
        h = ph["history"]
        label = f"{ph['history_days']:g} d ({h['positions']:,} positions, {h['used_memory'] / 2**30:.1f} GiB)"
        alone = ph["conditions"]["alone"]["duration_ms"]
        for cond, c in ph["conditions"].items():
            d, rd = c["duration_ms"], c.get("readers", {})
            rows.append(
                f"| {label} | {cond} | {c['ticks']} | {_n(d.get('median'), 2)} | {_n(d.get('p99'), 1)} "
                f"| {d['median'] / alone['median']:.2f}× | {d['p99'] / alone['p99']:.2f}× "
                f"| {_n(c['entry_ms'].get('p99'), 1)} | {c['skipped_boundaries']} | {c['failed']} "
                f"| {c['redis_cpu_share']['median'] * 100:.0f} % "
                f"| {_n(rd.get('scrapes_per_s'))} | {_n(rd.get('scrape_ms_median'))} "
                f"| {_n(rd.get('scrape_ms_p99'))} "
                f"| {_n(rd.get('pnl_ms_median'))} | {_n(rd.get('status_writes_per_s'), 2)} "
                f"| {(str(round(rd['api_cpu_share'] * 100)) + ' %') if rd else '-'} |"
            )
    lines = ["\n".join(rows), ""]
    for ph in result["phases"]:
        lines.append(
            f"{ph['history_days']:g} d of history: {ph['trades_written']:,} trades written in "
            f"{ph['load_s']:.0f} s; the one-time count (counts_recount.lua) took "
            f"{ph['count_once']['wall_s']:.2f} s in {ph['count_once']['calls']} calls, the longest "
            f"holding Redis {ph['count_once']['longest_call_ms']:.0f} ms"
        )
        for cond, c in ph["conditions"].items():
            rd = c.get("readers") or {"scrape_errors": 0, "failed": []}
            if rd["scrape_errors"] or rd["failed"] or c.get("feed_writes_failed") or c["failed"]:
                lines.append(
                    f"  {cond}: {c['failed']} failed ticks, {c.get('feed_writes_failed', 0)} candle "
                    f"writes that Redis did not answer in time, {rd['scrape_errors']} failed scrapes "
                    f"{rd['failed'] or ''}"
                )
    return "\n".join(lines)


def default_old_ref() -> str:
    """The commit before the bounded reads: the parent of the commit that added state/counts.py."""
    out = subprocess.run(
        ["git", "-C", str(REPO), "log", "--diff-filter=A", "--format=%H", "--", "state/counts.py"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    return f"{out[-1]}^" if out else ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.split("\n\n")[0])
    ap.add_argument("--slots", type=int, default=1024)
    ap.add_argument("--days", type=float, default=7.0, help="history kept, in days of every slot")
    ap.add_argument(
        "--old-days",
        type=float,
        default=1.0,
        help="history on which the old readers run beside the new (0: not at all)",
    )
    ap.add_argument("--seconds", type=int, default=60, help="ticks per segment (1 s ticks)")
    ap.add_argument("--rounds", type=int, default=2, help="segments per condition, alternated")
    ap.add_argument("--scrapers", type=int, default=50, help="concurrent GET /metrics every --every-s")
    ap.add_argument("--every-s", type=float, default=1.0)
    ap.add_argument(
        "--old-ref", default=None, help="the old readers' commit (default: before state/counts.py)"
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes: 64 slots, a day, 10 s segments")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "reads.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.slots, args.days, args.old_days, args.seconds, args.rounds, args.scrapers = (
            64,
            1.0,
            0.5,
            10,
            1,
            10,
        )
    if args.old_ref is None:
        args.old_ref = default_old_ref()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run_async(args))
    publish(result, render(result), args.json_out)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()

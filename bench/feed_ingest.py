"""Feed ingest: how many Binance kline messages per second the feed gets into Redis, and how long
a frame takes from the socket to Redis, at increasing message rates.

Three processes, as in production, plus a load generator:

- a real `redis-server` on a free port (`--save '' --appendonly no`);
- a local WebSocket server (`bench/kline_server.py`, on the `websockets` library) that serves a
  Binance combined stream (`/stream?streams=<sym>usdt@kline_1s/...`) of kline frames shaped like
  Binance's, paced at a target rate for a few seconds per step; frames are built from
  pre-encoded templates and written to the socket in bursts of about a millisecond;
- the feed: `feed.client.Feed`, the code `python -m feed` runs (connect, backfill, decode with
  msgspec, pipelined MULTI/EXEC writes), in its own process, pinned to one core with
  `os.sched_setaffinity`; the server and Redis get the other core(s).

Every frame is a distinct closed 1-second candle (the asset cycles, its open time advances), so
every frame costs its own Redis write: the worst case, as nothing coalesces. The frame's send time
rides in its event time `E` (ms) and, to the microsecond, in its volume `v`; the feed's
`CandleStore.on_written` hook (called once Redis has answered a batch's MULTI/EXEC) takes
`now - volume` for each candle: the frame-to-Redis delay. Messages per second into Redis are
counted by the same hook over the span of the step's writes (the first batch excluded), and
checked against Redis itself (ZCARD of every candle window = frames sent: nothing lost). The feed
process's CPU time over the same span says how much of its one core it used; CPU microseconds per
message give the rate one core would sustain.

    python -m bench.feed_ingest [--rates 5000,10000,20000,40000,max] [--seconds 5] [--assets 100]
                                [--profile DIR]   # cProfile the feed: DIR/feed-<rate>.prof
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any, cast

from bench.kline_server import END_ASSET, WARMUP_S, server_main
from bench.machine import command_line, machine_info, publish, short_machine_line
from bench.numbers import rank
from bench.redis_server import RedisServer, bare
from feed.client import Feed
from state import connection

REPO = Path(__file__).resolve().parent.parent
PREFIX = "bench:"
TARGET = 20_000  # kline messages per second on one core: the target docs/performance.md checks


# --- the feed ------------------------------------------------------------------------------------


def feed_main(cfg: dict[str, Any], conn: Any) -> None:
    if cfg["cpu"] is not None:
        os.sched_setaffinity(0, {cfg["cpu"]})
    logging.basicConfig(level=logging.ERROR)
    if cfg["profile"]:
        import cProfile

        with cProfile.Profile() as prof:
            result = asyncio.run(_feed(cfg))
        prof.dump_stats(cfg["profile"])
    else:
        result = asyncio.run(_feed(cfg))
    conn.send(result)
    conn.close()


async def _feed(cfg: dict[str, Any]) -> dict[str, Any]:

    redis = connection.async_client(bare(cfg["redis_url"]), decoded=False)
    feed = Feed(
        redis,
        assets=[*cfg["assets"], END_ASSET],
        ws_url=cfg["ws_url"],
        rest_url=cfg["rest_url"],
        prefix=PREFIX,
        retention_s=10**8,  # keep every candle, to count them
    )
    delays = array("d")
    st: dict[str, Any] = {"batches": 0, "frames": 0, "first": None, "last": None, "max_batch": 0}
    done = asyncio.Event()

    def on_written(batch: Any) -> None:
        now, cpu = time.time(), time.process_time()
        n = batch.counts["frames"]
        if not n:
            return
        if st["first"] is None:
            st["first"] = (now, cpu, n)  # the span starts here: this batch is not counted
        st["last"] = (now, cpu)
        st["batches"] += 1
        st["frames"] += n
        st["max_batch"] = max(st["max_batch"], n)
        for (asset, _), c in batch.candles.items():
            if asset == END_ASSET:
                done.set()
            else:
                delays.append(now - c.volume)

    feed.store.on_written = on_written
    task = asyncio.create_task(feed.run())
    timed_out = False
    try:
        await asyncio.wait_for(done.wait(), cfg["timeout_s"])
    except TimeoutError:
        timed_out = True
    feed.stop()
    await asyncio.wait_for(task, 30)
    await redis.aclose()
    out: dict[str, Any] = {"timed_out": timed_out, "batches": st["batches"], "max_batch": st["max_batch"]}
    if st["first"] is None or st["last"] is None:
        return out
    (t0, cpu0, n0), (t1, cpu1) = st["first"], st["last"]
    ordered = sorted(delays)
    out.update(
        frames=st["frames"] - 1,  # the end frame
        span_frames=st["frames"] - n0,
        span_s=t1 - t0,
        span_cpu_s=cpu1 - cpu0,
        delay_ms_median=statistics.median(ordered) * 1000 if ordered else None,
        delay_ms_p99=rank(ordered, 0.99) * 1000 if ordered else None,
        delay_ms_max=ordered[-1] * 1000 if ordered else None,
    )
    return out


# --- orchestration -------------------------------------------------------------------------------


def cpus() -> tuple[int | None, int | None, int | None]:
    """(feed, server, redis) cores: the feed alone on the first."""
    try:
        mine = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None, None
    if len(mine) < 2:
        return None, None, None
    return mine[0], mine[1], mine[2] if len(mine) > 2 else mine[1]


def measure(
    ctx: Any,
    rate: int,
    args: argparse.Namespace,
    assets: list[str],
    ports: tuple[int, int],
    reports: Any,
    redis_port: int,
    feed_cpu: int | None,
) -> dict[str, Any]:

    r = connection.client(bare(f"redis://127.0.0.1:{redis_port}/0"), decoded=False)
    r.flushall()
    cfg = {
        "cpu": feed_cpu,
        "assets": assets,
        "redis_url": f"redis://127.0.0.1:{redis_port}/0",
        "ws_url": f"ws://127.0.0.1:{ports[0]}/bench/{rate}/{args.seconds}",
        "rest_url": f"http://127.0.0.1:{ports[1]}",
        "timeout_s": WARMUP_S + args.seconds + 120,
        "profile": str(args.profile / f"feed-{rate or 'max'}.prof") if args.profile else None,
    }
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=feed_main, args=(cfg, child), name=f"feed-{rate}")
    proc.start()
    child.close()
    if not parent.poll(cfg["timeout_s"] + 60):
        proc.kill()
        raise RuntimeError(f"the feed process gave no result at {rate} msgs/s")
    got = parent.recv()
    proc.join(30)
    server = reports.get(timeout=60)
    stored = sum(int(r.zcard(f"{PREFIX}candles:{a}:1s")) for a in assets)
    raw_stats = cast(dict[bytes, bytes], r.hgetall(f"{PREFIX}feed:stats"))  # a client without decoding
    stats = {k.decode(): int(v) for k, v in raw_stats.items()}
    r.close()
    sent = server["sent"]
    row: dict[str, Any] = {
        "target": rate or "max",
        "sent": sent,
        "sent_per_s": sent / server["send_s"],
        "stored": stored,
        "lost": sent - stored,
        "feed_stats": stats,
        "server": server,
        **got,
    }
    if got.get("span_s"):
        row["into_redis_per_s"] = got["span_frames"] / got["span_s"]
        row["cpu_share"] = got["span_cpu_s"] / got["span_s"]
        row["cpu_us_per_msg"] = got["span_cpu_s"] / got["span_frames"] * 1e6
        row["one_core_per_s"] = got["span_frames"] / got["span_cpu_s"] if got["span_cpu_s"] else None
    return row


def num(v: float | None, digits: int = 1) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.{digits}f}"


def render(rows: list[dict[str, Any]], n_assets: int) -> str:
    head = (
        "| target msgs/s | sent msgs/s | into Redis msgs/s | lost | frame→Redis ms median | p99 "
        "| feed CPU (one core) | CPU µs/msg | one core at 100 % msgs/s |"
    )
    out = [head, "|" + "---|" * 9]
    for row in rows:
        tgt = row["target"] if isinstance(row["target"], str) else f"{row['target']:,}"
        out.append(
            f"| {tgt} | {num(row['sent_per_s'])} | {num(row.get('into_redis_per_s'))} | {row['lost']} "
            f"| {num(row.get('delay_ms_median'), 2)} | {num(row.get('delay_ms_p99'), 2)} "
            f"| {num(100 * row['cpu_share'] if 'cpu_share' in row else None)} % "
            f"| {num(row.get('cpu_us_per_msg'))} | {num(row.get('one_core_per_s'))} |"
        )
    best = max((r.get("into_redis_per_s") or 0 for r in rows), default=0)
    verdict = "meets" if best >= TARGET else "MISSES"
    out += [
        "",
        f"{n_assets} assets, every frame a distinct closed 1s candle (one Redis write each); "
        f"best {best:,.0f} msgs/s into Redis: {verdict} the target of {TARGET:,} on one core.",
    ]
    return "\n".join(out)


def versions() -> dict[str, Any]:
    import msgspec
    import redis
    import websockets

    return {
        "redis_server": subprocess.run(
            ["redis-server", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip(),
        "packages": {
            "websockets": websockets.__version__,
            "redis": redis.__version__,
            "msgspec": msgspec.__version__,
        },
    }


def parse_rates(raw: str) -> list[int]:
    return [0 if x.strip() == "max" else int(x) for x in raw.split(",") if x.strip()]


def run(args: argparse.Namespace) -> dict[str, Any]:
    feed_cpu, server_cpu, redis_cpu = cpus()
    if server_cpu is not None:
        os.sched_setaffinity(0, {server_cpu})  # this process waits, beside the server
    assets = [f"a{i:03d}" for i in range(args.assets)]
    ctx = mp.get_context("spawn")
    redis_server = RedisServer(aof=False, cpu=redis_cpu)
    redis_port = redis_server.port
    ports_q, reports = ctx.Queue(), ctx.Queue()
    server = ctx.Process(target=server_main, args=(assets, server_cpu, ports_q, reports), name="ws-server")
    server.start()
    rows = []
    try:
        ports = ports_q.get(timeout=60)
        for rate in parse_rates(args.rates):
            row = measure(ctx, rate, args, assets, ports, reports, redis_port, feed_cpu)
            rows.append(row)
            print(
                f"target {row['target']}: sent {row['sent_per_s']:,.0f}/s, into Redis "
                f"{row.get('into_redis_per_s', 0):,.0f}/s, lost {row['lost']}, delay median "
                f"{num(row.get('delay_ms_median'), 2)} ms p99 {num(row.get('delay_ms_p99'), 2)} ms, "
                f"feed CPU {100 * row.get('cpu_share', 0):.0f} %",
                flush=True,
            )
    finally:
        server.terminate()
        server.join(10)
        redis_server.stop()
    return {
        "benchmark": "feed_ingest",
        "command": command_line("feed_ingest"),
        "machine": machine_info(
            **versions(), cores_used={"feed": feed_cpu, "server": server_cpu, "redis": redis_cpu}
        ),
        "assets": args.assets,
        "seconds_per_step": args.seconds,
        "target_msgs_per_s_one_core": TARGET,
        "rows": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.feed_ingest", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rates", default="5000,10000,20000,40000,max", help="msgs/s per step; max: unpaced")
    ap.add_argument("--seconds", type=float, default=5.0, help="sending time per step")
    ap.add_argument("--assets", type=int, default=100, help="streams (symbols) in the combined stream")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "feed_ingest.json")
    ap.add_argument(
        "--profile",
        type=Path,
        help="run the feed under cProfile; feed-<rate>.prof files go to this directory",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    result = run(args)
    table = render(result["rows"], args.assets)
    publish(result, table, args.json_out, machine=short_machine_line(result["machine"]))
    if any(r["lost"] for r in result["rows"]):
        sys.exit("frames were lost: see the table")


if __name__ == "__main__":
    main()

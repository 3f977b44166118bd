"""What the input log costs (kernel/notes.py, state/inputs.py, worker/input_files.py): the
worker's CPU to build and encode one tick's batch, its bytes, the Redis memory an entry takes
(MEMORY USAGE of the stream over its entries, on a real `redis-server`), and the bytes of the
day files the settle program writes, for the default 16 slots (8 assets x 5m, 15m) and for
1,024.

Inputs are made as the tick makes them, from a seeded random walk: the last minute of 1 s
closes, both outcome books at the sim's depth (5 levels a side), the strategy's parameters;
`momentum` inputs (API 2) add 20 bars of 15 s. Each slot's answer is a pass with a reason
most ticks and a buy now and then. Two cases per row: every slot evaluated every tick (a
strategy awake all window, the worst case), and snipe's default (awake only in the last 30 s
of a window: 1/10 of a 5m window's ticks, 1/30 of a 15m one's; the other ticks' entries are
empty, as kernel/notes.py appends one per tick).

    python -m bench.input_log [--ticks 1000]
"""

from __future__ import annotations

import argparse
import gzip
import random
import time
from pathlib import Path
from typing import Any

from bench.candles import Prices
from bench.machine import command_line, machine_info, publish
from bench.redis_server import RedisServer, bare
from kernel import input_log
from kernel.strategy_api import Bar, BookSide, Buy, Pass, SlotInput
from state import connection
from state.inputs import InputsRepo
from state.keys import Keys
from state.scripts import source

REPO = Path(__file__).resolve().parent.parent
ASSETS = ["btc", "eth", "sol", "xrp", "doge", "bnb", "hype", "link"]
TICK_MS = 5000
DAY_TICKS = 86_400_000 // TICK_MS
SNIPE_PARAMS = {"edge": 0.03, "entry_s": 30.0, "min_price": 0.05, "max_price": 0.95, "vol_floor": 1e-5}
# The share of a slot's ticks snipe evaluates by default: its last 30 s of 300 s and 900 s.
SNIPE_AWAKE = {"5m": 30 / 300, "15m": 30 / 900}


def _book(rng: random.Random, mid: float) -> BookSide:
    ask = min(0.99, round(mid + 0.01, 2))
    bid = max(0.01, round(mid - 0.01, 2))
    asks = tuple(
        (round(min(0.99, ask + i / 100), 2), float(200 + 100 * i + rng.randrange(600))) for i in range(5)
    )
    bids = tuple(
        (round(max(0.01, bid - i / 100), 2), float(200 + 100 * i + rng.randrange(600))) for i in range(5)
    )
    return BookSide(bids=bids, asks=asks)


def tick_inputs(slots: list[tuple[str, str, str]], prices: Prices, rng: random.Random, tick: int, v2: bool):
    """One tick's (slot id, input, answer) for every slot."""
    now_ms = tick * TICK_MS
    closes = {}
    for a in {a for _, a, _ in slots}:
        closes[a] = tuple(prices.candle(a, now_ms // 1000 - 60 + i).close for i in range(60))
    out = []
    for sid, asset, tf in slots:
        period_ms = 300_000 if tf == "5m" else 900_000
        start = now_ms - now_ms % period_ms
        mid = rng.uniform(0.05, 0.95)
        c = closes[asset]
        extra: dict[str, Any] = {}
        if v2:
            extra = dict(
                api=2,
                strategy="momentum",
                bars={
                    "15s": tuple(
                        Bar(now_ms - (20 - i) * 15_000, c[i], c[i] * 1.0002, c[i] * 0.9998, c[i + 1], 12.5)
                        for i in range(20)
                    )
                },
                cash_usd=round(rng.uniform(900, 1000), 2),
                exposure_room_usd=200.0,
                open_ref_price=c[0],
            )
        up, down = _book(rng, mid), _book(rng, 1 - mid)
        inp = SlotInput(
            slot_id=sid,
            asset=asset,
            timeframe=tf,
            now_ms=now_ms,
            window_start_ms=start,
            window_end_ms=start + period_ms,
            open_price=c[0],
            last_price=c[-1],
            closes=c,
            stake_usd=5.0,
            params=dict(SNIPE_PARAMS),
            up_ask=up.asks[0][0],
            down_ask=down.asks[0][0],
            up_book=up,
            down_book=down,
            **extra,
        )
        if rng.random() < 0.05:
            answer: Any = Buy(side="up", limit_price=up.asks[0][0], stake_usd=5.0, reason=f"edge {mid:.3f}")
        else:
            answer = Pass(reason=f"no edge: p_up {mid:.3f} vs ask {up.asks[0][0]:.2f}")
        out.append((sid, start // 1000, now_ms, inp, answer))
    return out


def encoded(rows: list[tuple[Any, ...]], tick: int) -> tuple[bytes, list[input_log.Evaluation]]:
    """The batch as kernel/notes.py builds it between ticks (records, check, encode)."""
    evals = [
        input_log.recordable(
            input_log.evaluation(
                tick, sid, ws, at, "snipe", "r1", inp, ans, "intent" if type(ans) is Buy else ""
            )
        )
        for sid, ws, at, inp, ans in rows
    ]
    return input_log.encode_batch(evals), evals


def measure(n_slots: int, ticks: int, v2: bool, url: str) -> dict[str, Any]:
    slots = [
        (f"{a}{i // len(ASSETS) or ''}-{tf}", a, tf)
        for i, a in enumerate(ASSETS * (n_slots // 16 or 1))
        for tf in ("5m", "15m")
    ]
    slots = slots[:n_slots]
    prices, rng = Prices(ASSETS, seed=11), random.Random(5)
    base_tick = 1_795_000_000_000 // TICK_MS
    batches: list[tuple[int, bytes, int]] = []
    build_s: list[float] = []
    lines_gz = 0
    evaluations = 0
    sample_ticks = min(ticks, 200 if n_slots > 100 else ticks)
    for t in range(sample_ticks):
        rows = tick_inputs(slots, prices, rng, base_tick + t, v2)
        t0 = time.perf_counter()
        data, evals = encoded(rows, base_tick + t)
        build_s.append(time.perf_counter() - t0)
        batches.append((base_tick + t, data, len(evals)))
        evaluations += len(evals)
        lines_gz += len(gzip.compress(b"".join(input_log.to_json_line(e) + b"\n" for e in evals), 6))
    r = connection.client(bare(url), decoded=False)
    k = Keys("bench:")
    repo = InputsRepo(r, k)
    r.script_load(source("inputs_append"))  # the pipeline sends a bare EVALSHA
    r.delete(k.input_log())
    pipe = r.pipeline(transaction=False)
    for i in range(ticks):
        tick, data, n = batches[i % len(batches)]
        repo.append_inputs([(tick, tick * TICK_MS, "r1", n, data)], 0, pipeline=pipe)
        if i % 200 == 199:
            pipe.execute()
    pipe.execute()
    full = r.memory_usage(k.input_log(), samples=0) or 0
    r.delete(k.input_log())
    for i in range(ticks):
        repo.append_inputs([(base_tick + i, (base_tick + i) * TICK_MS, "r1", 0, b"")], 0, pipeline=pipe)
    pipe.execute()
    empty = r.memory_usage(k.input_log(), samples=0) or 0
    r.delete(k.input_log())
    r.close()
    per_full, per_empty = full / ticks, empty / ticks
    awake = sum(SNIPE_AWAKE[tf] for _, _, tf in slots) / len(slots)
    # Snipe: an entry holds the slots awake at that tick; roughly, a share `awake` of a full one.
    per_snipe = per_empty + awake * (per_full - per_empty)
    build_us = sorted(build_s)[len(build_s) // 2] * 1e6
    return {
        "slots": n_slots,
        "input": "momentum (API 2, 20 bars)" if v2 else "snipe (API 1)",
        "ticks": ticks,
        "batch_bytes": round(sum(len(d) for _, d, _ in batches) / len(batches)),
        "build_encode_us_median": round(build_us, 1),
        "build_encode_us_per_eval": round(build_us / n_slots, 2),
        "redis_bytes_per_entry": round(per_full),
        "redis_bytes_per_empty_entry": round(per_empty),
        "redis_mb_6h_every_tick": round(per_full * DAY_TICKS / 4 / 1e6, 1),
        "redis_mb_6h_snipe": round(per_snipe * DAY_TICKS / 4 / 1e6, 1),
        "file_bytes_per_eval": round(lines_gz / evaluations, 1),
        "file_mb_day_every_tick": round(lines_gz / evaluations * n_slots * DAY_TICKS / 1e6, 1),
        "file_mb_day_snipe": round(lines_gz / evaluations * n_slots * awake * DAY_TICKS / 1e6, 1),
    }


def render(rows: list[dict[str, Any]]) -> str:
    head = (
        "| slots | input | batch bytes (zlib) | build + encode µs median (per evaluation) "
        "| Redis bytes per entry (empty tick) | Redis MB for 6 h: every tick / snipe "
        "| file bytes per evaluation (gzip) | file MB a day: every tick / snipe |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for x in rows:
        lines.append(
            f"| {x['slots']:,} | {x['input']} | {x['batch_bytes']:,} "
            f"| {x['build_encode_us_median']:,.0f} ({x['build_encode_us_per_eval']:.1f}) "
            f"| {x['redis_bytes_per_entry']:,} ({x['redis_bytes_per_empty_entry']}) "
            f"| {x['redis_mb_6h_every_tick']:,} / {x['redis_mb_6h_snipe']:,} "
            f"| {x['file_bytes_per_eval']} | {x['file_mb_day_every_tick']:,} / {x['file_mb_day_snipe']:,} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.input_log", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ticks", type=int, default=1000, help="entries appended per row")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "input_log.json")
    args = ap.parse_args(argv)
    server = RedisServer(aof=False)
    try:
        rows = [
            measure(16, args.ticks, False, server.url),
            measure(16, args.ticks, True, server.url),
            measure(1024, max(50, args.ticks // 20), False, server.url),
        ]
    finally:
        server.stop()
    result = {"command": command_line("input_log"), "machine": machine_info(), "rows": rows}
    publish(result, render(rows), args.json_out)


if __name__ == "__main__":
    main()

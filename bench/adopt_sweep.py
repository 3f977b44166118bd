"""The adoption sweep's cost (kernel/adopt.py): what a takeover or a Redis primary change adds
before the slots trade again, and what watching the primary's replication id adds to every tick.

What runs: a `redis-server` of its own (production persistence), the worker's `TickRunner` at
`--slots` slots of 15-minute windows against the in-process stub venue (no network: the venue's
own listing time is not in these figures; the live CLOB answers each page of GET /data/trades
and /data/orders in tens to hundreds of ms). For each size:
- `adopt all`: the venue holds one order per slot-window that no intent knows (every entry of
  the window lost in a failover): one sweep adopts them all (intents, fills, ledger);
- `all known`: the same orders, now known: the sweep that finds nothing to do;
- `read` / `read + id`: the tick's snapshot read (`read_snapshot`), without and with the
  primary's replication id on its pipeline (`INFO replication`), alternating, medians.
Each size runs `--repeats` times on a fresh Redis state; the table shows the medians.

    python -m bench.adopt_sweep [--slots 16,256,1024] [--reads 200] [--repeats 3] [--json-out F]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import LoadSampler, command_line, machine_info, publish
from bench.redis_server import RedisServer
from bench.rig import bench_settings
from kernel.candle_cache import VOL_LOOKBACK_S
from kernel.clock import SystemClock
from kernel.snapshot import read_snapshot
from kernel.tick import Identity, TickRunner
from kernel.windows import window_bounds
from state import connection
from state.keys import Keys
from state.store import Store
from venues.stub import StubVenue
from worker.lifecycle import configured_slots

RESULTS = Path(__file__).with_name("results") / "adopt_sweep.json"


async def one_size(url: str, n: int, reads: int) -> dict[str, Any]:
    assets = [f"a{i:04d}" for i in range(n)]
    s = bench_settings(url, assets, ("15m",), 5000, tempfile.mkdtemp(prefix="baton-bench-adopt-"))
    r = connection.async_client(s)
    try:
        await r.flushall()
        store = Store(r, Keys("baton:"))
        await store.ensure_schema()
        await store.scripts.load()
        await store.ensure_slots(configured_slots(s))
        clock = SystemClock()
        _, epoch, _ = await store.acquire_lease("blue:bench", "blue", "bench", clock.now_ms(), 600_000)
        venue = StubVenue()
        runner = TickRunner(s, store, venue, clock, Identity("blue:bench", "blue", "bench", epoch))
        runner.adopter.budget_s = 600.0
        start, _ = window_bounds(clock.now_ms(), "15m")
        for a in assets:  # one order per slot-window that Redis does not know
            m = venue.discover(f"{a}-updown-15m-{start}")
            assert m is not None
            venue.post(venue.sign_buy(m.up_token, 0.5, 10.0))
        out: dict[str, Any] = {"slots": n}
        for label in ("adopt_all", "all_known"):
            runner.adopter.owe("bench")
            t = time.perf_counter()
            adopted, problems = await runner.adopter.settle(epoch, clock.now_ms())
            out[f"{label}_ms"] = round((time.perf_counter() - t) * 1000, 2)
            out[f"{label}_adopted"] = len(adopted)
            assert not problems, problems
        refs = runner.refs.at(clock.now_ms())
        times: dict[bool, list[float]] = {False: [], True: []}
        for i in range(2 * reads):
            primary = bool(i % 2)
            t = time.perf_counter()
            await read_snapshot(store, refs, clock.now_ms(), None, VOL_LOOKBACK_S, primary=primary)
            times[primary].append((time.perf_counter() - t) * 1000)
        out["read_ms"] = round(statistics.median(times[False]), 3)
        out["read_with_id_ms"] = round(statistics.median(times[True]), 3)
        return out
    finally:
        await r.aclose()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'slots':>6} {'adopted':>8} {'adopt all ms':>13} {'all known ms':>13} "
        f"{'read ms':>8} {'read + id ms':>13}"
    ]
    for x in rows:
        lines.append(
            f"{x['slots']:>6} {x['adopt_all_adopted']:>8} {x['adopt_all_ms']:>13.1f} "
            f"{x['all_known_ms']:>13.1f} {x['read_ms']:>8.2f} {x['read_with_id_ms']:>13.2f}"
        )
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)  # a thousand adoptions are a thousand warnings
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slots", default="16,256,1024")
    ap.add_argument("--reads", type=int, default=200, help="snapshot reads per condition and size")
    ap.add_argument("--repeats", type=int, default=3, help="runs per size (medians are shown)")
    ap.add_argument("--json-out", type=Path, default=RESULTS)
    a = ap.parse_args()
    with RedisServer() as server, LoadSampler() as load:
        rows = []
        for n in a.slots.split(","):
            runs = [asyncio.run(one_size(server.url, int(n), a.reads)) for _ in range(a.repeats)]
            # The median of each figure over the repeats (the machine is shared).
            rows.append({k: statistics.median(r[k] for r in runs) for k in runs[0]})
        result = {
            "command": command_line("adopt_sweep"),
            "machine": machine_info(**server.describe(), **load.summary()),
            "rows": rows,
        }
    publish(result, table(rows), a.json_out)


if __name__ == "__main__":
    main()

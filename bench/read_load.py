"""The readers of bench/reads.py, in a process of their own (so that they do not share the
worker's event loop): `scrapers` concurrent GET /metrics every `every_s`, one dashboard (GET
/events, and GET /pnl whenever a snapshot's ledger entry count moves, as the page does), and a
watch of var/status.json (how often the api's writer rewrote it). Runs until SIGTERM, then
writes what it saw as JSON to --out.

    BENCH_TOKEN=... python -m bench.read_load --url http://127.0.0.1:PORT --out F.json \\
        [--scrapers 50] [--every-s 1] [--status-file var/status.json] [--ready F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx

from bench.numbers import stats

# A dashboard's /pnl that takes longer than this, or a scrape, counts as failed.
REQUEST_TIMEOUT_S = 120.0


class Seen:
    def __init__(self) -> None:
        self.scrape_ms: list[float] = []
        self.scrape_errors: list[str] = []
        self.rounds = 0
        self.pnl_ms: list[float] = []
        self.pnl_errors: list[str] = []
        self.events = 0
        self.status_writes = 0
        self.status_bytes = 0

    def result(self, seconds: float) -> dict[str, Any]:
        return {
            "seconds": round(seconds, 2),
            "scrape_rounds": self.rounds,
            "scrapes": len(self.scrape_ms),
            "scrape_errors": len(self.scrape_errors),
            "scrape_error_samples": sorted(set(self.scrape_errors))[:5],
            "scrape_ms": stats(self.scrape_ms),
            "pnl_fetches": len(self.pnl_ms),
            "pnl_errors": len(self.pnl_errors),
            "pnl_error_samples": sorted(set(self.pnl_errors))[:5],
            "pnl_ms": stats(self.pnl_ms),
            "events": self.events,
            "status_writes": self.status_writes,
            "status_bytes": self.status_bytes,
        }


async def scrape_rounds(client: httpx.AsyncClient, url: str, n: int, every_s: float, seen: Seen) -> None:
    async def one() -> None:
        t = time.perf_counter()
        try:
            r = await client.get(f"{url}/metrics")
            if r.status_code != 200:
                seen.scrape_errors.append(f"HTTP {r.status_code}")
                return
            seen.scrape_ms.append((time.perf_counter() - t) * 1000)
        except httpx.HTTPError as e:
            seen.scrape_errors.append(type(e).__name__)

    due = time.monotonic()
    while True:
        # A round that outlasts the interval delays the next: at most n scrapes at once.
        await asyncio.gather(*(one() for _ in range(n)))
        seen.rounds += 1
        due += every_s
        await asyncio.sleep(max(0.0, due - time.monotonic()))


async def dashboard(client: httpx.AsyncClient, url: str, token: str, seen: Seen) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    entries = -1
    async with client.stream("GET", f"{url}/events", headers=headers, timeout=None) as resp:
        async for line in resp.aiter_lines():
            if not line.startswith("data: "):
                continue
            seen.events += 1
            data = json.loads(line[6:])
            moved = data.get("pnl", {}).get("ledger_entries", entries)
            if moved == entries:
                continue
            entries = moved
            t = time.perf_counter()
            try:
                r = await client.get(f"{url}/pnl", headers=headers)
                if r.status_code == 200:
                    seen.pnl_ms.append((time.perf_counter() - t) * 1000)
                else:
                    seen.pnl_errors.append(f"HTTP {r.status_code}")
            except httpx.HTTPError as e:
                seen.pnl_errors.append(type(e).__name__)


async def watch_status(path: Path, seen: Seen) -> None:
    last = None
    while True:
        with contextlib.suppress(OSError, ValueError):
            st = path.stat()
            if st.st_mtime_ns != last:
                last = st.st_mtime_ns
                seen.status_writes += 1
                seen.status_bytes = st.st_size
        await asyncio.sleep(0.05)


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get("BENCH_TOKEN", "")
    seen = Seen()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    limits = httpx.Limits(max_connections=args.scrapers + 4, max_keepalive_connections=args.scrapers + 4)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        t0 = time.monotonic()
        tasks = [
            asyncio.create_task(scrape_rounds(client, args.url, args.scrapers, args.every_s, seen)),
            asyncio.create_task(dashboard(client, args.url, token, seen)),
        ]
        if args.status_file:
            tasks.append(asyncio.create_task(watch_status(Path(args.status_file), seen)))
        if args.ready:
            Path(args.ready).write_text("ready\n")
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        seconds = time.monotonic() - t0
        failed = [t for t in done if t is not waiter and t.exception() is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out = seen.result(seconds)
    out["failed"] = [f"{type(t.exception()).__name__}: {t.exception()}" for t in failed]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.read_load", description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--scrapers", type=int, default=50)
    ap.add_argument("--every-s", type=float, default=1.0)
    ap.add_argument("--status-file", default="")
    ap.add_argument("--ready", default="", help="a file written once the readers run")
    args = ap.parse_args()
    result = asyncio.run(amain(args))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

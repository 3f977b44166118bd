"""The real venue client's cost per order: signing (EIP-712, secp256k1) and posting, with the C
signer (coincurve) against eth-keys' pure-Python one, side by side in one run.

The tick benchmarks use an in-process venue stand-in, so that their numbers are the kernel's
and Redis's. This one measures what they leave out: `venues.polymarket.ClobVenue` (py-clob-client-v2
underneath) signing BUY orders and posting them over HTTP to the sim's CLOB (`python -m sim`,
its own process on free ports, which checks every signature as the CLOB does).

eth-keys signs with coincurve (libsecp256k1) when it is installed and with its own pure-Python
curve arithmetic otherwise: two scalar multiplications per order (the public key is derived
again from the private key at every signature, then the signature itself). Baton depends on
coincurve (pyproject.toml); this benchmark switches the backend per round through eth-keys'
own `ECC_BACKEND_CLASS` setting, alternating the two, and reports per order:

- **sign**: wall time of `ClobVenue.sign_buy` (and the thread's CPU time per order);
- **post**: wall time of `ClobVenue.post` of one signed order (FOK at a price below every ask,
  so nothing fills and the sim's account is not drawn down; the venue still checks it whole);
- **burst**: an entry chunk's venue work for `--burst` orders, signed then posted on the kernel's
  8 lanes (`kernel.lanes.in_lanes`), as `kernel/executor.py` does: wall time for all of them.

    python -m bench.venue_sign [--orders 200] [--burst 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from baton.settings import SIM_PRIVATE_KEY
from bench.machine import machine_info, publish
from bench.numbers import rank
from deploy.ports import free_port
from kernel import lanes
from kernel.clock import wall_ms
from kernel.windows import slug, window_bounds
from venues.polymarket import ClobVenue

REPO = Path(__file__).resolve().parent.parent
BACKENDS = {
    "coincurve (C)": "eth_keys.backends.CoinCurveECCBackend",
    "native (pure Python)": "eth_keys.backends.NativeECCBackend",
}
PRICE = 0.01  # FOK below the book: refused unfilled, after the venue has checked the order
SIZE = 500.0  # 5 USD at that price


def start_sim(home: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "BATON_HOME": str(home),
        "BATON_SIM_CLOB_PORT": str(port),
        "BATON_SIM_BINANCE_PORT": str(free_port()),
        "BATON_ASSETS": "btc",
        "BATON_TIMEFRAMES": "15m",
    }
    log = home / "sim.log"  # a file, not a pipe: nobody reads the sim's log while it runs
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sim"], cwd=REPO, env=env, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the sim exited with {proc.returncode}: {log.read_text()[-500:]}")
        try:
            urllib.request.urlopen(f"{url}/time", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the sim did not answer within 30 s")


def measure(venue: Any, token: str, orders: int, burst: int) -> dict[str, Any]:
    venue.sign_buy(token, PRICE, SIZE)  # warm: the client's caches (tick size, neg risk)
    sign_ms: list[float] = []
    cpu0 = time.thread_time()
    signed = []
    for _ in range(orders):
        t = time.perf_counter()
        signed.append(venue.sign_buy(token, PRICE, SIZE))
        sign_ms.append((time.perf_counter() - t) * 1000)
    sign_cpu_ms = (time.thread_time() - cpu0) * 1000 / orders
    post_ms: list[float] = []
    statuses: set[str] = set()
    for s in signed:
        t = time.perf_counter()
        res = venue.post(s, "FOK")
        post_ms.append((time.perf_counter() - t) * 1000)
        statuses.add(res.status)

    async def chunk() -> list[Any]:
        ready = await lanes.in_lanes(lambda _: venue.sign_buy(token, PRICE, SIZE), list(range(burst)))
        return await lanes.in_lanes(lambda s: venue.post(s, "FOK"), ready)

    t = time.perf_counter()
    answers = asyncio.run(chunk())
    burst_ms = (time.perf_counter() - t) * 1000
    errors = sum(isinstance(a, BaseException) for a in answers)
    return {
        "sign_ms": sign_ms,
        "sign_cpu_ms_per_order": sign_cpu_ms,
        "post_ms": post_ms,
        "post_statuses": sorted(statuses),
        "burst_ms": burst_ms,
        "burst_errors": errors,
    }


def summarise(rounds: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    out = []
    for name, rs in rounds.items():
        sign = [x for r in rs for x in r["sign_ms"]]
        post = [x for r in rs for x in r["post_ms"]]
        out.append(
            {
                "backend": name,
                "orders": len(sign),
                "sign_ms_median": statistics.median(sign),
                "sign_ms_p99": rank(sign, 0.99),
                "sign_cpu_ms_per_order": statistics.median(r["sign_cpu_ms_per_order"] for r in rs),
                "post_ms_median": statistics.median(post),
                "post_ms_p99": rank(post, 0.99),
                "burst_ms_median": statistics.median(r["burst_ms"] for r in rs),
                "burst_errors": sum(r["burst_errors"] for r in rs),
                "post_statuses": sorted({s for r in rs for s in r["post_statuses"]}),
            }
        )
    return out


def render(rows: list[dict[str, Any]], burst: int) -> str:
    base = rows[0]
    lines = [
        f"| ECDSA backend | orders | sign ms median | p99 | sign CPU ms/order | post ms median | p99 "
        f"| {burst} orders signed + posted on 8 lanes, ms median | sign × {base['backend']} "
        f"| burst × {base['backend']} | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['orders']:,} | {r['sign_ms_median']:.2f} | {r['sign_ms_p99']:.2f} "
            f"| {r['sign_cpu_ms_per_order']:.2f} | {r['post_ms_median']:.2f} | {r['post_ms_p99']:.2f} "
            f"| {r['burst_ms_median']:,.0f} | {r['sign_ms_median'] / base['sign_ms_median']:.1f}× "
            f"| {r['burst_ms_median'] / base['burst_ms_median']:.1f}× | {r['burst_errors']} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="baton-venue-sign-"))
    proc, url = start_sim(home)
    saved = os.environ.get("ECC_BACKEND_CLASS")
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in BACKENDS}
    try:
        venue = ClobVenue(url, url, SIM_PRIVATE_KEY, 137)
        start_s, _ = window_bounds(wall_ms(), "15m")
        market = venue.discover(slug("btc", "15m", start_s))
        if market is None:
            raise RuntimeError("the sim lists no btc 15m market for the current window")
        for k in range(args.rounds):
            for name, path in BACKENDS.items():
                os.environ["ECC_BACKEND_CLASS"] = path  # eth-keys reads it at every signature
                r = measure(venue, market.up_token, args.orders, args.burst)
                rounds[name].append(r)
                print(
                    f"round {k + 1} {name}: sign {statistics.median(r['sign_ms']):.2f} ms, "
                    f"post {statistics.median(r['post_ms']):.2f} ms, burst {r['burst_ms']:,.0f} ms",
                    flush=True,
                )
        venue.close()
    finally:
        if saved is None:
            os.environ.pop("ECC_BACKEND_CLASS", None)
        else:
            os.environ["ECC_BACKEND_CLASS"] = saved
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)
    rows = summarise(rounds)
    return {
        "benchmark": "venue_sign",
        "command": "python -m bench.venue_sign " + " ".join(sys.argv[1:]),
        "machine": machine_info(venue="the sim's CLOB (python -m sim), its own process, over HTTP"),
        "orders_per_round": args.orders,
        "burst": args.burst,
        "rounds": args.rounds,
        "summary": rows,
        "samples": rounds,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.venue_sign", description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=200, help="orders signed and posted one by one per round")
    ap.add_argument("--burst", type=int, default=256, help="orders of the burst row")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per backend, alternated")
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / "venue_sign.json")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    res = run(args)
    publish(res, render(res["summary"], args.burst), args.json_out)


if __name__ == "__main__":
    main()

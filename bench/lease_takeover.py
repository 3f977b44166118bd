"""A SIGKILLed lease holder, its standby on another host: what the lease heartbeat costs.

One real stack (`deploy/sandbox.py`); supervisor's worker is stopped cleanly and this script
runs the two workers itself, each with its own `BATON_HOST` (h1, h2), so that the standby
cannot see the holder's process table and must wait for the lease to expire, as on another
machine (the dead-holder shortcut is same-host only). The active worker is SIGKILLed at a
random (seeded) phase of a tick; the killed colour is started again as the standby of its host
before the next kill. Every number is read from Redis:

- kill -> lease taken: from the SIGKILL to `at_ms` of the new epoch in `baton:lease:log`;
- renewal -> lease taken: from the killed holder's last renewal (its lease's `expires_ms`
  less the lease, read just before the kill) to the same `at_ms`;
- missed ticks: tick indices absent between the killed holder's last journaled tick and the
  new holder's first one.

    python -m bench.lease_takeover [--tick-ms 5000] [--kills 10] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from baton import settings as settings_mod
from baton.settings import Settings
from bench.stack import KEYS, new_holder_entries, wait_phase, wait_ticks_by
from deploy import releases
from deploy.sandbox import TRADING, Stack, wait_for

REPO = Path(__file__).resolve().parents[1]
HOSTS = {"blue": "h1", "green": "h2"}


def launch(st: Stack, color: str) -> subprocess.Popen[bytes]:
    env = {**st.env, "BATON_REDIS_USER": "worker", "BATON_HOST": HOSTS[color]}
    log = open(st.home / "var" / "log" / f"bench-worker-{color}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, str(REPO / "deploy" / "launch.py"), color], env=env, stdout=log, stderr=log
    )


def lease_entry(st: Stack, epoch: int) -> dict[str, str] | None:
    got = [f for _id, f in st.redis.xrange(KEYS.lease_log()) if int(f["epoch"]) > epoch]
    return got[0] if got else None


Procs = dict[str, subprocess.Popen[bytes]]


def kill_once(
    st: Stack, s: Settings, procs: Procs, rng: random.Random, tick_ms: int, k: int
) -> dict[str, Any]:
    lease = st.redis.hgetall(KEYS.lease())
    color, epoch = lease["color"], int(lease["epoch"])
    standby = "green" if color == "blue" else "blue"
    wait_for(lambda: st.redis.hget(KEYS.worker(standby), "state") == "ready", 120, "the standby")
    wait_ticks_by(st, epoch, int(st.redis.hget(KEYS.stats(), "last_tick")) + 1, 60)
    phase = wait_phase(rng, tick_ms)
    renewed_ms = int(st.redis.hget(KEYS.lease(), "expires_ms")) - s.lease_ms
    killed_ms = time.time() * 1000
    os.kill(procs[color].pid, signal.SIGKILL)
    procs[color].wait()
    taken = wait_for(lambda: lease_entry(st, epoch), 60, "the standby taking the lease")
    entries = wait_for(lambda: new_holder_entries(st, epoch), 60, "the new holder's first tick")
    old_last = max(e.tick for e in entries if e.epoch == epoch)
    first = min((e for e in entries if e.epoch > epoch), key=lambda e: e.tick)
    procs[color] = launch(st, color)  # back as the standby of its host
    return {
        "kill": k,
        "phase_ms": phase,
        "from": f"{color}@{HOSTS[color]}",
        "to": f"{taken['color']}@{taken['host']}",
        "how": taken["how"],
        "kill_to_taken_ms": round(int(taken["at_ms"]) - killed_ms),
        "renewal_to_taken_ms": int(taken["at_ms"]) - renewed_ms,
        "missed": first.tick - old_last - 1,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tick-ms", type=int, default=5000)
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    st = Stack(BATON_TICK_MS=str(args.tick_ms), **TRADING)
    s = settings_mod.load(st.env)
    procs: Procs = {}
    rows: list[dict[str, Any]] = []
    try:
        st.start()
        st.supervisor("stopProcess", "worker-blue", True)  # a clean stop: the lease is released
        releases.point(st.home, "green", releases.pointed(st.home, "blue") or "")
        procs["blue"] = launch(st, "blue")
        wait_for(lambda: st.redis.hget(KEYS.lease(), "color") == "blue", 120, "blue holding the lease")
        procs["green"] = launch(st, "green")
        for k in range(args.kills):
            row = kill_once(st, s, procs, rng, args.tick_ms, k)
            rows.append(row)
            print(row, flush=True)
        taken_ms = [r["kill_to_taken_ms"] for r in rows]
        missed = [r["missed"] for r in rows]
        print(
            f"\n| tick ms | lease ms | kills | kill → taken ms median | max | renewal → taken ms median "
            f"| missed ticks mean | max |\n|---|---|---|---|---|---|---|---|\n"
            f"| {args.tick_ms} | {s.lease_ms} | {len(rows)} | {statistics.median(taken_ms):.0f} "
            f"| {max(taken_ms)} | {statistics.median(r['renewal_to_taken_ms'] for r in rows):.0f} "
            f"| {statistics.fmean(missed):.2f} | {max(missed)} |"
        )
        return 0
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        st.stop()


if __name__ == "__main__":
    sys.exit(main())

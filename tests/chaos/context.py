"""The running stack as the chaos harness sees it: `Chaos`, what the fault injectors
(tests/chaos/*_faults.py) work with (the stack, the API client, the proxy, and ways to wait
for the system to show it is back); the drain that ends a run quietly; and the snapshot of
Redis and the sim's orders that the checker judges.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import redis

from api import apitoken
from baton import settings as settings_mod
from deploy.sandbox import Stack, wait_for
from kernel.clock import wall_ms
from tests.chaos.wsproxy import WsProxy

REDIS_ERRORS = (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError)


class Watch:
    """Ways to wait for a running system to show it is back, on its Redis (`self.redis`, a
    client that outlives a Redis restart or failover); what both harnesses' injectors use."""

    redis: Any
    tick_ms: int

    @staticmethod
    def now_ms() -> int:
        return wall_ms()

    def retry(self, fn: Callable[[], Any], default: Any = None, timeout_s: float = 30) -> Any:
        """Redis reads that outlive a Redis restart."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return fn()
            except REDIS_ERRORS:
                if time.monotonic() > deadline:
                    return default
                time.sleep(0.2)

    def poll(self, cond: Callable[[], Any], timeout_s: float, interval_s: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if cond():
                    return True
            except Exception:
                pass
            time.sleep(interval_s)
        return False

    def last_entry(self) -> dict[str, str] | None:
        rows = self.redis.xrevrange("baton:journal:ticks", count=1)
        return rows[0][1] if rows else None

    def wait_tick_after(
        self, after_ms: float, timeout_s: float, cond: Callable[[dict[str, str]], bool] | None = None
    ) -> dict[str, str] | None:
        """The newest journal entry once it started after `after_ms` (and meets `cond`)."""
        got: list[dict[str, str]] = []

        def check() -> bool:
            e = self.last_entry()
            if e is not None and int(e["started_ms"]) > after_ms and (cond is None or cond(e)):
                got.append(e)
                return True
            return False

        return got[-1] if self.poll(check, timeout_s) else None


class Chaos(Watch):
    """What the fault injectors work with (tests/chaos/*_faults.py): the stack, the API client,
    the proxy, and ways to wait for the system to show it is back."""

    def __init__(self, st: Stack, tick_ms: int, window_ms: int, proxy: WsProxy, sources: list[Path]) -> None:
        self.st = st
        self.redis = st.redis
        self.tick_ms = tick_ms
        self.window_ms = window_ms
        self.proxy = proxy
        self.sources = sources
        self.deploys_done = 0
        self.seq = 0
        s = settings_mod.load(st.env)
        self.api_base = f"http://{s.api_host}:{s.api_port}"
        self.binance_url = f"http://127.0.0.1:{st.env['BATON_SIM_BINANCE_PORT']}"
        self.slot_ids = [f"{a}-{tf}" for a in s.assets for tf in s.timeframes]
        plain = httpx.Client(base_url=self.api_base, timeout=30)
        wait_for(lambda: plain.get("/health").json().get("ok"), 60, f"the api at {self.api_base}")
        plain.close()
        token = wait_for(lambda: apitoken.load(s, env=st.env, create=False), 30, "the API token file")
        self.token = token.reveal()
        self.api = httpx.Client(
            base_url=self.api_base, timeout=30, headers={"Authorization": f"Bearer {self.token}"}
        )
        self.lock = threading.Lock()

    def active(self) -> tuple[str, int, int] | None:
        lease = self.retry(lambda: self.st.redis.hgetall("baton:lease"), {})
        color = lease.get("color")
        if not color:
            return None
        info = self.st.supervisor("getProcessInfo", f"worker-{color}")
        if info["statename"] != "RUNNING" or not info["pid"]:
            return None
        return color, int(info["pid"]), int(lease.get("epoch", 0))

    def close(self) -> None:
        self.api.close()


def collect(st: Stack) -> dict[str, Any]:
    """Everything the checker reads from Redis, in one MULTI (a consistent snapshot), then the
    sim's list of every order it accepted."""
    out = snapshot(st.redis)
    out["venue_orders"] = st.sim_orders()
    return out


def snapshot(r: Any) -> dict[str, Any]:
    """What the checker reads from Redis, in one MULTI (a consistent snapshot)."""
    pipe = r.pipeline(transaction=True)
    pipe.xrange("baton:journal:ticks")
    pipe.hvals("baton:intents")
    pipe.hvals("baton:intents:open")
    pipe.hvals("baton:positions")
    pipe.hvals("baton:positions:open")
    pipe.xrange("baton:ledger")
    pipe.hgetall("baton:ledger:totals")
    pipe.hgetall("baton:control")
    pipe.hgetall("baton:stats")
    pipe.xrange("baton:deploys")
    pipe.hgetall("baton:feed:stats")
    pipe.hgetall("baton:settle:stats")
    res = pipe.execute()
    end_ms = wall_ms()
    return {
        "end_ms": end_ms,
        "journal": [f for _, f in res[0]],
        "intents": [json.loads(v) for v in res[1]],
        "open_intents": [json.loads(v) for v in res[2]],
        "positions": [json.loads(v) for v in res[3]],
        "open_positions": [json.loads(v) for v in res[4]],
        "ledger": [f for _, f in res[5]],
        "ledger_totals": res[6],
        "control": res[7],
        "stats": res[8],
        "deploys": [f for _, f in res[9]],
        "feed_stats": res[10],
        "settle_stats": res[11],
    }


def drain(ctx: Chaos, quiet_s: float, settle_timeout_s: float) -> dict[str, Any]:
    """Faults off: clear the sim's rules, lift any halt or pause, trade quietly for a while,
    then pause (no new entries) and wait until every position has settled and every intent
    is final."""
    st = ctx.st
    info: dict[str, Any] = {"started_ms": wall_ms()}
    for base in (st.clob_url, ctx.binance_url):
        with contextlib.suppress(httpx.HTTPError):
            httpx.delete(f"{base}/_sim/faults", timeout=10)
    control = ctx.retry(lambda: st.redis.hgetall("baton:control"), {})
    if control.get("halted") not in (None, "0") or control.get("paused") not in (None, "0"):
        info["resumed_leftover"] = {k: control.get(k) for k in ("halted", "paused")}
        ctx.api.post("/resume", json={})
    time.sleep(quiet_s)
    resp = ctx.api.post("/pause", json={"reason": "chaos drain"})
    info["pause_status"] = resp.status_code
    info["paused_ms"] = wall_ms()

    def settled() -> bool:
        return st.redis.hlen("baton:positions:open") == 0 and st.redis.hlen("baton:intents:open") == 0

    info["settled"] = ctx.poll(settled, settle_timeout_s, 0.5)
    # Two more ticks, so that the journal ends with a clean stretch.
    last = ctx.last_entry()
    if last is not None:
        ctx.wait_tick_after(int(last["started_ms"]) + ctx.tick_ms, 10)
    info["ended_ms"] = wall_ms()
    return info

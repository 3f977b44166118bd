"""The running cluster as the cluster chaos harness sees it: `ClusterChaos`, what the cluster
fault injectors (cluster_faults.py) work with — the `deploy.cluster.Cluster`, a Redis client
through the Sentinels, who holds what right now (`Roles`), and ways to wait until the
cluster is whole again; plus the drain that ends a run and the snapshot the checker judges
(the cluster's Redis through the Sentinels, the sim's orders in the venue's namespace).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.sandbox import sim_orders
from kernel.clock import wall_ms
from tests.chaos.context import REDIS_ERRORS, Watch, snapshot

# A worker that is warm and may take the lease (the states a standby reports).
STANDBY_STATES = ("ready", "standby")
LEASE_LOG_KEY = "baton:lease:log"


@dataclass(frozen=True)
class Roles:
    """Who holds what at one moment: the lease (host, colour, epoch), the Redis primary,
    the hosts with a warm standby worker."""

    holder_host: str
    color: str
    epoch: int
    primary_host: str
    standby_hosts: tuple[str, ...] = ()
    hosts_up: tuple[str, ...] = ()

    def of(self, host: str) -> list[str]:
        """What `host` is, for the fault log: holder, primary, standby."""
        out = []
        if host == self.holder_host:
            out.append("holder")
        if host == self.primary_host:
            out.append("primary")
        if host in self.standby_hosts:
            out.append("standby")
        return out


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """A field of the status struct (or of its JSON as a dict)."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


@dataclass
class ClusterChaos(Watch):
    c: Any  # deploy.cluster.Cluster
    tick_ms: int
    window_ms: int
    sources: list[Path]
    hosts: tuple[str, ...] = ("h1", "h2", "h3")
    seq: int = 0
    deploys_done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        # The admin's client through the Sentinels: it follows the primary across failovers.
        self.redis = self.c.client(user="admin")

    # --- who holds what ---------------------------------------------------------------------
    def status(self) -> Any:
        return self.c.status()

    def roles(self) -> Roles:
        st = self.status()
        lease = _get(st, "lease")
        redis = _get(st, "redis")
        standbys = tuple(
            _get(s, "host")
            for s in _get(st, "standbys", []) or []
            if _get(s, "state") in STANDBY_STATES and _get(s, "host")
        )
        up = tuple(_get(h, "name") for h in _get(st, "hosts", []) or [] if _get(h, "up"))
        return Roles(
            holder_host=_get(lease, "host", "") or "",
            color=_get(lease, "color", "") or "",
            epoch=int(_get(lease, "epoch", 0) or 0),
            primary_host=_get(redis, "primary", "") or "",
            standby_hosts=standbys,
            hosts_up=up,
        )

    def host_pid(self, host: str, program: str) -> int:
        info = self.c.host(host).supervisor("getProcessInfo", program)
        return int(info["pid"])

    # --- waiting until it is whole again --------------------------------------------------------
    def whole(self) -> str:
        """'' when the cluster is whole: every host up, a primary with two replicas, a lease
        holder and a warm standby on another host; else what is missing."""
        try:
            st = self.status()
        except Exception as e:
            return f"status: {type(e).__name__}: {e}"
        down = [_get(h, "name") for h in _get(st, "hosts", []) or [] if not _get(h, "up")]
        if down:
            return f"hosts down: {down}"
        redis = _get(st, "redis")
        if not _get(redis, "primary"):
            return "no Redis primary"
        replicas = _get(redis, "replicas", []) or []
        if len(replicas) < len(self.hosts) - 1:
            return f"{len(replicas)} replica(s) of {_get(redis, 'primary')}"
        lease = _get(st, "lease")
        if not _get(lease, "host"):
            return "no lease holder"
        standbys = [
            s
            for s in _get(st, "standbys", []) or []
            if _get(s, "state") in STANDBY_STATES and _get(s, "host") != _get(lease, "host")
        ]
        if not standbys:
            return "no warm standby on another host"
        return ""

    def wait_whole(self, timeout_s: float) -> str:
        """Waits until the cluster is whole and a tick is journaled after that; returns ''
        or what was still missing at the deadline."""
        deadline = time.monotonic() + timeout_s
        why = "not checked"
        while time.monotonic() < deadline:
            why = self.whole()
            if not why:
                seen = self.wait_tick_after(self.now_ms(), max(1.0, deadline - time.monotonic()))
                return "" if seen is not None else "no tick after the cluster was whole"
            time.sleep(0.5)
        return why


# --- the end of a run ----------------------------------------------------------------------------


def drain(ctx: ClusterChaos, quiet_s: float, settle_timeout_s: float) -> dict[str, Any]:
    """Faults off: trade quietly for a while, then pause (no new entries) and wait until every
    position has settled and every intent is final."""
    info: dict[str, Any] = {"started_ms": wall_ms()}
    info["whole"] = ctx.wait_whole(120) or "yes"
    time.sleep(quiet_s)
    host = ctx.roles().holder_host or ctx.hosts[0]
    res = ctx.c.exec(host, ["baton", "pause", "--reason", "chaos drain", "--json"])
    info["pause_rc"] = res.returncode
    info["paused_ms"] = wall_ms()

    def settled() -> bool:
        return ctx.redis.hlen("baton:positions:open") == 0 and ctx.redis.hlen("baton:intents:open") == 0

    info["settled"] = ctx.poll(settled, settle_timeout_s, 0.5)
    last = ctx.retry(ctx.last_entry)
    if last is not None:
        ctx.wait_tick_after(int(last["started_ms"]) + ctx.tick_ms, 15)
    info["ended_ms"] = wall_ms()
    return info


def lease_log_key() -> str:
    """The lease log's key (state/keys.py, docs/state.md), where the lease part put it."""
    from state.keys import Keys

    k = Keys()
    for name in ("lease_log", "lease_events", "lease_history"):
        fn = getattr(k, name, None)
        if callable(fn):
            return str(fn())
    return LEASE_LOG_KEY


def collect(ctx: ClusterChaos, clob_url: str, assets: list[str], span_ms: tuple[int, int]) -> dict[str, Any]:
    """The single-host snapshot (one MULTI), the lease log, each asset's 1 s candles over
    `span_ms`, the ACL LOG of the primary, then the sim's every order."""
    r = ctx.redis
    out: dict[str, Any] = ctx.retry(lambda: snapshot(r), timeout_s=60)
    out["lease_log"] = [f for _, f in ctx.retry(lambda: r.xrange(lease_log_key()), [], 30)]
    lo, hi = span_ms

    def opens(asset: str) -> list[int]:
        return [int(s) for _, s in r.zrangebyscore(f"baton:candles:{asset}:1s", lo, hi, withscores=True)]

    out["candles"] = {a: ctx.retry(functools.partial(opens, a), [], 30) for a in assets}
    try:
        entries = r.execute_command("ACL", "LOG", 128)
        out["acl_log"] = [
            dict(zip(e[0::2], e[1::2], strict=True)) if isinstance(e, list) else dict(e) for e in entries
        ]
    except REDIS_ERRORS as e:
        out["acl_log"] = [{"reason": "unread", "error": str(e)}]
    with httpx.Client(base_url=clob_url, timeout=30) as http:
        out["venue_orders"] = sim_orders(http)
    return out


def close(ctx: ClusterChaos) -> None:
    with contextlib.suppress(Exception):
        ctx.redis.close()

"""`baton cluster status`: the hosts, the lease, the Redis primary with its replicas and the
Sentinels, and the standby workers, as one msgspec struct (`--json` prints it).

Read from outside every namespace: the Sentinels and Redis over the bridge, each host's
supervisord over its unix socket.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploy.cluster.hosts import COLORS
from deploy.cluster.net import HOSTS
from kernel.clock import wall_ms
from kernel.lease import read_lease
from state.keys import Keys

PROBE_TIMEOUT_S = 0.5
# A worker beats at every tick and more often while it stands by; older than this, say so.
STALE_BEAT_MS = 3000


def no_retry() -> Retry:
    """A probe's answer is now or never: redis-py would retry a refused connection three
    times with a backoff of seconds."""
    return Retry(NoBackoff(), 0)


class HostStatus(msgspec.Struct, frozen=True):
    name: str
    addr: str
    # Its supervisord answers.
    up: bool
    # Its link to the bridge is up (False: cut off by `cut`).
    linked: bool = True


class LeaseStatus(msgspec.Struct, frozen=True):
    host: str
    color: str
    epoch: int
    holder: str = ""
    expires_ms: int = 0


class ReplicaStatus(msgspec.Struct, frozen=True):
    host: str
    addr: str
    state: str
    # Bytes of the primary's replication stream it has not acknowledged yet.
    offset_lag: int
    # Since its last acknowledgement (Redis counts whole seconds).
    lag_ms: int


class SentinelStatus(msgspec.Struct, frozen=True):
    host: str
    addr: str
    up: bool
    # The host whose Redis this Sentinel names as the primary ("" when it cannot say).
    primary: str = ""


class RedisStatus(msgspec.Struct, frozen=True):
    primary: str
    replicas: list[ReplicaStatus]
    sentinels: list[SentinelStatus]


class StandbyStatus(msgspec.Struct, frozen=True):
    host: str
    color: str
    state: str
    pid: int = 0
    # Since its last heartbeat: a killed worker's heartbeat outlives it by up to its TTL.
    age_ms: int = 0


class ClusterStatus(msgspec.Struct, frozen=True):
    name: str
    net: str
    hosts: list[HostStatus]
    lease: LeaseStatus | None
    redis: RedisStatus
    standbys: list[StandbyStatus]
    # Its namespaces exist (False: never started, or stopped).
    running: bool = True


class SentinelAuth(msgspec.Struct, frozen=True):
    """Who asks the Sentinels (they let no one in unauthenticated). Never printed."""

    port: int
    master: str
    user: str
    password: str = ""

    def __repr__(self) -> str:
        return f"SentinelAuth(port={self.port}, master={self.master!r}, user={self.user!r})"


def sentinel_view(addr: str, auth: SentinelAuth) -> str | None:
    """The primary's address as the Sentinel at `addr` names it; None when unreachable."""
    r = redis.Redis(
        host=addr,
        port=auth.port,
        username=auth.user,
        password=auth.password,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        retry=no_retry(),
    )
    master = auth.master
    try:
        reply = r.execute_command("SENTINEL", "get-master-addr-by-name", master)
    except redis.RedisError:
        return None
    finally:
        r.close()
    if not reply:
        return ""
    ip = reply[0]
    return ip.decode() if isinstance(ip, bytes) else str(ip)


def sentinel_knows(addr: str, auth: SentinelAuth) -> tuple[int, int] | None:
    """(replicas, other Sentinels) the Sentinel at `addr` knows and sees up; None when it
    does not answer. A Sentinel learns the replicas from the primary's INFO every ten
    seconds: until it knows one it cannot fail over (`-failover-abort-no-good-slave`)."""
    r = redis.Redis(
        host=addr,
        port=auth.port,
        username=auth.user,
        password=auth.password,
        socket_timeout=PROBE_TIMEOUT_S,
        socket_connect_timeout=PROBE_TIMEOUT_S,
        retry=no_retry(),
        decode_responses=True,
    )
    try:
        replicas = r.execute_command("SENTINEL", "replicas", auth.master)
        peers = r.execute_command("SENTINEL", "sentinels", auth.master)
    except redis.RedisError:
        return None
    finally:
        r.close()

    def up(entries: Any) -> int:
        n = 0
        for e in entries or []:
            d = dict(zip(e[0::2], e[1::2], strict=False)) if isinstance(e, list) else dict(e)
            flags = str(d.get("flags", ""))
            n += not any(f in flags for f in ("s_down", "o_down", "disconnected"))
        return n

    return up(replicas), up(peers)


def sentinels(addrs: Mapping[str, str], auth: SentinelAuth) -> list[SentinelStatus]:
    """What each host's Sentinel says, asked all at once (a cut-off one costs its timeout)."""
    by_addr = {a: h for h, a in addrs.items()}
    with ThreadPoolExecutor(max_workers=len(HOSTS)) as pool:
        views = list(pool.map(lambda h: sentinel_view(addrs[h], auth), HOSTS))
    return [
        SentinelStatus(h, addrs[h], v is not None, by_addr.get(v or "", ""))
        for h, v in zip(HOSTS, views, strict=True)
    ]


def primary_of(views: list[SentinelStatus]) -> str:
    """The host most Sentinels name (a quorum's view); "" when none answers."""
    named = Counter(v.primary for v in views if v.up and v.primary)
    return named.most_common(1)[0][0] if named else ""


def replicas(info: Mapping[str, Any], addrs: Mapping[str, str]) -> list[ReplicaStatus]:
    """The replicas of the primary's `INFO replication` (as redis-py parses it)."""
    by_addr = {a: h for h, a in addrs.items()}
    top = int(info.get("master_repl_offset", 0))
    out = []
    for key in sorted(k for k in info if k.startswith("slave") and k[5:].isdigit()):
        v = info[key]
        ip = str(v.get("ip", ""))
        out.append(
            ReplicaStatus(
                host=by_addr.get(ip, ip),
                addr=ip,
                state=str(v.get("state", "")),
                offset_lag=max(0, top - int(v.get("offset", 0))),
                lag_ms=int(v.get("lag", 0)) * 1000,
            )
        )
    return out


def holder_host(holder: str, color: str, heartbeat_host: Callable[[str], str]) -> str:
    """The host of a holder id `color:host:pid:nonce`: its host part when that names a
    cluster host, else what the colour's heartbeat says."""
    parts = holder.split(":")
    if len(parts) == 4 and parts[1] in HOSTS:
        return parts[1]
    return heartbeat_host(color)


def workers(r: Any, keys: Keys, now_ms: int) -> tuple[LeaseStatus | None, list[StandbyStatus]]:
    """The live lease's holder and the other colours' workers, from their heartbeats."""
    beats = {c: r.hgetall(keys.worker(c)) for c in ("blue", "green")}
    home_of = {c: h for h, c in COLORS.items()}

    def beat_host(color: str) -> str:
        parts = beats.get(color, {}).get("holder", "").split(":")
        return parts[1] if len(parts) == 4 and parts[1] in HOSTS else home_of.get(color, "")

    lease = read_lease(r, keys)
    out = None
    if lease is not None and lease.holder and lease.expires_ms > now_ms:
        color = lease.color or lease.holder.split(":")[0]
        out = LeaseStatus(
            host=holder_host(lease.holder, color, beat_host),
            color=color,
            epoch=lease.epoch,
            holder=lease.holder,
            expires_ms=lease.expires_ms,
        )
    standbys = [
        StandbyStatus(
            host=beat_host(c),
            color=c,
            state=b.get("state", ""),
            pid=_int(b.get("pid")),
            age_ms=max(0, now_ms - _int(b.get("heartbeat_ms"))) if b.get("heartbeat_ms") else 0,
        )
        for c, b in beats.items()
        if b and (out is None or c != out.color)
    ]
    return out, standbys


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def gather(
    name: str,
    net: str,
    hosts: list[HostStatus],
    auth: SentinelAuth,
    direct: Callable[[str], Any],
    keys: Keys,
    running: bool,
) -> ClusterStatus:
    """The whole status: the Sentinels' views, then (from the primary they name, through
    `direct(host)`, a client of that host's Redis) the replicas, the lease and the standbys."""
    addrs = {h.name: h.addr for h in hosts}
    views = sentinels(addrs, auth)
    primary = primary_of(views)
    reps: list[ReplicaStatus] = []
    lease = None
    standbys: list[StandbyStatus] = []
    if primary:
        with contextlib.suppress(redis.RedisError):
            r = direct(primary)
            try:
                reps = replicas(r.info("replication"), addrs)
                lease, standbys = workers(r, keys, wall_ms())
            finally:
                r.close()
    return ClusterStatus(
        running=running,
        name=name,
        net=net,
        hosts=hosts,
        lease=lease,
        redis=RedisStatus(primary=primary, replicas=reps, sentinels=views),
        standbys=standbys,
    )


def failover_ready(addrs: Mapping[str, str], auth: SentinelAuth) -> str:
    """What keeps the cluster from surviving the loss of a host ("" when nothing): every
    Sentinel must know the other two and both replicas (it learns them within ten seconds of
    its start; until then it cannot promote a replica)."""
    others = len(addrs) - 1
    lacking = []
    for h, addr in addrs.items():
        knows = sentinel_knows(addr, auth)
        if knows is None:
            lacking.append(f"{h}'s Sentinel does not answer")
        elif knows != (others, others):
            lacking.append(f"{h}'s Sentinel knows {knows[0]} replica(s) and {knows[1]} Sentinel(s)")
    return "; ".join(lacking)


def render(s: ClusterStatus) -> str:
    """The status for a terminal."""
    if not s.running:
        return f"cluster {s.name} ({s.net}) is not running: make cluster"
    lines = [f"cluster {s.name} ({s.net})"]
    for h in s.hosts:
        state = ("up" if h.up else "down") + ("" if h.linked else ", cut off")
        lines.append(f"  {h.name:<4} {h.addr:<15} {state}")
    if s.lease is None:
        lines.append("lease    nobody holds it")
    else:
        lines.append(f"lease    {s.lease.host} worker-{s.lease.color}, epoch {s.lease.epoch}")
    r = s.redis
    lines.append(f"redis    primary {r.primary or 'unknown (no Sentinel answers)'}")
    for rep in r.replicas:
        lines.append(
            f"  replica {rep.host:<4} {rep.state:<12} {rep.offset_lag} bytes behind, last ack {rep.lag_ms} ms"
        )
    views = ", ".join(f"{v.host}: {v.primary or '?'}" if v.up else f"{v.host}: down" for v in r.sentinels)
    lines.append(f"sentinels {views}")
    for sb in s.standbys:
        stale = f", last heartbeat {sb.age_ms / 1000:.0f} s ago" if sb.age_ms > STALE_BEAT_MS else ""
        lines.append(f"standby  {sb.host} worker-{sb.color} ({sb.state}{stale})")
    return "\n".join(lines)

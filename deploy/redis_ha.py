"""The config files of a replicated Redis and of its Sentinels (docs/ha.md), one host at a time.

Each host of an HA deployment runs a Redis (the primary, or a replica of it) and a Sentinel.
`render_redis_ha` and `render_sentinel` write their whole config files under the host's
`var/ha/`, owner-only (mode 600 in a 700 folder): they hold the passwords the servers log in
with (`masterauth`, `auth-pass`, `sentinel-pass`), read from the users' owner-only files in
`var/secrets/redis/` (state/acl.py), so that no secret is ever on a command line. Run them as

    redis-server HOME/var/ha/redis.conf
    redis-server HOME/var/ha/sentinel.conf --sentinel

and nothing more on the command line: both files stay writable by their server, because a
Sentinel rewrites its own config (what it learnt: the other Sentinels, the replicas, the
current primary) and, at a failover, each Redis's (`replicaof`, through CONFIG REWRITE).
"""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from baton.secretfiles import private_dir, write_secret
from baton.settings import Settings
from state import acl

ROLES = ("primary", "replica")
SENTINEL_PORT = 27379
# A primary that answered no PING for this long is subjectively down; with the quorum agreeing,
# the Sentinels fail over. About a second: a Redis on a LAN answers in well under a millisecond,
# and the lease (kernel/lease.py) is not lost for a hiccup of this size.
DOWN_AFTER_MS = 1000
# Bounds a failover's steps (and a failed attempt is retried after twice this): short, so that
# a vote split between Sentinels costs seconds, not minutes (Redis's default is 3 minutes).
FAILOVER_TIMEOUT_MS = 4000
# A replica whose last acknowledgement is older than this (seconds) does not count towards
# min-replicas-to-write. Replicas acknowledge every second, so 2 allows one late ack.
MIN_REPLICAS_MAX_LAG_S = 2
# A value written into a config file unquoted: addresses, names, paths without spaces, our
# generated passwords.
_PLAIN = re.compile(r"^[A-Za-z0-9_.:/\-]+$")


def ha_dir(s: Settings) -> Path:
    """`var/ha/`: the Redis and Sentinel config files of this host (owner-only)."""
    return s.var_dir / "ha"


def redis_conf(s: Settings) -> Path:
    return ha_dir(s) / "redis.conf"


def sentinel_conf(s: Settings) -> Path:
    return ha_dir(s) / "sentinel.conf"


def parse_addr(addr: str) -> tuple[str, int]:
    """`"10.77.0.11:7379"` -> ("10.77.0.11", 7379); a v6 address in brackets."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{addr!r} is not `host:port`")
    return host.strip("[]"), int(port)


def _plain(value: str) -> str:
    if not _PLAIN.match(value):
        raise ValueError(f"{value!r} cannot go into a Redis config file unquoted")
    return value


def _write(path: Path, lines: list[str]) -> Path:
    private_dir(path.parent)
    write_secret(path, "\n".join(lines))
    return path


def render_redis_ha(
    s: Settings,
    *,
    role: str,
    primary_addr: str,
    announce_ip: str,
    min_replicas_to_write: int | None = None,
    replica_priority: int = 100,
) -> Path:
    """Write this host's Redis config (`var/ha/redis.conf`) and its ACL file; return the
    config's path.

    `role`: "primary" or "replica" (of `primary_addr`, "ip:port"). A host that rejoins after
    a failover must come back as a replica of the primary the Sentinels name now, never as the
    primary it once was; even so, a stale primary refuses writes, having no replica
    (min-replicas-to-write). It listens on `announce_ip`:Settings.redis_port (and loopback),
    keeps its AOF in `var/redis/`, loads the ACL file with the replica and Sentinel users
    (state/acl.py), and logs in to its primary as `replica`, on every host alike since any may
    be promoted. Every host must hold the same password files (copied from one place, as
    deploy/cluster/ does): one missing here is generated, and would not match the others'.
    `min_replicas_to_write`: replicas that must be connected (lag at most
    MIN_REPLICAS_MAX_LAG_S) for a primary to accept a write; by default
    max(1, Settings.redis_min_replicas). `replica_priority`: Sentinel promotes the replica with
    the lowest (0: never), so a host without a worker can be preferred as the primary."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} must be one of {', '.join(ROLES)}")
    host, port = parse_addr(primary_addr)
    home = Path(s.home)
    passwords = acl.ensure_passwords(home, ha=True)
    aclfile = acl.write_acl_file(home, s.prefix, ha=True)
    data = private_dir(s.var_dir / "redis")
    wanted = max(1, s.redis_min_replicas) if min_replicas_to_write is None else min_replicas_to_write
    binds = [_plain(announce_ip)] + ([] if announce_ip in ("127.0.0.1", "0.0.0.0") else ["127.0.0.1"])
    lines = [
        "# Written by deploy/redis_ha.py; Sentinel rewrites `replicaof` here at a failover.",
        f"port {s.redis_port}",
        f"bind {' '.join(binds)}",
        "daemonize no",
        'logfile ""',
        f"dir {_plain(str(data))}",
        f"aclfile {_plain(str(aclfile))}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"replica-announce-ip {announce_ip}",
        f"masteruser {acl.REPLICA}",
        f"masterauth {_plain(passwords[acl.REPLICA])}",
        f"min-replicas-to-write {wanted}",
        f"min-replicas-max-lag {MIN_REPLICAS_MAX_LAG_S}",
        # A replica that joins syncs at once (the default waits 5 s for others to batch with).
        "repl-diskless-sync-delay 0",
        "repl-ping-replica-period 1",
        f"replica-priority {replica_priority}",
    ]
    if role == "replica":
        lines.append(f"replicaof {_plain(host)} {port}")
    return _write(redis_conf(s), lines)


def _myid(path: Path) -> str:
    """The Sentinel's id as its config already says, or a new one: an id that changed at each
    start would leave the others counting one Sentinel more each time (and the majority a
    failover needs would grow with them)."""
    if path.exists():
        m = re.search(r"^sentinel myid ([0-9a-f]{40})$", path.read_text(), re.M)
        if m:
            return m.group(1)
    return secrets.token_hex(20)


def render_sentinel(
    s: Settings,
    *,
    primary_addr: str,
    announce_ip: str,
    quorum: int,
    port: int = SENTINEL_PORT,
    down_after_ms: int = DOWN_AFTER_MS,
    failover_timeout_ms: int = FAILOVER_TIMEOUT_MS,
) -> Path:
    """Write this host's Sentinel config (`var/ha/sentinel.conf`); return its path.

    It watches the primary `primary_addr` ("ip:port", the one the Sentinels name now when
    a host rejoins) under Settings.redis_master with `quorum`, listens on
    `announce_ip`:`port` and announces that address, logs in to every Redis as `sentinel`
    and to the other Sentinels as `sentinel` (the same password: one user, two doors), and
    knows the programs as users allowed only to ask where the primary is
    (acl.sentinel_users). Its id is kept across renders; what it learnt since (the other
    Sentinels, the replicas) it learns again within seconds."""
    host, rport = parse_addr(primary_addr)
    path = sentinel_conf(s)
    passwords = acl.ensure_passwords(Path(s.home), ha=True)
    name = _plain(s.redis_master)
    secret = _plain(passwords[acl.SENTINEL])
    binds = [_plain(announce_ip)] + ([] if announce_ip in ("127.0.0.1", "0.0.0.0") else ["127.0.0.1"])
    lines = [
        "# Written by deploy/redis_ha.py; the Sentinel rewrites it with what it learns.",
        f"port {port}",
        f"bind {' '.join(binds)}",
        "daemonize no",
        'logfile ""',
        f"dir {_plain(str(ha_dir(s)))}",
        f"sentinel myid {_myid(path)}",
        f"sentinel announce-ip {announce_ip}",
        f"sentinel announce-port {port}",
        "sentinel resolve-hostnames no",
        f"sentinel monitor {name} {_plain(host)} {rport} {quorum}",
        f"sentinel down-after-milliseconds {name} {down_after_ms}",
        f"sentinel failover-timeout {name} {failover_timeout_ms}",
        f"sentinel parallel-syncs {name} 1",
        f"sentinel auth-user {name} {acl.SENTINEL}",
        f"sentinel auth-pass {name} {secret}",
        f"sentinel sentinel-user {acl.SENTINEL}",
        f"sentinel sentinel-pass {secret}",
        *acl.sentinel_users(passwords),
    ]
    return _write(path, lines)

"""Each host's Redis and Sentinel: their config files and the supervisord fragments that run
them (var/run/supervisor.d/redis.conf and sentinel.conf of the host's home).

Redis listens on the host's address and loopback (port 7379), with the ACL file of
state/acl.py; a replica names its primary (`replicaof`), and authenticates to it with the
credentials in an owner-only include file, never on a command line. Sentinel (port 27379)
monitors the primary under the master name with quorum 2 and rewrites its own file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from baton.errors import StackError
from baton.secretfiles import read_secret, write_secret
from state import acl

REDIS_PORT = 7379
SENTINEL_PORT = 27379
QUORUM = 2
# How long a primary may be silent before a Sentinel calls it down, and how long one failover
# may take before another Sentinel tries: a dead primary's host costs about a second.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 10_000
# The user replicas and Sentinels authenticate as (it may run REPLCONF, PSYNC, REPLICAOF,
# CONFIG and the Sentinel channels).
HA_USER = acl.ADMIN

_PROGRAM = """\
[program:{name}]
command={command}
priority={priority}
autostart=true
autorestart=true
startsecs=1
stopsignal=TERM
stopwaitsecs=10
redirect_stderr=true
stdout_logfile=%(ENV_BATON_HOME)s/var/log/{name}.log
stdout_logfile_maxbytes=10MB
stdout_logfile_backups=2
"""


def _server() -> str:
    server = shutil.which("redis-server")
    if not server:
        raise StackError("redis-server not found: install the Debian/Ubuntu package 'redis-server'")
    return server


def redis_dir(home: Path) -> Path:
    return home / "var" / "redis"


def sentinel_dir(home: Path) -> Path:
    return home / "var" / "sentinel"


def redis_conf(home: Path, addr: str, primary_addr: str) -> str:
    """The config of the Redis at `addr`: a primary when `primary_addr` is its own address,
    else a replica of the Redis at `primary_addr`."""
    secrets = acl.acl_file(home).parent
    lines = [
        f"bind {addr} 127.0.0.1",
        f"port {REDIS_PORT}",
        "daemonize no",
        'logfile ""',
        f"dir {redis_dir(home)}",
        "appendonly yes",
        "appendfsync everysec",
        'save ""',
        f"aclfile {acl.acl_file(home)}",
        f"include {secrets / 'replication.conf'}",
    ]
    if primary_addr != addr:
        lines.append(f"replicaof {primary_addr} {REDIS_PORT}")
    return "\n".join(lines) + "\n"


def sentinel_conf(home: Path, addr: str, master: str, primary_addr: str, password: str) -> str:
    return (
        "\n".join(
            [
                f"bind {addr} 127.0.0.1",
                f"port {SENTINEL_PORT}",
                "daemonize no",
                'logfile ""',
                f"dir {sentinel_dir(home)}",
                f"sentinel monitor {master} {primary_addr} {REDIS_PORT} {QUORUM}",
                f"sentinel auth-user {master} {HA_USER}",
                f"sentinel auth-pass {master} {password}",
                f"sentinel down-after-milliseconds {master} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {master} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {master} 1",
            ]
        )
        + "\n"
    )


def render(home: Path, addr: str, master: str, primary_addr: str) -> None:
    """Write this host's Redis and Sentinel configs and their supervisord fragments. The
    Sentinel's file is written anew: it learns replicas and peers again within seconds."""
    password = read_secret(acl.password_file(home, HA_USER))
    secrets = acl.acl_file(home).parent
    write_secret(secrets / "replication.conf", f"masteruser {HA_USER}\nmasterauth {password}")
    for d in (redis_dir(home), sentinel_dir(home)):
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_secret(redis_dir(home) / "redis.conf", redis_conf(home, addr, primary_addr))
    write_secret(
        sentinel_dir(home) / "sentinel.conf", sentinel_conf(home, addr, master, primary_addr, password)
    )
    fragments = home / "var" / "run" / "supervisor.d"
    server = _server()
    write_secret(
        fragments / "redis.conf",
        _PROGRAM.format(name="redis", command=f"{server} {redis_dir(home) / 'redis.conf'}", priority=10),
    )
    write_secret(
        fragments / "sentinel.conf",
        _PROGRAM.format(
            name="sentinel",
            command=f"{server} {sentinel_dir(home) / 'sentinel.conf'} --sentinel",
            priority=15,
        ),
    )

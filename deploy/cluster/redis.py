"""Each host's Redis and Sentinel under its supervisord: the config files are
deploy/redis_ha.py's (owner-only under the host's var/ha/, secrets never on a command line),
run by two include fragments in the host's var/run/supervisor.d/ (redis.conf, sentinel.conf).
"""

from __future__ import annotations

import re
import shutil

from baton.errors import StackError
from baton.secretfiles import write_secret
from baton.settings import Settings
from deploy import redis_ha

REDIS_PORT = 7379
SENTINEL_PORT = redis_ha.SENTINEL_PORT
QUORUM = 2

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


def render(s: Settings, addr: str, primary_addr: str, replica_priority: int = 100) -> None:
    """The host's Redis (the primary when `primary_addr` is its own address, else a replica
    of it), its Sentinel watching `primary_addr`, and the fragments that run both.

    A Sentinel's config that exists is kept as the Sentinel last rewrote it: it holds what
    that Sentinel learnt (the replicas, the other Sentinels, the epochs), and the others bring
    it up to date on the primary within a second of its start. Rendered anew, it would know no
    replica for its first ten seconds; leading a failover then, it left the replicas it did not
    know on the dead primary, and the new one refused every write (NOREPLICAS) until another
    Sentinel fixed them (13 s, measured). `replica_priority`: lower is promoted first."""
    server = shutil.which("redis-server")
    if not server:
        raise StackError("redis-server not found: install the Debian/Ubuntu package 'redis-server'")
    primary = f"{primary_addr}:{REDIS_PORT}"
    role = "primary" if primary_addr == addr else "replica"
    conf = redis_ha.render_redis_ha(
        s, role=role, primary_addr=primary, announce_ip=addr, replica_priority=replica_priority
    )
    sentinel = redis_ha.sentinel_conf(s)
    if not sentinel.exists():
        redis_ha.render_sentinel(s, primary_addr=primary, announce_ip=addr, quorum=QUORUM)
    fragments = s.run_dir / "supervisor.d"
    write_secret(
        fragments / "redis.conf", _PROGRAM.format(name="redis", command=f"{server} {conf}", priority=10)
    )
    write_secret(
        fragments / "sentinel.conf",
        _PROGRAM.format(name="sentinel", command=f"{server} {sentinel} --sentinel", priority=15),
    )


_MONITOR = re.compile(r"^sentinel monitor (\S+) (\S+) (\d+) ", re.M)


def monitored(s: Settings) -> str:
    """The primary's address this host's Sentinel config names ("" when it has none)."""
    try:
        text = redis_ha.sentinel_conf(s).read_text()
    except OSError:
        return ""
    for name, ip, _port in _MONITOR.findall(text):
        if name == s.redis_master:
            return str(ip)
    return ""

"""Each host's Redis and Sentinel under its supervisord: the config files are
deploy/redis_ha.py's (owner-only under the host's var/ha/, secrets never on a command line),
run by two include fragments in the host's var/run/supervisor.d/ (redis.conf, sentinel.conf).
"""

from __future__ import annotations

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


def render(s: Settings, addr: str, primary_addr: str) -> None:
    """The host's Redis (the primary when `primary_addr` is its own address, else a replica
    of it), its Sentinel watching `primary_addr`, and the fragments that run both."""
    server = shutil.which("redis-server")
    if not server:
        raise StackError("redis-server not found: install the Debian/Ubuntu package 'redis-server'")
    primary = f"{primary_addr}:{REDIS_PORT}"
    role = "primary" if primary_addr == addr else "replica"
    conf = redis_ha.render_redis_ha(s, role=role, primary_addr=primary, announce_ip=addr)
    sentinel = redis_ha.render_sentinel(s, primary_addr=primary, announce_ip=addr, quorum=QUORUM)
    fragments = s.run_dir / "supervisor.d"
    write_secret(
        fragments / "redis.conf", _PROGRAM.format(name="redis", command=f"{server} {conf}", priority=10)
    )
    write_secret(
        fragments / "sentinel.conf",
        _PROGRAM.format(name="sentinel", command=f"{server} {sentinel} --sentinel", priority=15),
    )

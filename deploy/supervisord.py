"""supervisord: the launcher that starts and stops the whole stack (`make run` / `make stop`),
and the XML-RPC calls every other part makes to it over its unix socket.

The launcher turns settings into the ENV_ variables supervisor.conf expands, includes the
embedded Redis program unless BATON_REDIS_URL points elsewhere, starts supervisord in the
background and waits until the worker has ticked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Any

import redis
from supervisor.xmlrpc import SupervisorTransport

from baton.errors import CredentialsError, StackError
from baton.settings import REPO_ROOT, Settings, credentials
from deploy import releases
from kernel.clock import wall_ms
from kernel.lease import active_color, process_alive
from state import connection
from state.journal import JournalRepo
from state.keys import Keys

SUPERVISOR_CONF = REPO_ROOT / "supervisor.conf"
REDIS_TEMPLATE = REPO_ROOT / "deploy" / "supervisor" / "redis.conf"


def supervisor_env(s: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env["BATON_HOME"] = s.home
    env["BATON_PYTHON"] = sys.executable
    env["BATON_REDIS_PORT"] = str(s.redis_port)
    # Live mode talks to the real venues: the local sim stays off.
    env["BATON_SIM_AUTOSTART"] = "false" if s.live else "true"
    # One tick plus margin: a worker told to stop finishes the tick it is in.
    env["BATON_STOP_WAIT_S"] = str(max(15, s.tick_ms // 1000 * 2 + 10))
    if s.embedded_redis:
        server = shutil.which("redis-server")
        if not server:
            raise StackError(
                "redis-server not found: install the Debian/Ubuntu package 'redis-server' "
                "(apt-get install redis-server), or set BATON_REDIS_URL to a Redis you run"
            )
        env["BATON_REDIS_SERVER"] = server
    return env


def supervisor_call(socket: Path, method: str, *args: Any) -> Any:
    """One XML-RPC call to supervisord over its unix socket, closed afterwards."""
    transport = SupervisorTransport(None, None, f"unix://{socket}")
    try:
        proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
        return getattr(proxy.supervisor, method)(*args)
    finally:
        transport.close()


def supervisor_running(s: Settings) -> bool:
    if not s.supervisor_socket.exists():
        return False
    try:
        return supervisor_call(s.supervisor_socket, "getState")["statename"] == "RUNNING"
    except (OSError, xmlrpc.client.Fault):
        return False


def _prepare_dirs(s: Settings) -> None:
    for d in (s.log_dir, s.run_dir, s.var_dir / "redis", s.run_dir / "supervisor.d"):
        d.mkdir(parents=True, exist_ok=True)
    fragment = s.run_dir / "supervisor.d" / "redis.conf"
    if s.embedded_redis:
        shutil.copyfile(REDIS_TEMPLATE, fragment)
    else:
        fragment.unlink(missing_ok=True)


def _redis(s: Settings) -> redis.Redis:
    return connection.client(s, timeout_s=2)


def wait_until(cond: Any, timeout_s: float, what: str, interval_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    last_err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except Exception as e:
            last_err = e
        time.sleep(interval_s)
    raise StackError(
        f"timed out after {timeout_s:.0f} s waiting for {what}"
        + (f" (last error: {last_err})" if last_err else "")
    )


def check_credentials(s: Settings) -> None:
    """Live mode refuses to start without credentials, saying what is missing."""
    if not s.live:
        return
    try:
        creds = credentials(s)
    except CredentialsError as e:
        raise StackError(f"{e}. Nothing was started.") from None
    print(
        f"live mode: credentials from {creds.source}"
        + (" (dry run: orders are signed, never posted)" if s.dry_run else "")
    )


def start(s: Settings, wait_s: float = 120.0, log: Any = print) -> None:
    check_credentials(s)
    _prepare_dirs(s)
    if supervisor_running(s):
        log(f"supervisord already running for {s.home}; starting any stopped program")
        _start_stopped(s)
    else:
        # Every worker runs from a release: the first one is the working tree as it is now.
        rel = releases.stage(Path(s.home))
        releases.point(Path(s.home), "blue", rel.id)
        log(f"release {rel.id} staged for worker-blue" + (" (identical code, reused)" if rel.reused else ""))
        env = supervisor_env(s)
        out = subprocess.run(
            [str(Path(sys.executable).with_name("supervisord")), "-c", str(SUPERVISOR_CONF)],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise StackError(f"supervisord failed to start: {out.stderr.strip() or out.stdout.strip()}")
        log(f"supervisord started (logs in {s.log_dir})")
    r = _redis(s)
    wait_until(r.ping, 30, f"Redis at {s.redis_url_shown}")
    log(f"redis ready at {s.redis_url_shown}")
    k = Keys(s.prefix)
    before = int(r.hget(k.stats(), "ticks_done") or 0)
    wait_until(lambda: int(r.hget(k.stats(), "ticks_done") or 0) > before, wait_s, "the worker's first tick")
    log("worker is ticking")


def _start_stopped(s: Settings) -> None:
    """Start what is not running, except the idle worker colour: it would stand by on an older
    release (after a deploy) and could win a takeover. The active colour is the lease's."""
    r = _redis(s)
    try:
        active = active_color(r, Keys(s.prefix))
    except redis.RedisError:
        active = "blue"
    finally:
        r.close()
    for p in supervisor_call(s.supervisor_socket, "getAllProcessInfo"):
        name = p["name"]
        if name.startswith("worker-") and name != f"worker-{active}":
            continue
        if name == "sim" and s.live:
            continue
        if p["statename"] in ("STOPPED", "EXITED", "FATAL"):
            supervisor_call(s.supervisor_socket, "startProcess", name, True)


def stop(s: Settings, timeout_s: float = 90.0, log: Any = print) -> None:
    pid_file = s.run_dir / "supervisord.pid"
    if not supervisor_running(s):
        log("supervisord is not running")
        return
    pid = int(pid_file.read_text().strip()) if pid_file.exists() else None
    # The downtime that follows is on purpose: the next worker does not count it as missed.
    try:
        JournalRepo(_redis(s), Keys(s.prefix)).mark_stack_stopped(wall_ms())
    except redis.RedisError as e:
        log(f"warning: could not mark the stop in Redis ({e}); the downtime will count as missed")
    supervisor_call(s.supervisor_socket, "shutdown")
    if pid is not None:
        wait_until(lambda: not process_alive(pid), timeout_s, f"supervisord (pid {pid}) to exit")
    log("stopped")

"""supervisord: the launcher that starts and stops the whole stack (`make run` / `make stop`),
and the XML-RPC calls every other part makes to it over its unix socket.

The launcher turns settings into the ENV_ variables supervisor.conf expands, includes the
embedded Redis program unless BATON_REDIS_URL points elsewhere, starts supervisord in the
background and waits until the worker has ticked.

The embedded Redis requires authentication: before it starts, the launcher generates each
program's password on first start (var/secrets/redis/<user>, owner-only) and renders the ACL
rules of state/acl.py into the file Redis loads (`--aclfile`). It listens on a unix socket in
an owner-only folder (var/run/redis/), or on TCP when BATON_REDIS_PORT or BATON_REDIS_BIND
asks for it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec
import redis
from supervisor.xmlrpc import SupervisorTransport

from baton.errors import CredentialsError, StackError
from baton.secretfiles import private_dir, secrets_dir, write_secret
from baton.settings import API_TOKEN_FILE, PRIVATE_KEY_FILE, REPO_ROOT, Settings, credentials
from deploy import releases
from kernel.clock import wall_ms
from kernel.lease import active_color, process_alive
from state import acl, connection
from state.journal import JournalRepo
from state.keys import Keys

SUPERVISOR_CONF = REPO_ROOT / "supervisor.conf"
REDIS_TEMPLATE = REPO_ROOT / "deploy" / "supervisor" / "redis.conf"


# supervisord hands its whole environment to every program, so it starts with a scrubbed
# one: what any process needs (PATH, locale, time zone, temp dir), the proxy and CA settings
# live mode's HTTP clients honour, and Baton's settings, which are configuration, not secrets.
# Nothing else of the caller's shell (tokens of other tools, agent sockets) reaches a program.
PASS_THROUGH = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR"}
    | {v for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY") for v in (name, name.lower())}
)
PASS_PREFIXES = ("LC_", "BATON_")
# Settings that are secrets never reach a program's environment: `baton run` moves each into
# an owner-only file under var/secrets/, read only by the code of the program that uses it
# (baton/settings.py `credentials()` in the worker, api/apitoken.py in the api).
SECRET_FILES = {"BATON_PRIVATE_KEY": PRIVATE_KEY_FILE, "BATON_API_TOKEN": API_TOKEN_FILE}
# Created owner-only: supervisord and every program it starts (supervisor.conf `umask=`),
# and the folders the launcher makes.
UMASK = 0o077
DIR_MODE = 0o700


def scrubbed_env(environ: Mapping[str, str]) -> dict[str, str]:
    """What of `environ` supervisord and its programs may inherit: no secret, no stranger."""
    return {
        k: v
        for k, v in environ.items()
        if (k in PASS_THROUGH or k.startswith(PASS_PREFIXES)) and k not in SECRET_FILES
    }


def move_secrets(s: Settings, environ: Mapping[str, str], fresh: bool) -> list[str]:
    """Write each secret setting found in `environ` into its owner-only file under
    var/secrets/ (the programs that use it read it there); on a fresh start, a file that the
    environment no longer gives is removed, so that the file always says what this start
    was given. Returns the variables moved."""
    moved = []
    for var, name in SECRET_FILES.items():
        path = secrets_dir(Path(s.home)) / name
        value = environ.get(var, "").strip()
        if value:
            write_secret(path, value)
            moved.append(var)
        elif fresh:
            path.unlink(missing_ok=True)
    return moved


def redis_args(s: Settings) -> list[str]:
    """How the embedded Redis listens, and the ACL file it loads."""
    if s.redis_bind:
        listen = ["--port", str(s.redis_port), "--bind", s.redis_bind]
    else:
        # No TCP at all: only those who can enter var/run/redis/ (its owner) reach the socket.
        listen = ["--port", "0", "--unixsocket", s.redis_socket, "--unixsocketperm", "700"]
    return [*listen, "--aclfile", str(acl.acl_file(Path(s.home)))]


def supervisor_env(s: Settings, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    env = scrubbed_env(os.environ if environ is None else environ)
    env["BATON_HOME"] = s.home
    env["BATON_PYTHON"] = sys.executable
    # Each program names its own Redis user (supervisor.conf); one from the caller's shell
    # (an operator's BATON_REDIS_USER=admin) must not reach the others.
    env.pop("BATON_REDIS_USER", None)
    # Live mode talks to the real venues: the local sim stays off.
    env["BATON_SIM_AUTOSTART"] = "false" if s.live else "true"
    # One host runs both colours' programs and the api; worker-green starts on a deploy.
    env["BATON_WORKER_BLUE_AUTOSTART"] = "true"
    env["BATON_WORKER_GREEN_AUTOSTART"] = "false"
    env["BATON_API_AUTOSTART"] = "true"
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
        env["BATON_REDIS_ARGS"] = shlex.join(redis_args(s))
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


def owner_only_dir(path: Path) -> None:
    """`path` (and any missing parent) as a folder only its owner may enter; one that exists
    looser (made before Baton tightened it) is tightened."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, DIR_MODE)


def _prepare_dirs(s: Settings) -> None:
    # var/ itself first: owner-only, nothing under it is reachable by another user, whatever
    # an older version created inside.
    dirs = (s.var_dir, s.log_dir, s.run_dir, s.var_dir / "redis", s.run_dir / "supervisor.d")
    for d in (*dirs, secrets_dir(Path(s.home))):
        owner_only_dir(d)
    fragment = s.run_dir / "supervisor.d" / "redis.conf"
    if s.embedded_redis:
        if s.redis_socket:
            private_dir(Path(s.redis_socket).parent)
        acl.write_acl_file(Path(s.home), s.prefix)
        shutil.copyfile(REDIS_TEMPLATE, fragment)
        os.chmod(fragment, 0o600)
    else:
        fragment.unlink(missing_ok=True)


def _redis(s: Settings) -> redis.Redis:
    return connection.client(s, timeout_s=2)


def _reload_acl(s: Settings, log: Any) -> None:
    """A Redis that runs already (`baton run` again) takes the rules just rendered."""
    r = connection.client(msgspec.structs.replace(s, redis_user=acl.ADMIN), timeout_s=2)
    try:
        r.execute_command("ACL", "LOAD")
    except redis.RedisError as e:
        log(f"warning: the running Redis kept its ACL rules ({type(e).__name__}: {e})")
    finally:
        r.close()


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
    owner_only_dir(s.var_dir)
    running = supervisor_running(s)
    # Before the credentials are checked: the check reads the key the worker will read, and a
    # fresh start without one in its environment has just removed an earlier start's file.
    moved = move_secrets(s, os.environ, fresh=not running)
    check_credentials(s)
    _prepare_dirs(s)
    if s.redis_warning:
        log(f"warning: {s.redis_warning}")
    if moved:
        log(f"{', '.join(moved)}: moved into {secrets_dir(Path(s.home))}/ for the programs that use them")
    if running:
        log(f"supervisord already running for {s.home}; starting any stopped program")
        if s.embedded_redis:
            _reload_acl(s, log)
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
            # Its own log (opened before it applies supervisor.conf's umask) owner-only too.
            umask=UMASK,
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
        if name == "shadow":  # a shadow deploy's, started by it alone
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

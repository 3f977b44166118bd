"""Redis is no open door: on a real stack, a connection without a user's password is refused
(over the default unix socket, and over TCP when configured), the socket's folder and the
password files are owner-only, each program's user is refused what it must not do, `baton
redis-cli` works with redis-cli's own flags, and no secret shows in status, logs or output."""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from baton.settings import REDIS_USERS, load
from control.input_archive import iter_evaluations
from deploy.ports import free_port
from deploy.sandbox import BATON, Stack, wait_for
from kernel.input_stream import read_batches
from state import acl
from state.keys import Keys

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# What no program's user may run; only admin (ACL DRYRUN asks Redis's own ACL engine without
# running anything, so SHUTDOWN and MONITOR can be asked about safely).
ADMIN_ONLY = [
    ("CONFIG", "SET", "appendonly", "no"),
    ("CONFIG", "GET", "*"),
    ("FLUSHALL",),
    ("FLUSHDB",),
    ("ACL", "SETUSER", "eve", "on", ">x", "~*", "+@all"),
    ("ACL", "LIST"),
    ("KEYS", "*"),
    ("DEBUG", "SLEEP", "0"),
    ("MONITOR",),
    ("SHUTDOWN",),
    ("MODULE", "LIST"),
    ("CLIENT", "LIST"),
    ("CLIENT", "KILL", "ID", "1"),
    ("SCRIPT", "FLUSH"),
    ("FUNCTION", "FLUSH"),
    ("SWAPDB", "0", "1"),
    ("REPLICAOF", "127.0.0.1", "1"),
    ("BGREWRITEAOF",),
    ("SAVE",),
]


def allowed(admin: Any, user: str, *command: str) -> bool:
    return admin.execute_command("ACL", "DRYRUN", user, *command) == "OK"


def secrets(st: Stack) -> list[str]:
    return [acl.password_file(st.home, u).read_text().strip() for u in REDIS_USERS]


def refused(call: Any) -> redis.RedisError:
    with pytest.raises(redis.RedisError) as e:
        call()
    return e.value


def noperm(call: Any) -> bool:
    """Refused by the ACL: NOPERM (redis-py's NoPermissionError)."""
    return isinstance(refused(call), redis.exceptions.NoPermissionError)


def noauth(call: Any) -> bool:
    """Refused for want of a user: NOAUTH or WRONGPASS (redis-py's AuthenticationError)."""
    return isinstance(refused(call), redis.AuthenticationError)


def test_only_the_stacks_users_get_in_each_to_its_own_keys_and_commands():
    st = Stack(BATON_TICK_MS="1000")
    try:
        st.start()
        s = load(st.env)
        sock = Path(s.redis_socket)
        assert s.redis_url.startswith("unix://") and stat.S_ISSOCK(sock.stat().st_mode)
        # Owner-only: the socket's folder, the socket, the password files and the ACL file.
        assert sock.parent.stat().st_mode & 0o777 == 0o700
        assert sock.stat().st_mode & 0o077 == 0
        assert s.redis_secrets_dir.stat().st_mode & 0o777 == 0o700
        for f in s.redis_secrets_dir.iterdir():
            assert f.stat().st_mode & 0o777 == 0o600, f

        # No password, a wrong one, the default user: refused.
        for protocol in (2, 3):  # a bare command (NOAUTH), and HELLO without AUTH
            stranger = redis.Redis(unix_socket_path=str(sock), protocol=protocol)
            assert noauth(lambda r=stranger: r.hset("baton:control", "halted", "0"))
        wrong = redis.Redis(unix_socket_path=str(sock), username="admin", password="guess")
        assert noauth(wrong.ping)  # WRONGPASS
        default = redis.Redis(unix_socket_path=str(sock), username="default", password="")
        assert noauth(default.ping)  # the default user is off

        admin = st.redis
        for user in REDIS_USERS:
            if user == "admin":
                continue
            can = [c for c in ADMIN_ONLY if allowed(admin, user, *c)]
            assert can == [], f"{user} may run {can}"
        assert all(allowed(admin, "admin", *c) for c in ADMIN_ONLY)

        # The feed: market data only. It cannot resume a halt, touch rq, or get there by a script.
        feed = st.client("feed")
        assert noperm(lambda: feed.hset("baton:control", "halted", "0"))
        assert noperm(lambda: feed.hset("rq:job:x", "data", '["os.system", ["id"]]'))
        assert noperm(lambda: feed.lpush("rq:queue:settle", "x"))
        assert noperm(lambda: feed.publish("baton:control:events", "{}"))
        assert noperm(
            lambda: feed.eval("return redis.call('HSET', KEYS[1], 'halted', 0)", 1, "baton:control")
        )
        assert "can't access" in str(
            refused(lambda: feed.eval("return redis.call('HSET', 'baton:control', 'halted', 0)", 0))
        )
        wait_for(lambda: feed.hgetall("baton:feed:status"), 60, "the feed's status")  # its own, it reads
        # The control plane and a person at the CLI: no money, no jobs, no admin commands.
        for user in ("api", "cli"):
            c = st.client(user)
            assert noperm(lambda c=c: c.hset("baton:positions:open", "x", "{}"))
            assert noperm(lambda c=c: c.xadd("baton:ledger", {"kind": "deposit"}))
            assert noperm(lambda c=c: c.lpush("rq:queue:settle", "x"))
            assert noperm(lambda c=c: c.config_set("appendonly", "no"))
            assert noperm(lambda c=c: c.flushall())
            assert noperm(lambda c=c: c.keys("*"))
            assert noperm(lambda c=c: c.execute_command("ACL", "LIST"))
            assert c.hgetall("baton:control") is not None
        worker = st.client("worker")
        assert noperm(lambda: worker.config_set("appendonly", "no"))
        assert noperm(lambda: worker.execute_command("SCRIPT", "FLUSH"))
        assert not allowed(admin, "settle", "HSET", "baton:control", "halted", "0")
        assert not allowed(admin, "settle", "HSET", "baton:slots", "btc-5m", "{}")
        # The input log: the worker appends one entry a tick as its own user; the settle
        # program reads it (and copies it into var/inputs/ every few minutes, the first soon
        # after it starts), and may not write it; the feed may not even read it.
        wait_for(lambda: admin.xlen("baton:inputs:log") >= 2, 60, "the worker's input log entries")
        assert allowed(admin, "settle", "XRANGE", "baton:inputs:log", "-", "+")
        assert not allowed(admin, "settle", "XADD", "baton:inputs:log", "*", "tick", "1")
        assert noperm(lambda: feed.xlen("baton:inputs:log"))
        wait_for(lambda: (st.home / "var" / "inputs" / "cursor").exists(), 60, "the settle program's roll")
        # What the worker recorded reads back, from the stream and from the rolled files.
        ticks = read_batches(admin, Keys(), "0-0", 0, 1000)
        assert len(ticks) >= 2 and all(e.release for _, _, _, es in ticks for e in es)
        problems: list[str] = []
        evaluations = list(iter_evaluations(admin, Keys(), st.home, 0, 2**53, problems=problems))
        assert problems == [] and len(evaluations) >= sum(len(es) for _, _, _, es in ticks)
        # Every refusal is on record, by user (ACL LOG), and nothing else was refused.
        log = st.acl_denials()
        denied = {(d["username"], d["object"]) for d in log if d["reason"] != "auth"}
        assert ("feed", "baton:control") in denied and ("cli", "config|set") in denied
        assert {u for u, _ in denied} == {"feed", "api", "cli", "worker"}
        assert {d["username"] for d in log if d["reason"] == "auth"} == {"admin", "default"}

        # baton redis-cli: the stack's Redis, as the cli user, redis-cli's flags passed through.
        out = st.baton("redis-cli", "--json", "HGETALL", "baton:lease", timeout_s=30)
        assert out.returncode == 0 and json.loads(out.stdout)["color"] == "blue", out.stderr
        out = st.baton("redis-cli", "-r", "3", "PING", timeout_s=30)
        assert out.stdout.split() == ["PONG"] * 3, out.stderr
        out = st.baton("redis-cli", "--scan", "--pattern", "baton:lease*", timeout_s=30)
        lease_keys = ["baton:lease", "baton:lease:epoch", "baton:lease:log"]
        assert sorted(out.stdout.split()) == lease_keys, out.stderr
        out = st.baton("redis-cli", "ACL", "WHOAMI", timeout_s=30)
        assert "NOPERM" in out.stdout + out.stderr  # cli may not even ask; admin may:
        as_admin = {**st.env, "BATON_REDIS_USER": "admin"}
        run = subprocess.run(
            [BATON, "redis-cli", "-x", "SET", "baton:e2e:stdin"],
            env=as_admin,
            input="from stdin",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert run.returncode == 0 and admin.get("baton:e2e:stdin") == "from stdin", run.stderr
        out = st.baton("redis-cli", "-a", "guess", "PING", timeout_s=30)
        assert out.returncode == 1 and "chooses the server and the user" in out.stderr
        admin.execute_command("ACL", "LOG", "RESET")  # read: a refusal from here on would be news

        # `baton run` on a running stack renders the rules again and Redis reloads them: a
        # right given by hand does not outlive it.
        admin.execute_command("ACL", "SETUSER", "feed", "+config|get")
        assert allowed(admin, "feed", "CONFIG", "GET", "x")
        rerun = st.baton("run")
        assert rerun.returncode == 0 and "already running" in rerun.stdout, rerun.stderr
        assert not allowed(admin, "feed", "CONFIG", "GET", "x")

        # No secret in status (endpoints.redis included), in any log, or in what was printed.
        status = st.baton("status", "--json", timeout_s=30).stdout
        assert json.loads(status)["endpoints"]["redis"] == s.redis_url_shown
        shown = status + st.baton("status").stdout + st.logs() + out.stdout + out.stderr + rerun.stdout
        logs = "".join(f.read_text(errors="replace") for f in (st.home / "var" / "log").glob("*.log*"))
        for secret in secrets(st):
            assert secret not in shown and secret not in logs
    finally:
        st.stop()


def test_over_tcp_when_configured_the_stack_runs_and_a_stranger_is_refused():
    port = free_port()
    st = Stack(BATON_TICK_MS="1000", BATON_REDIS_PORT=str(port))
    try:
        assert "worker is ticking" in st.start()
        s = load(st.env)
        assert s.redis_url == f"redis://127.0.0.1:{port}/0" and not s.redis_socket
        assert not (st.home / "var" / "run" / "redis" / "redis.sock").exists()
        stranger = redis.Redis(port=port, protocol=2)
        assert noauth(lambda: stranger.hset("baton:control", "halted", "0"))
        assert noperm(lambda: st.client("feed").hset("baton:control", "halted", "0"))
        status = st.status()
        assert status["endpoints"]["redis"] == s.redis_url and not [
            p for p in status["problems"] if "redis" in p
        ]
        out = st.baton("redis-cli", "--json", "HGET", "baton:lease", "color", timeout_s=30)
        assert out.returncode == 0 and json.loads(out.stdout) == "blue", out.stderr
        assert {d["username"] for d in st.acl_denials()} == {"feed"}
        st.redis.execute_command("ACL", "LOG", "RESET")
    finally:
        st.stop()

"""The ACL file of state/acl.py on a real redis-server with the AOF on, restarted: every write
made before the restart is there after it, transactions and multi-command scripts included
(Redis 7.0 replays the AOF as the `default` user: with no permission it dropped them)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from baton.settings import REDIS_USERS
from deploy.ports import free_port
from state import acl


def _start(d: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(d),
            "--aclfile",
            str(d / "users.acl"),
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    r = redis.Redis(port=port, username="admin", password="pw-admin")
    deadline = time.monotonic() + 20
    while True:
        try:
            r.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.05)


def test_a_restart_replays_transactions_and_scripts_written_under_the_acl():
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server installed: `make bootstrap` installs it")
    d = Path(tempfile.mkdtemp(prefix="baton-acl-aof-"))
    (d / "users.acl").write_text(acl.render("baton:", {u: f"pw-{u}" for u in REDIS_USERS}))
    port = free_port()
    proc = _start(d, port)
    try:
        r = redis.Redis(port=port, username="admin", password="pw-admin", decode_responses=True)
        r.eval(
            "redis.call('SET', KEYS[1], 1) redis.call('SET', KEYS[2], 2) return 1", 2, "baton:a", "baton:b"
        )
        with r.pipeline(transaction=True) as p:
            p.set("baton:c", 3)
            p.incr("baton:d")
            p.execute()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()  # nobody logs in as default
        r.close()
        proc.terminate()
        proc.wait(20)
        proc = _start(d, port)
        r = redis.Redis(port=port, username="admin", password="pw-admin", decode_responses=True)
        assert r.mget("baton:a", "baton:b", "baton:c", "baton:d") == ["1", "2", "3", "1"]
        r.close()
    finally:
        proc.terminate()
        proc.wait(20)
        shutil.rmtree(d, ignore_errors=True)

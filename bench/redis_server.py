"""A `redis-server` of a benchmark's own: a free port, a temp dir, the production persistence
(AOF everysec) or none, stopped with the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from functools import cache
from pathlib import Path
from typing import Any

import redis

from baton.settings import Settings, load
from deploy.ports import free_port
from state import connection


def _text(reply: dict[Any, Any], name: str) -> str:
    v = reply.get(name, reply.get(name.encode(), b""))
    return v.decode() if isinstance(v, bytes) else str(v)


@cache
def _bare_home() -> str:
    return tempfile.mkdtemp(prefix="baton-bench-home-")


def bare(url: str, **env: str) -> Settings:
    """Settings for a benchmark's own redis-server at `url`: a BATON_HOME without Redis
    passwords (var/secrets/redis/), so that clients connect without AUTH, as that server
    expects, even from a checkout whose `make run` made passwords."""
    return load({"BATON_HOME": _bare_home(), "BATON_REDIS_URL": url, **env})


class RedisServer:
    """`redis-server` on a free port in its own temp dir; `aof` as production (everysec);
    pinned to core `cpu` if given."""

    def __init__(self, aof: bool = True, cpu: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is missing: `make bootstrap` installs it (package redis-server)")
        self.dir = Path(tempfile.mkdtemp(prefix="baton-bench-redis-"))
        self.port = free_port()
        persistence = ["--appendonly", "yes", "--appendfsync", "everysec"] if aof else ["--appendonly", "no"]
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                *persistence,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        self.url = f"redis://127.0.0.1:{self.port}/0"
        r = connection.client(bare(self.url))
        deadline = time.monotonic() + 20
        while True:
            try:
                r.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.05)
        info = r.info("server")
        self.version = str(info.get("redis_version", ""))
        self.appendfsync = _text(r.config_get("appendfsync"), "appendfsync")
        self.appendonly = _text(r.config_get("appendonly"), "appendonly")
        r.close()

    def describe(self) -> dict[str, str]:
        """The server's version and persistence, for a benchmark's machine line."""
        return {"redis_version": self.version, "appendonly": self.appendonly, "appendfsync": self.appendfsync}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

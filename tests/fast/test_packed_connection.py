"""state.connection.PackedConnection packs commands with hiredis: the bytes on the wire must be
exactly those redis-py's own packer makes, and its errors the same."""

from __future__ import annotations

import enum

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from baton.settings import load
from state.connection import PackedConnection, async_client

CASES = [
    ("GET", "k"),
    ("SET", "k", "välue ✓", "EX", 60),
    ("HSET", b"h", b"\x00\xff", 1.5, 0.1, -3, 10**30),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", *[str(i) for i in range(3000)]),
    ("CONFIG GET", "maxmemory"),
    (b"CLIENT SETNAME", b"x"),
    ("SET", "k", bytearray(b"ab"), memoryview(b"cd")),
    ("SET", "k", "lone \ud800 surrogate"),
    ("SET", "k", "x" * 20_000),
    ("HSET", "h", float("inf"), float("nan"), -0.0, 1e-7, 0.1 + 0.2, 1.2345678901234567e19),
    ("SET", "k", enum.IntEnum("Side", "UP").UP),  # an int subclass: redis-py's own packer
]


def _packers():
    fast = PackedConnection(encoding_errors="replace")
    slow = aioredis.Connection(encoding_errors="replace")
    return fast, slow


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_the_same_bytes_as_redis_py(args) -> None:
    fast, slow = _packers()
    assert b"".join(fast.pack_command(*args)) == b"".join(slow.pack_command(*args))
    batch = [args, ("PING",), args]
    assert b"".join(fast.pack_commands(batch)) == b"".join(slow.pack_commands(batch))


@pytest.mark.parametrize("bad", [True, None, object()])
def test_the_same_errors_as_redis_py(bad) -> None:
    fast, slow = _packers()
    with pytest.raises(DataError):
        slow.pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        fast.pack_command("SET", "k", bad)


def test_connect_uses_it_for_tcp_urls() -> None:
    r = async_client(load({"BATON_REDIS_URL": "redis://127.0.0.1:1/0"}))
    assert r.connection_pool.connection_class is PackedConnection

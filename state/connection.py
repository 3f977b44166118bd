"""The one way into Redis: every client of every program (sync or asyncio) is made here.

One set of options for all of them; a use chooses only what truly differs between uses (text
or bytes replies, how long a command may block). The URL comes from Settings, so that
authentication and Sentinel plug in here and nowhere else.

With Settings.redis_sentinels (docs/ha.md) every client follows the primary the Sentinels
name (redis-py's `Sentinel(...).master_for(Settings.redis_master)`): each new connection asks
a Sentinel where the primary is, and keeps asking for up to FAILOVER_BUDGET_S, long enough for
a failover; a command that meets a connection error, or a READONLY reply from a primary that
was demoted, is retried on such a fresh connection: a primary change costs reconnects, not
restarts. The program authenticates to
the Sentinels as itself too, with the same password file (state/acl.py, `sentinel_users`).

Authentication: each program is one Redis ACL user (Settings.redis_user, from
BATON_REDIS_USER; state/acl.py says what each may do), whose password is read from its
owner-only file `var/secrets/redis/<user>` each time a connection is made: never from the
environment or the URL. Without that file (a bare redis-server of a test or a benchmark)
the connection authenticates as no one, as Redis then expects.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import hiredis
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelManagedConnection as AsyncSentinelManagedConnection
from redis.backoff import EqualJitterBackoff, ExponentialWithJitterBackoff
from redis.credentials import CredentialProvider
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelManagedConnection

from baton.secretfiles import read_secret
from baton.settings import Settings
from state.acl import password_file

# A command that outlasts this is a half-open connection (a failover, a partition), not a
# slow Redis: it fails instead of hanging the program. Uses that block on purpose pass more.
TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 5.0
HEALTH_CHECK_S = 30
# Passed as timeout_s by a client whose commands block for as long as they need (rq's BLPOP
# dequeue, the API's XREAD and pub/sub followers): no socket timeout.
BLOCKING = None


def _options(s: Settings, timeout_s: float | None, decoded: bool) -> dict[str, Any]:
    opts: dict[str, Any] = {
        # decoded: every value we store is text (JSON or numbers), and str keeps the parsing
        # code free of bytes/str juggling. Bytes for rq (it decodes what it reads itself) and
        # for the clients shared with it or serving only scripts (feed, venue budgets).
        "decode_responses": decoded,
        # A value that is not UTF-8 (garbage written by hand into a control key or a slot)
        # must be read as garbage (U+FFFD), which the readers already fail safe on, not fail
        # the whole pipelined read of every tick (found by the chaos harness, tests/chaos).
        "encoding_errors": "replace",
        "socket_timeout": timeout_s,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "health_check_interval": HEALTH_CHECK_S,
    }
    if not s.redis_url.startswith("unix://"):
        opts["socket_keepalive"] = True  # a TCP option: redis-py's unix connections refuse it
    return opts


def _backoff() -> ExponentialWithJitterBackoff:
    # Connections retry nothing by default: after a Redis restart, every pooled connection
    # last used before it failed its next command (a tick lost seconds after Redis was
    # back). A connection error is retried on a fresh connection, briefly (a person at the
    # CLI learns quickly that Redis is down); the writes that matter are fenced and
    # idempotent (refs, HSETNX, tick index), so a retry of one that did land is refused,
    # never doubled.
    return ExponentialWithJitterBackoff(base=0.01, cap=0.2)


RETRIES = 3

# With Sentinels: connecting to the primary keeps asking the Sentinels and trying the address
# they give for this long (jittered steps of 0.1-0.2 s): a failover takes 2-3 s (down-after
# 1 s, a vote, the promotion: deploy/redis_ha.py), and a split vote is retried after a few
# seconds more.
FAILOVER_BUDGET_S = 10.0
FAILOVER_STEP_S = 0.2
# A command a primary refused for want of replicas (NOREPLICAS: nothing of it ran) is retried
# on a fresh connection this many times, for 3-6 s in all: right after a failover a new
# primary counts its replicas good only once a second, and an old one, whose replicas left
# it, refuses writes while Sentinels that have not yet heard of the change (their hellos
# come every 2 s) still name it.
SENTINEL_RETRIES = 14
NO_REPLICAS = "NOREPLICAS"
# Connecting on a LAN takes a millisecond: a host that does not answer in a second is down or
# cut off, and the next Sentinel (or, at the next retry, the new primary) is tried instead.
SENTINEL_CONNECT_TIMEOUT_S = 1.0
SENTINEL_TIMEOUT_S = 1.0


def _failover_backoff() -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=FAILOVER_STEP_S, base=0.02)


def _sentinel_backoff() -> EqualJitterBackoff:
    return EqualJitterBackoff(cap=0.5, base=0.05)


class SecretFileCredentials(CredentialProvider):
    """A Redis user and its password file, read at every new connection (so a password
    changed on disk is used by the next connection); no credentials while there is no file."""

    def __init__(self, user: str, path: Path) -> None:
        self.user = user
        self.path = path

    def get_credentials(self) -> Any:
        if not self.path.exists():
            return ()
        # read_secret refuses a file others could read: a secret someone else could have
        # read is not one, and the error names the file, never the value.
        return (self.user, read_secret(self.path))

    async def get_credentials_async(self) -> Any:
        return self.get_credentials()

    def __repr__(self) -> str:
        return f"SecretFileCredentials(user={self.user!r}, path={str(self.path)!r})"


def credentials(s: Settings) -> SecretFileCredentials:
    """This program's Redis user (Settings.redis_user) and its password file."""
    return SecretFileCredentials(s.redis_user, password_file(Path(s.home), s.redis_user))


def sentinel_addresses(s: Settings) -> list[tuple[str, int]]:
    """Settings.redis_sentinels as (host, port) pairs; a v6 address loses its brackets."""
    out = []
    for item in s.redis_sentinels:
        host, _, port = item.rpartition(":")
        out.append((host.strip("[]"), int(port)))
    return out


def _sentinel_options(s: Settings, timeout_s: float | None, decoded: bool) -> dict[str, Any]:
    """The primary's connection options under Sentinel: those of a TCP connection, but for a
    short connect timeout (a dead primary's address is not waited on)."""
    opts = _options(s, timeout_s, decoded)
    opts["socket_keepalive"] = True
    opts["socket_connect_timeout"] = SENTINEL_CONNECT_TIMEOUT_S
    return opts


def _sentinel_kwargs(s: Settings) -> dict[str, Any]:
    # No retry on a Sentinel: discovery moves on to the next one (redis-py's default).
    return {
        "socket_timeout": SENTINEL_TIMEOUT_S,
        "socket_connect_timeout": SENTINEL_CONNECT_TIMEOUT_S,
        "socket_keepalive": True,
        "credential_provider": credentials(s),
    }


def primary_address(s: Settings) -> tuple[str, int]:
    """Where the Sentinels say the primary is now (MasterNotFoundError, a ConnectionError,
    when none of them knows a primary that is up)."""
    sentinel = Sentinel(sentinel_addresses(s), sentinel_kwargs=_sentinel_kwargs(s))
    try:
        host, port = sentinel.discover_master(s.redis_master)
        return str(host), int(port)
    finally:
        sentinel.close()


class SentinelRedis(redis.Redis):
    """A client of the primary that closes its Sentinel clients with itself."""

    sentinel_manager: Sentinel | None = None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self.sentinel_manager is not None:
                self.sentinel_manager.close()


class AsyncSentinelRedis(aioredis.Redis):
    """The asyncio SentinelRedis."""

    sentinel_manager: AsyncSentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        try:
            await super().aclose(close_connection_pool)
        finally:
            if self.sentinel_manager is not None:
                await self.sentinel_manager.aclose()


def _retried(e: ResponseError) -> RedisConnectionError:
    """NOREPLICAS (the primary refused a write for want of good replicas; nothing of the
    command ran) as a connection error, which the client retries on a fresh connection
    (SENTINEL_RETRIES): the caller disconnects first, since the rest of a pipeline's replies
    stay unread."""
    return RedisConnectionError(f"{e} (retried on a fresh connection)")


class FailoverConnection(SentinelManagedConnection):
    """A connection to the primary the Sentinels name. Connecting asks a Sentinel where the
    primary is and tries it, again and again for up to FAILOVER_BUDGET_S: no primary (the
    Sentinels see it down and have not promoted another yet), a refused or timed-out connect
    (a dead primary's address) is what a failover looks like from here. A command that fails
    on a connection retries on a fresh one (RETRIES), which connects this way."""

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)
        except ResponseError as e:
            if not str(e).startswith(NO_REPLICAS):
                raise
            self.disconnect()
            raise _retried(e) from e

    def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        # redis-py reconnects a dropped connection this way when it sends the next command
        # (send_packed_command), which would go back to the address it had, a dead or demoted
        # primary's: through the Sentinels instead.
        if not self._sock:
            self.connect()

    def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        super().connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    def connect(self) -> None:
        deadline = time.monotonic() + FAILOVER_BUDGET_S
        backoff = _failover_backoff()
        failures = 0
        while True:
            try:
                return self._connect_retry()
            except (RedisConnectionError, RedisTimeoutError):
                failures += 1
                if time.monotonic() >= deadline:
                    raise
                time.sleep(backoff.compute(failures))


def client(s: Settings, *, timeout_s: float | None = TIMEOUT_S, decoded: bool = True) -> redis.Redis:
    """A synchronous client (the CLI, deploy, the API's operations, rq, venue budgets)."""
    if s.redis_sentinels:
        sentinel = Sentinel(sentinel_addresses(s), sentinel_kwargs=_sentinel_kwargs(s))
        r: SentinelRedis = sentinel.master_for(
            s.redis_master,
            redis_class=SentinelRedis,
            connection_class=FailoverConnection,
            retry=Retry(_sentinel_backoff(), SENTINEL_RETRIES, supported_errors=(RedisConnectionError,)),
            credential_provider=credentials(s),
            **_sentinel_options(s, timeout_s, decoded),
        )
        r.sentinel_manager = sentinel
        return r
    return redis.Redis.from_url(
        s.redis_url,
        retry=Retry(_backoff(), RETRIES, supported_errors=(RedisConnectionError,)),
        credential_provider=credentials(s),
        **_options(s, timeout_s, decoded),
    )


def async_client(s: Settings, *, timeout_s: float | None = TIMEOUT_S, decoded: bool = True) -> aioredis.Redis:
    """An asyncio client (the worker's tick, the feed, the API's readers)."""
    if s.redis_sentinels:
        sentinel = AsyncSentinel(sentinel_addresses(s), sentinel_kwargs=_sentinel_kwargs(s))
        ar: AsyncSentinelRedis = sentinel.master_for(
            s.redis_master,
            redis_class=AsyncSentinelRedis,
            connection_class=PackedFailoverConnection,
            retry=AsyncRetry(_sentinel_backoff(), SENTINEL_RETRIES, supported_errors=(RedisConnectionError,)),
            credential_provider=credentials(s),
            **_sentinel_options(s, timeout_s, decoded),
        )
        ar.sentinel_manager = sentinel
        return ar
    kw: dict[str, Any] = {}
    if s.redis_url.startswith("redis://"):
        kw["connection_class"] = PackedConnection
    elif s.redis_url.startswith("unix://"):
        kw["connection_class"] = PackedUnixConnection
    return aioredis.Redis.from_url(
        s.redis_url,
        retry=AsyncRetry(_backoff(), RETRIES, supported_errors=(RedisConnectionError,)),
        credential_provider=credentials(s),
        **_options(s, timeout_s, decoded),
        **kw,
    )


class HiredisPacking:
    """Mixed into redis-py's asyncio connections: commands packed by hiredis's C packer.

    redis-py's asyncio connection packs every argument in Python (an encoder call, a length,
    a join); at a thousand slots a tick sends several thousand arguments (each slot's keys,
    each intent and fill), and that packing was a quarter of the tick (bench/tick_scale.py
    --profile). The synchronous client already uses hiredis for this; the asyncio one does
    not. Same wire bytes: str as UTF-8, int as digits, float as repr() (redis-py's rule);
    anything else (bool, None, other types) goes to redis-py's own packer and its errors.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        head = args[0]
        if type(head) is str and " " not in head:
            # The usual case, in one C call: hiredis takes str, bytes, int and float (as
            # repr()) as redis-py does, and refuses anything else (bool, None, an int
            # subclass), which then goes the way below to redis-py's packer.
            try:
                return [hiredis.pack_command(args)]
            except (TypeError, UnicodeError):
                pass
        if isinstance(head, str):
            args = (*head.encode().split(), *args[1:])
        elif isinstance(head, bytes) and b" " in head:
            args = (*head.split(), *args[1:])
        out: list[Any] = []
        for a in args:
            t = type(a)
            if t is str or t is bytes or t is int:
                out.append(a)
            elif t is float:
                out.append(repr(a))
            elif t is bytearray or t is memoryview:
                out.append(bytes(a))
            else:
                return super().pack_command(*args)  # type: ignore[misc]
        try:
            return [hiredis.pack_command(tuple(out))]
        except (TypeError, UnicodeError):
            # e.g. a str with a lone surrogate (from a JSON escape): redis-py's packer
            # applies the client's encoding_errors to it, as before.
            return super().pack_command(*args)  # type: ignore[misc]


class PackedConnection(HiredisPacking, aioredis.Connection):
    """A TCP connection packing with hiredis (see HiredisPacking)."""


class PackedUnixConnection(HiredisPacking, aioredis.UnixDomainSocketConnection):
    """A unix-socket connection packing with hiredis: the embedded Redis's default way in."""


class PackedFailoverConnection(HiredisPacking, AsyncSentinelManagedConnection):
    """A connection to the primary the Sentinels name, packing with hiredis; it connects as
    FailoverConnection does."""

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().read_response(*args, **kwargs)
        except ResponseError as e:
            if not str(e).startswith(NO_REPLICAS):
                raise
            await self.disconnect()
            raise _retried(e) from e

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        # As FailoverConnection's: a dropped connection reconnects through the Sentinels.
        if not self.is_connected:
            await self.connect()

    async def connect_to(self, address: Any) -> None:
        self.host, self.port = address
        await super().connect_check_health(
            check_health=self.connection_pool.check_connection, retry_socket_connect=False
        )

    async def connect(self) -> None:
        deadline = time.monotonic() + FAILOVER_BUDGET_S
        backoff = _failover_backoff()
        failures = 0
        while True:
            try:
                return await self._connect_retry()
            except (RedisConnectionError, RedisTimeoutError):
                failures += 1
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(backoff.compute(failures))

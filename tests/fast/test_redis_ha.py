"""The replicated Redis's users and config files, without a server: the replica's and the
Sentinels' ACL users, the Redis and Sentinel configs deploy/redis_ha.py writes (owner-only,
secrets inside, never hashes of the wrong user), and the Sentinels' own users. The same on
real servers, through a failover: tests/e2e/test_sentinel_failover.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from baton.settings import REDIS_USERS, load
from deploy import redis_ha
from state import acl

PREFIX = "baton:"


def _settings(home: Path, **env: str):
    return load(
        {
            "BATON_HOME": str(home),
            "BATON_REDIS_SENTINELS": "127.0.0.1:27379,127.0.0.1:27380,127.0.0.1:27381",
            "BATON_REDIS_MIN_REPLICAS": "1",
            **env,
        }
    )


def _line(text: str, user: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"user {user} ")]
    return line.split()


def test_the_replica_and_sentinel_users_exist_only_in_a_replicated_redis():
    passwords = {u: f"pw-{u}" for u in acl.users(ha=True)}
    single = acl.render(PREFIX, passwords)
    assert [ln.split()[1] for ln in single.splitlines()] == ["default", *REDIS_USERS]
    ha = acl.render(PREFIX, passwords, ha=True)
    assert [ln.split()[1] for ln in ha.splitlines()] == ["default", *REDIS_USERS, "replica", "sentinel"]
    assert ha.startswith(single)


def test_the_replica_may_only_sync_and_the_sentinel_reaches_no_key():
    text = acl.render(PREFIX, {u: "p" for u in acl.users(ha=True)}, ha=True)
    replica = _line(text, "replica")[4:]
    assert replica == ["resetkeys", "resetchannels", "-@all", "+psync", "+sync", "+replconf", "+ping"]
    sentinel = _line(text, "sentinel")[4:]
    assert not any(r.startswith(("~", "%")) for r in sentinel) and "-@all" in sentinel
    assert [r for r in sentinel if r.startswith("&")] == ["&__sentinel__:hello"]
    # What redis.io lists for a Sentinel on a watched Redis, and no more than that.
    granted = {r[1:] for r in sentinel if r.startswith("+")}
    assert granted == {
        *("multi", "exec", "slaveof", "replicaof", "config|rewrite", "client|kill", "client|setname"),
        *("script|kill", "ping", "info", "role", "publish", "subscribe"),
    }


def test_the_sentinels_know_every_program_only_as_one_who_asks_for_the_primary():
    passwords = {u: f"pw-{u}-x" for u in acl.users(ha=True)}
    lines = acl.sentinel_users(passwords)
    text = "\n".join(lines)
    assert lines[0] == "user default off resetkeys resetchannels -@all"
    for user in REDIS_USERS:
        assert passwords[user] not in text
        line = _line(text, user)
        assert line[3] == "#" + acl.password_hash(passwords[user])
        if user == acl.ADMIN:
            continue
        cmds = {r for r in line[4:] if r.startswith("+")}
        assert all(c in ("+ping", "+client|setname") or c.startswith("+sentinel|") for c in cmds), user
        assert "+sentinel|get-master-addr-by-name" in cmds and "+sentinel|reset" not in cmds
    peer = _line(text, "sentinel")[4:]
    assert "+sentinel|is-master-down-by-addr" in peer and "+sentinel|failover" not in peer
    assert "replica" not in [ln.split()[1] for ln in lines]


def test_a_replica_config_logs_in_as_replica_and_refuses_writes_without_one(tmp_path: Path):
    s = _settings(tmp_path, BATON_REDIS_PORT="7379")
    path = redis_ha.render_redis_ha(
        s, role="replica", primary_addr="10.77.0.11:7379", announce_ip="10.77.0.12"
    )
    assert path == tmp_path / "var" / "ha" / "redis.conf"
    conf = dict(ln.split(" ", 1) for ln in path.read_text().splitlines() if not ln.startswith("#"))
    pw = acl.password_file(tmp_path, "replica").read_text().strip()
    assert conf["replicaof"] == "10.77.0.11 7379"
    assert conf["masteruser"] == "replica" and conf["masterauth"] == pw
    assert conf["min-replicas-to-write"] == "1" and conf["min-replicas-max-lag"] == "2"
    assert conf["replica-announce-ip"] == "10.77.0.12" and conf["bind"] == "10.77.0.12 127.0.0.1"
    assert conf["port"] == "7379" and conf["appendonly"] == "yes"
    assert conf["aclfile"] == str(acl.acl_file(tmp_path))
    users = [ln.split()[1] for ln in acl.acl_file(tmp_path).read_text().splitlines()]
    assert "replica" in users and "sentinel" in users
    assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700


def test_a_primary_config_has_no_replicaof_but_can_follow_one_once_demoted(tmp_path: Path):
    s = _settings(tmp_path)
    text = redis_ha.render_redis_ha(
        s, role="primary", primary_addr="127.0.0.1:7379", announce_ip="127.0.0.1", min_replicas_to_write=2
    ).read_text()
    assert (
        not re.search(r"^replicaof ", text, re.M)
        and "masterauth " in text
        and "min-replicas-to-write 2" in text
    )
    assert re.search(r"^bind 127\.0\.0\.1$", text, re.M)
    with pytest.raises(ValueError, match="role"):
        redis_ha.render_redis_ha(s, role="leader", primary_addr="127.0.0.1:7379", announce_ip="127.0.0.1")
    with pytest.raises(ValueError, match="host:port"):
        redis_ha.render_redis_ha(s, role="replica", primary_addr="127.0.0.1", announce_ip="127.0.0.1")


def test_a_sentinel_config_holds_its_passwords_owner_only_and_keeps_its_id(tmp_path: Path):
    s = _settings(tmp_path, BATON_REDIS_MASTER="prod")
    path = redis_ha.render_sentinel(s, primary_addr="10.77.0.11:7379", announce_ip="10.77.0.13", quorum=2)
    text = path.read_text()
    pw = acl.password_file(tmp_path, "sentinel").read_text().strip()
    assert "sentinel monitor prod 10.77.0.11 7379 2" in text
    assert "sentinel down-after-milliseconds prod 1000" in text
    assert f"sentinel auth-user prod sentinel\nsentinel auth-pass prod {pw}\n" in text
    assert f"sentinel sentinel-user sentinel\nsentinel sentinel-pass {pw}\n" in text
    assert "sentinel announce-ip 10.77.0.13" in text and "port 27379" in text
    for user in REDIS_USERS:  # the programs' passwords only as hashes
        assert acl.password_file(tmp_path, user).read_text().strip() not in text
    assert path.stat().st_mode & 0o777 == 0o600
    myid = re.search(r"^sentinel myid (\w+)$", text, re.M)
    assert myid and len(myid.group(1)) == 40
    again = redis_ha.render_sentinel(s, primary_addr="10.77.0.12:7379", announce_ip="10.77.0.13", quorum=2)
    assert f"sentinel myid {myid.group(1)}" in again.read_text()
    assert "sentinel monitor prod 10.77.0.12 7379 2" in again.read_text()


def test_a_value_that_would_need_quoting_is_refused(tmp_path: Path):
    s = _settings(tmp_path)
    with pytest.raises(ValueError, match="unquoted"):
        redis_ha.render_sentinel(s, primary_addr="127.0.0.1:7379", announce_ip="1.2.3.4 bind", quorum=2)


# --- the client factory under Sentinel ----------------------------------------------------------


def test_with_sentinels_every_client_follows_the_primary_as_its_program(tmp_path: Path):
    from redis.asyncio.sentinel import SentinelConnectionPool as AsyncPool
    from redis.sentinel import SentinelConnectionPool

    from baton.secretfiles import write_secret
    from state import connection

    s = _settings(tmp_path, BATON_REDIS_USER="settle", BATON_REDIS_MASTER="prod")
    write_secret(acl.password_file(tmp_path, "settle"), "settle-secret")
    r = connection.client(s, timeout_s=None, decoded=False)
    pool = r.connection_pool
    assert isinstance(pool, SentinelConnectionPool) and pool.service_name == "prod" and pool.is_master
    assert pool.connection_class is connection.FailoverConnection
    kw = pool.connection_kwargs
    assert kw["socket_timeout"] is None and kw["decode_responses"] is False and kw["socket_keepalive"]
    assert kw["credential_provider"].get_credentials() == ("settle", "settle-secret")
    assert kw["retry"].get_retries() == connection.SENTINEL_RETRIES
    sentinels = r.sentinel_manager.sentinels  # type: ignore[attr-defined]
    assert [
        (c.connection_pool.connection_kwargs["host"], c.connection_pool.connection_kwargs["port"])
        for c in sentinels
    ] == [
        ("127.0.0.1", 27379),
        ("127.0.0.1", 27380),
        ("127.0.0.1", 27381),
    ]
    assert (
        sentinels[0].connection_pool.connection_kwargs["credential_provider"].get_credentials()[0] == "settle"
    )
    r.close()

    ar = connection.async_client(s)
    assert isinstance(ar.connection_pool, AsyncPool)
    assert ar.connection_pool.connection_class is connection.PackedFailoverConnection
    assert issubclass(connection.PackedFailoverConnection, connection.HiredisPacking)


def test_the_single_host_client_is_untouched_by_the_sentinel_settings(tmp_path: Path):
    from state import connection

    s = load({"BATON_HOME": str(tmp_path)})
    r = connection.client(s)
    assert (
        type(r) is __import__("redis").Redis and r.connection_pool.connection_kwargs["path"] == s.redis_socket
    )
    assert connection.async_client(s).connection_pool.connection_class is connection.PackedUnixConnection


def test_sentinel_addresses_lose_the_brackets_of_v6(tmp_path: Path):
    from state import connection

    s = _settings(tmp_path, BATON_REDIS_SENTINELS="[::1]:27379,10.77.0.12:27379")
    assert connection.sentinel_addresses(s) == [("::1", 27379), ("10.77.0.12", 27379)]


def test_messages_name_the_sentinels_not_a_socket_nobody_listens_on(tmp_path: Path):
    s = _settings(tmp_path, BATON_REDIS_MASTER="prod")
    assert s.redis_url_shown == "sentinel://127.0.0.1:27379,127.0.0.1:27380,127.0.0.1:27381/prod"


def _pool() -> object:
    from types import SimpleNamespace

    return SimpleNamespace(is_master=True, service_name="baton", check_connection=False)


@pytest.mark.parametrize(
    ("reply", "becomes"),
    [
        ("READONLY You can't write against a read only replica.", "ConnectionError"),
        ("NOREPLICAS Not enough good replicas to write.", "ConnectionError"),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", "ResponseError"),
    ],
)
def test_a_demoted_or_abandoned_primary_sends_the_client_back_to_the_sentinels(monkeypatch, reply, becomes):
    import redis.connection
    from redis.exceptions import ReadOnlyError, ResponseError

    from state import connection

    err = ReadOnlyError(reply) if reply.startswith("READONLY") else ResponseError(reply)

    def answer(self, *a, **kw):
        raise err

    monkeypatch.setattr(redis.connection.Connection, "read_response", answer)
    conn = connection.FailoverConnection(connection_pool=_pool())
    closed = []
    monkeypatch.setattr(conn, "disconnect", lambda *a, **kw: closed.append(1))
    with pytest.raises(Exception) as e:
        conn.read_response()
    assert type(e.value).__name__ == becomes
    assert bool(closed) == (becomes == "ConnectionError")  # a fresh connection, which asks again


async def test_the_asyncio_connection_turns_noreplicas_into_a_retry_too(monkeypatch):
    import redis.asyncio.connection
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import ResponseError

    from state import connection

    async def answer(self, *a, **kw):
        raise ResponseError("NOREPLICAS Not enough good replicas to write.")

    monkeypatch.setattr(redis.asyncio.connection.Connection, "read_response", answer)
    conn = connection.PackedFailoverConnection(connection_pool=_pool())
    with pytest.raises(RedisConnectionError, match="NOREPLICAS"):
        await conn.read_response()

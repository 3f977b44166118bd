"""The HA settings and the WAIT helper (state/replication.py)."""

from __future__ import annotations

import fakeredis
import pytest

from baton import settings as settings_mod
from baton.errors import NotReplicated, SettingsError
from state import replication


def _load(**env: str) -> settings_mod.Settings:
    return settings_mod.load({"BATON_HOME": "/tmp/baton-repl-test", **env})


def test_single_host_default_asks_no_replica() -> None:
    s = _load()
    assert s.redis_sentinels == () and s.redis_min_replicas == 0 and s.embedded_redis
    assert not replication.wanted(s)
    pipe = fakeredis.FakeRedis().pipeline()
    assert replication.queue_wait(s, pipe) is False
    assert len(pipe.command_stack) == 0


def test_sentinels_parse_and_turn_embedded_redis_off() -> None:
    s = _load(
        BATON_REDIS_SENTINELS="10.77.0.11:27379, 10.77.0.12:27379,[::1]:26379",
        BATON_REDIS_MIN_REPLICAS="1",
    )
    assert s.redis_sentinels == ("10.77.0.11:27379", "10.77.0.12:27379", "[::1]:26379")
    assert not s.embedded_redis
    assert s.redis_master == "baton" and s.redis_wait_ms == 250


@pytest.mark.parametrize("bad", ["10.77.0.11", "h:0", "h:99999", ":26379", "h:x"])
def test_bad_sentinel_names_the_item(bad: str) -> None:
    with pytest.raises(SettingsError, match="BATON_REDIS_SENTINELS"):
        _load(BATON_REDIS_SENTINELS=bad)


def test_host_name() -> None:
    assert _load(BATON_HOST="h2").host == "h2"
    assert _load().host
    with pytest.raises(SettingsError, match="BATON_HOST"):
        _load(BATON_HOST="a:b")


def test_too_few_acks_raise_with_both_counts() -> None:
    s = _load(BATON_REDIS_MIN_REPLICAS="2", BATON_REDIS_WAIT_MS="10")
    replication.check(s, 2, "intent x")
    with pytest.raises(NotReplicated, match=r"intent x: acknowledged by 1 replica\(s\) in 10 ms, 2 required"):
        replication.check(s, 1, "intent x")


def test_a_wait_is_refused_inside_a_transaction_where_it_could_not_wait() -> None:
    s = _load(BATON_REDIS_SENTINELS="10.77.0.11:27379", BATON_REDIS_MIN_REPLICAS="1")
    with pytest.raises(ValueError, match="transaction=False"):
        replication.queue_wait(s, fakeredis.FakeRedis().pipeline(transaction=True))
    pipe = fakeredis.FakeRedis().pipeline(transaction=False)
    assert replication.queue_wait(s, pipe) is True
    assert len(pipe.command_stack) == 1


async def test_an_asyncio_transaction_is_refused_too() -> None:
    s = _load(BATON_REDIS_SENTINELS="10.77.0.11:27379", BATON_REDIS_MIN_REPLICAS="1")
    r = fakeredis.FakeAsyncRedis()
    with pytest.raises(ValueError, match="transaction=False"):
        replication.queue_wait(s, r.pipeline(transaction=True))
    assert replication.queue_wait(s, r.pipeline(transaction=False)) is True
    await r.aclose()

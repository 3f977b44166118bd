"""An intent is posted only once enough replicas acknowledged its commit (kernel/executor.py with
`replicas=`, state/intents.py commit_intents_acked): too few, and it is failed, journaled and
counted, never posted; a primary that refused the commit committed nothing. fakeredis has no
WAIT: it is stood in for by an ECHO of the acknowledgements the test wants."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest

from baton.errors import NotReplicated
from baton.settings import load
from kernel import executor
from state import replication
from state.structs import Intent
from tests.factories import intent as make_intent
from venues.stub import StubVenue

HA = load(
    {
        "BATON_HOME": "/tmp/baton-replicated-commit",
        "BATON_REDIS_SENTINELS": "127.0.0.1:27379",
        "BATON_REDIS_MIN_REPLICAS": "1",
    }
)


def intents(epoch: int, n: int) -> list[Intent]:
    return [
        msgspec.structs.replace(
            make_intent(f"s{k}-15m:1700000000:entry", epoch=epoch),
            slot=f"s{k}-15m",
            token_id=str(1000 + k),
            limit_price=0.5,
            size=10.0,
            stake_usd=5.0,
        )
        for k in range(n)
    ]


async def lease(store) -> int:
    _, epoch, _ = await store.acquire_lease("blue:h:1:x", "blue", "r1", int(time.time() * 1000), 60_000)
    return epoch


@pytest.fixture
def acks(monkeypatch) -> list[int]:
    """The replicas the next WAITs report; each WAIT is queued as it would be (last on the
    commit's pipeline) and answered by an ECHO."""
    answers = [1]

    def queue_wait(s: Any, pipeline: Any) -> bool:
        assert replication.wanted(s) and not pipeline.is_transaction
        pipeline.execute_command("ECHO", answers[0])
        return True

    monkeypatch.setattr(replication, "queue_wait", queue_wait)
    return answers


async def test_an_acknowledged_commit_is_posted(store, acks):
    epoch = await lease(store)
    venue = StubVenue()
    sent, problems = await executor.commit_and_submit(store, venue, epoch, intents(epoch, 3), replicas=HA)
    assert (sent, problems) == (3, []) and venue.calls["post"] == 3


async def test_too_few_acknowledgements_post_nothing_and_fail_the_intents(store, acks):
    acks[0] = 0
    epoch = await lease(store)
    venue = StubVenue()
    entered: set[str] = set()
    batch = intents(epoch, 3)
    sent, problems = await executor.commit_and_submit(
        store, venue, epoch, batch, entered=entered, replicas=HA
    )
    assert sent == 0 and venue.calls["post"] == 0
    assert entered == {i.id for i in batch}  # committed: the slot-window is entered, never retried
    assert len(problems) == 3 and all("acknowledged by 0 replica(s)" in p for p in problems)
    stored = await store.read_intents()
    assert {i.status for i in stored} == {"failed"} and all("not posted" in (i.error or "") for i in stored)
    assert await store.read_intents(open_only=True) == []
    errors = await store.r.xrange(store.k.journal_errors())
    assert [f["source"] for _, f in errors] == ["replication"] * 3
    assert await store.r.hget(store.k.stats(), "errors_replication") == "3"


async def test_a_commit_the_primary_refused_commits_and_posts_nothing(store, monkeypatch):
    async def refused(*a: Any, **kw: Any) -> Any:
        raise NotReplicated("the primary refused the commit: NOREPLICAS Not enough good replicas to write.")

    monkeypatch.setattr(store, "commit_intents_acked", refused)
    epoch = await lease(store)
    venue = StubVenue()
    sent, problems = await executor.commit_and_submit(store, venue, epoch, intents(epoch, 2), replicas=HA)
    assert sent == 0 and venue.calls["post"] == 0 and await store.read_intents() == []
    assert problems and "NOREPLICAS" in problems[0]
    assert await store.r.hget(store.k.stats(), "errors_replication") == "2"


async def test_without_replicas_wanted_the_commit_is_one_script_call_as_before(store, monkeypatch):
    single = load({"BATON_HOME": "/tmp/baton-replicated-commit"})

    def no_pipeline(*a: Any, **kw: Any) -> Any:
        raise AssertionError("a pipeline for a WAIT nobody wants")

    monkeypatch.setattr(store, "run_pipeline", no_pipeline)
    epoch = await lease(store)
    verdicts, acked = await store.commit_intents_acked(single, epoch, intents(epoch, 2))
    assert list(verdicts) == ["OK", "OK"] and acked is None


async def test_the_tick_asks_for_acknowledgements_only_when_replicas_are_wanted(rig):
    from kernel.tick import TickRunner

    await rig.start()
    assert rig.runner.entries.replicas is None  # the single-host default: no WAIT at all
    ha = msgspec.structs.replace(rig.settings, redis_sentinels=("127.0.0.1:27379",), redis_min_replicas=1)
    runner = TickRunner(ha, rig.store, rig.venue, rig.clock, rig.runner.ident, resolve=rig.resolve)
    assert runner.entries.replicas is ha


async def test_the_sentinel_clients_spent_noreplicas_retries_mean_not_committed(store, monkeypatch):
    from redis.exceptions import ConnectionError as RedisConnectionError

    async def refused(build: Any) -> Any:
        raise RedisConnectionError(
            "NOREPLICAS Not enough good replicas to write. (retried on a fresh connection)"
        )

    monkeypatch.setattr(store, "run_pipeline", refused)
    with pytest.raises(NotReplicated, match="refused the commit"):
        await store.commit_intents_acked(HA, 1, intents(1, 1))

    async def lost(build: Any) -> Any:
        raise RedisConnectionError("Connection reset by peer")

    monkeypatch.setattr(store, "run_pipeline", lost)
    with pytest.raises(RedisConnectionError, match="reset"):  # its fate unknown: not NotReplicated
        await store.commit_intents_acked(HA, 1, intents(1, 1))

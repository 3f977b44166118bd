"""Settle workers on several hosts, one queue: a worker that dies in the middle of a job (its
host lost, SIGKILL) leaves the job in rq's started registry; it expires soon after the job's
timeout and another worker retries it, and the settlement is booked once whether the dead
worker had booked it or not. (tests/e2e/test_feed_settle_hosts.py does it with processes.)"""

from __future__ import annotations

import os
import time

import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from kernel import settlement
from kernel.settlement import job_id
from state.settlements import SettlementsRepo
from state.structs import POSITION
from tests.fast.test_settlement import _a_closed_position, _stats
from worker import settle as settle_program
from worker.settle_guard import HEARTBEAT_MARGIN_S, MAINTENANCE_LOCK_S

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("booked_before_death", [False, True])
async def test_a_job_whose_worker_died_mid_run_is_retried_by_another_and_booked_once(
    rig, booked_before_death
):
    p = await _a_closed_position(rig)
    q = settlement.settle_queue(rig.sync, "baton:")
    dead = settle_program.settle_worker(q, "baton:", name="settle-h1-1-0")
    dead.register_birth()
    got = dead.dequeue_job_and_maintain_ttl(1)
    assert got is not None
    job, queue = got
    assert job.id == job_id("baton:", p.id)
    dead.prepare_execution(job)  # the job has started: rq recorded it, with an expiry
    if booked_before_death:
        raw = rig.sync.hget(rig.store.k.positions_open(), p.id)
        up_won = rig.venue.resolution(p.condition_id)
        verdict = SettlementsRepo(rig.sync, rig.store.k).settle_position(
            raw.decode(), settlement.settled(POSITION.decode(raw), up_won, rig.clock.now_ms())
        )
        assert verdict in (b"OK", "OK")
    # ... and here the worker's host is lost: nothing more of it runs.

    registry = queue.started_job_registry
    ((member, expiry),) = rig.sync.zrange(registry.key, 0, -1, withscores=True)
    assert member.decode().startswith(job.id)
    # rq's own margin is a minute past the job's timeout; ours is a few seconds.
    assert expiry - time.time() <= settlement.JOB_TIMEOUT_S + HEARTBEAT_MARGIN_S + 1
    assert registry.get_expired_job_ids(time.time()) == []  # not before it expires

    # Another host's worker cleans the registry once it has expired: the job is retried.
    registry.cleanup(timestamp=expiry + 1)
    assert Job.fetch(job.id, connection=rig.sync, serializer=JSONSerializer).get_status() == "scheduled"
    q.scheduled_job_registry.requeue(job.id)  # what the scheduler does once the retry is due
    settle_program.configure(rig.venue, rig.clock.now_ms, host="h2")
    settle_program.settle_worker(q, "baton:", name="settle-h2-2-0").work(burst=True)

    assert Job.fetch(job.id, connection=rig.sync, serializer=JSONSerializer).return_value() == (
        "already" if booked_before_death else "settled"
    )
    refs = [e.ref for e in await rig.store.read_ledger() if e.kind == "payout"]
    assert refs.count(f"settle:{p.id}") == 1 and len(refs) == len(set(refs))
    assert p.id not in {x.id for x in await rig.store.read_positions(open_only=True)}
    stats = _stats(rig)
    assert stats.get("already", 0) == (1 if booked_before_death else 0)
    # Counted by the host that ran it too (several hosts' settle programs share the queue).
    assert stats["runs@h2"] >= 1 and stats.get("already@h2", 0) == stats.get("already", 0)


def test_a_worker_lost_while_cleaning_holds_the_cleaning_lock_briefly(rig):
    q = settlement.settle_queue(rig.sync, "baton:")
    w = settle_program.settle_worker(q, "baton:")
    (queue,) = w.queues
    assert queue.acquire_maintenance_lock()
    assert 0 < rig.sync.ttl(queue.registry_cleaning_key) <= MAINTENANCE_LOCK_S
    assert not settle_program.settle_worker(q, "baton:").queues[0].acquire_maintenance_lock()


def test_the_settle_program_runs_a_new_worker_when_rq_quits_on_a_redis_error(monkeypatch):
    """rq's worker quits on a Redis error outside its dequeue (a failover mid-maintenance):
    the program waits for Redis and runs another worker; it exits only when asked to."""
    import fakeredis
    from redis.exceptions import ConnectionError as RedisConnectionError

    from baton.settings import load

    s = load({"BATON_HOST": "h2"})
    r = fakeredis.FakeRedis()
    names: list[str] = []

    class Worker:
        def __init__(self, name: str) -> None:
            self.name = name
            self._shutdown_requested_date = None

        def work(self, **kw) -> bool:
            names.append(self.name)
            if len(names) == 1:
                raise RedisConnectionError("Connection closed by server.")
            self._shutdown_requested_date = object()  # the SIGTERM of a supervisor's stop
            return True

        def unsubscribe(self) -> None:
            pass

    class Venue:
        def close(self) -> None:
            pass

    monkeypatch.setattr(settle_program.settings_mod, "load", lambda: s)
    monkeypatch.setattr(settle_program.connection, "client", lambda *a, **kw: r)
    monkeypatch.setattr(settle_program, "resolution_reader", lambda *a, **kw: Venue())
    monkeypatch.setattr(settle_program, "settle_worker", lambda q, prefix, **kw: Worker(kw["name"]))
    monkeypatch.setattr(settle_program.signal, "signal", lambda *a: None)
    settle_program.main()
    pid = os.getpid()
    assert names == [f"settle-h2-{pid}-0", f"settle-h2-{pid}-1"]

"""The `settle` program: an rq worker (with its scheduler, for the retries of unresolved
markets) that runs the settlement jobs the kernel enqueues (kernel/settlement.py), and the
job itself (`settle_job`, settlement.JOB_FUNC; the worker runs it and nothing else:
worker/settle_guard.py).

`python -m worker.settle`, under supervisor. It runs from the repository, not from a
release: it is not part of blue/green, and a deploy leaves it alone (stop it with SIGTERM:
rq's warm shutdown finishes the job in hand). Jobs run in this process (rq's SimpleWorker):
no fork per job, and one venue client is reused. That client reads market resolutions and
holds no key: settling signs nothing, so this program is given no credentials.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

from baton import settings as settings_mod
from baton.errors import ExitPending, PositionChanged, SettingsError, UnreadableValue, Unresolved
from kernel import settlement
from kernel.clock import wall_ms
from state import connection
from state.journal import JournalRepo
from state.keys import Keys
from state.settlements import SettlementsRepo
from state.structs import POSITION
from venues.polymarket import resolution_reader
from worker import input_files
from worker.settle_guard import GuardedJob, SettleWorker

log = logging.getLogger("baton.settle")

REDIS_WAIT_S = 60.0
MAINTENANCE_S = 15
# Between two rounds of the rq worker (see `main`): how often Redis is asked whether it is back.
RECONNECT_INITIAL_S = 0.2
RECONNECT_MAX_S = 2.0


def _wait_for_redis(r: Redis, timeout_s: float | None, stopping: Callable[[], bool] = lambda: False) -> bool:
    """Wait until Redis answers (True), or `stopping()` says to give up (False); raises the
    connection error past `timeout_s` (None: wait as long as it takes)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    delay_s = RECONNECT_INITIAL_S
    while not stopping():
        try:
            r.ping()
            return True
        except RedisError:
            if deadline is not None and time.monotonic() > deadline:
                raise
            time.sleep(delay_s)
            delay_s = min(RECONNECT_MAX_S, delay_s * 2)
    return False


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        s = settings_mod.load()
    except SettingsError as e:
        log.error("settle: cannot start: %s", e)
        sys.exit(2)
    # rq's dequeue blocks in BLPOP: no socket timeout (NOTES.md), but keepalive and a
    # health check so that a dead connection is noticed.
    r = connection.client(s, timeout_s=connection.BLOCKING, decoded=False)
    # Settling reads market resolutions and signs nothing: the venue holds no key, and this
    # program is given none (deploy/supervisord.py, docs/programs.md).
    venue = resolution_reader(s, redis=r)
    configure(venue, host=s.host)
    _wait_for_redis(r, REDIS_WAIT_S)
    queue = settlement.settle_queue(r, s.prefix)
    stopping = False
    # The input log's copy into this host's var/inputs/ (worker/input_files.py): its own
    # client, not the one rq blocks on.
    roller = input_files.Roller(
        connection.client(s, decoded=False), Keys(s.prefix), s.home, s.input_log_redis_s, s.input_log_days
    )
    roller.start()

    def stop(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    try:
        # rq's worker quits on any Redis error outside its dequeue (a failover, a restart:
        # while it cleans its registries, records a job's end, beats): this program then
        # waits for Redis (through the client, which finds the new primary) and runs a new
        # worker, instead of exiting. A job whose end was not recorded is left in rq's
        # started registry: another worker retries it once its execution expires
        # (SettleWorker.get_heartbeat_ttl), and the booking happens once whoever runs it.
        for round_ in itertools.count():
            worker = settle_worker(
                queue,
                s.prefix,
                name=f"{queue.name}-{s.host}-{os.getpid()}-{round_}",
                # rq's scheduler (which enqueues the retries of unresolved markets) runs in a
                # child process that dies on a Redis connection error, and the worker only
                # restarts it in its maintenance tasks (every 10 minutes by default): after a
                # Redis restart every retried settlement waited that long (found by the chaos
                # harness, tests/chaos). The check runs between dequeues, whose BLPOP lasts
                # worker_ttl - 15 s: both kept short.
                maintenance_interval=MAINTENANCE_S,
                worker_ttl=MAINTENANCE_S + 20,
            )
            log.info("settle: rq worker %s on queue %s", worker.name, queue.name)
            try:
                worker.work(with_scheduler=True, logging_level="INFO")
            except RedisError as e:
                log.warning("settle: rq worker %s ended on a Redis error: %s", worker.name, e)
                with contextlib.suppress(Exception):
                    worker.unsubscribe()
            if worker._shutdown_requested_date is not None:
                break  # SIGTERM/SIGINT: rq's warm shutdown
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            log.warning("settle: rq worker %s stopped; starting another once Redis answers", worker.name)
            if not _wait_for_redis(r, None, lambda: stopping):
                break
    finally:
        roller.stop()
        venue.close()


# --- the job -------------------------------------------------------------------------------


@dataclass
class _Context:
    venue: Any
    clock_ms: Callable[[], int]
    host: str = ""


_context: _Context | None = None


def configure(venue: Any, clock_ms: Callable[[], int] | None = None, host: str = "") -> None:
    """Set the venue (and clock) jobs use in this process: the settle program at start-up,
    tests with their own sim. Without it, the first job builds one from the settings. `host`
    (Settings.host) labels this program's own counters: the settle programs of several hosts
    share one queue."""
    global _context
    _context = _Context(venue, clock_ms or wall_ms, host)


def _ctx() -> _Context:
    if _context is None:
        configure(resolution_reader(settings_mod.load()))
    assert _context is not None
    return _context


def _count(r: Redis, k: Keys, name: str) -> None:
    """Add to a settle counter, summed over every host, and as '<name>@<host>' for this one."""
    host = _ctx().host
    repo = SettlementsRepo(r, k)
    if not host:
        repo.count_settle(name)
        return
    with r.pipeline(transaction=False) as pipe:
        repo.count_settle(name, pipeline=pipe)
        repo.count_settle(f"{name}@{host}", pipeline=pipe)
        pipe.execute()


def settle_job(prefix: str, position_id: str) -> str:
    """Settle one position: 'settled', 'already' (nothing to do) or raises to be retried."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("settle_job runs inside an rq worker")
    r: Redis = job.connection
    k = Keys(prefix)
    ctx = _ctx()
    _count(r, k, "runs")
    raw = r.hget(k.positions_open(), position_id)
    if raw is None:
        _count(r, k, "already")
        return "already"
    p = POSITION.decode(raw)
    if p.status != "open":
        # A closed position (all sold by exits) left the open set with its last sale; one
        # found there anyway is never paid.
        _count(r, k, "already")
        return "already"
    try:
        up_won = ctx.venue.resolution(p.condition_id)
    except Exception:
        _count(r, k, "errors")
        raise
    if up_won is None:
        _count(r, k, "unresolved")
        raise Unresolved(f"market {p.condition_id} of {position_id} is not resolved yet")
    try:
        verdict = SettlementsRepo(r, k).settle_position(
            raw.decode() if isinstance(raw, bytes) else raw, settlement.settled(p, up_won, ctx.clock_ms())
        )
    except UnreadableValue as e:
        # Nothing was written (the script checks before its first write): the position stays
        # open and rq retries the job, which books it once the value is repaired.
        _count(r, k, "unreadable")
        log.error("settling %s waits for a repair: %s", position_id, e)
        if job.retries_left in (None, settlement.RETRY.max):  # journaled once, not per retry
            JournalRepo(r, k).journal_error(
                "settle", f"settling {position_id} waits for a repair: {e}", now_ms=wall_ms()
            )
        raise
    verdict = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
    if verdict == "OK":
        _count(r, k, "settled")
        log.info("settled %s: %s won", position_id, "up" if up_won else "down")
        return "settled"
    if verdict in ("ALREADY", "UNKNOWN"):
        _count(r, k, "already")
        return "already"
    if verdict == "PENDING":
        # An exit's fill is not booked yet (kernel/reconcile.py books it): paid now, the
        # settlement would pay on shares already sold. rq retries the job.
        _count(r, k, "exit_pending")
        raise ExitPending(f"{position_id}: an exit of it is still open at the venue; retrying")
    _count(r, k, "changed")
    raise PositionChanged(f"{position_id}: the position changed while settling ({verdict}); retrying")


class SettleJob(GuardedJob):
    """The settle program's jobs: `settle_job` (under its path or a former one), nothing else
    and never through an import (worker/settle_guard.py)."""

    target = staticmethod(settle_job)


def settle_worker(queue: Queue, prefix: str, **kwargs: Any) -> SettleWorker:
    """The rq worker that runs settlements of `prefix`'s stack and refuses every other job."""
    return SettleWorker(
        [queue],
        prefix=prefix,
        connection=queue.connection,
        serializer=JSONSerializer,
        job_class=SettleJob,
        **kwargs,
    )


if __name__ == "__main__":
    # Run in the module rq imports the job from (worker.settle), not in this copy named
    # __main__: the venue configured at start-up must be the one settle_job sees.
    from worker.settle import main as module_main

    module_main()

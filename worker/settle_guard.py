"""What the settle program agrees to run: the settlement job, and nothing else.

rq runs whatever function a job's data names (`import_attribute`), whatever the serializer:
anyone who can write `rq:job:<id>` and push its id onto the settle queue would otherwise run
code in this process. So the settle program's worker (`SettleWorker`) reads each job's data
first, imports nothing from it, and refuses any job that is not a settlement of this stack in
the shape the kernel enqueues (kernel/settlement.py): the job is left failed in rq's
FailedJobRegistry with the reason, logged, journaled (`journal:errors`, source `settle`) and
counted (`settle:stats` `refused`), and the worker goes on with the next job. `GuardedJob` is
the second lock, for every other path rq has to a job: its function resolves only to
`settle_job`, never through an import, and it has no callbacks and no webhooks.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.queue import Queue
from rq.utils import now

from baton.errors import JobRefused
from kernel import settlement
from kernel.clock import wall_ms
from state.journal import JournalRepo
from state.keys import Keys
from state.settlements import SettlementsRepo

log = logging.getLogger("baton.settle")

# A worker of an earlier release enqueued its settlements under the job's former path; they
# run as the same function (no import either), or an upgrade would strand every queued
# settlement until rq forgot the failed job (a week later). Nothing else is translated.
FORMER_JOB_FUNCS = frozenset({"kernel.settlement.settle_job"})
JOB_FUNCS = frozenset({settlement.JOB_FUNC, *FORMER_JOB_FUNCS})
# `<slot id>:<window start, unix s>`, as kernel/outcomes.py builds position ids; a slot id as
# control/slot_rules.py SLOT_ID allows it (free-form since issue #25: `btc-15m`, `momo.btc-1m`).
POSITION_ID_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}:[0-9]{1,12}")
SOURCE = "settle"
TRANSIENT = (RedisConnectionError, RedisTimeoutError)
# A job runs in the worker's own process and ends by its timeout at the latest (rq's death
# penalty): its execution's record in rq's started registry lasts this much past that timeout
# (rq's own margin is 60 s). A worker that dies mid-job (SIGKILL, its host lost) leaves it
# there, and another worker's registry cleanup retries the job once it has expired.
HEARTBEAT_MARGIN_S = 5
# rq lets one worker clean a queue's registries at a time, under a lock of 15 minutes that it
# deletes when done: a worker that died while cleaning (its host lost) would stop every other
# from retrying abandoned jobs for that long. Cleaning takes well under a second.
MAINTENANCE_LOCK_S = 60


def refusal(job: Job, prefix: str) -> str | None:
    """Why `job` is not a settlement this program runs, or None when it is one.

    Reads the job's data (JSON, decoded by rq's JSON serializer) and imports nothing."""
    try:
        func_name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except Exception as e:  # rq's DeserializationError, or a data tuple of another shape
        return f"unreadable job data ({type(e).__name__})"
    if not isinstance(func_name, str) or func_name not in JOB_FUNCS:
        return f"function {str(func_name)[:80]!r} is not the settlement function {settlement.JOB_FUNC}"
    if instance is not None:
        return "a settlement job calls no method of an instance"
    if kwargs:
        return "a settlement job takes no keyword arguments"
    if not isinstance(args, list | tuple) or len(args) != 2 or not all(isinstance(a, str) for a in args):
        return "a settlement job takes two strings: the key prefix and a position id"
    if args[0] != prefix:
        return f"prefix {args[0][:40]!r} is not this stack's {prefix!r}"
    if not POSITION_ID_RE.fullmatch(args[1]):
        return f"position id {args[1][:60]!r} is not <asset>-<timeframe>:<window start>"
    names = (job._success_callback_name, job._failure_callback_name, job._stopped_callback_name)
    if any(names):
        return "a settlement job has no callbacks"
    if job.webhooks:
        return "a settlement job has no webhooks"
    if job._dependency_ids:
        return "a settlement job depends on no other job"
    return None


class GuardedJob(Job):
    """rq's Job whose function and callbacks are never imported: the function is `target`
    (the settle program sets it to `settle_job`) under the job's path or a former one, and
    any other raises JobRefused; callbacks and webhooks are none. The worker refuses such
    jobs before this is reached; this holds on any other path."""

    target: ClassVar[Callable[..., Any] | None] = None

    @property
    def func(self) -> Any:
        name = self.func_name
        if self.target is not None and isinstance(name, str) and name in JOB_FUNCS and self.instance is None:
            return self.target
        raise JobRefused(f"job {self.id}: {str(self.func_name)[:80]!r} is not the settlement function")

    # Callbacks and webhooks: none, whatever the record says. rq also reaches them outside a
    # job's run (an abandoned job's failure callback when it cleans its registries, webhooks
    # of a job stuck in its intermediate queue), where raising would stop the worker: they
    # are ignored, and said so.
    def _no_callback(self, name: str | None) -> None:
        if name:
            log.error("settle: job %s: callback %r ignored (settlement jobs have none)", self.id, name[:80])

    @property
    def success_callback(self) -> Any:
        self._no_callback(self._success_callback_name)
        return None

    @property
    def failure_callback(self) -> Any:
        self._no_callback(self._failure_callback_name)
        return None

    @property
    def stopped_callback(self) -> Any:
        self._no_callback(self._stopped_callback_name)
        return None

    def send_webhooks(self, status: Any, *, exc_string: str | None = None) -> None:
        if self.webhooks:
            log.error("settle: job %s: webhooks ignored (settlement jobs have none)", self.id)


class SettleQueue(Queue):
    """rq's Queue whose registry-cleaning lock lasts MAINTENANCE_LOCK_S, not 15 minutes."""

    def acquire_maintenance_lock(self) -> bool:
        return bool(self.connection.set(self.registry_cleaning_key, 1, nx=True, ex=MAINTENANCE_LOCK_S))


class SettleWorker(SimpleWorker):
    """rq's SimpleWorker (jobs run in this process) that runs settlement jobs only. Several
    run at once, one per host, on one queue: each job is taken by one of them (rq's dequeue),
    and a job whose worker died is retried by another (see HEARTBEAT_MARGIN_S)."""

    def __init__(
        self, queues: list[Queue], *, prefix: str, job_class: type[GuardedJob], **kwargs: Any
    ) -> None:
        # The queues' own job class too: rq fetches jobs through it when it cleans their
        # registries, outside the worker's dequeue.
        queues = [
            SettleQueue(q.name, connection=q.connection, serializer=q.serializer, job_class=job_class)
            for q in queues
        ]
        super().__init__(queues, job_class=job_class, queue_class=SettleQueue, **kwargs)
        self.prefix = prefix
        self.keys = Keys(prefix)

    def unsubscribe(self) -> None:
        # rq's own stops its pubsub thread with redis-py's PubSubWorkerThread.stop(), which
        # (redis-py 8) waits for the thread to leave get_message(timeout=60). When that thread
        # had already read the UNSUBSCRIBE's reply, nothing wakes it: a warm shutdown took up to
        # a minute (supervisord's stopwaitsecs, a cluster's stop). Flag it first, unsubscribe
        # (the reply wakes it and it leaves), and wait a bounded time.
        if self.pubsub_thread is None or self.pubsub is None:
            return
        self.log.info("Worker %s: unsubscribing from channel %s", self.name, self.pubsub_channel_name)
        self.pubsub_thread.stop(timeout=0)
        self.pubsub.unsubscribe()
        self.pubsub_thread.join(timeout=1)
        self.pubsub.close()

    def get_heartbeat_ttl(self, job: Job) -> int:
        if job.timeout is None or job.timeout <= 0:
            return super().get_heartbeat_ttl(job)
        return int(job.timeout) + HEARTBEAT_MARGIN_S

    def _set_ip_address(self, connection: Any) -> None:
        # rq looks its own address up in CLIENT LIST, which the settle program's Redis user
        # is not given (it shows every other client: state/acl.py); the name is still set.
        connection.client_setname(self.name)
        self.ip_address = "unknown"

    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job, self.prefix)
        if reason is None:
            super().execute_job(job, queue)
            return
        self.refuse(job.id, queue, reason, job=job)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        # A job record rq itself cannot read (a bad status, a bad date) raises out of its
        # dequeue, which would stop the worker: refuse that job and take the next one.
        while True:
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except Exception as e:
                job_id, queue = getattr(e, "job_id", None), getattr(e, "queue", None)
                # rq tags any error of the fetch with the job: a lost connection is not the job's
                # fault (a key of the wrong type is).
                if isinstance(e, TRANSIENT) or not isinstance(job_id, str) or not isinstance(queue, Queue):
                    raise
                self.refuse(job_id, queue, f"unreadable job record ({type(e).__name__})")

    def clean_registries(self) -> None:
        # rq fetches the jobs its registries name (started, intermediate) while it cleans them;
        # a record it cannot read raised out of its maintenance and stopped the worker, and its
        # restart ran into the same record: a crash loop. Reported instead; retried at the next
        # maintenance.
        try:
            super().clean_registries()
        except TRANSIENT:
            raise
        except Exception as e:
            self.last_cleaned_at = now()  # type: ignore[assignment]  # rq declares it as None
            message = f"rq's registry cleanup stopped on an unreadable record: {type(e).__name__}: {e}"
            log.error("settle: %s", message[:300])
            with self.connection.pipeline() as pipe:
                JournalRepo(self.connection, self.keys).journal_error(
                    SOURCE, message, now_ms=wall_ms(), pipeline=pipe
                )
                pipe.execute()

    def refuse(self, job_id: str, queue: Queue, reason: str, job: Job | None = None) -> None:
        """Leave the job failed with `reason`, never run; log, journal and count the refusal."""
        log.error("settle: refused job %s: %s", job_id[:80], reason)
        message = f"refused job {job_id[:80]}: {reason}"
        r: Redis = self.connection
        with r.pipeline() as pipe:
            pipe.lrem(queue.intermediate_queue_key, 0, job_id)
            pipe.lrem(queue.key, 0, job_id)
            if job is not None:
                # Nothing of it runs later: no retry, no callback, no webhook, no dependant.
                job.retries_left = None
                job.webhooks = []
                job.origin, job.failure_ttl = queue.name, settlement.FAILURE_TTL_S
                job.ended_at = now()
                job.set_status(JobStatus.FAILED, pipeline=pipe)
                # rq's own failure record: the failed registry, and the reason as the job's
                # latest result (`rq info`, `Job.latest_result().exc_string`).
                job._handle_failure(message, pipeline=pipe, worker_name=self.name)
            else:
                key = Job.key_for(job_id)
                pipe.delete(key)  # whatever it held (a hash rq cannot read, another type)
                pipe.hset(key, mapping={"status": JobStatus.FAILED.value, "exc_info": message})
                pipe.expire(key, settlement.FAILURE_TTL_S)
                pipe.zadd(
                    queue.failed_job_registry.key, {job_id: int(wall_ms() / 1000) + settlement.FAILURE_TTL_S}
                )
            SettlementsRepo(r, self.keys).count_settle("refused", pipeline=pipe)
            JournalRepo(r, self.keys).journal_error(SOURCE, message, now_ms=wall_ms(), pipeline=pipe)
            pipe.execute()

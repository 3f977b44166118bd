"""Settlement of closed windows: the kernel's side, enqueueing rq jobs that the `settle`
program runs (worker/settle.py holds the job).

At each window's end the kernel enqueues one job per open position with a deterministic id,
`settle-<slot>-<window_start>`, so that it runs once whoever enqueues it, however often:
1. a claim key (`SET NX` with a TTL) stops later ticks, and other workers, from enqueueing
   it again; when the claim expires with the position still open (the job failed for good,
   or was lost with a flushed queue) the next tick enqueues it again;
2. rq's `unique=True` refuses a second job with the same id while the first exists
   (`enqueue_at` ignores it, so only `enqueue` is used: see shared/NOTES.md);
3. the booking itself is a fenced, idempotent Lua script (state/lua/settle_position.lua):
   it refuses a settlement computed from a position record that has changed since, and its
   ledger ref books each payout at most once, so even a job that rq runs twice pays once.

The job (worker.settle.settle_job) asks the venue for the market's resolution and raises
`Unresolved` until it is known; rq retries it on a schedule (the settle worker runs with its
scheduler). Jobs are stored with rq's JSON serializer (no pickle); their description names
the position.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from redis import Redis
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.job import Job
from rq.serializers import JSONSerializer

from state.keys import Keys
from state.settlements import SettlementsRepo
from state.structs import Position

# The job function, by name: rq imports it in the settle program (the kernel never does).
JOB_FUNC = "worker.settle.settle_job"
DEFAULT_PREFIX = "baton:"
# Resolution arrives within seconds in the sim, within minutes live (Chainlink, then the
# market's close): ask again quickly at first, then once a minute, for about three hours.
RETRY = Retry(max=200, interval=[1, 2, 3, 5, 10, 15, 30, 60])
# A job is one resolution look-up (5 s timeout, retried within 2 s) and one script: this is
# ample, and bounds how long a job whose worker died waits to be retried (worker/settle_guard.py).
JOB_TIMEOUT_S = 20
# How long a claim stops re-enqueueing: long enough for the retries above to be under way,
# short enough that a lost job is enqueued again the same hour.
CLAIM_TTL_S = 15 * 60
PRUNE_EVERY_MS = 60_000  # expired claims are forgotten this often (Enqueuer.due)
RESULT_TTL_S = 24 * 3600
FAILURE_TTL_S = 7 * 24 * 3600


def _safe(prefix: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", prefix.rstrip(":"))


def queue_name(prefix: str) -> str:
    """`settle` for the default prefix; another prefix (two stacks on one Redis) gets its own."""
    return "settle" if prefix == DEFAULT_PREFIX else f"{_safe(prefix)}-settle"


def job_id(prefix: str, position_id: str) -> str:
    """`settle-<slot>-<window_start>`: rq ids allow letters, digits, `_` and `-` only, so a
    slot id's `_` is written `_5f` and its `.` `_2e` (an escape, so that no two slots share a
    job id: `a.b` and `a_b` are both legal slot ids)."""
    slot, window = position_id.rsplit(":", 1)
    base = f"settle-{slot.replace('_', '_5f').replace('.', '_2e')}-{window}"
    return base if prefix == DEFAULT_PREFIX else f"{_safe(prefix)}-{base}"


def settle_queue(redis: Redis, prefix: str) -> Queue:
    return Queue(queue_name(prefix), connection=redis, serializer=JSONSerializer)


def enqueue(queue: Queue, prefix: str, p: Position) -> bool:
    """Enqueue the settlement of `p`; False when a job with its id exists already."""
    try:
        queue.enqueue(
            JOB_FUNC,
            prefix,
            p.id,
            job_id=job_id(prefix, p.id),
            unique=True,
            retry=RETRY,
            job_timeout=JOB_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            description=f"settle {p.id} ({p.condition_id})",
        )
    except DuplicateJobError:
        return False
    return True


class Enqueuer:
    """The kernel's side: claim and enqueue the settlements of windows that have ended.

    rq is synchronous, so the worker calls `enqueue_due` through a thread, on its own
    (synchronous) Redis connection. A position's claim, once seen, is remembered until it
    expires (process memory as a cache of the claim key), so that a market that takes
    minutes to resolve costs no Redis round trip per tick meanwhile.
    """

    def __init__(self, redis: Redis, prefix: str, claim_ttl_s: int = CLAIM_TTL_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.keys = Keys(prefix)
        self.settlements = SettlementsRepo(redis, self.keys)
        self.queue = settle_queue(redis, prefix)
        self.claim_ttl_s = claim_ttl_s
        self._claimed_until: dict[str, int] = {}  # position id -> ms its claim is known to last
        self._prune_at = 0

    def due(self, open_positions: list[Position], now_ms: int) -> list[Position]:
        """Open positions whose window has ended and whose claim is not known to stand (no I/O)."""
        # Expired claims are dropped once a minute, not every tick: at a thousand slots the
        # memory holds tens of thousands of them (15 minutes of windows), and filtering them
        # all on every tick was a quarter of an idle tick's time.
        if now_ms >= self._prune_at:
            self._claimed_until = {pid: t for pid, t in self._claimed_until.items() if t > now_ms}
            self._prune_at = now_ms + PRUNE_EVERY_MS
        claimed = self._claimed_until
        return [
            p for p in open_positions if p.window_end_s * 1000 <= now_ms and claimed.get(p.id, 0) <= now_ms
        ]

    def enqueue_due(self, open_positions: list[Position], now_ms: int) -> tuple[int, list[str]]:
        """Enqueue a job for each due position no one has claimed: (jobs enqueued, problems)."""
        due = self.due(open_positions, now_ms)
        if not due:
            return 0, []
        # One round trip claims them all and asks which jobs exist already (a job from an
        # earlier claim that expired while its market was still unresolved, or one enqueued
        # straight through rq): those are alive and are not enqueued again.
        pipe = self.redis.pipeline(transaction=False)
        for p in due:
            self.settlements.claim_settlement(p.id, now_ms, self.claim_ttl_s, pipeline=pipe)
            pipe.exists(Job.key_for(job_id(self.prefix, p.id)))
        answers = pipe.execute()
        claims, exists = answers[0::2], answers[1::2]
        # Ours or another's: either way it stands for at most the TTL from now.
        for p in due:
            self._claimed_until[p.id] = now_ms + self.claim_ttl_s * 1000
        fresh = [p for p, ok, there in zip(due, claims, exists, strict=True) if ok and not there]
        if not fresh:
            return 0, []
        # And one more enqueues every new job (rq's enqueue_many on one pipeline): a
        # thousand windows ending together cost two round trips, not two thousand.
        try:
            with self.redis.pipeline() as pipe:
                self.queue.enqueue_many([self._job_data(p) for p in fresh], pipeline=pipe)
                self.settlements.count_settle("enqueued", len(fresh), pipeline=pipe)
                pipe.execute()
        except Exception as e:
            # Give the claims back, so that the next tick tries again.
            self.settlements.give_back_claims(p.id for p in fresh)
            for p in fresh:
                self._claimed_until.pop(p.id, None)
            return 0, [f"enqueue settlement of {len(fresh)} position(s): {type(e).__name__}: {e}"]
        return len(fresh), []

    def _job_data(self, p: Position) -> Any:
        return Queue.prepare_data(
            JOB_FUNC,
            (self.prefix, p.id),
            job_id=job_id(self.prefix, p.id),
            retry=RETRY,
            timeout=JOB_TIMEOUT_S,
            result_ttl=RESULT_TTL_S,
            failure_ttl=FAILURE_TTL_S,
            description=f"settle {p.id} ({p.condition_id})",
        )

    def close(self) -> None:
        self.redis.close()


def settled(p: Position, up_won: bool, now_ms: int) -> Position:
    won = (p.side == "up") == up_won
    payout = p.shares_micros if won else 0
    return msgspec.structs.replace(
        p,
        status="settled",
        won=won,
        payout_micros=payout,
        pnl_micros=payout - p.cost_micros,
        settled_ms=now_ms,
    )

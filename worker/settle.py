"""The `settle` program: an rq worker (with its scheduler, for the retries of unresolved
markets) that runs the settlement jobs the kernel enqueues (kernel/settlement.py).

`python -m worker.settle`, under supervisor. It runs from the repository, not from a
release: it is not part of blue/green, and a deploy leaves it alone (stop it with SIGTERM:
rq's warm shutdown finishes the job in hand). Jobs run in this process (rq's SimpleWorker):
no fork per job, and the venue client with its derived API key is reused.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from baton import settings as settings_mod
from baton.errors import CredentialsError, SettingsError
from kernel import settlement
from kernel.venue import venue_from_settings
from state import connection

log = logging.getLogger("baton.settle")

REDIS_WAIT_S = 60.0
MAINTENANCE_S = 15


def _wait_for_redis(r: Redis, timeout_s: float) -> None:
    # At start-up supervisord may start us before the embedded Redis accepts connections.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            r.ping()
            return
        except (RedisConnectionError, RedisTimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


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
    try:
        venue = venue_from_settings(s, redis=r)
    except CredentialsError as e:
        log.error("settle: cannot start: %s", e)
        sys.exit(2)
    settlement.configure(venue)
    _wait_for_redis(r, REDIS_WAIT_S)
    queue = settlement.settle_queue(r, s.prefix)
    worker = SimpleWorker(
        [queue],
        connection=r,
        serializer=JSONSerializer,
        name=f"{queue.name}-{socket.gethostname()}-{os.getpid()}",
        # rq's scheduler (which enqueues the retries of unresolved markets) runs in a child
        # process that dies on a Redis connection error, and the worker only restarts it in
        # its maintenance tasks (every 10 minutes by default): after a Redis restart every
        # retried settlement waited that long (found by the chaos harness, tests/chaos). The
        # check runs between dequeues, whose BLPOP lasts worker_ttl - 15 s: both kept short.
        maintenance_interval=MAINTENANCE_S,
        worker_ttl=MAINTENANCE_S + 20,
    )
    log.info("settle: rq worker %s on queue %s", worker.name, queue.name)
    try:
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        venue.close()


if __name__ == "__main__":
    main()

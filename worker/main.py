"""The worker process: `python -m worker --color blue|green`, started by supervisor through
deploy/launch.py from the release its colour points at. It builds the venue, the Redis
clients and the settlement enqueuer, and runs a `Worker` (worker/lifecycle.py) until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from baton import settings as settings_mod
from baton.coredumps import protect_memory
from baton.errors import CredentialsError, VenueError
from kernel.clock import SystemClock
from kernel.settlement import Enqueuer
from state import connection
from state.keys import COLORS, Keys
from state.store import Store
from venues.polymarket import venue_from_settings
from worker import crash_hook
from worker.lifecycle import EXIT_NOT_READY, Worker

log = logging.getLogger("baton.worker")


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m worker", description="Baton trading worker")
    ap.add_argument("--color", choices=COLORS, required=True)
    return ap.parse_args(argv)


async def amain(argv: list[str]) -> int:
    args = _parse(argv)
    s = settings_mod.load()
    # rq and the venue client are synchronous and run in threads: they share a sync client
    # (settlement jobs are enqueued on it; the venues' request budgets are taken on it).
    sync_redis = connection.client(s, decoded=False)
    try:
        venue = venue_from_settings(s, redis=sync_redis)
    except (CredentialsError, VenueError) as e:  # no key, or order ids the venue would not know
        log.error("worker %s refuses to start: %s", args.color, e)
        return EXIT_NOT_READY
    crash_hook.install(venue, os.environ)  # a test stack's fault; nothing unless set
    # A half-open connection (a Redis failover, a partition) must fail a command, not hang
    # the worker forever: bounded reads (above the standby BLPOP's 1 s), TCP keepalive.
    redis = connection.async_client(s, timeout_s=max(connection.TIMEOUT_S, 2 * s.tick_ms / 1000))
    store = Store(redis, Keys(s.prefix))
    settler = Enqueuer(sync_redis, s.prefix)
    w = Worker(s, store, venue, SystemClock(), args.color, settler=settler)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, w.request_stop)
    try:
        return await w.run()
    finally:
        venue.close()
        settler.close()
        await store.r.aclose()


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request at INFO: one line per venue call would drown the tick log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Before the key is read: no core file, no debugger of the same user, ever holds it.
    protect_memory()
    sys.exit(asyncio.run(amain(sys.argv[1:] if argv is None else argv)))

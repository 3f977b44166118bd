"""What every part of the api program shares: settings, the control operations, the token,
and an async Redis client for the loops that follow the system (SSE, metrics, files)."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import web

from api.apitoken import ApiToken
from baton.settings import Settings
from control.ops import Ops

T = TypeVar("T")


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and something swallowed the cancel.

    Python 3.11's asyncio.wait_for returns the awaited result instead of raising when the
    cancel arrives in the same loop pass as that result (fixed in 3.12); Redis clients wait
    that way (fakeredis's can_read does), so a loop that never ends on its own could lose its
    cancel and run on forever, holding up the shutdown. The task still counts the cancel: each
    pass of such a loop checks it. Only in a task that runs no TaskGroup itself: on 3.11 a
    task whose TaskGroup saw a child fail keeps counting a cancel afterwards."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Outage:
    """Logs the first failure of a run of failures and the recovery, not every retry: for the
    loops that keep going while Redis or the disk is away."""

    def __init__(self, what: str, log: logging.Logger) -> None:
        self.what = what
        self.log = log
        self.failing = ""

    def fail(self, error: object) -> None:
        msg = str(error)
        if msg != self.failing:
            self.log.warning("%s: %s; retrying", self.what, msg)
        self.failing = msg

    def ok(self) -> None:
        if self.failing:
            self.log.info("%s: working again", self.what)
        self.failing = ""


CTX_KEY: web.AppKey[ApiContext] = web.AppKey("baton_ctx", object)  # type: ignore[arg-type]


@dataclass
class ApiContext:
    s: Settings
    # Synchronous (redis-py): run its calls through `call`, never on the event loop.
    ops: Ops
    token: ApiToken
    # Async client for the loops (journal follower, SSE, files); not for the operations.
    redis: aioredis.Redis
    # The read-only token GET /metrics accepts besides the API token (BATON_METRICS_AUTH=token).
    metrics_token: ApiToken | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # Halts run on threads of their own: a halt must never queue behind slow calls (a
    # reload waits up to 30 s, a stop for the worker's tick) in the default pool.
    urgent: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=4, thread_name_prefix="baton-halt")
    )

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def call_urgent(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.urgent, fn, *args)


def ctx_of(request_or_app: web.Request | web.Application) -> ApiContext:
    app = request_or_app.app if isinstance(request_or_app, web.Request) else request_or_app
    return app[CTX_KEY]

"""`python -m api`: the control plane under supervisor ([program:api] in supervisor.conf).

Serves the HTTP API (and whatever api.metrics / api.dashboard add) on BATON_API_HOST:
BATON_API_PORT, and runs api.files (var/status.json, var/control.json) beside it when that
module exists. SIGTERM (supervisor's stop) closes the listener, lets calls in flight finish
and cancels the background loops.

Exit codes: 0 stopped, 1 cannot listen (port taken), 2 no usable token or settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import importlib
import logging
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from api import apitoken
from api.app import AccessLogger, make_app
from api.auth import SESSION_COOKIE
from api.context import ApiContext
from baton import settings as settings_mod
from baton.coredumps import protect_memory
from baton.errors import SecretFileError, SettingsError, TokenError
from baton.secretfiles import ensure_secret
from control.ops import Ops
from control.running import api_url
from kernel.clock import wall_ms
from state import connection
from state.keys import Keys
from state.system import API_SETTINGS, SystemRepo, publish_when_reachable, published_fields

log = logging.getLogger("baton.api")

EXIT_LISTEN = 1
EXIT_CONFIG = 2
# A background loop that fails is started again after this long: the API (and with it the
# halt) must stay up even when the status.json writer cannot do its job.
RESTART_DELAY_S = 5.0
# Calls in flight (a halt waiting for its acknowledgement) get this long after SIGTERM.
SHUTDOWN_TIMEOUT_S = 10.0


def _files_loop() -> Callable[[ApiContext], Awaitable[None]] | None:
    try:
        mod = importlib.import_module("api.files")
    except ModuleNotFoundError as e:
        if e.name != "api.files":
            raise  # the module is there but broken: say so rather than run without it
        return None
    return getattr(mod, "run_files", None)


async def _keep_running(name: str, fn: Callable[[ApiContext], Awaitable[None]], ctx: ApiContext) -> None:
    while True:
        try:
            await fn(ctx)
            return  # the loop decided it was done
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; starting it again in %.0f s", name, RESTART_DELAY_S)
            await asyncio.sleep(RESTART_DELAY_S)


def background(ctx: ApiContext) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry: starts api.files' loop with the app, cancels it on shutdown."""

    async def run(_app: web.Application) -> AsyncIterator[None]:
        fn = _files_loop()
        task = asyncio.create_task(_keep_running("api.files", fn, ctx)) if fn is not None else None
        if task is None:
            log.info("api.files is not installed: var/status.json and var/control.json are not served")
        yield
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return run


async def amain() -> int:
    try:
        s = settings_mod.load()
        token = apitoken.load(s)
        metrics_token = load_metrics_token(s)
    except (SettingsError, TokenError, SecretFileError, OSError) as e:
        log.error("cannot start: %s", e)
        return EXIT_CONFIG
    # The id names the token safely; the value is printed by `baton token` only.
    log.info("API token id %s (from %s)", token.id, token.source)
    log.info("GET /metrics: %s", METRICS_DOORS[s.metrics_auth])
    scrub_logs(token, metrics_token)
    # Ops blocks on Redis during a halt (waiting for the worker's acknowledgement, then for the
    # ledger flush): the socket timeout must outlast that wait.
    sync_r = connection.client(s, timeout_s=s.halt_ack_timeout_ms / 1000 + 5)
    # The readers follow streams and pub/sub with blocking reads (XREAD BLOCK, get_message).
    async_r = connection.async_client(s, timeout_s=connection.BLOCKING)
    ctx = ApiContext(s=s, ops=Ops(s, sync_r), token=token, redis=async_r, metrics_token=metrics_token)
    app = make_app(ctx)
    app.cleanup_ctx.append(background(ctx))
    runner = web.AppRunner(app, access_log_class=AccessLogger, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, s.api_host, s.api_port)
        try:
            await site.start()
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                log.error(
                    "cannot listen on %s:%s: the port is taken (another api program, or another "
                    "service); set BATON_API_PORT to a free port",
                    s.api_host,
                    s.api_port,
                )
            else:
                log.error("cannot listen on %s:%s: %s", s.api_host, s.api_port, e)
            return EXIT_LISTEN
        log.info("listening on http://%s:%s (GET /openapi.json lists the routes)", s.api_host, s.api_port)
        # Where `baton status` says the API and the dashboard are, whatever the caller's shell.
        url = api_url(s.api_host, s.api_port)
        fields = published_fields(s, API_SETTINGS, wall_ms(), url=url, dashboard_url=f"{url}/")
        repo = SystemRepo(async_r, Keys(s.prefix))
        publisher = asyncio.create_task(publish_when_reachable(repo, "api", fields))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        publisher.cancel()
        log.info("stopping: finishing calls in flight")
        return 0
    finally:
        await runner.cleanup()
        await async_r.aclose()
        sync_r.close()


METRICS_DOORS = {
    "loopback": "open to clients on this machine only (BATON_METRICS_AUTH=loopback)",
    "token": "bearer token required: the metrics token or the API token (BATON_METRICS_AUTH=token)",
    "open": "open to anyone who reaches the port (BATON_METRICS_AUTH=open)",
}


def load_metrics_token(s: settings_mod.Settings) -> apitoken.ApiToken | None:
    """The read-only token for Prometheus (BATON_METRICS_AUTH=token), made on first start."""
    if s.metrics_auth != "token":
        return None
    path = s.metrics_token_file
    return apitoken.ApiToken(ensure_secret(path), str(path))


class Scrub(logging.Filter):
    """Replaces the tokens and any session cookie's value in every log line, whoever writes it:
    aiohttp itself logs a malformed request's raw header line (token or cookie included)."""

    COOKIE = re.compile(rf"({SESSION_COOKIE}=)[^;\s\"']+")

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = tuple(x for x in secrets if x)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if any(x in msg for x in self.secrets) or SESSION_COOKIE in msg:
            record.msg, record.args = self._clean(msg), None
        if record.exc_info and not record.exc_text:
            # Format the traceback now, scrubbed; the handler then uses this text as is.
            record.exc_text = self._clean(logging.Formatter().formatException(record.exc_info))
        return True

    def _clean(self, text: str) -> str:
        for x in self.secrets:
            text = text.replace(x, "<redacted>")
        return self.COOKIE.sub(r"\1<redacted>", text)


def scrub_logs(token: apitoken.ApiToken, metrics_token: apitoken.ApiToken | None = None) -> None:
    f = Scrub(tuple(t.reveal() for t in (token, metrics_token) if t is not None))
    for handler in logging.getLogger().handlers:
        handler.addFilter(f)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stdout,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # The api holds the API token (whoever has it can resume a halt or raise a stake) and
    # signs sessions with it: no core file or same-user debugger may read it.
    protect_memory()
    sys.exit(asyncio.run(amain()))


if __name__ == "__main__":
    main()

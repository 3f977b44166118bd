"""The settings each running program published at its start (`system:<program>`): what the
stack runs with, which `baton status` reports instead of the settings of the shell it is
called from (a shell without BATON_TICK_MS is not a stack that ticks every 5 s).

Values are JSON by setting name (baton.settings.Settings' field names), so that redis-cli
reads them and the reader converts them back to the field's type. Nothing secret is a
setting: the Redis URL (which may hold a password) and the credentials are never published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from baton.settings import Settings
from state.repo import Repo

log = logging.getLogger("baton.system")

# The programs that publish, in the order their settings are merged: a setting two of them
# publish (the assets) is the trading worker's.
PROGRAMS = ("feed", "api", "worker-blue", "worker-green")

# What each publishes: the settings its behaviour depends on.
WORKER_SETTINGS = (
    "mode", "dry_run", "tick_ms", "lease_ms", "lease_margin_ms", "lease_renew_ms", "assets",
    "timeframes", "chain_id", "clob_url", "gamma_url", "stake_usd", "max_stake_usd",
    "max_exposure_usd", "daily_loss_limit_usd", "paper_cash_usd", "stale_after_ms", "history_days",
    "rate_limit_scale", "signature_type", "redis_bind", "redis_port",
)  # fmt: skip
FEED_SETTINGS = ("assets", "binance_ws_url", "binance_rest_url", "candle_retention_s")
API_SETTINGS = (
    "api_host", "api_port", "api_hosts", "api_mutations_per_min", "api_session_ttl_s",
    "api_logins_per_min", "api_logins_all_per_min", "metrics_auth", "halt_ack_timeout_ms",
    "dashboard_streams_max",
)  # fmt: skip
PUBLISHED = frozenset(WORKER_SETTINGS + FEED_SETTINGS + API_SETTINGS)

_FIELD_TYPES = {f.name: f.type for f in msgspec.structs.fields(Settings)}

PUBLISH_RETRY_S = 1.0


def published_fields(s: Settings, names: Iterable[str], now_ms: int, **extra: Any) -> dict[str, str]:
    """The hash a program publishes: the named settings, its pid and start time, and extras
    (the api's url), each as JSON."""
    fields = {name: getattr(s, name) for name in names}
    fields.update(pid=os.getpid(), started_ms=now_ms, **extra)
    return {name: msgspec.json.encode(v).decode() for name, v in fields.items()}


def decode_published(program: str, raw: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    """A program's published hash as values: settings converted to their field's type, the
    rest (pid, started_ms, url) as JSON says. An unreadable value is left out and reported."""
    out: dict[str, Any] = {}
    for name, text in raw.items():
        try:
            value = json.loads(text)
            if name in _FIELD_TYPES:
                msgspec.convert(value, _FIELD_TYPES[name])  # of the setting's type, or refused
        except (ValueError, msgspec.ValidationError) as e:
            problems.append(f"system:{program} {name}={text[:80]!r} unreadable: {e}")
            continue
        out[name] = value
    return out


class SystemRepo(Repo):
    def publish_system(self, program: str, fields: Mapping[str, str], pipeline: Any = None) -> Any:
        """Replace what `program` published (a setting it no longer has does not linger)."""
        pipe = self.r.pipeline(transaction=True) if pipeline is None else pipeline
        pipe.delete(self.k.system(program))
        pipe.hset(self.k.system(program), mapping=dict(fields))
        return pipe.execute() if pipeline is None else None


async def publish_when_reachable(repo: SystemRepo, program: str, fields: Mapping[str, str]) -> None:
    """Publish from an asyncio program, waiting for Redis as long as it takes; a refusal
    (an ACL, a read-only replica) is logged once and given up: nothing depends on it but
    what `baton status` shows."""
    while True:
        try:
            await repo.publish_system(program, fields)
            return
        except (RedisConnectionError, RedisTimeoutError, OSError) as e:
            log.info("settings not published yet (%s); retrying", e)
        except RedisError as e:
            log.warning("settings not published: %s", e)
            return
        await asyncio.sleep(PUBLISH_RETRY_S)

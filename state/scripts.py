"""Lua scripts, loaded from state/lua/*.lua and registered once per client.

Scripts that book money get the shared `_ledger.lua` fragment prepended, so that the
ledger's append-and-sum rule is written once.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

LUA_DIR = Path(__file__).with_name("lua")
_NEEDS_LEDGER = {"settle_position", "ledger_deposit"}
NAMES = (
    "lease_acquire",
    "lease_renew",
    "lease_transfer",
    "lease_release",
    "handover_cancel",
    "schema_adopt",
    "intent_commit",
    "intent_update",
    "record_fill",
    "settle_position",
    "ledger_deposit",
    "tick_journal",
    "control_set",
    "candles_read",
    "markets_cache",
    "history_prune",
)


@cache
def source(name: str) -> str:
    text = (LUA_DIR / f"{name}.lua").read_text()
    if name in _NEEDS_LEDGER:
        text = (LUA_DIR / "_ledger.lua").read_text() + "\n" + text
    return text


class Scripts:
    """Registered script objects.

    Called directly they handle NOSCRIPT themselves. Inside a pipeline use `on(pipe, ...)`,
    which queues a bare EVALSHA: redis-py's own pipeline path sends SCRIPT EXISTS first,
    an extra round trip on every tick. A pipeline that meets NOSCRIPT (Redis restarted
    without its script cache) is retried by `Store.run_pipeline` after `load()`.
    """

    def __init__(self, redis: Any) -> None:
        self.redis = redis
        for name in NAMES:
            setattr(self, name, redis.register_script(source(name)))

    async def load(self) -> None:
        for name in NAMES:
            await self.redis.script_load(source(name))

    def on(self, pipe: Any, script: Any, keys: list[str], args: list[Any]) -> None:
        pipe.evalsha(script.sha, len(keys), *keys, *args)

    lease_acquire: Any
    lease_renew: Any
    lease_transfer: Any
    lease_release: Any
    handover_cancel: Any
    schema_adopt: Any
    intent_commit: Any
    intent_update: Any
    record_fill: Any
    settle_position: Any
    ledger_deposit: Any
    tick_journal: Any
    control_set: Any
    candles_read: Any
    markets_cache: Any
    history_prune: Any

"""The control flags (halt, pause, reload requests) and the writes around them.

Halt and pause live in one Redis hash that people may edit by hand with redis-cli. A value
that cannot be read fails safe (halted / paused) and is reported, so garbage in a control key
can stop trading but never start it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from state.repo import Repo
from state.structs import ControlFlags

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _flag(raw: Mapping[str, str], name: str, problems: list[str]) -> bool:
    value = raw.get(name)
    if value is None:
        return False
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    problems.append(f"control field {name!r} holds {value[:40]!r}, not 0/1: treated as set")
    return True


def parse_control(raw: Mapping[str, str]) -> ControlFlags:
    problems: list[str] = []
    halted = _flag(raw, "halted", problems)
    paused = _flag(raw, "paused", problems)
    return ControlFlags(
        halted=halted,
        halt_reason=raw.get("halt_reason", "") if halted else "",
        paused=paused,
        problems=tuple(problems),
        # A garbage counter is only reported: reloading is never a safety measure, and the
        # sequence numbers only order acknowledgements.
        reload_seq=_number(raw, "reload_seq", problems),
        seq=_number(raw, "seq", problems),
        halt_seq=_number(raw, "halt_seq", problems) if halted else 0,
        halted_ms=_number(raw, "halted_ms", problems) if halted else 0,
        halted_by=raw.get("halted_by", "") if halted else "",
        pause_reason=raw.get("pause_reason", "") if paused else "",
    )


def _number(raw: Mapping[str, str], name: str, problems: list[str]) -> int:
    # Digits only, as state/lua/control_set.lua reads the same counters: both sides must agree
    # on what a garbage value counts as (0), or a resume's seq check could never match.
    value = raw.get(name, "0")
    if value.isascii() and value.isdigit() and len(value) <= 15:
        return int(value)
    problems.append(f"control field {name!r} holds {value[:40]!r}, not a count: ignored")
    return 0


class ControlRepo(Repo):
    """The control hash, its pub/sub announcements and the halt's acknowledgements; the
    reload request and the last reload's report."""

    async def read_control(self) -> ControlFlags:
        return parse_control(await self.r.hgetall(self.k.control()))

    def set_flags(
        self,
        action: str,
        now_ms: int,
        reason: str,
        who: str,
        expect_seq: int | str = "",
        pipeline: Any = None,
        request_id: str = "",
    ) -> Any:
        """Halt, pause or resume through state/lua/control_set.lua: the flags, `seq` and the
        pub/sub announcement change together. With `expect_seq`, refused when the flags changed
        since. With `request_id`, a retry of a change that landed gets that change's reply
        again instead of being applied twice. The script's reply: [seq or -1, receivers or the
        current seq, was halted, was paused, reset]."""
        return self._call(
            self.scripts.control_set,
            keys=[self.k.control()],
            args=[self.k.control_events(), action, now_ms, reason, who, expect_seq, request_id],
            pipeline=pipeline,
        )

    async def control_set(self, action: str, reason: str, who: str, now_ms: int) -> int:
        """A flag change as the worker makes it; returns the new control seq."""
        res = await self.set_flags(action, now_ms, reason, who)
        return int(res[0])

    async def set_halt(self, reason: str, now_ms: int, who: str = "worker") -> int:
        return await self.control_set("halt", reason, who, now_ms)

    async def clear_halt(self, now_ms: int, who: str = "worker") -> int:
        """Resume: clears the halt and the pause together (as POST /resume does)."""
        return await self.control_set("resume", "", who, now_ms)

    async def set_paused(self, paused: bool, now_ms: int, who: str = "worker") -> int:
        return await self.control_set("pause" if paused else "resume", "operator pause", who, now_ms)

    def answer_halt(self, seq: int, value: dict[str, Any], pipeline: Any = None) -> Any:
        """The active worker's answer to the halt of control seq `seq` (kernel/halt.py), for the
        one who halted to read with BLPOP; kept a minute."""
        key = self.k.control_ack(seq)
        pipe = self.r.pipeline(transaction=False) if pipeline is None else pipeline
        pipe.rpush(key, json.dumps(value))
        pipe.expire(key, 60)
        return pipe.execute() if pipeline is None else None

    def record_halt_cancel(self, outcome: str, pipeline: Any = None) -> Any:
        """What the halt's sweep of resting orders at the venue did."""
        return (self.r if pipeline is None else pipeline).hset(self.k.control(), "halt_cancel", outcome)

    def request_reload(self, pipeline: Any = None) -> Any:
        """Ask the active worker to reload its strategies between two ticks."""
        return (self.r if pipeline is None else pipeline).hincrby(self.k.control(), "reload_seq", 1)

    def record_reload(self, color: str, release: str, res: Any, pipeline: Any = None) -> Any:
        """The last strategy reload (a kernel.reload.ReloadResult), for status and tools."""
        pipe = self.r.pipeline(transaction=False) if pipeline is None else pipeline
        pipe.delete(self.k.reload())
        pipe.hset(
            self.k.reload(),
            mapping={
                "color": color,
                "release": release,
                "state": res.state,
                "modules": " ".join(res.modules),
                "error": res.error[:1500],
                "hashes": " ".join(f"{k}={v}" for k, v in sorted(res.hashes.items())),
                "forced": int(res.forced),
                "at_ms": res.at_ms,
            },
        )
        pipe.hincrby(self.k.stats(), f"reloads_{res.state}", 1)
        return pipe.execute() if pipeline is None else None

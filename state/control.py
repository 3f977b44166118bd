"""Reading the control flags: halt and pause live in one Redis hash that people may edit
by hand with redis-cli. A value that cannot be read fails safe (halted / paused) and is
reported, so garbage in a control key can stop trading but never start it.
"""

from __future__ import annotations

from collections.abc import Mapping

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

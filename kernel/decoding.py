"""Values read from Redis, decoded without trusting them: `DecodeMemo` (a value unchanged since
the last read is not decoded again), `decode_reported` (an undecodable value is a problem, never
raised), `int64` (an integer as the scripts keep one), and what makes an open position or
intent that decoded unfit to count (`position_problem`, `intent_problem`). The snapshot's read
(kernel/snapshot.py) and the other readers share them.
"""

from __future__ import annotations

import math
import re
from typing import Any

import msgspec

from state.structs import Intent, Position


class DecodeMemo:
    """Values decoded by the last read, by their exact text: a slot, a position or an intent
    that did not change since the last tick is not decoded again (a thousand of each per
    tick at 1,024 slots). Only the values seen by the latest read are kept. The structs are
    frozen, so sharing one between ticks is safe."""

    def __init__(self) -> None:
        self._last: dict[Any, Any] = {}
        self._now: dict[Any, Any] = {}

    def decode(self, codec: Any, raw: Any, bad: list[tuple[str, str]], name: str) -> Any:
        """`raw` decoded, or None; an undecodable value appends (`name`, what is wrong) to
        `bad` (the message is built only then: a thousand f-strings per tick otherwise)."""
        if raw is None:
            return None
        key = (codec, raw)
        got = self._now.get(key)
        if got is None:
            got = self._last.get(key)
            if got is None:
                try:
                    got = codec.decode(raw)
                except msgspec.DecodeError as e:
                    bad.append((name, cannot_decode(raw, e)))
                    return None  # undecodable: found on every read, never remembered
            self._now[key] = got
        return got

    def turn(self) -> None:
        """End of a read: what it did not see is forgotten."""
        self._last, self._now = self._now, {}


def decode_reported(codec: Any, raw: Any, what: str, problems: list[str], name: str = "") -> Any:
    """`raw` decoded, or None (for None, or for a value that cannot be decoded: then a
    problem naming `what` (and `name`) is appended, never raised)."""
    if raw is None:
        return None
    try:
        return codec.decode(raw)
    except msgspec.DecodeError as e:
        label = f"{what} {name}" if name else what
        problems.append(f"{label}: {cannot_decode(raw, e)}")
        return None


def cannot_decode(raw: Any, e: Exception) -> str:
    return f"cannot decode {str(raw)[:80]!r}: {e}"


_INT64 = re.compile(r"-?\d{1,19}")
_INT64_MAX = 2**63 - 1


def int64(raw: Any) -> int | None:
    """An integer as Redis's HINCRBY keeps one (decimal digits, signed 64 bits), or None: a
    value that is not one cannot be a sum the scripts kept, whatever Python's int() thinks
    of it (' 7', '1_000', a 40-digit number)."""
    if not isinstance(raw, str) or not _INT64.fullmatch(raw):
        return None
    n = int(raw)
    return n if -_INT64_MAX - 1 <= n <= _INT64_MAX else None


def position_problem(p: Position) -> str:
    """Why an open position that decoded cannot be counted in the exposure ('' when it can)."""
    if p.cost_micros < 0 or p.shares_micros < 0:
        return f"negative cost or shares ({p.cost_micros}, {p.shares_micros}) would lower the exposure"
    return ""


def intent_problem(i: Intent) -> str:
    """Why an open intent that decoded cannot be counted as pending ('' when it can)."""
    if not math.isfinite(i.stake_usd) or i.stake_usd < 0:
        return f"stake {i.stake_usd!r} USD cannot be held back from cash"
    return ""

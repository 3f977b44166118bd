"""What the tick journal depends on, checked with the tick's read: the guard `stats.last_tick`
(the newest journaled tick, the journal's at-most-once rule) and the counters the journal adds
to (`ticks_done`, `ticks_missed`).

A garbage or far-future `last_tick` used to crash-loop every worker (int() at takeover) or make
tick_journal.lua answer DUPLICATE for ever while trading went on, silently. What a trader
expects instead: the worker keeps running and keeps journaling, and says so. The journal
script rebuilds the guard from the stream's own newest entry and journals the tick
(state/lua/tick_journal.lua); meanwhile the tick whose read found the guard untrustworthy opens
no new entries (a blocker of every slot, kernel/blocking.py): an entry made while the journal
cannot be trusted could go unrecorded. The next tick reads the rebuilt guard, and entries
resume by themselves. A garbage counter makes the journal refuse (nothing written) and blocks
entries until it is repaired, since ticks then go unjournaled.

`last_tick` ahead of the tick being run by at most AHEAD_MS is a successor whose clock lags
the previous holder's a little: the journal refuses that tick as a DUPLICATE (reported), and
nothing is blocked.

`journal_problem` says, for the error journal, what the journal's answer other than OK to a
tick's entry means (the tick runner reports it, kernel/tick.py).
"""

from __future__ import annotations

import re
from typing import Any

from baton.errors import UnreadableValue
from state.structs import Blocker

AHEAD_MS = 60_000  # as state/lua/tick_journal.lua
FIELDS = ("last_tick", "ticks_done", "ticks_missed")
_TICK = re.compile(r"-?\d{1,15}")
_COUNTER = re.compile(r"-?\d{1,18}")  # as state/lua/_check.lua reads a stored integer


def blockers(key: str, raw: list[Any], tick: int, tick_ms: int) -> list[Blocker]:
    """The blockers for stats `key`'s FIELDS as read (`raw`, in that order) by the tick `tick`."""
    out: list[Blocker] = []
    last, done, missed = raw
    if last is not None:
        if not isinstance(last, str) or not _TICK.fullmatch(last):
            out.append(
                Blocker(
                    key=key,
                    field="last_tick",
                    problem=f"holds {str(last)[:40]!r}, not a tick index: the journal rebuilds it "
                    "from its newest entry",
                    source="journal",
                )
            )
        elif (int(last) - tick) * tick_ms > AHEAD_MS:
            ahead_s = (int(last) - tick) * tick_ms // 1000
            out.append(
                Blocker(
                    key=key,
                    field="last_tick",
                    problem=f"holds {last}, {ahead_s} s ahead of tick {tick} (garbage, or a clock "
                    "ahead): the journal rebuilds it from its newest entry",
                    source="journal",
                )
            )
    for name, v in (("ticks_done", done), ("ticks_missed", missed)):
        if v is not None and (not isinstance(v, str) or not _COUNTER.fullmatch(v)):
            out.append(
                Blocker(
                    key=key,
                    field=name,
                    problem=f"holds {str(v)[:40]!r}, not an integer: ticks are not journaled "
                    "until it is repaired",
                    source="journal",
                )
            )
    return out


def journal_problem(tick: int, verdict: Any) -> str:
    """What a journal answer other than OK means, for the error journal: never silent, since
    trading went on in a tick the journal does not show (or shows after a repair)."""
    if isinstance(verdict, UnreadableValue):
        return f"tick {tick} not journaled, the journal waits for a repair: {verdict}"
    if verdict == "DUPLICATE":
        return (
            f"tick {tick} not journaled: the journal holds it or a later one already (this "
            "worker's clock behind the previous holder's?)"
        )
    if isinstance(verdict, str) and verdict.startswith("REBASED"):
        return (
            f"tick {tick} journaled after the journal's guard was rebuilt from the stream: "
            f"stats last_tick held {verdict.removeprefix('REBASED ')} (garbage, or a clock ahead)"
        )
    return f"tick {tick}: unexpected journal answer {verdict!r}"

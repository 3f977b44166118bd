"""The decision log: one capped stream per slot (keys.decision_log(slot)) of every evaluation
(state/structs.py DecisionLogEntry), appended by the lease holder once per tick and read by
`baton decisions`, GET /decisions and the dashboard.

Entries are flat stream fields (`redis-cli XREVRANGE baton:decisions:log:btc-5m + - COUNT 5`
reads them), all written every time and in one order: a stream stores a field list once per
node when entries repeat it, so a full, fixed set costs less memory than skipping empty ones.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Generator, Iterable
from functools import partial
from typing import Any, TypeVar

import msgspec

from state.repo import Repo, text
from state.structs import DecisionLogEntry

# At most this many entries per read (per slot, and in all): a page for people, not an export.
READ_MAX = 1000
# The entries' fields, in the order they are written (DecisionLogEntry's).
FIELDS: tuple[str, ...] = DecisionLogEntry.__struct_fields__
_JSON = msgspec.json.Encoder()
_FIELD_NAMES = _JSON.encode(list(FIELDS))
# A read's step: queues commands on the pipeline it is given (DecisionsRepo._drive).
Build = Callable[[Any], Any]
T = TypeVar("T")


class DecisionPage(msgspec.Struct, frozen=True):
    """What a read found: entries newest first, and one problem per entry it could not read
    (named by its stream and id: `XDEL` removes it)."""

    entries: list[DecisionLogEntry]
    problems: list[str] = msgspec.field(default_factory=list)


def _row(e: DecisionLogEntry) -> list[str]:
    """An entry as decisions_append.lua takes it: its values in FIELDS order as the stream's
    text (numbers as Python writes them: 0.55, not 0.55000000000000004), the figures as one
    JSON object (the last field: tests/fast/test_decision_log.py pins it)."""
    row = [v if v.__class__ is str else str(v) for v in msgspec.structs.astuple(e)[:-1]]
    row.append(_JSON.encode(e.figures).decode())
    return row


def decode_decision(fields: dict[Any, Any]) -> DecisionLogEntry:
    """An entry from its stream fields (as decisions_append.lua wrote them); raises
    ValueError naming what is wrong."""
    raw = {text(k): text(v) for k, v in fields.items()}
    try:
        values: dict[str, Any] = {n: v for n, v in raw.items() if n in FIELDS and n != "figures"}
        figures = json.loads(raw.get("figures") or "{}")
        if not isinstance(figures, dict):
            raise ValueError("figures is not a JSON object")
        values["figures"] = figures
        e = msgspec.convert(values, DecisionLogEntry, strict=False)
    except (ValueError, msgspec.ValidationError) as err:
        raise ValueError(str(err)) from None
    if not all(math.isfinite(x) for x in (e.price, e.stake_usd, e.shares, *e.figures.values())):
        raise ValueError("a number is not finite")
    return e


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= READ_MAX:
        raise ValueError(f"limit must be a whole number from 1 to {READ_MAX}, not {limit!r}")
    return limit


class DecisionsRepo(Repo):
    """Works on a sync client (the CLI and the API's control operations) and on an asyncio
    one (the kernel): each method returns the value, or an awaitable of it."""

    def append_decisions(self, entries: Iterable[DecisionLogEntry], maxlen: int, pipeline: Any = None) -> Any:
        """XADD each entry to its slot's stream, trimmed to about `maxlen` (MAXLEN ~: Redis
        trims whole nodes, so a stream may hold up to a node's worth, 100 entries, more), in
        one script call (state/lua/decisions_append.lua), queued on `pipeline` or run now.
        Returns [appended, failed, the first failure's error or '']: a stream key holding
        another type loses its entry and no other."""
        rows = list(entries)
        if not rows:
            return None if pipeline is not None else self._drive(_nothing([0, 0, ""]))
        keys = [self.k.decision_log(e.slot) for e in rows]
        args = [maxlen, _FIELD_NAMES, _JSON.encode([_row(e) for e in rows])]
        return self._call(self.scripts.decisions_append, keys, args, pipeline)

    def read_decisions(self, slot: str | None, limit: int) -> Any:
        """The newest `limit` entries (<= READ_MAX) of one slot, or of every slot merged by
        time (the slots hash's and the removed slots' logs): a DecisionPage, newest first."""
        check_limit(limit)
        return self._drive(self._reading(slot, limit))

    def _reading(self, slot: str | None, limit: int) -> Generator[Build, Any, DecisionPage]:
        """The read as rounds of one pipeline each (see _drive).

        Every slot's log is read from its newest entry down, `per` entries a round: first
        limit/slots each, then twice as many, for only those slots whose oldest entry read so
        far is newer than the limit-th newest read in all (older ones cannot be in the page).
        A thousand slots that all evaluated this tick take one round of one entry each, not
        a thousand pages."""
        if slot is not None:
            slots = [slot]
        else:
            ids, removed = yield lambda p: (p.hkeys(self.k.slots()), p.smembers(self.k.slots_removed()))
            slots = sorted({text(x) for x in (*ids, *removed)})
        found: dict[str, list[DecisionLogEntry]] = {sid: [] for sid in slots}
        below = dict.fromkeys(slots, "+")  # read the next round below this id ("(id": exclusive)
        per = dict.fromkeys(slots, -(-limit // max(1, len(slots))))
        problems: list[str] = []
        page: list[DecisionLogEntry] = []
        todo = slots
        while todo:
            now = todo
            wanted = [(self.k.decision_log(sid), below[sid], per[sid]) for sid in now]
            replies = yield partial(_fetch, wanted)
            exhausted = set()
            for sid, reply in zip(now, replies, strict=True):
                for entry_id, fields in reply:
                    try:
                        found[sid].append(decode_decision(fields))
                    except ValueError as e:
                        problems.append(f"{self.k.decision_log(sid)} {text(entry_id)}: unreadable entry: {e}")
                if len(reply) < per[sid]:
                    exhausted.add(sid)
                if reply:
                    below[sid] = f"({text(reply[-1][0])}"
            page = sorted((e for got in found.values() for e in got), key=_newest_first)
            cut = _newest_first(page[limit - 1]) if len(page) >= limit else None
            todo = [sid for sid in now if sid not in exhausted and (cut is None or _oldest(found[sid]) < cut)]
            for sid in todo:
                per[sid] = min(limit, 2 * per[sid])
        # Sorted, not merged: a takeover by a host whose clock is behind may append an older
        # at_ms after a newer one. Stable, so ties keep slot order and the stream's.
        return DecisionPage(entries=page[:limit], problems=problems)

    def _drive(self, steps: Generator[Build, Any, T]) -> Any:
        """Run a read written as a generator of pipelines: each `yield build` gets the replies
        of one pipeline that `build(pipe)` queued; its return value is the answer. Over a sync
        client that is the value; over an asyncio one, an awaitable of it."""
        if inspect.iscoroutinefunction(getattr(self.r, "execute_command", None)):

            async def run() -> T:
                reply: Any = None
                try:
                    while True:
                        build = steps.send(reply)
                        pipe = self.r.pipeline(transaction=False)
                        build(pipe)
                        reply = await pipe.execute()
                except StopIteration as done:
                    return done.value

            return run()
        reply = None
        try:
            while True:
                build = steps.send(reply)
                pipe = self.r.pipeline(transaction=False)
                build(pipe)
                reply = pipe.execute()
        except StopIteration as done:
            return done.value


def _fetch(wanted: list[tuple[str, str, int]], pipe: Any) -> None:
    for key, below, count in wanted:
        pipe.xrevrange(key, max=below, min="-", count=count)


def _newest_first(e: DecisionLogEntry) -> tuple[int, int]:
    return (-e.at_ms, -e.tick)


def _oldest(entries: list[DecisionLogEntry]) -> tuple[int, int]:
    """The sort key of the oldest entry read, or of the newest possible when none could be
    read (then the next round reads on)."""
    return max(map(_newest_first, entries), default=(-(2**63), 0))


def _nothing(value: T) -> Generator[Build, Any, T]:
    """A read of no round at all (answered the way the client answers: see _drive)."""
    return value
    yield  # a generator, that never yields

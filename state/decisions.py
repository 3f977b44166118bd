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
from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from state.repo import Repo, text
from state.structs import DecisionLogEntry

# At most this many entries per read (per slot, and in all): a page for people, not an export.
READ_MAX = 1000
# The entries' fields, in the order they are written (DecisionLogEntry's).
FIELDS: tuple[str, ...] = DecisionLogEntry.__struct_fields__


class DecisionPage(msgspec.Struct, frozen=True):
    """What a read found: entries newest first, and one problem per entry it could not read
    (named by its stream and id: `XDEL` removes it)."""

    entries: list[DecisionLogEntry]
    problems: list[str] = msgspec.field(default_factory=list)


def decision_fields(e: DecisionLogEntry) -> dict[str, str | int | float]:
    """Stream fields of an entry: plain values, `figures` as one JSON object."""
    out: dict[str, str | int | float] = {}
    for name in FIELDS:
        v = getattr(e, name)
        out[name] = json.dumps(v, separators=(",", ":"), allow_nan=False) if name == "figures" else v
    return out


def decode_decision(fields: dict[Any, Any]) -> DecisionLogEntry:
    """An entry from its stream fields; raises ValueError naming what is wrong."""
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


def _then(reply: Any, fn: Callable[[Any], Any]) -> Any:
    """fn(reply) for a sync client's reply; for an asyncio client's awaitable, an awaitable
    of it (fn's own awaitable awaited too)."""
    if not inspect.isawaitable(reply):
        return fn(reply)

    async def later() -> Any:
        out = fn(await reply)
        return await out if inspect.isawaitable(out) else out

    return later()


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= READ_MAX:
        raise ValueError(f"limit must be a whole number from 1 to {READ_MAX}, not {limit!r}")
    return limit


class DecisionsRepo(Repo):
    """Works on a sync client (the CLI and the API's control operations) and on an asyncio
    one (the kernel): each method returns the value, or an awaitable of it."""

    def append_decisions(self, entries: Iterable[DecisionLogEntry], maxlen: int, pipeline: Any = None) -> Any:
        """XADD each entry to its slot's stream, trimmed to about `maxlen` (MAXLEN ~: Redis
        trims whole nodes, so a stream may hold up to a node's worth, 100 entries, more). Queued
        on `pipeline`, or run as one pipeline of its own (one round trip)."""
        pipe = pipeline if pipeline is not None else self.r.pipeline(transaction=False)
        n = 0
        for e in entries:
            pipe.xadd(self.k.decision_log(e.slot), decision_fields(e), maxlen=maxlen, approximate=True)
            n += 1
        if pipeline is not None:
            return None
        if n == 0:
            return _then(_done(self.r), lambda _: [])
        return pipe.execute()

    def read_decisions(self, slot: str | None, limit: int) -> Any:
        """The newest `limit` entries (<= READ_MAX) of one slot, or of every slot merged by
        time (the slots hash's and the removed slots' logs): a DecisionPage, newest first."""
        check_limit(limit)
        if slot is not None:
            return self._read([slot], limit)
        pipe = self.r.pipeline(transaction=False)
        pipe.hkeys(self.k.slots())
        pipe.smembers(self.k.slots_removed())
        return _then(pipe.execute(), lambda r: self._read(sorted({text(x) for x in (*r[0], *r[1])}), limit))

    def _read(self, slots: list[str], limit: int) -> Any:
        if not slots:
            return _then(_done(self.r), lambda _: DecisionPage(entries=[]))
        pipe = self.r.pipeline(transaction=False)
        for sid in slots:
            pipe.xrevrange(self.k.decision_log(sid), count=limit)
        return _then(pipe.execute(), lambda replies: self._page(slots, replies, limit))

    def _page(self, slots: list[str], replies: list[Any], limit: int) -> DecisionPage:
        problems: list[str] = []
        found: list[DecisionLogEntry] = []
        for sid, reply in zip(slots, replies, strict=True):
            for entry_id, fields in reply:
                try:
                    found.append(decode_decision(fields))
                except ValueError as e:
                    problems.append(f"{self.k.decision_log(sid)} {text(entry_id)}: unreadable entry: {e}")
        # Sorted, not merged: a takeover by a host whose clock is behind may append an older
        # at_ms after a newer one. Stable, so ties keep slot order and the stream's.
        found.sort(key=lambda e: (-e.at_ms, -e.tick))
        return DecisionPage(entries=found[:limit], problems=problems)


def _done(r: Any) -> Any:
    """A reply that is there at once, awaitable when the client is asyncio's: so that an empty
    call answers the way the client does."""
    if inspect.iscoroutinefunction(getattr(r, "execute_command", None)):

        async def nothing() -> None:
            return None

        return nothing()
    return None

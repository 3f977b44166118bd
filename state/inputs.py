"""The input log in Redis (keys.input_log()): one stream entry per tick of the lease holder,
fields `tick`, `at_ms`, `release`, `n` (evaluations) and `data` (kernel/input_log.py
encode_batch; empty when the tick evaluated nothing: a follower still counts the tick).

Appended by the worker between ticks, in the pipeline of the decision log (kernel/notes.py),
and trimmed by age on each append (MINID ~: Redis drops whole stream nodes, so a little more
than the retention may stay) and by size (MAXLEN ~, the entries that fit the byte budget
BATON_INPUT_LOG_REDIS_MB at the entries' recent size), by state/lua/inputs_append.lua.
Stream ids are Redis's clock at the append; `at_ms` is the tick's. Decoded and followed by
kernel/input_stream.py (`read_batches`, the shadow's), copied into files by worker/
input_files.py, read back by control/input_archive.py.

`data` is binary: every read here asks Redis for bytes (NEVER_DECODE), so a decoding client
(the CLI's, the worker's) reads it as well as a raw one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import msgspec
from redis.client import NEVER_DECODE

from state.repo import Repo

# Entries per XRANGE page of a range read, at most, and at first (before an entry's size is
# known: 8 of the largest, 1,024 slots' ~213 kB, are under 2 MB).
PAGE = 500
FIRST_PAGE = 8
# What a read aims its reply at: Redis is single-threaded, and the worker's tick, its intent
# scripts and its lease wait behind a reply (500 entries of 1,024 slots would be ~100 MB).
PAGE_BYTES = 2 * 1024 * 1024
# What an entry weighs besides its batch (ids, field names, numbers, the stream's node).
ENTRY_OVERHEAD_BYTES = 64
# Every read asks for bytes, whatever the client decodes (`data` is binary).
_RAW = {NEVER_DECODE: True}


class InputBatch(msgspec.Struct, frozen=True, kw_only=True):
    """One stream entry as stored: its id, the tick's number and time, the release that
    evaluated, how many evaluations, and the encoded batch (undecoded: decode_batch)."""

    id: str
    tick: int
    at_ms: int
    release: str
    n: int
    data: bytes


def _s(v: Any) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def parse_entry(entry_id: Any, fields: Any) -> InputBatch:
    """An entry from its id and fields (bytes or str); raises ValueError naming what is
    missing or wrong."""
    got = {_s(k): v for k, v in (fields or {}).items()}
    try:
        data = got.get("data", b"")
        return InputBatch(
            id=_s(entry_id),
            tick=int(_s(got["tick"])),
            at_ms=int(_s(got["at_ms"])),
            release=_s(got.get("release", "")),
            n=int(_s(got.get("n", "0"))),
            data=data if isinstance(data, bytes) else str(data).encode("latin-1"),
        )
    except KeyError as e:
        raise ValueError(f"field {e.args[0]} missing") from None
    except (ValueError, UnicodeError) as e:
        raise ValueError(f"not an input log entry: {e}") from None


def entry_bytes(fields: Any) -> int:
    """About what an entry's reply weighs (its field values; None: a corrupt entry's)."""
    if not fields:
        return ENTRY_OVERHEAD_BYTES
    return ENTRY_OVERHEAD_BYTES + sum(len(v) if isinstance(v, bytes | str) else 8 for v in fields.values())


class Pager:
    """How many entries the next read asks for, so that its reply is about PAGE_BYTES: from
    the largest entry of the last page read (and no less than half the estimate before it,
    so one small page does not let a page of large entries through)."""

    def __init__(self, most: int = PAGE) -> None:
        self.most = most
        self.entry_bytes = 0.0  # unknown: FIRST_PAGE

    def count(self) -> int:
        if self.entry_bytes <= 0:
            return min(FIRST_PAGE, self.most)
        return max(1, min(self.most, int(PAGE_BYTES // self.entry_bytes)))

    def saw(self, page: list[tuple[str, Any]]) -> None:
        if page:
            largest = max(entry_bytes(fields) for _, fields in page)
            self.entry_bytes = max(float(largest), self.entry_bytes / 2)


def entry_ms(entry_id: str) -> int:
    """The ms part of a stream id (Redis's clock at the append)."""
    return int(entry_id.split("-", 1)[0])


def _then(reply: Any, parse: Callable[[Any], Any]) -> Any:
    """`parse(reply)`, or an awaitable of it when the client is an asyncio one."""
    if inspect.isawaitable(reply):

        async def later() -> Any:
            return parse(await reply)

        return later()
    return parse(reply)


class InputsRepo(Repo):
    def append_inputs(
        self,
        batches: list[tuple[int, int, str, int, bytes]],
        min_ms: int,
        pipeline: Any = None,
        max_len: int = 0,
    ) -> Any:
        """XADD each tick's batch, (tick, at_ms, release, n, data) oldest first, trimming
        entries older than `min_ms` (stream id ms, MINID ~) and then all but about `max_len`
        (MAXLEN ~; 0: no such trim), in one script call (state/lua/inputs_append.lua),
        queued on `pipeline` or run now: returns [appended, trimmed by `max_len`]."""
        args: list[Any] = [max(0, min_ms), max(0, max_len)]
        for tick, at_ms, release, n, data in batches:
            args += [tick, at_ms, release, n, data]
        return self._call(self.scripts.inputs_append, [self.k.input_log()], args, pipeline)

    def input_range(self, min_id: str, max_id: str, count: int = PAGE) -> Any:
        """Up to `count` raw entries [(id, fields)] from `min_id` to `max_id` (XRANGE bounds:
        "-", "+", "(id" exclusive), fields as bytes."""
        reply = self.r.execute_command("XRANGE", self.k.input_log(), min_id, max_id, "COUNT", count, **_RAW)
        return _then(reply, _entries)

    def input_last(self) -> Any:
        """The newest raw entry [(id, fields)] (none: an empty list), fields as bytes."""
        reply = self.r.execute_command("XREVRANGE", self.k.input_log(), "+", "-", "COUNT", 1, **_RAW)
        return _then(reply, _entries)

    def input_after(self, after_id: str, block_ms: int, count: int) -> Any:
        """Up to `count` raw entries [(id, fields)] appended after `after_id` (XREAD), waiting
        up to `block_ms` (0: not at all) for one when there is none; fields as bytes."""
        args: list[Any] = ["XREAD", "COUNT", count]
        if block_ms > 0:
            args += ["BLOCK", block_ms]
        reply = self.r.execute_command(*args, "STREAMS", self.k.input_log(), after_id, **_RAW)
        return _then(reply, xread_entries)


def _entries(reply: Any) -> list[tuple[str, dict[Any, Any]]]:
    return [(_s(i), f) for i, f in (reply or [])]


def xread_entries(reply: Any) -> list[tuple[str, Any]]:
    """The entries of an XREAD reply of one stream (RESP2: [[key, entries]]; RESP3: {key:
    entries}). A corrupt stream entry's fields may come back as None: kept, so it is named."""
    if not reply:
        return []
    streams = reply.values() if isinstance(reply, dict) else (s[1] for s in reply)
    return [(_s(i), f) for entries in streams for i, f in (entries or [])]

"""Reading the input log's stream (keys.input_log(), state/inputs.py) as evaluations: an
entry decoded and checked, and `read_batches`, which a follower (the shadow, worker/
shadow.py) calls to get the ticks appended since the last it read.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from kernel.input_log import Evaluation, decode_batch
from state.inputs import InputBatch, InputsRepo, Pager, parse_entry
from state.keys import Keys

log = logging.getLogger("baton.inputs")

# Each stream's page size (by the size of the entries last read: state/inputs.py Pager), kept
# across calls: a follower asks again and again, each call one read.
_PAGERS: dict[str, Pager] = {}

Batch = tuple[str, int, int, list[Evaluation]]


def decode_entry(entry_id: Any, fields: Any) -> tuple[InputBatch, list[Evaluation]]:
    """The entry and its evaluations; raises ValueError naming what is wrong (a batch whose
    count is not `n` too: cut short or another's)."""
    batch = parse_entry(entry_id, fields)
    evaluations = decode_batch(batch.data)
    if len(evaluations) != batch.n:
        raise ValueError(f"holds {len(evaluations)} evaluation(s), its n says {batch.n}")
    return batch, evaluations


def _batches(
    key: str, problems: list[str] | None, reply: list[tuple[str, Any]]
) -> tuple[list[Batch], str | None]:
    """The readable batches of raw entries, and the id of the last (None: none)."""
    out = []
    last = None
    for entry_id, fields in reply:
        last = entry_id
        try:
            batch, evaluations = decode_entry(entry_id, fields)
        except ValueError as e:
            _problem(problems, f"{key} {last}: unreadable input log entry (skipped): {e}")
            continue
        out.append((batch.id, batch.tick, batch.at_ms, evaluations))
    return out, last


def _problem(problems: list[str] | None, text: str) -> None:
    if problems is not None:
        problems.append(text)
    else:
        log.warning("%s", text)


def read_batches(
    r: Any, k: Keys, after_id: str, block_ms: int, count: int, problems: list[str] | None = None
) -> Any:
    """The batches appended after stream id `after_id` ("$": only those appended from now on;
    "0-0": from the oldest kept), at most `count`, waiting up to `block_ms` for one when there
    is none (0: do not wait): [(stream id, tick, at_ms, evaluations)], oldest first; a tick
    that evaluated nothing comes with no evaluations. Pass the last id read as the next
    `after_id` ("$" is for the first call only: the entries appended between two calls would
    be missed).

    An entry that cannot be decoded is skipped with a problem naming its id (appended to
    `problems`, or logged when None), never raised; the read goes on past it, so a reply is
    empty only when nothing readable follows `after_id` (then a corrupt last entry is read,
    and named, again by the next call, until an entry follows it).

    At most about state/inputs.py PAGE_BYTES are read at a time, whatever `count` says (fewer
    entries when they are large: a reply is what the worker's tick waits behind), so a
    reply may hold fewer than `count` though more follow.

    On a sync client it returns the list; on an asyncio one, an awaitable of it. The client's
    socket timeout must exceed `block_ms`."""
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count!r}")
    repo = InputsRepo(r, k)
    key = k.input_log()
    pager = _PAGERS.setdefault(key, Pager())

    def batches(reply: list[tuple[str, Any]]) -> tuple[list[Batch], str | None]:
        pager.saw(reply)
        return _batches(key, problems, reply)

    if inspect.iscoroutinefunction(getattr(r, "execute_command", None)):

        async def run() -> list[Batch]:
            after, block = after_id, block_ms
            while True:
                got, last = batches(await repo.input_after(after, block, min(count, pager.count())))
                if got or last is None:
                    return got
                after, block = last, 0  # only skipped entries: read on past them, not waiting

        return run()
    after, block = after_id, block_ms
    while True:
        got, last = batches(repo.input_after(after, block, min(count, pager.count())))
        if got or last is None:
            return got
        after, block = last, 0

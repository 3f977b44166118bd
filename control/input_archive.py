"""Reading the input log back, wherever it is: the day files under var/inputs/ (worker/
input_files.py) and the stream in Redis (state/inputs.py), merged, for `baton replay`, the
backtest's recorded books and other tools. The shadow follows the stream alone
(`read_batches`, from kernel/input_stream.py, re-exported here).

A corrupt stream entry or file line is skipped with a problem naming it (the stream id, or
file:line), never raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kernel.input_log import Evaluation, from_json_line
from kernel.input_stream import decode_entry, read_batches
from state.inputs import InputsRepo, Pager, entry_ms, parse_entry
from state.keys import Keys
from worker.input_files import day_files, every_day_filed, inputs_dir, read_lines, read_state

log = logging.getLogger("baton.inputs")

# A stream id is Redis's clock when the entry was appended, between ticks, after the tick
# its `at_ms` names; the records are selected by `at_ms`, the ids only bound the read: from
# the range's start plus the offset between the two clocks (id - at_ms, the least of the
# oldest and the newest entry's: a rig's virtual clock may be far from Redis's) less this
# (two hosts' clocks), to its end plus the greatest offset and this (a tick's entry appended
# late, with the next one's).
ID_BEFORE_MS = 60_000
ID_AFTER_MS = 600_000

__all__ = ["iter_evaluations", "read_batches"]


def iter_evaluations(
    r: Any,
    k: Keys,
    home: Path | str,
    from_ms: int,
    to_ms: int,
    slot: str | None = None,
    problems: list[str] | None = None,
) -> Iterator[Evaluation]:
    """Every recorded evaluation whose tick time is from `from_ms` to `to_ms` (inclusive),
    of one slot or all, oldest first: the day files' first, then Redis's, each (tick, slot)
    once (the files hold copies of what Redis still has). `r` is a sync client (None: the
    files only). Problems (entries and lines skipped) go to `problems`, or to the log when
    None."""
    found: list[str] = [] if problems is None else problems
    seen: set[tuple[int, str]] = set()
    before = len(found)
    try:
        for path in day_files(home, from_ms, to_ms):
            for n, line in read_lines(path, found):
                try:
                    e = from_json_line(line)
                except ValueError as err:
                    found.append(f"{path}:{n}: {err} (skipped)")
                    continue
                if from_ms <= e.at_ms <= to_ms and (slot is None or e.slot == slot):
                    key = (e.tick, e.slot)
                    if key not in seen:
                        seen.add(key)
                        yield e
        if r is not None:
            # A file that could not be read whole (cut, corrupt) may have lost what Redis still
            # holds: then Redis is read from the range's start (the dedupe drops the overlap).
            after = _copied_up_to(home, from_ms, to_ms) if len(found) == before else None
            yield from _from_redis(r, k, from_ms, to_ms, slot, seen, found, after)
    finally:
        if problems is None:
            for p in found:
                log.warning("%s", p)


def _copied_up_to(home: Path | str, from_ms: int, to_ms: int) -> str | None:
    """The stream id up to which this host's files hold every entry of the range (the roll's
    cursor), when the range's day files up to it were all there to read: Redis is then read
    from there on, not from the range's start. None: read Redis from the range's start."""
    state = read_state(inputs_dir(home), [])
    if state.id == "0-0":
        return None
    if not every_day_filed(home, from_ms, min(to_ms, entry_ms(state.id))):
        return None  # a day without its file (pruned, or another host's): Redis may have it
    return state.id


def _from_redis(
    r: Any,
    k: Keys,
    from_ms: int,
    to_ms: int,
    slot: str | None,
    seen: set[tuple[int, str]],
    found: list[str],
    after: str | None = None,
) -> Iterator[Evaluation]:
    repo = InputsRepo(r, k)
    offsets = _clock_offsets(repo)
    if offsets is None:
        return  # no stream
    low = f"{max(0, from_ms + min(offsets) - ID_BEFORE_MS)}-0"
    if after is not None and _id(after) >= _id(low):
        low = f"({after}"
    high = to_ms + max(offsets) + ID_AFTER_MS
    pager = Pager()
    while True:
        page = repo.input_range(low, "+", pager.count())
        pager.saw(page)
        if not page:
            return
        for entry_id, fields in page:
            low = f"({entry_id}"
            if entry_ms(entry_id) > high:
                return
            try:
                # The header first: most entries of a wide read are outside the range.
                head = parse_entry(entry_id, fields)
                if not from_ms <= head.at_ms <= to_ms:
                    continue
                _, evaluations = decode_entry(entry_id, fields)
            except ValueError as err:
                found.append(f"{k.input_log()} {entry_id}: unreadable input log entry (skipped): {err}")
                continue
            for e in evaluations:
                if slot is not None and e.slot != slot:
                    continue
                key = (e.tick, e.slot)
                if key not in seen:
                    seen.add(key)
                    yield e


def _clock_offsets(repo: InputsRepo) -> tuple[int, int] | None:
    """(id ms - at_ms) of the oldest and the newest entry (0 for one that cannot be read);
    None: no entry."""
    ends = repo.input_range("-", "+", 1) + repo.input_last()
    if not ends:
        return None
    offsets = []
    for entry_id, fields in ends:
        try:
            offsets.append(entry_ms(entry_id) - parse_entry(entry_id, fields).at_ms)
        except ValueError:
            offsets.append(0)
    return offsets[0], offsets[-1]


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)

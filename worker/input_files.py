"""The input log's files: var/inputs/YYYY-MM-DD.jsonl.gz, one evaluation per line
(kernel/input_log.py to_json_line: JSON a person or another tool reads with `zcat`), by the
UTC day of its tick, kept BATON_INPUT_LOG_DAYS days; and the roll that fills them from the
stream in Redis (keys.input_log(), which keeps only BATON_INPUT_LOG_REDIS_S).

The settle program rolls every ROLL_EVERY_S on each host (worker/settle.py `Roller`), and
`baton inputs roll` by hand. A roll copies every entry appended since the last one (its
stream id is in var/inputs/cursor), not only those about to leave Redis: each host's files
are then a whole copy (the programs of several hosts share one Redis), and a settle program
stopped for less than the retention loses nothing. The reader (control/input_archive.py)
merges files and Redis and drops what both hold.

Append-safe: a roll appends one gzip member to each day file it writes (a file of several
members reads as one), after saving in var/inputs/cursor the sizes the files had; then it
saves the new sizes with the stream id it copied up to. A roll that died in between left a
cursor that did not move and sizes that the next roll cuts the files back to: nothing is lost,
nothing is copied twice, and appending costs what is appended, not the day's file. One roll
at a time per host (a lock file).
"""

from __future__ import annotations

import calendar
import contextlib
import fcntl
import gzip
import logging
import os
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from kernel.input_log import to_json_line
from kernel.input_stream import decode_entry
from state.inputs import InputsRepo, Pager
from state.journal import JournalRepo
from state.keys import Keys

log = logging.getLogger("baton.inputs")

# How often the settle program rolls the stream into the files (at most: a quarter of the
# retention in Redis when that is shorter), and how soon after it starts.
ROLL_EVERY_S = 300.0
FIRST_ROLL_S = 10.0
DAY_MS = 86_400_000
SUFFIX = ".jsonl.gz"
CURSOR = "cursor"
# gzip level of a roll's member: 6 (the default) takes a day's lines to about a tenth; the
# roll runs in the settle program, off every tick's path.
GZIP_LEVEL = 6
# A roll writes what it has read every this many lines (and at its end).
FLUSH_LINES = 50_000


def inputs_dir(home: Path | str) -> Path:
    """var/inputs/ under BATON_HOME."""
    return Path(home) / "var" / "inputs"


def day_of(at_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms // 1000))


def day_file(home: Path | str, at_ms: int) -> Path:
    """The file that holds the evaluations of `at_ms`'s UTC day."""
    return inputs_dir(home) / f"{day_of(at_ms)}{SUFFIX}"


def _day_number(name: str) -> int | None:
    """The day (days since 1970-01-01, UTC) a day file's name says; None: not a day file."""
    if not name.endswith(SUFFIX):
        return None
    try:
        return calendar.timegm(time.strptime(name[: -len(SUFFIX)], "%Y-%m-%d")) // 86_400
    except ValueError:
        return None


def day_files(home: Path | str, from_ms: int, to_ms: int) -> list[Path]:
    """The files of the days from `from_ms`'s to `to_ms`'s that exist, oldest first (found by
    listing the folder: a range of centuries costs what the folder holds)."""
    d = inputs_dir(home)
    first, last = from_ms // DAY_MS, to_ms // DAY_MS
    try:
        names = [p.name for p in d.iterdir()]
    except FileNotFoundError:
        return []
    days = sorted((n, name) for name in names if (n := _day_number(name)) is not None and first <= n <= last)
    return [d / name for _, name in days]


def every_day_filed(home: Path | str, from_ms: int, to_ms: int) -> bool:
    """Whether every day from `from_ms`'s to `to_ms`'s has its file (True for no day)."""
    if to_ms < from_ms:
        return True
    return len(day_files(home, from_ms, to_ms)) == to_ms // DAY_MS - from_ms // DAY_MS + 1


def read_lines(path: Path, problems: list[str]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of a day file. A file that cannot be read on (cut short, not
    gzip) ends with a problem naming it and the line reached; its lines before stand."""
    n = 0
    try:
        with gzip.open(path, "rb") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip(b"\n")
                if line:
                    yield n, line
    except (OSError, EOFError, zlib.error) as e:
        problems.append(f"{path}:{n + 1}: unreadable from here on (skipped): {e}")


class RollResult(msgspec.Struct, kw_only=True):
    """What a roll did: entries read, evaluations written (per file), files deleted, the
    stream id it reached, problems (entries skipped, gaps, files it could not write)."""

    entries: int = 0
    evaluations: int = 0
    files: dict[str, int] = msgspec.field(default_factory=dict)
    deleted: list[str] = msgspec.field(default_factory=list)
    cursor: str = ""
    problems: list[str] = msgspec.field(default_factory=list)


class RollState(msgspec.Struct, kw_only=True):
    """var/inputs/cursor: the stream id copied up to, and the size each day file written to
    had when that was so (what a roll that died mid-write left past it is cut off)."""

    id: str = "0-0"
    sizes: dict[str, int] = msgspec.field(default_factory=dict)


_STATE = msgspec.json.Decoder(RollState)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _save(d: Path, state: RollState) -> None:
    _write_atomic(d / CURSOR, msgspec.json.encode(state))


def read_state(d: Path, problems: list[str]) -> RollState:
    """The roll's state (var/inputs/cursor); a garbage one is a problem, and the next roll
    starts from the oldest entry in Redis (the reader drops what is then copied twice)."""
    path = d / CURSOR
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return RollState()
    try:
        state = _STATE.decode(raw)
        ms, _, seq = state.id.partition("-")
        if ms.isdigit() and seq.isdigit():
            return state
    except msgspec.DecodeError:
        pass
    problems.append(f"{path}: {raw[:40]!r} is not a roll's state: rolling from the oldest entry in Redis")
    return RollState()


def _repair(d: Path, state: RollState, problems: list[str]) -> None:
    """Cut what a roll that stopped mid-write appended past the sizes it recorded before (its
    entries are copied again: the cursor did not move)."""
    for name, size in state.sizes.items():
        path = d / name
        try:
            if path.stat().st_size > size:
                os.truncate(path, size)
                problems.append(f"{path}: an unfinished roll's tail cut off at {size} bytes (copied again)")
        except FileNotFoundError:
            continue


def _append(d: Path, state: RollState, upto: str, by_day: dict[str, list[bytes]], out: RollResult) -> None:
    """Add each day's lines to its file as one new gzip member, in O(lines): the state first
    says the sizes before (a crash meanwhile is cut back to them), then the new sizes and
    `upto`."""
    names = {f"{day}{SUFFIX}": lines for day, lines in sorted(by_day.items())}
    before = {n: (d / n).stat().st_size if (d / n).exists() else 0 for n in names}
    _save(d, RollState(id=state.id, sizes=before))
    for name, lines in names.items():
        member = gzip.compress(b"".join(line + b"\n" for line in lines), GZIP_LEVEL, mtime=0)
        with open(d / name, "ab") as f:
            f.write(member)
            f.flush()
            os.fsync(f.fileno())
        before[name] += len(member)
        out.files[name] = out.files.get(name, 0) + len(lines)
        out.evaluations += len(lines)
    state.id, state.sizes = upto, before
    _save(d, state)


@contextlib.contextmanager
def _locked(d: Path) -> Iterator[None]:
    with open(d / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def roll(r: Any, k: Keys, home: Path | str, now_ms: int, keep_days: float) -> RollResult:
    """Copy the entries appended since the last roll into the day files, and delete the files
    older than `keep_days` (0: none). `r` is a sync client. Raises only what Redis or the
    disk raise; a corrupt entry is skipped with a problem naming it. Lines are written every
    FLUSH_LINES, so that a long backlog is not held in memory whole."""
    d = inputs_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    out = RollResult()
    with _locked(d):
        state = read_state(d, out.problems)
        _repair(d, state, out.problems)
        repo = InputsRepo(r, k)
        cursor = state.id
        if cursor != "0-0":
            _gap(repo, cursor, out.problems)
        by_day: dict[str, list[bytes]] = {}
        held = 0
        pager = Pager()  # pages of about PAGE_BYTES: the worker's tick waits behind a reply
        while True:
            page = repo.input_range(f"({cursor}", "+", pager.count())
            pager.saw(page)
            for entry_id, fields in page:
                cursor = entry_id
                out.entries += 1
                try:
                    batch, evaluations = decode_entry(entry_id, fields)
                except ValueError as e:
                    out.problems.append(
                        f"{k.input_log()} {entry_id}: unreadable input log entry (skipped): {e}"
                    )
                    continue
                if evaluations:
                    by_day.setdefault(day_of(batch.at_ms), []).extend(map(to_json_line, evaluations))
                    held += len(evaluations)
            done = not page
            if held >= FLUSH_LINES or (done and cursor != state.id):
                _append(d, state, cursor, by_day, out)
                by_day, held = {}, 0
            if done:
                break
        out.cursor = cursor
        if keep_days > 0:
            out.deleted = prune(d, now_ms - int(keep_days * DAY_MS), out.problems)
            if out.deleted:
                state.sizes = {n: size for n, size in state.sizes.items() if n not in out.deleted}
                _save(d, state)
    return out


def _gap(repo: InputsRepo, cursor: str, problems: list[str]) -> None:
    """A problem when the entry the last roll ended at has left Redis while newer ones are
    there: those after it may have gone too, before this roll could copy them (the settle
    program stopped longer than BATON_INPUT_LOG_REDIS_S)."""
    if not repo.input_range(cursor, cursor, 1) and repo.input_range(f"({cursor}", "+", 1):
        problems.append(
            f"input log: the entry of the last roll ({cursor}) is no longer in Redis: entries "
            "after it may have been trimmed before they were copied to var/inputs/"
        )


def prune(d: Path, before_ms: int, problems: list[str]) -> list[str]:
    """Delete the day files of days that ended before `before_ms`; returns their names."""
    deleted = []
    for path in sorted(d.glob(f"*{SUFFIX}")):
        day = _day_number(path.name)
        if day is None:
            continue  # not one of ours: left alone
        if (day + 1) * DAY_MS <= before_ms:
            try:
                path.unlink()
                deleted.append(path.name)
            except OSError as e:
                problems.append(f"{path}: not deleted: {e}")
    return deleted


class Roller:
    """The settle program's roll: every `every_s` in a thread of its own, beside the rq
    worker (whose queue is shared by every host's settle program, while each host keeps its
    own files: a job would roll into whichever host took it). A roll that fails is logged
    and journaled (source `settle`), and the next one tries again: never the program's end."""

    def __init__(
        self, r: Any, k: Keys, home: Path | str, redis_s: int, keep_days: float, every_s: float = 0
    ) -> None:
        self.r, self.k, self.home, self.keep_days = r, k, Path(home), keep_days
        # Well inside the retention, or entries would leave Redis before a roll copies them.
        self.every_s = every_s or min(ROLL_EVERY_S, redis_s / 4)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="input-roll", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        # The first roll soon after start (a settle program restarted late has a backlog).
        wait_s = min(self.every_s, FIRST_ROLL_S)
        while not self._stop.wait(wait_s):
            self.once()
            wait_s = self.every_s

    def once(self) -> RollResult | None:
        now_ms = int(time.time() * 1000)
        try:
            out = roll(self.r, self.k, self.home, now_ms, self.keep_days)
        except Exception as e:  # Redis away, the disk full: the next roll tries again
            log.warning("input log roll failed: %r", e)
            self._journal([f"input log roll failed: {e!r}"], now_ms)
            return None
        if out.evaluations or out.deleted:
            log.info(
                "input log: %d entries, %d evaluations rolled into %s; deleted %s",
                out.entries,
                out.evaluations,
                ", ".join(out.files) or "-",
                ", ".join(out.deleted) or "-",
            )
        for p in out.problems:
            log.warning("%s", p)
        self._journal(out.problems, now_ms)
        return out

    def _journal(self, problems: list[str], now_ms: int) -> None:
        if not problems:
            return
        with contextlib.suppress(Exception):  # the journal is Redis too
            pipe = self.r.pipeline(transaction=False)
            repo = JournalRepo(self.r, self.k)
            for p in problems[:20]:
                repo.journal_error("settle", p, now_ms=now_ms, pipeline=pipe)
            pipe.execute()

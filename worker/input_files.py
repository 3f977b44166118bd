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

Append-safe: a roll writes the day's file anew beside it, its old bytes then one new gzip
member, and renames it over the old one (a file of several members reads as one), then the
cursor the same way; a crash between the two copies some entries twice, which the reader
drops. One roll at a time per host (a lock file).
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
from state.inputs import PAGE, InputsRepo
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


def inputs_dir(home: Path | str) -> Path:
    """var/inputs/ under BATON_HOME."""
    return Path(home) / "var" / "inputs"


def day_of(at_ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(at_ms // 1000))


def day_file(home: Path | str, at_ms: int) -> Path:
    """The file that holds the evaluations of `at_ms`'s UTC day."""
    return inputs_dir(home) / f"{day_of(at_ms)}{SUFFIX}"


def day_files(home: Path | str, from_ms: int, to_ms: int) -> list[Path]:
    """The files of the days from `from_ms` to `to_ms`, those that exist, oldest first."""
    out = []
    day_ms = (from_ms // DAY_MS) * DAY_MS
    while day_ms <= to_ms:
        path = day_file(home, day_ms)
        if path.exists():
            out.append(path)
        day_ms += DAY_MS
    return out


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


def _write_atomic(path: Path, chunks: list[bytes]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        for c in chunks:
            f.write(c)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def append_lines(path: Path, lines: list[bytes]) -> None:
    """Add `lines` to a day file as one new gzip member (write-then-rename: see the module)."""
    old = path.read_bytes() if path.exists() else b""
    member = gzip.compress(b"".join(line + b"\n" for line in lines), GZIP_LEVEL, mtime=0)
    _write_atomic(path, [old, member])


def read_cursor(d: Path, problems: list[str]) -> str:
    path = d / CURSOR
    try:
        cursor = path.read_text().strip()
    except FileNotFoundError:
        return "0-0"
    ms, _, seq = cursor.partition("-")
    if not (ms.isdigit() and seq.isdigit()):
        problems.append(f"{path}: {cursor[:40]!r} is not a stream id: rolling from the oldest entry in Redis")
        return "0-0"
    return cursor


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
    disk raise; a corrupt entry is skipped with a problem naming it."""
    d = inputs_dir(home)
    d.mkdir(parents=True, exist_ok=True)
    out = RollResult()
    with _locked(d):
        cursor = read_cursor(d, out.problems)
        repo = InputsRepo(r, k)
        by_day: dict[str, list[bytes]] = {}
        first = True
        while True:
            page = repo.input_range(f"({cursor}", "+", PAGE)
            if first and page and cursor != "0-0":
                _gap(repo, cursor, out.problems)
            first = False
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
            if len(page) < PAGE:
                break
        for day, lines in sorted(by_day.items()):
            append_lines(d / f"{day}{SUFFIX}", lines)
            out.files[f"{day}{SUFFIX}"] = len(lines)
            out.evaluations += len(lines)
        if out.entries:
            _write_atomic(d / CURSOR, [cursor.encode()])
        out.cursor = cursor
        if keep_days > 0:
            out.deleted = prune(d, now_ms - int(keep_days * DAY_MS), out.problems)
    return out


def _gap(repo: InputsRepo, cursor: str, problems: list[str]) -> None:
    """A problem when the entry the last roll ended at has left Redis: those after it may
    have too, before this roll could copy them (the settle program stopped longer than
    BATON_INPUT_LOG_REDIS_S)."""
    if not repo.input_range(cursor, cursor, 1):
        problems.append(
            f"input log: the entry of the last roll ({cursor}) is no longer in Redis: entries "
            "after it may have been trimmed before they were copied to var/inputs/"
        )


def prune(d: Path, before_ms: int, problems: list[str]) -> list[str]:
    """Delete the day files of days that ended before `before_ms`; returns their names."""
    deleted = []
    for path in sorted(d.glob(f"*{SUFFIX}")):
        day = path.name[: -len(SUFFIX)]
        try:
            start_ms = calendar.timegm(time.strptime(day, "%Y-%m-%d")) * 1000
        except ValueError:
            continue  # not one of ours: left alone
        if start_ms + DAY_MS <= before_ms:
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

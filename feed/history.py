"""The local candle history: the 1 s candles a backtest runs on, kept under var/history/ in a
format any tool reads (one gzip'd CSV per asset and UTC day), filled from Binance's klines REST
(`baton history fetch`: feed/history_fetch.py; the sim serves the same endpoint in paper
mode) or from the candles the feed recorded in Redis (`baton history import`), and read back
by `load_candles`. Writes of an asset take turns (a lock file per asset: `merge`).

    var/history/<asset>/<YYYY-MM-DD>.csv.gz     (the UTC day of the candles' open times)
    open_ms,open,high,low,close,volume          (header; then one closed 1 s candle per line,
    1765152000000,95012.5,95013.1,95011.9,95012.8,1.93   sorted by open_ms, no duplicates)

Prices are written with repr(), which reads back to the same float: a candle stored and loaded
is the candle that was fetched, bit for bit. A second the venue had no candle for is absent (a
hole), never made up. A row that cannot be a candle is skipped when read, with a problem naming
its file and line; it never stops a load.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import fcntl
import gzip
import itertools
import logging
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from state.structs import CANDLE, MAX_PRICE, Candle, candle_problem

log = logging.getLogger("feed.history")

INTERVAL = "1s"
INTERVAL_MS = 1000
DAY_MS = 86_400_000
HEADER = "open_ms,open,high,low,close,volume"
SUFFIX = ".csv.gz"
LOCK_NAME = ".lock"  # per asset directory: merges of one asset take turns
# gzip level: 6 (the default) costs several times level 1 to write and saves little on these
# rows; a day of one asset is about 2.5 MB either way.
GZIP_LEVEL = 1


def history_dir(home: str | Path) -> Path:
    return Path(home) / "var" / "history"


def day_name(ms: int) -> str:
    """The UTC day (YYYY-MM-DD) of a time in unix ms."""
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).strftime("%Y-%m-%d")


def day_start_ms(name: str) -> int:
    return int(dt.datetime.strptime(name, "%Y-%m-%d").replace(tzinfo=dt.UTC).timestamp()) * 1000


def day_path(home: str | Path, asset: str, day: str) -> Path:
    return history_dir(home) / asset / f"{day}{SUFFIX}"


def days_between(from_ms: int, to_ms: int) -> list[str]:
    """The UTC days that [from_ms, to_ms) touches, oldest first."""
    if to_ms <= from_ms:
        return []
    first = from_ms - from_ms % DAY_MS
    return [day_name(d) for d in range(first, to_ms, DAY_MS)]


# --- reading ------------------------------------------------------------------------------------


def _parse_row(line: str, day_lo: int) -> Candle | str:
    """A CSV row as a candle of the day starting at `day_lo`, or why it is not one."""
    parts = line.rstrip("\r\n").split(",")
    if len(parts) != 6:
        return f"{len(parts)} fields, expected 6 ({HEADER})"
    try:
        open_ms = int(parts[0])
        o, h, low, c, v = (float(x) for x in parts[1:])
    except ValueError:
        return f"not numbers: {line.strip()[:80]!r}"
    if open_ms % INTERVAL_MS:
        return f"open_ms {open_ms} is not on a whole second"
    if not day_lo <= open_ms < day_lo + DAY_MS:
        return f"open_ms {open_ms} ({day_name(open_ms)}) is not in this file's day"
    if not 0 <= v < 1e30:  # also refuses nan
        return f"volume {parts[5]} is not a volume"
    candle = Candle(open_ms, o, h, low, c, v, True)
    why = candle_problem(candle)
    return candle if not why else f"not a candle: {why}"


# A day file's rows in one C call: the CSV body turned into a JSON array of arrays (every row
# of a sound file is six JSON numbers). A file with anything else is read line by line instead,
# which names each bad line; a sound day of 86,400 rows reads about 20 times faster this way.
_ROWS = msgspec.json.Decoder(list[tuple[int, float, float, float, float, float]])
_ENC = msgspec.json.Encoder()
_HEAD = HEADER.encode() + b"\n"


def _fast_rows(raw: bytes, day_lo: int) -> list[tuple[int, float, float, float, float, float]] | None:
    """The rows of a sound file (sorted, unique, whole seconds of its day, candles), or None."""
    body = raw[len(_HEAD) :] if raw.startswith(_HEAD) else raw
    body = body.strip()
    if not body:
        return []
    try:
        rows = _ROWS.decode(b"[[" + body.replace(b"\n", b"],[") + b"]]")
    except msgspec.DecodeError:
        return None
    prev, hi = day_lo - 1, day_lo + DAY_MS
    for t, o, h, low, c, v in rows:
        if (
            not (prev < t < hi and 0 < low <= o <= h and low <= c <= h < MAX_PRICE and 0 <= v < 1e30)
            or t % 1000
        ):
            return None
        prev = t
    return rows


def read_day(
    path: Path, problems: list[str] | None = None, from_ms: int | None = None, to_ms: int | None = None
) -> list[Candle]:
    """The candles of one day file (those opening in [from_ms, to_ms) when given), sorted by
    open time. Rows that cannot be candles are skipped and named in `problems` (path:line:
    why); a file cut short keeps what was read."""
    try:
        day_lo = day_start_ms(path.name.removesuffix(SUFFIX))
    except ValueError:
        _report([f"{path}: not a history file name (<YYYY-MM-DD>{SUFFIX})"], problems)
        return []
    try:
        rows = _fast_rows(gzip.decompress(path.read_bytes()), day_lo)
    except FileNotFoundError:
        return []
    except (OSError, EOFError, zlib.error):
        rows = None  # read line by line below, keeping what precedes the damage
    if rows is None:
        out = _read_lines(path, day_lo, problems)
        if from_ms is not None or to_ms is not None:
            out = [
                c
                for c in out
                if (from_ms is None or c.open_ms >= from_ms) and (to_ms is None or c.open_ms < to_ms)
            ]
        return out
    lo = 0 if from_ms is None else bisect.bisect_left(rows, from_ms, key=_first)
    hi = len(rows) if to_ms is None else bisect.bisect_left(rows, to_ms, key=_first)
    return [Candle(t, o, h, low, c, v, True) for t, o, h, low, c, v in rows[lo:hi]]


def _first(row: tuple[int, float, float, float, float, float]) -> int:
    return row[0]


def _read_lines(path: Path, day_lo: int, problems: list[str] | None) -> list[Candle]:
    out: list[Candle] = []
    found: list[str] = []
    n = 0
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                if n == 1 and line.startswith("open_ms"):
                    continue
                if not line.strip():
                    continue
                got = _parse_row(line, day_lo)
                if isinstance(got, str):
                    found.append(f"{path}:{n}: {got}")
                else:
                    out.append(got)
    except FileNotFoundError:
        return out
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as e:
        why = f"unreadable from here on ({type(e).__name__}: {e}); kept {len(out)} rows"
        found.append(f"{path}:{n + 1}: {why}")
    if any(b.open_ms <= a.open_ms for a, b in itertools.pairwise(out)):
        # Written by hand or by another tool: sorted, and the last row of a second wins.
        by_ms = {c.open_ms: c for c in out}
        if len(by_ms) < len(out):
            found.append(f"{path}: {len(out) - len(by_ms)} duplicate open_ms rows (the last kept)")
        out = [by_ms[k] for k in sorted(by_ms)]
    _report(found, problems)
    return out


def _report(found: list[str], problems: list[str] | None) -> None:
    if problems is None:
        for p in found:
            log.warning("history: %s", p)
    else:
        problems.extend(found)


def load_candles(
    home: str | Path, asset: str, from_ms: int, to_ms: int, problems: list[str] | None = None
) -> list[Candle]:
    """The stored 1 s candles of `asset` opening in [from_ms, to_ms), oldest first. Corrupt
    rows are skipped, each named in `problems` (file:line: why; logged when None)."""
    out: list[Candle] = []
    for day in days_between(from_ms, to_ms):
        out.extend(read_day(day_path(home, asset, day), problems, from_ms, to_ms))
    return out


@dataclass(frozen=True)
class DayCoverage:
    asset: str
    day: str
    candles: int
    first_ms: int
    last_ms: int


def coverage(
    home: str | Path, asset: str | None = None, problems: list[str] | None = None
) -> list[DayCoverage]:
    """What the store holds: per asset and day, the candles and the first and last open time
    (a day of 86,400 has no hole). A sound file is counted without making its candles."""
    root = history_dir(home)
    out: list[DayCoverage] = []
    if not root.is_dir():
        return out
    for adir in sorted(p for p in root.iterdir() if p.is_dir() and (asset is None or p.name == asset)):
        for f in sorted(adir.glob(f"*{SUFFIX}")):
            day = f.name.removesuffix(SUFFIX)
            rows: list[Any] | None = None
            with contextlib.suppress(OSError, EOFError, zlib.error, ValueError):
                rows = _fast_rows(gzip.decompress(f.read_bytes()), day_start_ms(day))
            if rows is None:  # damaged: read line by line, which names what is wrong
                rows = [(c.open_ms,) for c in read_day(f, problems)]
            if rows:
                out.append(DayCoverage(adir.name, day, len(rows), rows[0][0], rows[-1][0]))
    return out


# --- writing ------------------------------------------------------------------------------------


def write_day(path: Path, candles: Sequence[Candle]) -> None:
    """Replace one day file with `candles` (sorted, closed ones), atomically: a reader sees the
    old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # msgspec writes each float as repr() does (the shortest text that reads back the same),
    # and a JSON array of arrays is a CSV body once its brackets go.
    enc = _ENC.encode([(c.open_ms, c.open, c.high, c.low, c.close, c.volume) for c in candles])
    body = enc[2:-2].replace(b"],[", b"\n") + b"\n" if candles else b""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(gzip.compress(_HEAD + body, compresslevel=GZIP_LEVEL))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


@dataclass
class StoreCounts:
    """What a merge did, per asset: candles new to the store, candles that replaced a stored
    one of the same second (with other values), rows refused, and the day files written."""

    added: int = 0
    replaced: int = 0
    refused: int = 0
    days: list[str] = field(default_factory=list)


def merge(
    home: str | Path, asset: str, candles: Iterable[Candle], problems: list[str] | None = None
) -> StoreCounts:
    """Add closed, valid 1 s candles to the store; a candle of a second already stored replaces
    it (what comes later, from the venue or the feed's closed candle, is final). Candles still
    forming, off a whole second, or not candles at all are refused (counted).

    Each day file is read, merged and replaced under the asset's lock (an flock on
    var/history/<asset>/.lock): two imports or fetches of the same asset at once (a person's
    and a cron's) would otherwise each write its own rows over the other's."""
    counts = StoreCounts()
    by_day: dict[str, list[Candle]] = {}
    for c in candles:
        if not c.closed or c.open_ms % INTERVAL_MS or c.open_ms < 0 or candle_problem(c):
            counts.refused += 1
            continue
        by_day.setdefault(day_name(c.open_ms), []).append(c)
    if not by_day:
        return counts
    with _locked(history_dir(home) / asset):
        for day in sorted(by_day):
            _merge_day(day_path(home, asset, day), by_day[day], counts, problems)
    return counts


@contextlib.contextmanager
def _locked(asset_dir: Path) -> Iterator[None]:
    asset_dir.mkdir(parents=True, exist_ok=True)
    with open(asset_dir / LOCK_NAME, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _merge_day(path: Path, candles: list[Candle], counts: StoreCounts, problems: list[str] | None) -> None:
    day = path.name.removesuffix(SUFFIX)
    stored = {c.open_ms: c for c in read_day(path, problems)}
    changed = False
    for c in candles:
        old = stored.get(c.open_ms)
        if old is None:
            counts.added += 1
        elif old != c:
            counts.replaced += 1
        else:
            continue
        stored[c.open_ms] = c
        changed = True
    if changed:
        write_day(path, [stored[k] for k in sorted(stored)])
        counts.days.append(day)


# --- filling: from the feed's recorded candles in Redis -----------------------------------------


def import_recorded(
    home: str | Path, windows: dict[str, list[bytes]], problems: list[str] | None = None
) -> dict[str, StoreCounts]:
    """Store the closed candles of the feed's windows as read from Redis (asset -> the members
    of its candles:<asset>:1s sorted set). A member that does not decode is skipped and named."""
    out: dict[str, StoreCounts] = {}
    for asset, members in windows.items():
        candles: list[Candle] = []
        for i, raw in enumerate(members):
            try:
                candles.append(CANDLE.decode(raw))
            except Exception as e:  # msgspec errors: one bad member never stops the import
                _report([f"candles:{asset}:{INTERVAL} member {i}: {type(e).__name__}: {e}"], problems)
        out[asset] = merge(home, asset, candles, problems)
    return out

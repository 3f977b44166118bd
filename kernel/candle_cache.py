"""Process memory as a cache of the candle windows: each tick reads only what is new.

A tick needs every asset's last minute of 1 s candles. Read whole, that is ~60 members per
asset per tick: at 256 assets, 15,000 JSON candles sent, parsed and decoded every second,
most of the tick. The worker keeps what it read and asks only for the candles it has not seen
(state/lua/candles_read.lua): its newest one again (an unclosed candle is updated in place)
and those after it.

Redis stays the ground truth. The copy is used only while the feed's mark for the window
(`baton:candles:marks`, written by feed_write.lua) says nothing older than its newest candle
was written since (a backfilled hole or a late update makes the next read a whole one), and
while Redis counts as many candles up to its newest one as it holds (a window trimmed,
deleted, or written by hand fails the count). It is also read whole every FULL_EVERY_MS, and
whenever the lookback reaches further back than the copy. A new worker starts empty: its
first read (the readiness check's dry evaluation) is a whole one.

How far back an asset is read (`Lookbacks`) is the longest of what its slots' strategies
declare (CANDLES: interval x bars), at least the minute version 1 inputs' closes need.
"""

from __future__ import annotations

import bisect
import itertools
import re
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from kernel.strategy_api import INTERVALS_S, MAX_LOOKBACK_S
from state.structs import CANDLE, Candle, candle_problem

FULL_EVERY_MS = 30_000
# Generations of copies, unique in the process: a copy read whole gets a new one (CandleCache.gen).
_GENERATIONS = itertools.count(1)
# Seconds of 1s candles read per asset for the volatility estimate (a tick's window): the
# least any asset is read back, whatever its strategies declare.
VOL_LOOKBACK_S = 60


def declared_candles(strat: Any, cap_s: int = MAX_LOOKBACK_S) -> dict[str, int]:
    """The bars a strategy module declares (CANDLES) as the kernel serves them: intervals it
    knows, counts cut to `cap_s` of look-back. The reload and readiness checks refuse anything
    else (kernel/strategy_check.py); this keeps a module that slipped past them (a slot
    switched to it before its check) from breaking the tick."""
    raw = getattr(strat, "CANDLES", None)
    if not isinstance(raw, Mapping):
        return {}
    out: dict[str, int] = {}
    for name, n in raw.items():
        iv = INTERVALS_S.get(name) if isinstance(name, str) else None
        if iv is None or not isinstance(n, int) or isinstance(n, bool) or n <= 0 or iv > cap_s:
            continue
        out[name] = min(n, cap_s // iv)
    return out


def candle_span_s(strat: Any, cap_s: int = MAX_LOOKBACK_S) -> int:
    """Seconds of 1 s candles the module's bars need (0: it declares none)."""
    return max((INTERVALS_S[iv] * n for iv, n in declared_candles(strat, cap_s).items()), default=0)


def lookback_cap_s(settings: Any) -> int:
    """The most look-back the kernel serves: MAX_LOOKBACK_S, or less when the feed keeps less
    (BATON_CANDLE_RETENTION_S)."""
    return min(MAX_LOOKBACK_S, int(settings.candle_retention_s))


class Lookbacks:
    """Per asset, how many seconds of candles a tick reads: the longest span its enabled slots'
    strategies declare, at least VOL_LOOKBACK_S, at most `cap_s`. Every enabled slot of an
    asset counts, asleep or not: the copy's reach then stays put while slots wake and sleep
    (a longer reach is a whole read of the window), and an asset none of whose slots is
    awake is not read at all anyway."""

    def __init__(self, resolve: Callable[[str], Any], cap_s: int = MAX_LOOKBACK_S) -> None:
        self.resolve = resolve
        self.cap_s = max(cap_s, VOL_LOOKBACK_S)

    def of(self, refs: Iterable[Any], slots: Mapping[str, Any], assets: Iterable[str]) -> dict[str, int]:
        """For each of `assets`: its look-back, from the slots of `refs` as `slots` has them
        (a slot not there yet counts with the minute; the next tick knows it)."""
        wanted = set(assets)
        out = dict.fromkeys(wanted, VOL_LOOKBACK_S)
        spans: dict[str, int] = {}  # strategy name -> its span, once per call
        for r in refs:
            if r.asset not in wanted:
                continue
            slot = slots.get(r.id)
            if slot is None or not slot.enabled:
                continue
            span = spans.get(slot.strategy)
            if span is None:
                try:
                    span = candle_span_s(self.resolve(slot.strategy), self.cap_s)
                except Exception:  # an unloadable strategy: the tick reports it
                    span = 0
                spans[slot.strategy] = span
            if span > out[r.asset]:
                out[r.asset] = span
        return out


_NOTHING = ("", 0, 0, 0)
_MARK = re.compile(r"^\d+:\d+:\d+$")  # '<born>:<rev>:<rewrite rev>' (feed_write.lua)


@dataclass
class _Held:
    mark: str
    since_ms: int
    full_ms: int
    candles: list[Candle] = field(default_factory=list)
    closes: list[float] = field(default_factory=list)
    # The newest member as Redis sent it: re-sent every read, decoded only when it changed.
    newest_raw: Any = None
    # Which whole read the candles come from: between two whole reads only the newest candle
    # changes and newer ones are appended (what kernel/inputs.py BarMemo relies on).
    gen: int = field(default_factory=lambda: next(_GENERATIONS))


@dataclass
class CacheStats:
    whole: int = 0  # windows read whole
    new: int = 0  # windows read from the newest candle on
    decoded: int = 0  # candles decoded


class CandleCache:
    def __init__(self, full_every_ms: int = FULL_EVERY_MS) -> None:
        self.full_every_ms = full_every_ms
        self._held: dict[str, _Held] = {}
        self._seen: set[str] = set()
        self.stats = CacheStats()

    def clear(self) -> None:
        self._held.clear()
        self._seen.clear()

    def gen(self, asset: str) -> int | None:
        """The generation of the copy of `asset`'s window (None: no copy kept, every read of
        it is a whole one): while it stays the same, the copy's candles older than its newest
        are the same objects with the same values."""
        h = self._held.get(asset)
        return h.gen if h is not None else None

    def forget(self, asset: str) -> None:
        """Drop the copy of `asset`'s window: its next read is a whole one."""
        self._held.pop(asset, None)

    def due_whole(self, assets: set[str], at_ms: int) -> list[str]:
        """Those of `assets` whose copy a read at `at_ms` would replace with a whole read (the
        periodic one), forgotten now: the caller reads them whole ahead of that read, between
        ticks, so that the tick reads only what is new."""
        due = [
            a
            for a in assets
            if (h := self._held.get(a)) is not None and at_ms - h.full_ms >= self.full_every_ms
        ]
        for a in due:
            del self._held[a]
        return due

    def held_args(self, asset: str, since_ms: int, now_ms: int) -> tuple[str, int, int, int]:
        """What to tell candles_read.lua the caller holds of `asset`'s window: (born and rev
        of the mark it was read under, newest open time, count from since_ms on);
        ('', 0, 0, 0) asks for the whole window."""
        h = self._held.get(asset)
        if h is None:
            return _NOTHING
        if since_ms < h.since_ms or now_ms - h.full_ms >= self.full_every_ms:
            del self._held[asset]
            return _NOTHING
        i = bisect.bisect_left(h.candles, since_ms, key=_open_ms)
        if i:
            del h.candles[:i]
            del h.closes[:i]
        h.since_ms = since_ms
        if not h.candles:
            del self._held[asset]
            return _NOTHING
        born, rev, _ = h.mark.split(":", 2)
        return born, int(rev), h.candles[-1].open_ms, len(h.candles)

    def update(
        self,
        asset: str,
        since_ms: int,
        now_ms: int,
        kind: str,
        members: list[Any],
        mark: str,
        problems: list[str],
    ) -> tuple[list[Candle], tuple[float, ...]]:
        """Apply one read's answer for `asset`; returns its recent candles (a list of its own)
        and their closes."""
        h = self._held.get(asset) if kind == "new" else None
        n_problems = len(problems)
        if h is None or not h.candles:
            # Spread the periodic whole reads: an asset read whole for the first time is due
            # again somewhere within FULL_EVERY_MS, not all of them on the same tick.
            first = asset not in self._held and asset not in self._seen
            self._seen.add(asset)
            offset = zlib.crc32(asset.encode()) % self.full_every_ms if first else 0
            h = _Held(mark, since_ms, now_ms - offset)
            self.stats.whole += 1
            for m in members:
                c = self._decode(asset, m, problems)
                if c is not None and c.open_ms <= now_ms:
                    h.candles.append(c)
                    h.closes.append(c.close)
            h.newest_raw = members[-1] if members else None
        else:
            self.stats.new += 1
            h.mark = mark
            for m in members:
                last = h.candles[-1]
                if m == h.newest_raw:
                    continue  # the newest candle, unchanged
                c = self._decode(asset, m, problems)
                if c is None or c.open_ms > now_ms:
                    continue  # garbage, or dated in the future (candles_read.lua leaves those out)
                if c.open_ms == last.open_ms:
                    h.candles[-1] = c
                    h.closes[-1] = c.close
                elif c.open_ms > last.open_ms:
                    h.candles.append(c)
                    h.closes.append(c.close)
                else:
                    continue  # out of order: the count check reads the window whole next time
                h.newest_raw = m
        if _MARK.match(mark or "") and len(problems) == n_problems:
            self._held[asset] = h
        else:
            # A window the feed has not marked (an older feed, candles written by hand) has
            # nothing to tell its changes by; one holding a member that is not a candle would
            # fail the count check's arithmetic (it counts members, the copy holds candles):
            # both are read whole, every time, until they are clean again.
            self._held.pop(asset, None)
        return list(h.candles), tuple(h.closes)

    def _decode(self, asset: str, raw: Any, problems: list[str]) -> Candle | None:
        self.stats.decoded += 1
        try:
            c = CANDLE.decode(raw)
        except msgspec.DecodeError as e:
            problems.append(f"candle {asset}: cannot decode {str(raw)[:80]!r}: {e}")
            return None
        if why := candle_problem(c):
            problems.append(f"candle {asset} at {c.open_ms}: {why}")
            return None
        return c


def _open_ms(c: Candle) -> int:
    return c.open_ms

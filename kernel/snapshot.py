"""Everything one tick needs, read from Redis in one pipelined round trip.

The lease renewal rides in the same pipeline, so a tick costs one round trip before the
strategy runs, whatever the slot count. A value a limit or a decision depends on that cannot
be read (undecodable, out of range, a key of the wrong type) is never read as zero or dropped:
it becomes a `Blocker` naming it (kernel/blocking.py), and new entries wait, for its slot, its
asset or every slot, until it reads again. Other unreadable values are problems; none raises.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import msgspec
from redis.exceptions import ResponseError

from baton.errors import SettingsError, SnapshotError
from baton.settings import CANDLE_INTERVAL, timeframe_seconds
from kernel import journal_guard
from kernel.candle_cache import CandleCache
from kernel.candle_read import last_minute, queue_candles_read, since_per_asset
from kernel.lease import renew, renewed
from kernel.windows import slug, window_bounds
from state.control import parse_control
from state.ledger import utc_day
from state.primary import primary_id, queue_primary_id
from state.store import Store
from state.structs import (
    CANDLE,
    ENTRY_LEG,
    FEED_STATUS,
    INTENT,
    POSITION,
    SLOT,
    Blocker,
    Candle,
    ControlFlags,
    FeedStatus,
    Intent,
    Position,
    Slot,
    candle_problem,
)

# The label of the primary's replication id in the snapshot's read (read_snapshot `primary`).
PRIMARY = "primary replication id"


@dataclass(frozen=True)
class SlotRef:
    """A configured slot and the window it is in at the tick's time."""

    id: str
    asset: str
    timeframe: str
    window_start_s: int
    window_end_s: int

    # Cached: a ref lives as long as its window (SlotRefs), and these are asked for every tick.
    @cached_property
    def slug(self) -> str:
        return slug(self.asset, self.timeframe, self.window_start_s)

    @cached_property
    def entry_intent_id(self) -> str:
        return f"{self.id}:{self.window_start_s}:{ENTRY_LEG}"


@dataclass
class Snapshot:
    lease_ok: bool
    control: ControlFlags
    refs: list[SlotRef]
    slots: dict[str, Slot]
    opens: dict[str, Candle | None]
    recent: dict[str, list[Candle]]
    # The feed's status of the assets whose candles were read (only their slots get input).
    feed: dict[str, FeedStatus | None]
    open_positions: list[Position]
    open_intents: list[Intent]
    totals: dict[str, int]
    day_pnl_micros: int
    problems: list[str] = field(default_factory=list)
    # Unreadable values that new entries wait on (kernel/blocking.py).
    blockers: list[Blocker] = field(default_factory=list)
    # The planned-handover request as Redis holds it (empty when none): the active worker
    # carries it out after the tick that read it.
    handover: dict[str, str] = field(default_factory=dict)
    # What the tick journal depends on, as read: stats' kernel.journal_guard.FIELDS.
    journal_stats: list[Any] = field(default_factory=lambda: [None, None, None])
    # The Redis primary's replication id (state/primary.py), when asked for and told.
    primary_id: str | None = None
    # Per asset, the closes of the recent candles: built once per tick, shared by its slots.
    _closes: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # Per asset read, the generation of the candle cache's copy (CandleCache.gen; absent: none
    # kept), by which bars built from its older candles are kept between ticks.
    candle_gens: dict[str, int] = field(default_factory=dict)

    def closes(self, asset: str) -> tuple[float, ...]:
        got = self._closes.get(asset)
        if got is None:
            got = self._closes[asset] = tuple(c.close for c in self.recent.get(asset) or ())
        return got


def slot_refs(slot_ids: list[tuple[str, str, str]], now_ms: int) -> list[SlotRef]:
    bounds: dict[str, tuple[int, int]] = {}  # per timeframe: computed once, shared by its slots
    out = []
    for sid, asset, tf in slot_ids:
        b = bounds.get(tf)
        if b is None:
            b = bounds[tf] = window_bounds(now_ms, tf)
        out.append(SlotRef(sid, asset, tf, b[0], b[1]))
    return out


class SlotRefs:
    """`slot_refs` with memory: the refs of the last call are returned again while every
    timeframe is in the same window (a window lasts minutes, a tick seconds), so a thousand
    refs are not rebuilt every tick. The list returned is shared: callers must not change it.

    The slot list follows the slots hash (`follow`): Redis is the truth, the settings only
    seed a fresh Redis (worker/lifecycle.py), so a slot added by an operator runs from the
    tick after the one that read it, and one removed stops."""

    def __init__(self, slot_ids: list[tuple[str, str, str]]) -> None:
        self.slot_ids: list[tuple[str, str, str]] = []
        # slot id -> (asset, timeframe), to tell a changed list from the same one cheaply.
        self._by_id: dict[str, tuple[str, str]] = {}
        self._timeframes: list[str] = []
        self._bounds: tuple[tuple[int, int], ...] | None = None
        self._refs: list[SlotRef] = []
        # Whether the list was read from Redis yet (until then it is the settings' seeds).
        self.followed = False
        self._followed: dict[str, Slot] = {}  # the records it was last taken from
        self._set(slot_ids)

    def _set(self, slot_ids: list[tuple[str, str, str]]) -> None:
        self.slot_ids = slot_ids
        self._by_id = {sid: (a, tf) for sid, a, tf in slot_ids}
        self._timeframes = sorted({tf for _, _, tf in slot_ids})
        self._bounds = None

    def at(self, now_ms: int) -> list[SlotRef]:
        bounds = tuple(window_bounds(now_ms, tf) for tf in self._timeframes)
        if bounds != self._bounds:
            self._refs = slot_refs(self.slot_ids, now_ms)
            self._bounds = bounds
        return self._refs

    def follow(self, slots: dict[str, Slot]) -> tuple[bool, list[str]]:
        """Take the slot list from `slots` (the slots hash as read, decodable values only):
        (whether it changed, problems). A slot whose timeframe cannot be parsed is left out,
        named in a problem, rather than stopping every slot's tick (an operator's tools
        refuse one; a hand-written value can still hold one)."""
        self.followed = True
        prev, self._followed = self._followed, slots
        # The same records as last time (a slot that did not change is the same object: the
        # decode memo's) under the same ids: unchanged, found without a loop in Python (a
        # thousand slots every tick).
        if (
            len(prev) == len(slots)
            and all(map(operator.is_, slots.values(), prev.values()))
            and slots.keys() == prev.keys()
        ):
            return False, []
        by_id = self._by_id
        if len(slots) == len(by_id) and all(
            (got := by_id.get(sid)) is not None and got[0] == s.asset and got[1] == s.timeframe
            for sid, s in slots.items()
        ):
            return False, []
        problems: list[str] = []
        wanted: list[tuple[str, str, str]] = []
        for sid in sorted(slots):
            s = slots[sid]
            try:
                timeframe_seconds(s.timeframe)
            except SettingsError as e:
                problems.append(f"slot {sid} is not run: {e}")
                continue
            wanted.append((sid, s.asset, s.timeframe))
        if wanted == self.slot_ids:
            return False, problems
        self._set(wanted)
        return True, problems

    def keeps(self, ref: SlotRef) -> bool:
        """Whether `ref` is still one of the list's slots (with the same asset and timeframe)."""
        return self._by_id.get(ref.id) == (ref.asset, ref.timeframe)


def _find(candles: list[Candle], open_ms: int) -> Candle | None:
    """The candle opening at `open_ms` among recent ones (sorted, usually one per second)."""
    if candles:
        i = (open_ms - candles[0].open_ms) // 1000
        if 0 <= i < len(candles) and candles[i].open_ms == open_ms:
            return candles[i]
    return next((c for c in candles if c.open_ms == open_ms), None)


class DecodeMemo:
    """Values decoded by the last read, by their exact text: a slot, a position or an intent
    that did not change since the last tick is not decoded again (a thousand of each per
    tick at 1,024 slots). Only the values seen by the latest read are kept. The structs are
    frozen, so sharing one between ticks is safe."""

    def __init__(self) -> None:
        self._last: dict[Any, Any] = {}
        self._now: dict[Any, Any] = {}

    def decode(self, codec: Any, raw: Any, bad: list[tuple[str, str]], name: str) -> Any:
        """`raw` decoded, or None; an undecodable value appends (`name`, what is wrong) to
        `bad` (the message is built only then: a thousand f-strings per tick otherwise)."""
        if raw is None:
            return None
        key = (codec, raw)
        got = self._now.get(key)
        if got is None:
            got = self._last.get(key)
            if got is None:
                try:
                    got = codec.decode(raw)
                except msgspec.DecodeError as e:
                    bad.append((name, cannot_decode(raw, e)))
                    return None  # undecodable: found on every read, never remembered
            self._now[key] = got
        return got

    def turn(self) -> None:
        """End of a read: what it did not see is forgotten."""
        self._last, self._now = self._now, {}


def decode_reported(codec: Any, raw: Any, what: str, problems: list[str], name: str = "") -> Any:
    """`raw` decoded, or None (for None, or for a value that cannot be decoded: then a
    problem naming `what` (and `name`) is appended, never raised)."""
    if raw is None:
        return None
    try:
        return codec.decode(raw)
    except msgspec.DecodeError as e:
        label = f"{what} {name}" if name else what
        problems.append(f"{label}: {cannot_decode(raw, e)}")
        return None


def cannot_decode(raw: Any, e: Exception) -> str:
    return f"cannot decode {str(raw)[:80]!r}: {e}"


_INT64 = re.compile(r"-?\d{1,19}")
_INT64_MAX = 2**63 - 1


def int64(raw: Any) -> int | None:
    """An integer as Redis's HINCRBY keeps one (decimal digits, signed 64 bits), or None: a
    value that is not one cannot be a sum the scripts kept, whatever Python's int() thinks
    of it (' 7', '1_000', a 40-digit number)."""
    if not isinstance(raw, str) or not _INT64.fullmatch(raw):
        return None
    n = int(raw)
    return n if -_INT64_MAX - 1 <= n <= _INT64_MAX else None


def position_problem(p: Position) -> str:
    """Why an open position that decoded cannot be counted in the exposure ('' when it can)."""
    if p.cost_micros < 0 or p.shares_micros < 0:
        return f"negative cost or shares ({p.cost_micros}, {p.shares_micros}) would lower the exposure"
    return ""


def intent_problem(i: Intent) -> str:
    """Why an open intent that decoded cannot be counted as pending ('' when it can)."""
    if not math.isfinite(i.stake_usd) or i.stake_usd < 0:
        return f"stake {i.stake_usd!r} USD cannot be held back from cash"
    return ""


def _open_records(
    memo: DecodeMemo, codec: Any, problem: Any, raw: dict[str, Any], key: str, blockers: list[Blocker]
) -> list[Any]:
    """The open records (positions or intents) of `raw` that can be read; each one that
    cannot (undecodable, or `problem` names what is wrong) becomes a blocker on `key`."""
    good: list[Any] = []
    bad: list[tuple[str, str]] = []
    for rid, v in raw.items():
        rec = memo.decode(codec, v, bad, rid)
        if rec is not None and (why := problem(rec)):
            bad.append((rid, why))
        elif rec is not None:
            good.append(rec)
    blockers += (Blocker(key=key, field=rid, problem=why) for rid, why in bad)
    return good


def _wrong_type(x: Any) -> bool:
    return isinstance(x, ResponseError) and str(x).startswith("WRONGTYPE")


async def read_snapshot(
    store: Store,
    refs: list[SlotRef],
    now_ms: int,
    lease: tuple[str, int, int] | None,
    lookback_s: int | Mapping[str, int],
    cache: CandleCache | None = None,
    memo: DecodeMemo | None = None,
    candle_assets: set[str] | None = None,
    primary: bool = False,
) -> Snapshot:
    """`lease` is (holder, epoch, ttl_ms) for the renewal that rides along; None reads without
    one (the readiness check of a worker that does not trade yet: lease_ok is then False).
    `cache` holds the candles earlier reads found (kernel/candle_cache.py): only newer ones
    are read; without one every window is read whole. `candle_assets` limits the candle
    windows read to those assets (None: every asset of `refs`); the others have no recent
    candles and no open candle in this snapshot, and their cached copies wait (the next read
    of such a window asks for everything after the copy's newest candle). `primary`: the
    primary's replication id rides along too (kernel/adopt.py watches it for a failover)."""
    k = store.k
    if cache is None:
        cache = CandleCache()
    if memo is None:
        memo = DecodeMemo()
    assets = sorted({r.asset for r in refs})
    read_assets = assets if candle_assets is None else [a for a in assets if a in candle_assets]
    # A window's open candle is read once per (asset, window start), however many slots
    # share it, and not at all when it lies inside the recent candles read anyway.
    since = since_per_asset(read_assets, now_ms, lookback_s)
    opens_wanted: dict[str, list[int]] = {}
    for a, t in sorted(
        {
            (r.asset, r.window_start_s * 1000)
            for r in refs
            if r.asset in since and r.window_start_s * 1000 < since[r.asset]
        }
    ):
        opens_wanted.setdefault(a, []).append(t)

    # What each queued command reads, so that a Redis error names the key behind it.
    labels: list[str] = []
    day = k.ledger_day(utc_day(now_ms))
    # The hashes the entry checks read, and what each reads as when it is of the wrong type
    # (then a blocker of every slot says so, and the tick goes on).
    empty: dict[str, Any] = {
        k.slots(): {},
        k.feed_status(): [None] * len(read_assets),
        k.positions_open(): {},
        k.intents_open(): {},
        k.ledger_totals(): {},
        day: None,
        k.stats(): [None] * len(journal_guard.FIELDS),
    }

    def build(pipe: Any) -> None:
        labels.clear()

        def q(label: str, queued: Any = None) -> None:
            labels.append(label)

        if lease is not None:
            holder, epoch, ttl_ms = lease
            renew(store, holder, epoch, now_ms, ttl_ms, pipeline=pipe)
            q(k.lease())
        q(k.handover(), pipe.hgetall(k.handover()))
        q(k.control(), pipe.hgetall(k.control()))
        # All of them, not those of `refs`: the hash is the slot list (SlotRefs.follow).
        q(k.slots(), pipe.hgetall(k.slots()))
        if read_assets:
            queue_candles_read(pipe, store, cache, read_assets, opens_wanted, since, now_ms)
            q("candle windows")
        if read_assets:  # only the assets whose candles are read can have a slot with input
            q(k.feed_status(), pipe.hmget(k.feed_status(), [f"{a}:{CANDLE_INTERVAL}" for a in read_assets]))
        q(k.positions_open(), pipe.hgetall(k.positions_open()))
        q(k.intents_open(), pipe.hgetall(k.intents_open()))
        q(k.ledger_totals(), pipe.hgetall(k.ledger_totals()))
        q(day, pipe.hget(day, "realized_pnl_micros"))
        q(k.stats(), pipe.hmget(k.stats(), list(journal_guard.FIELDS)))
        if primary:
            queue_primary_id(pipe)
            q(PRIMARY)

    res = await store.run_pipeline(build)
    blockers: list[Blocker] = []
    for n, (label, x) in enumerate(zip(labels, res, strict=True)):
        if label in empty and _wrong_type(x):
            # A key the entry checks read, of the wrong type: entries wait, the rest of the
            # tick (settlement, reconciliation, the journal) goes on.
            blockers.append(Blocker(key=label, problem=f"not a hash: {x}"))
            res[n] = empty[label]
        elif label == k.control() and _wrong_type(x):
            blockers.append(Blocker(key=label, problem=f"not a hash: {x}; treated as halted"))
            res[n] = {"halted": f"unreadable: {x}"}
        elif isinstance(x, Exception) and label != PRIMARY:  # a server without INFO: unknown
            raise SnapshotError(f"reading {label}: {x}") from x
    it = iter(res)
    problems: list[str] = []
    lease_ok = renewed(next(it)) if lease is not None else False
    handover = next(it)
    control = parse_control(next(it))
    problems.extend(control.problems)
    slots: dict[str, Slot] = {}
    bad: list[tuple[str, str]] = []
    for sid, raw in next(it).items():
        s = memo.decode(SLOT, raw, bad, sid)
        if s is not None:
            slots[sid] = s
    blockers += (Blocker(key=k.slots(), field=sid, problem=why, slot=sid) for sid, why in bad)
    recent: dict[str, list[Candle]] = {}
    closes: dict[str, tuple[float, ...]] = {}
    open_by_start: dict[tuple[str, int], Candle | None] = {}
    windows = (next(it) or []) if read_assets else []
    for a, (kind, members, mark, opens_found) in zip(read_assets, windows, strict=True):
        found: list[str] = []
        if kind == "wrongtype":
            found.append(f"not a sorted set: {members}")
            members, kind = [], "all"
        recent[a], all_closes = cache.update(a, since[a], now_ms, kind, members, mark, found)
        closes[a] = last_minute(recent[a], all_closes, now_ms)
        for t, m in zip(opens_wanted.get(a, ()), opens_found, strict=True):
            c = decode_reported(CANDLE, m, f"open candle at {t}", found) if m else None
            if c is not None and (why := candle_problem(c)):
                found.append(f"open candle at {t}: {why}")
                c = None
            open_by_start[(a, t)] = c
        if found:
            blockers.append(Blocker(key=k.candles(a, CANDLE_INTERVAL), problem=found[0], asset=a))
    opens: dict[str, Candle | None] = {}
    for r in refs:
        key = (r.asset, r.window_start_s * 1000)
        if key in open_by_start:
            opens[r.id] = open_by_start[key]
        else:
            held = recent.get(r.asset)
            opens[r.id] = _find(held, key[1]) if held is not None else None
    feed: dict[str, FeedStatus | None] = {}
    for a, raw in zip(read_assets, next(it) if read_assets else (), strict=True):
        found = []
        feed[a] = decode_reported(FEED_STATUS, raw, "feed status", found, a)
        if found:
            blockers.append(
                Blocker(key=k.feed_status(), field=f"{a}:{CANDLE_INTERVAL}", problem=found[0], asset=a)
            )
    # An open position or intent of unknown size could be any exposure: every slot waits.
    open_positions = _open_records(memo, POSITION, position_problem, next(it), k.positions_open(), blockers)
    open_intents = _open_records(memo, INTENT, intent_problem, next(it), k.intents_open(), blockers)
    totals: dict[str, int] = {}
    for name, v in next(it).items():
        total = int64(v)
        if total is None:
            blockers.append(
                Blocker(key=k.ledger_totals(), field=name, problem=f"holds {v[:80]!r}, not an integer")
            )
        else:
            totals[name] = total
    day_raw = next(it)
    day_pnl = 0 if day_raw is None else int64(day_raw)
    if day_pnl is None:
        # Read as 0, the daily loss limit would be off: every slot waits instead.
        blockers.append(
            Blocker(key=day, field="realized_pnl_micros", problem=f"holds {day_raw[:80]!r}, not an integer")
        )
        day_pnl = 0
    journal_stats = next(it)
    primary_raw = next(it) if primary else None
    memo.turn()
    return Snapshot(
        lease_ok=lease_ok,
        control=control,
        refs=refs,
        slots=slots,
        opens=opens,
        recent=recent,
        feed=feed,
        open_positions=open_positions,
        open_intents=open_intents,
        totals=totals,
        day_pnl_micros=day_pnl,
        problems=problems,
        blockers=blockers,
        handover=handover,
        journal_stats=journal_stats,
        primary_id=primary_id(primary_raw),
        _closes=closes,
        candle_gens={a: g for a in recent if (g := cache.gen(a)) is not None},
    )

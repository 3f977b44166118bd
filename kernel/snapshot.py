"""Everything one tick needs, read from Redis in one pipelined round trip.

The lease renewal rides in the same pipeline, so a tick costs one round trip before the
strategy runs, whatever the slot count. A value a limit or a decision depends on that cannot
be read (undecodable, out of range, a key of the wrong type) is never read as zero or dropped:
it becomes a `Blocker` naming it (kernel/blocking.py), and new entries wait, for its slot, its
asset or every slot, until it reads again. Other unreadable values are problems; none raises.

The slot refs (kernel/slot_list.py) and the decoding helpers (kernel/decoding.py) are
importable from here too, where they lived first.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import ResponseError

from baton.errors import SnapshotError
from baton.settings import CANDLE_INTERVAL
from kernel import journal_guard
from kernel.candle_cache import CandleCache
from kernel.candle_read import last_minute, queue_candles_read, since_per_asset
from kernel.decoding import DecodeMemo as DecodeMemo
from kernel.decoding import cannot_decode as cannot_decode
from kernel.decoding import decode_reported as decode_reported
from kernel.decoding import int64 as int64
from kernel.decoding import intent_problem as intent_problem
from kernel.decoding import position_problem as position_problem
from kernel.lease import renew, renewed
from kernel.slot_list import SlotRef as SlotRef
from kernel.slot_list import SlotRefs as SlotRefs
from kernel.slot_list import slot_refs as slot_refs
from state.control import parse_control
from state.ledger import utc_day
from state.primary import primary_id, queue_primary_id
from state.store import Store
from state.structs import (
    CANDLE,
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
from state.structs import ENTRY_LEG as ENTRY_LEG

# The label of the primary's replication id in the snapshot's read (read_snapshot `primary`).
PRIMARY = "primary replication id"


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


def _find(candles: list[Candle], open_ms: int) -> Candle | None:
    """The candle opening at `open_ms` among recent ones (sorted, usually one per second)."""
    if candles:
        i = (open_ms - candles[0].open_ms) // 1000
        if 0 <= i < len(candles) and candles[i].open_ms == open_ms:
            return candles[i]
    return next((c for c in candles if c.open_ms == open_ms), None)


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

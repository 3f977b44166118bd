"""The dashboard's read model: the structs of what the page shows (`DashboardData`, the PnL
series) and how they are read from Redis in one pipeline each. The routes that serve them
are in api/dashboard.py; the live stream that pushes them is api/dashboard_stream.py.
"""

from __future__ import annotations

import asyncio

import msgspec

from api.context import ApiContext
from control import commands as c
from control.context import to_int
from control.views import control_view
from kernel.clock import wall_ms
from kernel.lease import Lease, decode_lease
from state.control import parse_control
from state.keys import Keys
from state.structs import POSITION, micros_to_usd

TICKS_SHOWN = 20
# The PnL chart has at most this many points; a longer ledger is thinned evenly.
PNL_POINTS_MAX = 1000


# --- what the page shows ------------------------------------------------------------------------
class LeaseView(msgspec.Struct, kw_only=True):
    color: str
    release: str
    epoch: int
    holder: str
    expires_ms: int
    # The lease has not expired: a worker holds it and trades (or is halted/paused).
    active: bool


class WorkerView(msgspec.Struct, kw_only=True):
    color: str
    # starting/checking/ready/active/handed-over/lost-lease/failed/stopped
    state: str
    release: str
    pid: int
    epoch: int
    last_tick: int
    heartbeat_ms: int
    # Why readiness failed, when it did.
    error: str


class TickView(msgspec.Struct, kw_only=True):
    id: str
    tick: int
    color: str
    epoch: int
    started_ms: int
    duration_ms: int
    jitter_ms: int
    missed_before: int
    orders: int
    errors: int
    halted: bool
    paused: bool


class PnlSummary(msgspec.Struct, kw_only=True):
    realized_usd: float
    cash_usd: float
    # Ledger entries booked so far: the page fetches GET /pnl again when this moves.
    ledger_entries: int


class DashboardData(msgspec.Struct, kw_only=True):
    """Everything the dashboard shows, read in one go."""

    # The server's clock: the page counts down to window ends and ages heartbeats with it,
    # whatever the browser's clock says.
    server_ms: int
    mode: str
    tick_ms: int
    # The lease as Redis holds it (null before any worker ever ran).
    lease: LeaseView | None
    control: c.ControlView
    workers: list[WorkerView]
    ticks_done: int
    ticks_missed: int
    # The newest journal entries, newest first.
    ticks: list[TickView]
    slots: list[c.SlotView]
    pnl: PnlSummary


class PnlPoint(msgspec.Struct, kw_only=True):
    at_ms: int
    # Realised PnL so far (cumulative) and what this settlement added.
    pnl_usd: float
    delta_usd: float
    ref: str


class PnlResult(msgspec.Struct, kw_only=True):
    # When the ledger stream starts (its first entry: the deposit, or after BATON_HISTORY_DAYS the
    # oldest entry kept, the chart then starting from the sums of what was trimmed).
    start_ms: int | None
    # Realised PnL after each settlement, oldest first (thinned to at most 1000 points).
    points: list[PnlPoint]
    realized_usd: float
    cash_usd: float
    deposits_usd: float
    ledger_entries: int
    # Positions opened (one per filled entry) in the history kept (BATON_HISTORY_DAYS), settled
    # ones, and how many of those won.
    trades: int
    open: int
    settled: int
    wins: int
    # wins / settled; null before the first settlement.
    win_rate: float | None


# --- reading Redis -----------------------------------------------------------------------------
def _tick_view(entry_id: str, f: dict[str, str]) -> TickView:
    return TickView(
        id=entry_id,
        tick=to_int(f.get("tick")),
        color=f.get("color", ""),
        epoch=to_int(f.get("epoch")),
        started_ms=to_int(f.get("started_ms")),
        duration_ms=to_int(f.get("duration_ms")),
        jitter_ms=to_int(f.get("jitter_ms")),
        missed_before=to_int(f.get("missed_before")),
        orders=to_int(f.get("orders")),
        errors=to_int(f.get("errors")),
        halted=f.get("halted") == "1",
        paused=f.get("paused") == "1",
    )


def _lease_view(lease: Lease | None, now_ms: int) -> LeaseView | None:
    if lease is None:
        return None
    return LeaseView(
        color=lease.color,
        release=lease.release,
        epoch=lease.epoch,
        holder=lease.holder,
        expires_ms=lease.expires_ms,
        active=lease.live(now_ms),
    )


def _worker_view(h: dict[str, str]) -> WorkerView:
    return WorkerView(
        color=h.get("color", ""),
        state=h.get("state", ""),
        release=h.get("release", ""),
        pid=to_int(h.get("pid")),
        epoch=to_int(h.get("epoch")),
        last_tick=to_int(h.get("last_tick")),
        heartbeat_ms=to_int(h.get("heartbeat_ms")),
        error=h.get("error", ""),
    )


async def snapshot(ctx: ApiContext) -> DashboardData:
    """One pipeline for the journal, lease, flags and heartbeats, beside the slot views of
    Ops (its own pipeline, in a thread), so that the page shows slots exactly as GET /slots does."""
    k = Keys(ctx.s.prefix)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.hgetall(k.lease())
    pipe.hgetall(k.control())
    pipe.hgetall(k.worker("blue"))
    pipe.hgetall(k.worker("green"))
    pipe.hgetall(k.stats())
    pipe.hgetall(k.ledger_totals())
    pipe.xrevrange(k.journal_ticks(), count=TICKS_SHOWN)
    (lease, control, blue, green, stats, totals, ticks), slots = await asyncio.gather(
        pipe.execute(), ctx.call(ctx.ops.slots)
    )
    now_ms = wall_ms()
    return DashboardData(
        server_ms=now_ms,
        mode=ctx.s.mode + (" (dry run)" if ctx.s.dry_run else ""),
        tick_ms=ctx.s.tick_ms,
        lease=_lease_view(decode_lease(lease), now_ms),
        control=control_view(parse_control(control)),
        workers=[_worker_view(h) for h in (blue, green) if h],
        ticks_done=to_int(stats.get("ticks_done")),
        ticks_missed=to_int(stats.get("ticks_missed")),
        ticks=[_tick_view(i, f) for i, f in ticks],
        slots=slots.slots,
        pnl=PnlSummary(
            realized_usd=micros_to_usd(to_int(totals.get("realized_pnl_micros"))),
            cash_usd=micros_to_usd(to_int(totals.get("cash_micros"))),
            ledger_entries=to_int(totals.get("entries")),
        ),
    )


async def pnl_series(ctx: ApiContext) -> PnlResult:
    k = Keys(ctx.s.prefix)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.xrange(k.ledger())
    pipe.hvals(k.positions())
    pipe.hgetall(k.ledger_totals())
    ledger, positions, totals = await pipe.execute()
    realized = cash = deposits = 0
    moves: list[tuple[int, int, int, str]] = []  # (at_ms, realised so far, delta, ref)
    for _id, f in ledger:
        amount, pnl = to_int(f.get("amount_micros")), to_int(f.get("pnl_micros"))
        cash += amount
        if f.get("kind") == "deposit":
            deposits += amount
        # Realised PnL moves at settlements only (a buy turns cash into a position).
        if pnl or f.get("kind") == "payout":
            realized += pnl
            moves.append((to_int(f.get("at_ms")), realized, pnl, f.get("ref", "")))

    # Entries past BATON_HISTORY_DAYS are trimmed from the stream (kernel/history.py); the
    # running totals still hold their sums. What the trimmed part adds up to (0 while nothing
    # is trimmed) is where the chart starts, and the figures end on the totals.
    def trimmed(name: str, in_stream: int) -> int:
        return to_int(totals[name]) - in_stream if name in totals else 0

    base = trimmed("realized_pnl_micros", realized)
    points = [
        PnlPoint(at_ms=at, pnl_usd=micros_to_usd(base + r), delta_usd=micros_to_usd(d), ref=ref)
        for at, r, d, ref in moves
    ]
    realized += base
    cash += trimmed("cash_micros", cash)
    deposits += trimmed("deposit_micros", deposits)
    entries = len(ledger) + max(0, trimmed("entries", len(ledger)))
    trades = opened = settled = wins = 0
    for raw in positions:
        try:
            p = POSITION.decode(raw)
        except msgspec.DecodeError:
            continue  # `baton status` reports unreadable positions; the chart shows the rest
        trades += 1
        opened += p.status == "open"
        if p.status == "settled":
            settled += 1
            wins += bool(p.won)
    return PnlResult(
        start_ms=to_int(ledger[0][1].get("at_ms")) if ledger else None,
        points=_thin(points, PNL_POINTS_MAX),
        realized_usd=micros_to_usd(realized),
        cash_usd=micros_to_usd(cash),
        deposits_usd=micros_to_usd(deposits),
        ledger_entries=entries,
        trades=trades,
        open=opened,
        settled=settled,
        wins=wins,
        win_rate=round(wins / settled, 4) if settled else None,
    )


def _thin(points: list[PnlPoint], most: int) -> list[PnlPoint]:
    """At most `most` points, evenly spaced, always keeping the last (the current PnL)."""
    if len(points) <= most:
        return points
    step = len(points) / most
    kept = [points[int(i * step)] for i in range(most - 1)]
    return [*kept, points[-1]]

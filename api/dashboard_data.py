"""The dashboard's read model: the structs of what the page shows (`DashboardData`, the PnL
series) and how they are read from Redis in one pipeline each. The routes that serve them
are in api/dashboard.py; the live stream that pushes them is api/dashboard_stream.py.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import msgspec

from api.context import ApiContext
from baton.errors import BadRequest
from control import commands as c
from control.context import to_int
from control.views import control_view
from kernel.clock import wall_ms
from kernel.lease import Lease, decode_lease
from state.control import parse_control
from state.counts import counts_from, queue_counts, read_counts_async
from state.keys import Keys
from state.structs import micros_to_usd

TICKS_SHOWN = 20
# The PnL chart has at most this many points; a longer page is thinned evenly.
PNL_POINTS_MAX = 1000
# GET /pnl reads this many ledger entries by default (a page, newest first), at most the max:
# what one request costs Redis, whatever the history kept.
PNL_ENTRIES = 2000
PNL_ENTRIES_MAX = 10_000


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
    # Faults (shown red) apart from outcomes: FOK/FAK orders the book could not fill are
    # `unfilled`, no error (TickRecord.unfilled); exit orders are also counted in `orders`.
    errors: int
    halted: bool
    paused: bool
    unfilled: int = 0
    exits: int = 0


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
    # Realised PnL before the page's first point (the chart of a page starts there).
    from_usd: float = 0.0
    # The cursor of the next (older) page: GET /pnl?cursor=<next>; null on the oldest page.
    next: str | None = None


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
        unfilled=to_int(f.get("unfilled")),
        exits=to_int(f.get("exits")),
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


class PnlQuery(msgspec.Struct, kw_only=True):
    limit: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=PNL_ENTRIES_MAX,
            description="Ledger entries read, newest first (a page; buys and deposits are not points)",
        ),
    ] = PNL_ENTRIES
    cursor: Annotated[
        str, msgspec.Meta(max_length=100, description="`next` of the page before: the page older than it")
    ] = ""


def _cursor(entry_id: str, realized_micros: int) -> str:
    # The realised PnL after the entry rides along, so that an older page needs no sum of
    # everything newer than it (only the chart's values depend on it).
    return f"{entry_id}~{realized_micros}"


def _parse_cursor(cursor: str) -> tuple[str, int]:
    entry_id, sep, micros = cursor.partition("~")
    ms, dash, seq = entry_id.partition("-")
    try:
        if not sep or not dash or not ms.isdigit() or not seq.isdigit():
            raise ValueError
        return entry_id, int(micros)
    except ValueError:
        raise BadRequest(f"bad cursor {cursor!r}: pass `next` of a /pnl answer as it is") from None


async def pnl_series(ctx: ApiContext, q: PnlQuery | None = None) -> PnlResult:
    """A page of the realised PnL series (the newest `limit` ledger entries, or those older than
    `cursor`), with the totals and trade counts of all the history kept, read in O(limit):
    the sums from the ledger totals, the counts from state/counts.py, never the whole stream
    or the positions hash (both grow with BATON_HISTORY_DAYS)."""
    q = q or PnlQuery()
    k = Keys(ctx.s.prefix)
    newest, top = ("+", None) if not q.cursor else _parse_cursor(q.cursor)
    # One transaction: the page, the totals and the counts are of the same moment.
    pipe = ctx.redis.pipeline(transaction=True)
    pipe.xrevrange(k.ledger(), max=newest if top is None else f"({newest}", count=q.limit + 1)
    pipe.hgetall(k.ledger_totals())
    pipe.xrange(k.ledger(), count=1)
    pipe.xlen(k.ledger())
    queue_counts(pipe, k)
    page, totals, first, stream_len, *count_replies = await pipe.execute()
    counts = counts_from(count_replies) or await read_counts_async(ctx.redis, k)
    more = len(page) > q.limit
    page = page[: q.limit]
    whole = not more and top is None  # the page is the whole stream
    sums = {"cash_micros": 0, "deposit_micros": 0, "realized_pnl_micros": 0}
    for _id, f in page:
        amount = to_int(f.get("amount_micros"))
        sums["cash_micros"] += amount
        sums["deposit_micros"] += amount if f.get("kind") == "deposit" else 0
        sums["realized_pnl_micros"] += to_int(f.get("pnl_micros"))

    # Entries past BATON_HISTORY_DAYS are trimmed from the stream (kernel/history.py); the
    # running totals still hold their sums, and the figures are the totals.
    def total(name: str) -> int:
        if name in totals:
            return to_int(totals[name])
        return sums[name] if whole else 0  # absent: nothing of the kind was ever booked

    # Realised PnL after each entry, newest first: from the total (or the cursor's value)
    # back, subtracting what each newer entry added.
    after = total("realized_pnl_micros") if top is None else top
    moves: list[tuple[int, int, int, str]] = []  # (at_ms, realised after it, delta, ref)
    for _id, f in page:
        pnl = to_int(f.get("pnl_micros"))
        # Realised PnL moves at settlements and sales by exits (a buy turns cash into a
        # position).
        if pnl or f.get("kind") in ("payout", "sell"):
            moves.append((to_int(f.get("at_ms")), after, pnl, f.get("ref", "")))
        after -= pnl
    points = [
        PnlPoint(at_ms=at, pnl_usd=micros_to_usd(r), delta_usd=micros_to_usd(d), ref=ref)
        for at, r, d, ref in reversed(moves)
    ]
    entries = to_int(stream_len)
    if "entries" in totals:
        entries = max(entries, to_int(totals["entries"]))
    return PnlResult(
        start_ms=to_int(first[0][1].get("at_ms")) if first else None,
        points=_thin(points, PNL_POINTS_MAX),
        realized_usd=micros_to_usd(total("realized_pnl_micros")),
        cash_usd=micros_to_usd(total("cash_micros")),
        deposits_usd=micros_to_usd(total("deposit_micros")),
        ledger_entries=entries,
        trades=counts.positions,
        open=counts.positions_open,
        settled=counts.positions_settled,
        wins=counts.positions_won,
        win_rate=round(counts.positions_won / counts.positions_settled, 4)
        if counts.positions_settled
        else None,
        from_usd=micros_to_usd(after),
        next=_cursor(page[-1][0], after) if more else None,
    )


def _thin(points: list[PnlPoint], most: int) -> list[PnlPoint]:
    """At most `most` points, evenly spaced, always keeping the last (the current PnL)."""
    if len(points) <= most:
        return points
    step = len(points) / most
    kept = [points[int(i * step)] for i in range(most - 1)]
    return [*kept, points[-1]]

"""The read model: `baton status` (one JSON object, read straight from Redis, the ground
truth), the control flags and the slots as the API and the CLI show them. Works whether or
not any worker is running."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from typing import Any

import msgspec
import redis

from baton.errors import Conflict, NotFound
from baton.settings import CANDLE_INTERVAL, Settings
from control import commands as c
from control import decisions
from control.context import Context, to_int
from control.running import published_from, queue_published, running, stack_settings
from kernel.clock import wall_ms
from kernel.lease import decode_lease
from kernel.settlement import queue_name
from kernel.windows import window_bounds
from state.blocked import decode_blocked
from state.control import parse_control
from state.counts import read_counts
from state.keys import Keys
from state.structs import (
    FEED_STATUS,
    POSITION,
    SLOT,
    Blocker,
    ControlFlags,
    feed_stale,
    micros_to_usd,
)


def _settlement(s: Settings, r: redis.Redis) -> dict[str, Any]:
    """The settle program's queue (rq's own keys) and its job counters."""
    q = queue_name(s.prefix)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(Keys(s.prefix).settle_stats())
    pipe.llen(f"rq:queue:{q}")
    pipe.zcard(f"rq:scheduled:{q}")
    pipe.zcard(f"rq:failed:{q}")
    stats, queued, retrying, failed = pipe.execute()
    return {
        "queued": to_int(queued),
        "retrying": to_int(retrying),
        "failed": to_int(failed),
        **{name: to_int(v) for name, v in stats.items()},
    }


def collect(s: Settings, r: redis.Redis) -> dict[str, Any]:
    k = Keys(s.prefix)
    now_ms = wall_ms()
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(k.lease())
    pipe.hgetall(k.stats())
    pipe.hgetall(k.control())
    pipe.hgetall(k.slots())
    pipe.hgetall(k.ledger_totals())
    pipe.hgetall(k.worker("blue"))
    pipe.hgetall(k.worker("green"))
    pipe.hgetall(k.feed_stats())
    pipe.get(k.schema_version())
    pipe.xrevrange(k.journal_ticks(), count=1)
    pipe.hgetall(k.reload())
    pipe.xrevrange(k.deploys(), count=1)
    pipe.hgetall(k.handover())
    pipe.hgetall(k.feed_status())
    pipe.hgetall(k.blocked())
    queue_published(k, pipe)  # last: the replies after the 15 above are theirs
    replies = pipe.execute()
    published = published_from(replies[15:])
    (
        lease_raw,
        stats,
        control,
        slots_raw,
        totals,
        blue,
        green,
        feed,
        schema,
        last,
        reload_raw,
        last_deploy,
        handover,
        feed_status,
        blocked_raw,
    ) = replies[:15]
    problems: list[str] = []
    blockers = decode_blocked(k.blocked(), blocked_raw)
    lease = decode_lease(lease_raw)
    active = None
    if lease is not None and lease.live(now_ms):
        active = {
            "color": lease.color,
            "release": lease.release,
            "epoch": lease.epoch,
            "holder": lease.holder,
        }
    # From here on, the settings are the running system's (as its programs published them).
    system = running(s, published, lease.color if active and lease else None, problems)
    s = system.settings
    slots = []
    seeded = set(s.slot_ids())
    for sid in sorted(slots_raw):
        try:
            sl = SLOT.decode(slots_raw[sid])
            slots.append(
                {
                    "id": sl.id,
                    "asset": sl.asset,
                    "timeframe": sl.timeframe,
                    "enabled": sl.enabled,
                    "stake_usd": sl.stake_usd,
                    "strategy": sl.strategy,
                    "params": dict(sl.params),
                    "configured": sid in seeded,
                }
            )
        except msgspec.DecodeError as e:
            problems.append(f"slot {sid}: {e}")
    # O(1) counters, not every intent and position ever kept (state/counts.py).
    counts = read_counts(r, k)
    problems += counts.problems
    market_data = market_data_view(s, feed_status, now_ms, problems)
    if s.redis_warning:
        problems.append(f"redis: {s.redis_warning}")
    halted_raw = control.get("halted", "0").lower()
    halted = halted_raw not in ("0", "false", "no", "off", "")
    paused = control.get("paused", "0").lower() not in ("0", "false", "no", "off", "")
    for sl_out in slots:
        sl_out["entries_blocked"] = entries_blocked(sl_out, market_data, halted, paused, blockers)
    latest = decisions.latest(r, k, [str(sl_out["id"]) for sl_out in slots], now_ms)
    for sl_out in slots:
        sl_out.update(decisions.status_fields(latest.get(str(sl_out["id"]))))
    last_tick = None
    if last:
        _id, f = last[0]
        last_tick = {
            name: (to_int(v) if name != "color" and name != "release" else v) for name, v in f.items()
        }
    return {
        "mode": s.mode + (" (dry run)" if s.dry_run else ""),
        "active": active,
        "schema_version": to_int(schema, 0) if schema else None,
        "ticks": {
            "done": to_int(stats.get("ticks_done")),
            "missed": to_int(stats.get("ticks_missed")),
            "last": last_tick,
            "tick_ms": s.tick_ms,
        },
        "halted": halted,
        "halt_reason": control.get("halt_reason", ""),
        "paused": paused,
        # Who changed the flags and when; what the halt's sweep of venue orders did.
        "control": {
            "seq": to_int(control.get("seq")),
            "halted_ms": to_int(control.get("halted_ms")) if halted else None,
            "halted_by": control.get("halted_by", "") if halted else "",
            "halt_cancel": control.get("halt_cancel", "") if halted else "",
            "pause_reason": control.get("pause_reason", "") if paused else "",
        },
        "slots": slots,
        "market_data": market_data,
        "positions": {
            "open": counts.open_hash,
            "settled": counts.positions_settled,
            "won": counts.positions_won,
            # Sold before resolution by exits (nothing settled).
            "closed": counts.positions_closed,
        },
        # What the venue charged on fills, and what exits sold for (net of their fees).
        "fees_usd": round(micros_to_usd(to_int(totals.get("fee_micros"))), 6),
        "sells_usd": round(micros_to_usd(to_int(totals.get("sell_micros"))), 6),
        "settlement": _settlement(s, r),
        "orders": counts.orders(),
        "pnl_usd": round(micros_to_usd(to_int(totals.get("realized_pnl_micros"))), 6),
        "cash_usd": round(micros_to_usd(to_int(totals.get("cash_micros"))), 6),
        "workers": [w for w in (blue, green) if w],
        "handovers": to_int(stats.get("handovers")),
        "handover": handover or None,
        "last_deploy": last_deploy[0][1] if last_deploy else None,
        # The last strategy reload: a refusal (and why) shows here until the next reload.
        "reload": reload_raw or None,
        "reloads": {"ok": to_int(stats.get("reloads_ok")), "refused": to_int(stats.get("reloads_refused"))},
        "feed": {name: to_int(v) for name, v in feed.items()},
        "system": {
            "settings": system.values,
            "published_by": system.sources,
            "programs": system.programs,
            "differs_from_shell": system.differs,
        },
        "endpoints": {
            "api": system.api_url,
            "dashboard": system.dashboard_url,
            "redis": s.redis_url_shown,
            "clob": s.clob_url,
            "gamma": s.gamma_url,
            "binance_ws": s.binance_ws_url,
            "binance_rest": s.binance_rest_url,
            "supervisor": f"unix://{s.supervisor_socket}",
            "logs": str(s.log_dir),
        },
        "problems": problems,
        # Unreadable values new entries wait on (kernel/blocking.py), as the active worker last
        # found them; each names its key (and field), what is wrong, and what it blocks.
        "blocked": [blocker_view(b) for b in blockers],
    }


def blocker_view(b: Blocker) -> dict[str, Any]:
    return {
        "key": b.key,
        "field": b.field,
        "problem": b.problem,
        "scope": b.scope,
        "since_ms": b.since_ms,
        "source": b.source,
    }


def status(ctx: Context) -> dict[str, Any]:
    with ctx.redis_errors():
        return collect(ctx.s, ctx.r)


def control_view(flags: ControlFlags) -> c.ControlView:
    return c.ControlView(
        halted=flags.halted,
        halt_reason=flags.halt_reason,
        halted_ms=flags.halted_ms,
        halted_by=flags.halted_by,
        paused=flags.paused,
        pause_reason=flags.pause_reason,
        seq=flags.seq,
        problems=list(flags.problems),
    )


def control(ctx: Context) -> c.ControlView:
    with ctx.redis_errors():
        return control_view(parse_control(ctx.r.hgetall(ctx.k.control())))


def slots(ctx: Context) -> c.SlotsResult:
    with ctx.redis_errors():
        return c.SlotsResult(slots=slot_views(ctx))


def slot(ctx: Context, slot_id: str) -> c.SlotView:
    with ctx.redis_errors():
        views = slot_views(ctx, only=slot_id)
    if not views:
        ids = slot_ids(ctx)
        if slot_id in ids:
            raise Conflict(f"slot {slot_id!r} holds an unreadable value in Redis (see baton status)")
        raise NotFound(f"no slot {slot_id!r}; slots are {', '.join(ids) or 'none'}")
    return views[0]


def slot_ids(ctx: Context) -> list[str]:
    return sorted(ctx.r.hkeys(ctx.k.slots()))


def slot_views(ctx: Context, only: str | None = None) -> list[c.SlotView]:
    now_ms = ctx.clock_ms()
    pipe = ctx.r.pipeline(transaction=False)
    if only is None:
        pipe.hgetall(ctx.k.slots())
    else:
        pipe.hmget(ctx.k.slots(), [only])
    pipe.hgetall(ctx.k.positions_open())
    pipe.hgetall(ctx.k.decisions())
    pipe.hgetall(ctx.k.control())
    pipe.hgetall(ctx.k.feed_status())
    pipe.hgetall(ctx.k.blocked())
    slots_raw, open_raw, decisions_raw, control_raw, feed_raw, blocked_raw = pipe.execute()
    blockers = decode_blocked(ctx.k.blocked(), blocked_raw)
    if only is not None:
        slots_raw = {only: slots_raw[0]} if slots_raw and slots_raw[0] is not None else {}
    flags = parse_control(control_raw)
    stack = stack_settings(ctx.s, ctx.r)  # the running system's assets, timeframes, staleness
    md = market_data_view(stack, feed_raw, now_ms, [])
    positions: dict[str, Any] = {}
    for raw in open_raw.values():
        with contextlib.suppress(msgspec.DecodeError):
            p = POSITION.decode(raw)
            positions[p.id] = p
    configured = set(stack.slot_ids())
    out = []
    for sid in sorted(slots_raw):
        try:
            slot = SLOT.decode(slots_raw[sid])
            start, end = window_bounds(now_ms, slot.timeframe)
        except (msgspec.DecodeError, ValueError):
            continue  # status reports unreadable slots; a view shows what can be read
        pos = positions.get(f"{sid}:{start}")
        decision = None
        if (d := decisions_raw.get(sid)) is not None:
            with contextlib.suppress(ValueError):
                decision = json.loads(d)
        blocked = entries_blocked(
            {"id": sid, "enabled": slot.enabled, "asset": slot.asset},
            md,
            flags.halted,
            flags.paused,
            blockers,
        )
        out.append(
            c.SlotView(
                id=sid,
                asset=slot.asset,
                timeframe=slot.timeframe,
                enabled=slot.enabled,
                stake_usd=slot.stake_usd,
                strategy=slot.strategy,
                params=dict(slot.params),
                configured=sid in configured,
                window_start_s=start,
                window_end_s=end,
                remaining_s=round(max(0.0, end - now_ms / 1000), 3),
                position=None
                if pos is None
                else c.PositionView(
                    id=pos.id,
                    side=pos.side,
                    shares=pos.shares_micros / 1e6,
                    cost_usd=micros_to_usd(pos.cost_micros),
                    status=pos.status,
                    pnl_usd=micros_to_usd(pos.pnl_micros + pos.exit_pnl_micros),
                    sold_shares=pos.sold_shares_micros / 1e6,
                    proceeds_usd=micros_to_usd(pos.proceeds_micros),
                    exits=pos.exits,
                ),
                last_decision=decision if isinstance(decision, dict) else None,
                entries_blocked="; ".join(blocked),
            )
        )
    decisions.annotate(ctx, out, now_ms)
    return out


def market_data_view(s: Settings, raw: dict[str, str], now_ms: int, problems: list[str]) -> dict[str, Any]:
    """Per asset, how old its candle data is and whether the kernel counts it as stale (then
    it opens no new position on that asset's slots: kernel/entries.py)."""
    suffix = f":{CANDLE_INTERVAL}"
    names = sorted(set(s.assets) | {f.removesuffix(suffix) for f in raw if f.endswith(suffix)})
    assets: dict[str, Any] = {}
    for a in names:
        fs = None
        if (value := raw.get(a + suffix)) is not None:
            try:
                fs = FEED_STATUS.decode(value)
            except msgspec.DecodeError as e:
                problems.append(f"feed status {a}: {e}")
        assets[a] = {
            "stale": feed_stale(fs, now_ms, s.stale_after_ms),
            "age_ms": now_ms - fs.updated_ms if fs else None,
            "updated_ms": fs.updated_ms if fs else None,
            "last_open_ms": fs.last_open_ms if fs else None,
            "last_close": fs.last_close if fs else None,
        }
    return {"interval": CANDLE_INTERVAL, "stale_after_ms": s.stale_after_ms, "assets": assets}


def entries_blocked(
    slot: dict[str, Any], md: dict[str, Any], halted: bool, paused: bool, blockers: Sequence[Blocker] = ()
) -> list[str]:
    """Why the kernel would open no new position on this slot now (empty: it may)."""
    why = [
        f"unreadable value: {b.key}" + (f" {b.field}" if b.field else "")
        for b in blockers
        if b.blocks(slot["id"], slot["asset"])
    ]
    if not slot["enabled"]:
        why.append("disabled")
    if halted:
        why.append("halted")
    if paused:
        why.append("paused")
    data = md["assets"].get(slot["asset"])
    if data is None or data["stale"]:
        age = data and data["age_ms"]
        why.append(
            f"stale data: {slot['asset']} "
            + ("never updated" if age is None else f"updated {age / 1000:.1f} s ago")
            + f" (limit {md['stale_after_ms'] / 1000:.1f} s)"
        )
    return why

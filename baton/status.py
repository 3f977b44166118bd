"""`baton status`: one JSON object, read straight from Redis (the ground truth) and, for the
process list, from supervisord. Works whether or not any worker is running."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import redis

from baton.settings import CANDLE_INTERVAL, Settings
from kernel.clock import wall_ms
from state.keys import Keys
from state.structs import FEED_STATUS, INTENT, POSITION, SLOT, feed_stale, micros_to_usd


def _int(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def _settlement(s: Settings, r: redis.Redis) -> dict[str, Any]:
    """The settle program's queue (rq's own keys) and its job counters."""
    from kernel.settlement import queue_name

    q = queue_name(s.prefix)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(Keys(s.prefix).settle_stats())
    pipe.llen(f"rq:queue:{q}")
    pipe.zcard(f"rq:scheduled:{q}")
    pipe.zcard(f"rq:failed:{q}")
    stats, queued, retrying, failed = pipe.execute()
    return {
        "queued": _int(queued),
        "retrying": _int(retrying),
        "failed": _int(failed),
        **{name: _int(v) for name, v in stats.items()},
    }


def collect(s: Settings, r: redis.Redis) -> dict[str, Any]:
    k = Keys(s.prefix)
    now_ms = wall_ms()
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(k.lease())
    pipe.hgetall(k.stats())
    pipe.hgetall(k.control())
    pipe.hgetall(k.slots())
    pipe.hgetall(k.positions())
    pipe.hlen(k.positions_open())
    pipe.hgetall(k.intents())
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
    (
        lease,
        stats,
        control,
        slots_raw,
        positions_raw,
        open_n,
        intents_raw,
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
    ) = pipe.execute()
    problems: list[str] = []
    active = None
    if lease and _int(lease.get("expires_ms")) > now_ms:
        active = {
            "color": lease.get("color"),
            "release": lease.get("release"),
            "epoch": _int(lease.get("epoch")),
            "holder": lease.get("holder"),
        }
    slots = []
    for sid in sorted(slots_raw):
        try:
            sl = SLOT.decode(slots_raw[sid])
            slots.append(
                {
                    "id": sl.id,
                    "asset": sl.asset,
                    "enabled": sl.enabled,
                    "stake_usd": sl.stake_usd,
                    "strategy": sl.strategy,
                    "configured": sid in s.slot_ids(),
                }
            )
        except msgspec.DecodeError as e:
            problems.append(f"slot {sid}: {e}")
    statuses: dict[str, int] = {}
    for raw in intents_raw.values():
        try:
            st = INTENT.decode(raw).status
            statuses[st] = statuses.get(st, 0) + 1
        except msgspec.DecodeError as e:
            problems.append(f"intent: {e}")
    settled = won = 0
    for raw in positions_raw.values():
        try:
            p = POSITION.decode(raw)
        except msgspec.DecodeError as e:
            problems.append(f"position: {e}")
            continue
        if p.status == "settled":
            settled += 1
            won += bool(p.won)
    market_data = market_data_view(s, feed_status, now_ms, problems)
    halted_raw = control.get("halted", "0").lower()
    halted = halted_raw not in ("0", "false", "no", "off", "")
    paused = control.get("paused", "0").lower() not in ("0", "false", "no", "off", "")
    for sl_out in slots:
        sl_out["entries_blocked"] = entries_blocked(sl_out, market_data, halted, paused)
    last_tick = None
    if last:
        _id, f = last[0]
        last_tick = {name: (_int(v) if name != "color" and name != "release" else v) for name, v in f.items()}
    return {
        "mode": s.mode + (" (dry run)" if s.dry_run else ""),
        "active": active,
        "schema_version": _int(schema, 0) if schema else None,
        "ticks": {
            "done": _int(stats.get("ticks_done")),
            "missed": _int(stats.get("ticks_missed")),
            "last": last_tick,
            "tick_ms": s.tick_ms,
        },
        "halted": halted,
        "halt_reason": control.get("halt_reason", ""),
        "paused": paused,
        # Who changed the flags and when; what the halt's sweep of venue orders did.
        "control": {
            "seq": _int(control.get("seq")),
            "halted_ms": _int(control.get("halted_ms")) if halted else None,
            "halted_by": control.get("halted_by", "") if halted else "",
            "halt_cancel": control.get("halt_cancel", "") if halted else "",
            "pause_reason": control.get("pause_reason", "") if paused else "",
        },
        "slots": slots,
        "market_data": market_data,
        "positions": {"open": _int(open_n), "settled": settled, "won": won},
        "settlement": _settlement(s, r),
        "orders": {"total": sum(v for st, v in statuses.items() if st != "committed"), **statuses},
        "pnl_usd": round(micros_to_usd(_int(totals.get("realized_pnl_micros"))), 6),
        "cash_usd": round(micros_to_usd(_int(totals.get("cash_micros"))), 6),
        "workers": [w for w in (blue, green) if w],
        "handovers": _int(stats.get("handovers")),
        "handover": handover or None,
        "last_deploy": last_deploy[0][1] if last_deploy else None,
        # The last strategy reload: a refusal (and why) shows here until the next reload.
        "reload": reload_raw or None,
        "reloads": {"ok": _int(stats.get("reloads_ok")), "refused": _int(stats.get("reloads_refused"))},
        "feed": {name: _int(v) for name, v in feed.items()},
        "endpoints": {
            "redis": s.redis_url_shown,
            "clob": s.clob_url,
            "gamma": s.gamma_url,
            "binance_ws": s.binance_ws_url,
            "binance_rest": s.binance_rest_url,
            "supervisor": f"unix://{s.supervisor_socket}",
            "logs": str(s.log_dir),
        },
        "problems": problems,
    }


_SETTLE_SHOWN = ("queued", "retrying", "failed", "settled", "runs")


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


def entries_blocked(slot: dict[str, Any], md: dict[str, Any], halted: bool, paused: bool) -> list[str]:
    """Why the kernel would open no new position on this slot now (empty: it may)."""
    why = []
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


def render(st: dict[str, Any]) -> str:
    a = st["active"]
    t = st["ticks"]
    last = t["last"] or {}
    lines = [
        f"mode       {st['mode']}",
        f"active     {a['color']} release={a['release']} epoch={a['epoch']}" if a else "active     none",
        f"ticks      done={t['done']} missed={t['missed']} last={last.get('tick', '-')} "
        f"(duration {last.get('duration_ms', '-')} ms, jitter {last.get('jitter_ms', '-')} ms)",
        f"control    halted={st['halted']}{' (' + st['halt_reason'] + ')' if st['halt_reason'] else ''}"
        f"{' by ' + st['control']['halted_by'] if st['control']['halted_by'] else ''} "
        f"paused={st['paused']}",
        f"slots      {sum(x['enabled'] for x in st['slots'])}/{len(st['slots'])} enabled",
        "data       "
        + (
            ", ".join(
                f"{a} "
                + ("never" if d["age_ms"] is None else f"{d['age_ms'] / 1000:.1f} s")
                + (" STALE" if d["stale"] else "")
                for a, d in st["market_data"]["assets"].items()
            )
            or "none"
        )
        + f" (stale after {st['market_data']['stale_after_ms'] / 1000:.1f} s)",
        f"positions  open={st['positions']['open']} settled={st['positions']['settled']} "
        f"won={st['positions']['won']}",
        "settlement "
        + " ".join(f"{name}={n}" for name, n in st["settlement"].items() if name in _SETTLE_SHOWN),
        f"orders     {json.dumps(st['orders'])}",
        f"money      cash={st['cash_usd']:.2f} USD  realised pnl={st['pnl_usd']:+.2f} USD",
        "workers    "
        + (
            ", ".join(f"{w.get('color')}:{w.get('state')}@{w.get('release')}" for w in st["workers"])
            or "none"
        ),
    ]
    lines += [
        f"blocked    {x['id']}: no new entries: {w}"
        for x in st["slots"]
        for w in x["entries_blocked"]
        if w.startswith("stale data")
    ]
    d = st.get("last_deploy")
    if d:
        lines.append(
            f"deploy     last {d.get('kind')} {d.get('result')}: {d.get('from_color') or '-'} -> "
            f"{d.get('color')} release={d.get('release')} tick={d.get('handover_tick', '-')} "
            f"missed={d.get('missed', '-')}"
        )
    rl = st.get("reload")
    if rl:
        lines.append(
            f"reload     last {rl.get('state')} ({rl.get('modules')}) on {rl.get('color')}"
            + (
                f": {rl.get('error', '').splitlines()[0] if rl.get('error') else ''}"
                if rl.get("state") != "ok"
                else ""
            )
        )
    lines += [f"{name:<10} {url}" for name, url in st["endpoints"].items()]
    lines += [f"problem    {p}" for p in st["problems"]]
    return "\n".join(lines)

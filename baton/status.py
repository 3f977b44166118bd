"""`baton status`: one JSON object, read straight from Redis (the ground truth) and, for the
process list, from supervisord. Works whether or not any worker is running."""

from __future__ import annotations

import json
import time
from typing import Any

import msgspec
import redis

from baton.settings import Settings
from state.keys import Keys
from state.structs import INTENT, POSITION, SLOT, micros_to_usd


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
    now_ms = int(time.time() * 1000)
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
    halted_raw = control.get("halted", "0").lower()
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
        "halted": halted_raw not in ("0", "false", "no", "off", ""),
        "halt_reason": control.get("halt_reason", ""),
        "paused": control.get("paused", "0").lower() not in ("0", "false", "no", "off", ""),
        "slots": slots,
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
            "redis": s.redis_url,
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


def render(st: dict[str, Any]) -> str:
    a = st["active"]
    t = st["ticks"]
    last = t["last"] or {}
    lines = [
        f"mode       {st['mode']}",
        f"active     {a['color']} release={a['release']} epoch={a['epoch']}" if a else "active     none",
        f"ticks      done={t['done']} missed={t['missed']} last={last.get('tick', '-')} "
        f"(duration {last.get('duration_ms', '-')} ms, jitter {last.get('jitter_ms', '-')} ms)",
        f"control    halted={st['halted']}{' (' + st['halt_reason'] + ')' if st['halt_reason'] else ''} "
        f"paused={st['paused']}",
        f"slots      {sum(x['enabled'] for x in st['slots'])}/{len(st['slots'])} enabled",
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

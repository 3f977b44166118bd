"""The control plane's answers as text for a terminal (what `baton` prints without --json):
the status object, the halt's answer, the slots table and the audit tail."""

from __future__ import annotations

import json
import time
from typing import Any

from control import commands as c

_SETTLE_SHOWN = ("queued", "retrying", "failed", "settled", "runs")


def status(st: dict[str, Any]) -> str:
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
        f"slots      {sum(x['enabled'] for x in st['slots'])}/{len(st['slots'])} enabled, "
        f"{sum(x.get('asleep_until_ms') is not None for x in st['slots'])} asleep "
        "(`baton slots`: until when and each one's last decision; `baton decisions`: the log)",
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
        f"won={st['positions']['won']} closed={st['positions'].get('closed', 0)}",
        "settlement "
        + " ".join(f"{name}={n}" for name, n in st["settlement"].items() if name in _SETTLE_SHOWN),
        f"orders     {json.dumps(st['orders'])}",
        f"money      cash={st['cash_usd']:.2f} USD  realised pnl={st['pnl_usd']:+.2f} USD  "
        f"sold by exits={st.get('sells_usd', 0.0):.2f} USD  fees={st.get('fees_usd', 0.0):.2f} USD",
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
    lines += [
        f"blocked    {b['scope']}: no new entries: {b['key']}{' ' + b['field'] if b['field'] else ''}: "
        f"{b['problem']}"
        for b in st.get("blocked", ())
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
    lines += _system(st)
    lines += [f"{name:<10} {url}" for name, url in st["endpoints"].items()]
    lines += [f"problem    {p}" for p in st["problems"]]
    return "\n".join(lines)


def _value(v: Any) -> str:
    return ",".join(map(str, v)) if isinstance(v, list) else str(v)


def _system(st: dict[str, Any]) -> list[str]:
    """The settings the stack runs with, and those this shell has differently."""
    sysv = st.get("system") or {}
    values = sysv.get("settings") or {}
    if not values:
        return ["settings   none published (no program has started): this shell's are shown"]
    shown = ", ".join(
        f"{name}={_value(v)}"
        for name, v in values.items()
        if name in ("tick_ms", "timeframes", "assets", "mode", "dry_run")
    )
    by = ", ".join(sorted(set((sysv.get("published_by") or {}).values())))
    lines = [f"settings   {shown} (as published by {by})"]
    lines += [
        f"differs    {name}: the stack has {_value(d['system'])}, this shell {_value(d['shell'])}"
        for name, d in (sysv.get("differs_from_shell") or {}).items()
    ]
    return lines


def halt(res: c.HaltResult) -> str:
    head = f"halted (seq {res.seq}): {res.control.halt_reason}"
    if res.acknowledged:
        worker = f"{res.worker} acknowledged in {res.ack_ms} ms: it posts no order any more"
    elif res.worker:
        worker = f"{res.worker} did NOT acknowledge; the flag stands and every order commit checks it"
    else:
        worker = "no active worker: the flag binds the next one to take the lease"
    lines = [head, f"worker   {worker}", f"orders   {res.cancel}", f"ledger   {res.flush}"]
    # What was wrong with the request, which halted anyway.
    lines += [f"warning  {w}" for w in res.warnings]
    return "\n".join([*lines, "resume with: baton resume"])


def audit(entries: list[c.AuditEntry]) -> str:
    if not entries:
        return "no control calls recorded yet"
    rows = [
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at_ms / 1000)),
            f"{e.source}:{e.who}",
            e.action + (f" {e.target}" if e.target else ""),
            f"{e.result} {e.status}",
            e.detail,
        ]
        for e in reversed(entries)  # oldest first, like a log
    ]
    return table(["at (UTC)", "by", "action", "result", "detail"], rows)


def countdown(seconds: float) -> str:
    m, sec = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _position(p: c.PositionView | None) -> str:
    if p is None:
        return "-"
    # Realised PnL: a settled or closed position's, or what an open one's exits realised.
    settled = f" pnl {p.pnl_usd:+.2f}" if p.status != "open" or p.exits else ""
    sold = f" (sold {p.sold_shares:g} in {p.exits})" if p.exits else ""
    return f"{p.side} {p.shares:g} sh ${p.cost_usd:.2f}{sold}{settled}"


def _decision(d: dict[str, Any] | None) -> str:
    if not d:
        return "-"
    what = f"{d['side']}@{d['price']}" if d.get("side") else str(d.get("reason") or "none")
    outcome = d.get("outcome")
    text = f"{what} {outcome}" if outcome else what
    return text if len(text) <= 32 else text[:31] + "…"


def _last(v: c.SlotView) -> str:
    """The newest evaluation from the decision log (a pass has its reason there), else the
    last decision the tick recorded."""
    e = v.last_log
    if e is None:
        return _decision(v.last_decision)
    what = e.action if e.action == "pass" else f"{e.action} {e.side}@{e.price:g}"
    text = " ".join(x for x in (what, e.outcome, f"({e.reason})" if e.reason else "") if x)
    return text if len(text) <= 48 else text[:47] + "…"


def _ends(v: c.SlotView) -> str:
    text = countdown(v.remaining_s)
    if v.asleep_until_ms is not None:
        text += time.strftime(" (asleep until %H:%M:%S UTC)", time.gmtime(v.asleep_until_ms / 1000))
    return text


def slots_table(slots: list[c.SlotView]) -> str:
    rows = [
        [
            v.id,
            "yes" if v.enabled else "no",
            f"{v.stake_usd:g}",
            v.strategy + ("" if not v.params else " " + ",".join(f"{k}={x:g}" for k, x in v.params.items())),
            _ends(v),
            _position(v.position),
            _last(v),
            v.entries_blocked or "-",
        ]
        for v in slots
    ]
    head = ["slot", "enabled", "stake", "strategy", "window ends in", "position", "last decision", "blocked"]
    return table(head, rows)


def table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    # The last column is not padded: it is free text (a reason) and may be long.
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r[:-1], widths, strict=False)) + "  " + r[-1]
        for r in [head, *rows]
    )

"""The chaos harness's fault catalogue: what each fault is, how it is injected, how long its
effect may last, whether it may cost ticks, and what it tests; plus the seeded schedule.

Each fault runs to completion in `inject(ctx, rnd)`: it injects, waits for the system to show
it has recovered (a tick journaled after the fault, a new lease holder, a feed reconnect...)
and returns an `Outcome`. The harness stamps the start and end wall times around it and writes
the record to its fault log, which the checker (tests/chaos/checker.py) uses to attribute
every missed tick and to know when trading had to be halted.

Two lanes run side by side:
- `main`: faults that may cost ticks or change what trading may do (deploys, kills, stops,
  Redis restarts, venue latency and errors, halts, garbage in control keys). They run one at
  a time, so a missed tick is attributable to exactly one of them.
- `background`: faults that must cost no tick at all (feed kills, socket drops, garbage
  frames, garbage control requests). They overlap the main lane freely: a missed tick that
  only they could explain is unattributed, i.e. a broken invariant.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from baton.settings import load
from state import connection

MAIN = "main"
BACKGROUND = "background"


@dataclass
class Outcome:
    details: dict[str, Any] = field(default_factory=dict)
    recovered: bool = True  # the system showed it was back within the fault's max_effect_s
    problems: list[str] = field(default_factory=list)  # broken invariants found while injecting
    notes: list[str] = field(default_factory=list)  # worth reporting, not a broken invariant
    # When the fault itself began, if the injector first waited for a moment (a tick boundary,
    # the tick that posts entries): the effect window, which missed ticks are attributed to,
    # opens here and not at the wait.
    injected_ms: int | None = None


@dataclass(frozen=True)
class FaultKind:
    name: str
    lane: str
    costs_ticks: bool  # may a tick be missed while its effect lasts?
    expected_missed: str  # what one injection should cost, for people
    max_effect_s: float  # recovery must be seen within this (else: a broken invariant)
    grace_s: float  # missed ticks may still be attributed this long after its end
    tests: str
    inject: Callable[[Any, random.Random], Outcome]
    weight: float = 1.0  # how often it is drawn after the first pass, relative to its lane


# --- helpers -----------------------------------------------------------------------------------


def _sleep_until_ms(ctx: Any, at_ms: float) -> None:
    delay = (at_ms - ctx.now_ms()) / 1000
    if delay > 0:
        time.sleep(delay)


def _at_tick_offset(ctx: Any, rnd: random.Random) -> float:
    """Half the time just inside a tick (its first tens of ms: reading, committing, posting),
    else anywhere in the period; returns the offset after the boundary, in ms."""
    t = ctx.tick_ms
    now = ctx.now_ms()
    boundary = (now // t + 1) * t
    offset = rnd.uniform(0, 40) if rnd.random() < 0.5 else rnd.uniform(0, t)
    _sleep_until_ms(ctx, boundary + offset)
    return offset


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    return None


def _tail(text: str, n: int = 600) -> str:
    return text.strip()[-n:]


# --- main lane -------------------------------------------------------------------------------


def _handover(ctx: Any, args: list[str], kind: str) -> Outcome:
    out = Outcome()
    before = ctx.now_ms()
    res = ctx.st.baton(*args, "--json", timeout_s=240)
    got = _last_json_line(res.stdout) if res.returncode == 0 else None
    if got is None:
        # A refused deploy is the runtime doing its job (the old worker trades on), but it is
        # reported: a chaos run where deploys never happen tests less than it claims.
        out.details = {"ok": False, "rc": res.returncode, "error": _tail(res.stderr or res.stdout)}
        out.notes.append(f"{kind} refused: {_tail(res.stderr or res.stdout, 200)}")
    else:
        out.details = {"ok": True, **got}
        if got.get("missed"):
            out.problems.append(
                f"{kind} to {got.get('color')} missed {got['missed']} tick(s) at its handover "
                f"(tick {got.get('handover_tick')})"
            )
    ctx.deploys_done += 1
    seen = ctx.wait_tick_after(max(before, ctx.now_ms()), 30)
    out.recovered = seen is not None
    return out


def inject_deploy(ctx: Any, rnd: random.Random) -> Outcome:
    # Two source trees that differ by a comment: consecutive deploys are different releases,
    # so a rollback really goes back to other code.
    src = ctx.sources[ctx.deploys_done % len(ctx.sources)]
    return _handover(ctx, ["deploy", "--source", str(src)], "deploy")


def inject_rollback(ctx: Any, rnd: random.Random) -> Outcome:
    return _handover(ctx, ["rollback"], "rollback")


def inject_kill_worker(ctx: Any, rnd: random.Random) -> Outcome:
    out = Outcome()
    active = ctx.active()
    if active is None:
        out.notes.append("no active worker to kill")
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    color, pid, epoch = active
    offset = _at_tick_offset(ctx, rnd)
    killed_ms = out.injected_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    seen = ctx.wait_tick_after(killed_ms, 30, lambda e: int(e["epoch"]) > epoch)
    out.details = {
        "color": color,
        "pid": pid,
        "epoch": epoch,
        "offset_ms": round(offset, 1),
        "new_epoch": int(seen["epoch"]) if seen else None,
        "new_color": seen["color"] if seen else None,
        "first_tick_after": int(seen["tick"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def inject_stop_worker(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGSTOP the active worker for 1-3.5 ticks (past its lease when over 3), then SIGCONT."""
    out = Outcome()
    active = ctx.active()
    if active is None:
        out.notes.append("no active worker to stop")
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    color, pid, epoch = active
    hold_ms = rnd.uniform(1.0, 3.5) * ctx.tick_ms
    offset = _at_tick_offset(ctx, rnd)
    out.injected_ms = ctx.now_ms()
    os.kill(pid, signal.SIGSTOP)
    stopped_ms = ctx.now_ms()
    try:
        time.sleep(hold_ms / 1000)
    finally:
        os.kill(pid, signal.SIGCONT)
    cont_ms = ctx.now_ms()
    seen = ctx.wait_tick_after(cont_ms, 30)
    out.details = {
        "color": color,
        "pid": pid,
        "epoch": epoch,
        "offset_ms": round(offset, 1),
        "stopped_ms": stopped_ms,
        "cont_ms": cont_ms,
        "held_ms": cont_ms - stopped_ms,
        "epoch_after": int(seen["epoch"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def _redis_back(ctx: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if ctx.st.redis.ping():
                return True
        time.sleep(0.1)
    return False


def inject_redis_restart(ctx: Any, rnd: random.Random) -> Outcome:
    """A clean restart of the embedded Redis (SIGTERM: it writes its AOF and exits), down for
    0.5-2 s, then started again: every program must reconnect and lose nothing."""
    out = Outcome()
    down_s = rnd.uniform(0.5, 2.0)
    t0 = ctx.now_ms()
    ctx.st.supervisor("stopProcess", "redis", True)
    stopped_ms = ctx.now_ms()
    time.sleep(down_s)
    ctx.st.supervisor("startProcess", "redis", True)
    started_ms = ctx.now_ms()
    back = _redis_back(ctx, 30)
    seen = ctx.wait_tick_after(started_ms, 45) if back else None
    out.details = {
        "stop_took_ms": stopped_ms - t0,
        "down_ms": started_ms - stopped_ms,
        "redis_back": back,
        "first_tick_after": int(seen["tick"]) if seen else None,
    }
    out.recovered = seen is not None
    return out


def inject_redis_kill(ctx: Any, rnd: random.Random) -> Outcome:
    """SIGKILL of redis-server; supervisor restarts it at once from its AOF. Every write was
    handed to the kernel before its reply (appendfsync everysec only delays the fsync), so a
    killed process loses nothing; only a crash of the machine could lose the last second."""
    out = Outcome()
    pid = int(ctx.st.supervisor("getProcessInfo", "redis")["pid"])
    killed_ms = ctx.now_ms()
    os.kill(pid, signal.SIGKILL)
    back = _redis_back(ctx, 30)
    seen = ctx.wait_tick_after(ctx.now_ms(), 45) if back else None
    out.details = {"pid": pid, "killed_ms": killed_ms, "redis_back": back}
    out.recovered = seen is not None
    return out


def _sim_faults(ctx: Any, base: str, body: Any) -> None:
    url = f"{base}/_sim/faults"
    if body is None:
        httpx.delete(url, timeout=10).raise_for_status()
    else:
        httpx.post(url, json=body, timeout=10).raise_for_status()


def _sim_counters(base: str) -> list[dict[str, Any]]:
    with contextlib.suppress(Exception):
        got = httpx.get(f"{base}/_sim/faults", timeout=10).json()
        rules = got.get("rules", got) if isinstance(got, dict) else got
        return [
            {k: r.get(k) for k in ("method", "path", "matched", "errors", "drops")}
            for r in rules
            if isinstance(r, dict)
        ]
    return []


def _with_sim_rules(
    ctx: Any, rnd: random.Random, clob: list[dict[str, Any]], binance: list[dict[str, Any]], hold_s: float
) -> Outcome:
    out = Outcome()
    seed = rnd.randrange(1 << 30)
    out.injected_ms = ctx.now_ms()
    try:
        _sim_faults(ctx, ctx.st.clob_url, {"seed": seed, "rules": clob})
        _sim_faults(ctx, ctx.binance_url, {"seed": seed, "rules": binance})
        time.sleep(hold_s)
        counters = {"clob": _sim_counters(ctx.st.clob_url), "binance": _sim_counters(ctx.binance_url)}
    finally:
        _sim_faults(ctx, ctx.st.clob_url, None)
        _sim_faults(ctx, ctx.binance_url, None)
    cleared = ctx.now_ms()
    out.details = {"hold_s": round(hold_s, 2), "rules": clob + binance, "counters": counters}
    out.recovered = ctx.wait_tick_after(cleared, 30) is not None
    return out


def _before_entry(ctx: Any, rnd: random.Random) -> None:
    """Wait until 0.3-1.5 s before the boundary of the next tick that posts a window's entries
    (snipe enters with a third of the window left), so that venue faults meet real posts."""
    w, t = ctx.window_ms, ctx.tick_ms
    now = ctx.now_ms()
    entry = now - now % w + (w * 2 // 3) // t * t
    at = entry - rnd.uniform(300, 1500)
    if at < now:
        at += w
    _sleep_until_ms(ctx, at)


def inject_sim_latency(ctx: Any, rnd: random.Random) -> Outcome:
    """Latency spikes on the venue's order, book, lookup and kline endpoints; the worst ones
    exceed a tick, so ticks overrun (and are counted as missed) while they last."""
    hi = rnd.choice([300, 800, 1500, 2500])
    lat = [hi // 4, hi]
    clob = [
        {"method": "POST", "path": "/order", "latency_ms": lat},
        {"method": "GET", "path": "/book", "latency_ms": lat},
        {"method": "GET", "path": "/data/order/*", "latency_ms": lat},
        {"method": "GET", "path": "/markets/*", "latency_ms": lat},
    ]
    binance = [{"method": "GET", "path": "/api/v3/klines", "latency_ms": lat}]
    hold_s = rnd.uniform(2.0, 6.0)
    if rnd.random() < 0.5:
        _before_entry(ctx, rnd)
    return _with_sim_rules(ctx, rnd, clob, binance, hold_s)


def inject_sim_errors(ctx: Any, rnd: random.Random) -> Outcome:
    """Error answers and lost answers from the venue. With phase=after an order *is* placed
    and its answer replaced or lost: reconciliation by order id must book it exactly once."""
    phase = rnd.choice(["before", "after"])
    status = rnd.choice([500, 502, 503, 429])
    clob = [
        {
            "method": "POST",
            "path": "/order",
            "error_rate": 0.4,
            "drop_rate": 0.2,
            "status": status,
            "phase": phase,
        },
        {"method": "GET", "path": "/data/order/*", "error_rate": 0.5, "status": 500},
        {"method": "GET", "path": "/book", "error_rate": 0.3, "status": 503},
        {"method": "GET", "path": "/markets/*", "error_rate": 0.5, "status": 500},
        {"method": "DELETE", "path": "/cancel-all", "error_rate": 0.5, "status": 500},
    ]
    binance = [
        {
            "method": "GET",
            "path": "/api/v3/klines",
            "error_rate": 0.5,
            "status": 429,
            "body": {"code": -1003, "msg": "Too many requests."},
        }
    ]
    hold_s = rnd.uniform(3.0, 8.0)
    _before_entry(ctx, rnd)
    return _with_sim_rules(ctx, rnd, clob, binance, hold_s)


def _entry_moment(ctx: Any, rnd: random.Random) -> str:
    """Half the halts race the tick that posts a window's entries (snipe enters with a third
    of the window left), just after its boundary; the others land anywhere."""
    if rnd.random() < 0.5:
        return "random"
    w, t = ctx.window_ms, ctx.tick_ms
    now = ctx.now_ms()
    at = now - now % w + (w * 2 // 3) // t * t + rnd.uniform(1, 30)
    if at < now + 200:
        at += w
    _sleep_until_ms(ctx, at)
    return "posting"


def inject_halt(ctx: Any, rnd: random.Random) -> Outcome:
    """POST /halt over HTTP, hold it 1.5-4 s, POST /resume. After the acknowledgement no
    order may reach the venue until the resume (checked from the sim's order list, whose
    times are whole seconds: a hold under a second could not be judged)."""
    out = Outcome()
    moment = _entry_moment(ctx, rnd)
    hold_s = rnd.uniform(1.5, 4.0)
    sent_ms = out.injected_ms = ctx.now_ms()
    resp = ctx.api.post("/halt", json={"reason": f"chaos halt {ctx.seq}"})
    answered_ms = ctx.now_ms()
    if resp.status_code != 200:
        out.problems.append(f"POST /halt answered {resp.status_code}: {resp.text[:200]}")
        out.details = {"moment": moment, "sent_ms": sent_ms, "status": resp.status_code}
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    res = resp.json()
    if not res.get("acknowledged"):
        # The active worker hears a halt within milliseconds; unacknowledged, nobody knows
        # when the last order went out.
        out.problems.append(f"the halt was not acknowledged: {str(res.get('cancel'))[:200]}")
    time.sleep(hold_s)
    resume_sent_ms = ctx.now_ms()
    rr = ctx.api.post("/resume", json={})
    resumed_ms = ctx.now_ms()
    if rr.status_code != 200:
        out.problems.append(f"POST /resume after a halt answered {rr.status_code}: {rr.text[:200]}")
    out.details = {
        "moment": moment,
        "sent_ms": sent_ms,
        "answered_ms": answered_ms,
        "seq": res.get("seq"),
        "halted_ms": res["control"]["halted_ms"],
        "acknowledged": res.get("acknowledged"),
        "ack_ms": res.get("ack_ms"),
        "worker": res.get("worker"),
        "cancel": str(res.get("cancel"))[:200],
        "resume_sent_ms": resume_sent_ms,
        "resumed_ms": resumed_ms,
        "resume_status": rr.status_code,
    }
    seen = ctx.wait_tick_after(resumed_ms, 30, lambda e: e.get("halted") == "0")
    out.recovered = seen is not None
    return out


# Values that are neither a clear "set" nor a clear "unset" (state/control.py): they must be
# treated as set. The last ones are not even UTF-8.
GARBAGE_FLAGS: list[str | bytes] = [
    "banana",
    "2",
    "-1",
    "nan",
    "yes please",
    '{"x": 1}',
    "1e9",
    b"\xff\xfe\x00",
]
GARBAGE_NUMBERS: list[str | bytes] = ["banana", "1.5", "", "-", "9" * 40, b"\xff\xfe\x00"]


def _raw_redis(ctx: Any) -> Any:
    return connection.client(load(ctx.st.env), timeout_s=connection.BLOCKING, decoded=False)


def inject_garbage_keys(ctx: Any, rnd: random.Random) -> Outcome:
    """Garbage written with HSET into `baton:control` (a flag, or a counter the halt itself
    bumps) or into one slot's value in `baton:slots`. A garbage flag must fail safe (halted or
    paused until an operator resumes); a garbage counter must not stop a halt; a garbage slot
    must stop that slot only."""
    out = Outcome()
    variant = rnd.choice(["halted", "paused", "counter", "slot"])
    raw = _raw_redis(ctx)
    ctrl = "baton:control"
    try:
        if variant in ("halted", "paused"):
            value = rnd.choice(GARBAGE_FLAGS)
            before = ctx.now_ms()
            raw.hset(ctrl, variant, value)
            written_ms = ctx.now_ms()
            # Obeyed: a tick that starts after the write journals the flag as set.
            obeyed = ctx.wait_tick_after(written_ms + ctx.tick_ms, 15, lambda e, v=variant: e.get(v) == "1")
            # Long enough to judge: orders are checked from two ticks and a second after the write.
            time.sleep(rnd.uniform(2.0, 5.0))
            cleanup_sent_ms = ctx.now_ms()
            rr = ctx.api.post("/resume", json={})
            resume_status = rr.status_code
            if rr.status_code != 200:
                out.problems.append(
                    f"POST /resume with {variant}={value!r} answered {rr.status_code}: {rr.text[:200]}"
                )
                # The operator's repair: a readable value (still "set"), then the resume again.
                raw.hset(ctrl, variant, "1")
                cleanup_sent_ms = ctx.now_ms()
                resume_status = ctx.api.post("/resume", json={}).status_code
            cleaned_ms = ctx.now_ms()
            if obeyed is None:
                out.problems.append(f"{variant}={value!r} was not treated as set by the worker")
            out.details = {
                "variant": variant,
                "field": variant,
                "value": repr(value),
                "before_ms": before,
                "written_ms": written_ms,
                "obeyed": obeyed is not None,
                "cleanup_sent_ms": cleanup_sent_ms,
                "cleaned_ms": cleaned_ms,
                "resume_status": resume_status,
            }
            seen = ctx.wait_tick_after(cleaned_ms, 30, lambda e, v=variant: e.get(v) == "0")
            out.recovered = seen is not None
        elif variant == "counter":
            name = rnd.choice(["seq", "halt_seq", "halted_ms", "reload_seq"])
            value = rnd.choice(GARBAGE_NUMBERS)
            old = raw.hget(ctrl, name)
            raw.hset(ctrl, name, value)
            written_ms = ctx.now_ms()
            time.sleep(rnd.uniform(0.5, 1.5))
            # A halt must still work, whatever a counter holds.
            sent_ms = ctx.now_ms()
            resp = ctx.api.post("/halt", json={"reason": f"chaos halt over garbage {name}"})
            answered_ms = ctx.now_ms()
            details: dict[str, Any] = {
                "variant": variant,
                "field": name,
                "value": repr(value),
                "written_ms": written_ms,
                "halt_sent_ms": sent_ms,
                "halt_status": resp.status_code,
            }
            if resp.status_code != 200:
                out.problems.append(
                    f"a halt failed with {name}={value!r} in baton:control: "
                    f"{resp.status_code} {resp.text[:200]}"
                )
                if raw.hget(ctrl, "halted") == b"1":
                    # The answer says it failed, yet the flag is set: the halt stands, unacknowledged.
                    details.update(halted_ms=sent_ms, acknowledged=False, ack_ms=None, set_anyway=True)
            else:
                res = resp.json()
                details.update(
                    halted_ms=res["control"]["halted_ms"],
                    acknowledged=res.get("acknowledged"),
                    ack_ms=res.get("ack_ms"),
                    answered_ms=answered_ms,
                )
                if not res.get("acknowledged"):
                    why = str(res.get("cancel"))[:200]
                    out.problems.append(f"a halt with {name}={value!r} was not acknowledged: {why}")
            time.sleep(rnd.uniform(0.3, 1.0))
            details["resume_sent_ms"] = ctx.now_ms()
            rr = ctx.api.post("/resume", json={})
            details["resume_status"] = rr.status_code
            if rr.status_code != 200 and raw.hget(ctrl, "halted") not in (None, b"0"):
                out.problems.append(f"resume failed with {name}={value!r}: {rr.status_code} {rr.text[:200]}")
            # The operator's repair: a whole number back in the counter (above what it held, so
            # that acknowledgement lists of earlier sequence numbers are never reused) ...
            now = raw.hget(ctrl, name)
            if now is not None and not now.isdigit():
                details["left_in_counter"] = repr(now)
                base = int(old) if old is not None and old.isdigit() else 0
                with contextlib.suppress(ValueError, OverflowError):
                    base = max(base, min(int(float(now)), 1 << 40))
                raw.hset(ctrl, name, str(base + 1))
            # ... and the resume again.
            if raw.hget(ctrl, "halted") not in (None, b"0"):
                details["resume_sent_ms"] = ctx.now_ms()
                again = ctx.api.post("/resume", json={})
                details["resume_again_status"] = again.status_code
                if again.status_code != 200:
                    out.problems.append(f"resume failed after the counter was repaired: {again.status_code}")
            details["resumed_ms"] = ctx.now_ms()
            out.details = details
            seen = ctx.wait_tick_after(details["resumed_ms"], 30, lambda e: e.get("halted") == "0")
            out.recovered = seen is not None
        else:
            slots = raw.hkeys("baton:slots")
            slot = rnd.choice(sorted(slots)) if slots else b"btc-15s"
            old = raw.hget("baton:slots", slot)
            value = rnd.choice([b"banana", b'{"id": 7}', b"\xff\xfe", b"[]"])
            raw.hset("baton:slots", slot, value)
            written_ms = ctx.now_ms()
            # The worker ticks on: garbage in one slot is that slot's problem.
            ticked = ctx.wait_tick_after(written_ms + ctx.tick_ms, 15)
            time.sleep(rnd.uniform(1.0, 3.0))
            if old is None:
                raw.hdel("baton:slots", slot)
            else:
                raw.hset("baton:slots", slot, old)
            restored_ms = ctx.now_ms()
            if ticked is None:
                out.problems.append(f"no tick after garbage {value!r} in slot {slot!r}")
            out.details = {
                "variant": variant,
                "field": slot.decode(errors="replace"),
                "value": repr(value),
                "written_ms": written_ms,
                "restored_ms": restored_ms,
            }
            out.recovered = ctx.wait_tick_after(restored_ms, 30) is not None
    finally:
        raw.close()
    return out


# --- background lane -----------------------------------------------------------------------------


def _feed_stats(ctx: Any) -> dict[str, str]:
    return ctx.retry(lambda: ctx.st.redis.hgetall("baton:feed:stats"), {}) or {}


def _feed_updated_after(ctx: Any, after_ms: int, timeout_s: float) -> bool:
    def fresh() -> bool:
        status = ctx.retry(lambda: ctx.st.redis.hgetall("baton:feed:status"), {}) or {}
        for v in status.values():
            with contextlib.suppress(ValueError, TypeError, KeyError):
                if int(json.loads(v)["updated_ms"]) > after_ms:
                    return True
        return False

    return ctx.poll(fresh, timeout_s)


def inject_kill_feed(ctx: Any, rnd: random.Random) -> Outcome:
    out = Outcome()
    pid = int(ctx.st.supervisor("getProcessInfo", "feed")["pid"])
    killed_ms = ctx.now_ms()
    if pid:
        os.kill(pid, signal.SIGKILL)
    back = ctx.poll(
        lambda: (
            (i := ctx.st.supervisor("getProcessInfo", "feed"))["statename"] == "RUNNING" and i["pid"] != pid
        ),
        30,
    )
    fresh = _feed_updated_after(ctx, killed_ms, 30)
    out.details = {"pid": pid, "restarted": back, "candles_after": fresh}
    out.recovered = back and fresh
    return out


def inject_socket_drop(ctx: Any, rnd: random.Random) -> Outcome:
    out = Outcome()
    refuse_ms = rnd.choice([0, 500, 2000, 4000])
    before = int(_feed_stats(ctx).get("reconnects", 0) or 0)
    t0 = ctx.now_ms()
    resp = httpx.post(f"{ctx.binance_url}/_sim/binance/drop", params={"refuse_ms": refuse_ms}, timeout=10)
    dropped = resp.json().get("dropped") if resp.status_code == 200 else None
    reconnected = ctx.poll(lambda: int(_feed_stats(ctx).get("reconnects", 0) or 0) > before, 30)
    fresh = _feed_updated_after(ctx, t0 + refuse_ms, 30)
    out.details = {"refuse_ms": refuse_ms, "dropped": dropped, "reconnected": reconnected}
    out.recovered = reconnected and fresh
    return out


def garbage_frames(rnd: random.Random) -> list[str | bytes]:
    kline = {
        "t": 0,
        "T": 999,
        "s": "BTCUSDT",
        "i": "1s",
        "o": "100",
        "c": "101",
        "h": "99",  # high below open and close: inconsistent
        "l": "98",
        "v": "1",
        "x": True,
    }
    zkline = {**kline, "s": "ZZZUSDT"}
    frames: list[str | bytes] = [
        "not json at all",
        "{",
        "[]",
        "null",
        '{"stream": "btcusdt@kline_1s"}',
        '{"stream": "btcusdt@kline_1s", "data": {"e": "kline", "s": "BTCUSDT", "k": "banana"}}',
        json.dumps({"stream": "zzzusdt@kline_1s", "data": {"e": "kline", "s": "ZZZUSDT", "k": zkline}}),
        json.dumps({"stream": "btcusdt@kline_1s", "data": {"e": "kline", "s": "BTCUSDT", "k": kline}}),
        b"\x00\xff\xfe binary junk",
        "x" * 70_000,
    ]
    return rnd.sample(frames, rnd.randint(3, len(frames)))


def inject_garbage_frames(ctx: Any, rnd: random.Random) -> Outcome:
    """Malformed frames pushed into the feed's live WebSocket (through the harness's proxy):
    each must be counted as a bad frame and skipped, the connection and the feed kept."""
    out = Outcome()
    frames = garbage_frames(rnd)
    pid = int(ctx.st.supervisor("getProcessInfo", "feed")["pid"])
    before = int(_feed_stats(ctx).get("bad_frames", 0) or 0)
    t0 = ctx.now_ms()
    delivered = ctx.proxy.inject(frames)
    counted = ctx.poll(lambda: int(_feed_stats(ctx).get("bad_frames", 0) or 0) - before >= delivered, 15)
    after = int(_feed_stats(ctx).get("bad_frames", 0) or 0)
    pid_after = int(ctx.st.supervisor("getProcessInfo", "feed")["pid"])
    fresh = _feed_updated_after(ctx, t0, 20)
    out.details = {
        "frames": len(frames),
        "delivered": delivered,
        "bad_frames_counted": after - before,
        "feed_pid_kept": pid_after == pid,
    }
    if delivered and not counted:
        out.notes.append(f"{delivered} garbage frames delivered, {after - before} counted as bad")
    if pid_after != pid:
        out.notes.append(f"the feed process changed ({pid} -> {pid_after}) around garbage frames")
    out.recovered = fresh
    return out


def garbage_requests(token: str, slot: str) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(label, method, path, headers, body): none of these may change anything."""
    good = {"Authorization": f"Bearer {token}"}
    wrong = {"Authorization": f"Bearer {token[:-1]}{'x' if token[-1:] != 'x' else 'y'}"}
    return [
        ("halt without a token", "POST", "/halt", {}, b"{}"),
        ("halt with a wrong token", "POST", "/halt", wrong, b'{"reason": "x"}'),
        ("halt with a basic auth header", "POST", "/halt", {"Authorization": "Basic YTpi"}, b"{}"),
        ("resume with a wrong token", "POST", "/resume", wrong, b"{}"),
        ("halt with malformed JSON", "POST", "/halt", good, b'{"reason": '),
        ("halt with a typo field", "POST", "/halt", good, b'{"reson": "typo"}'),
        ("halt with a JSON list", "POST", "/halt", good, b"[1, 2]"),
        ("halt with an over-long reason", "POST", "/halt", good, json.dumps({"reason": "r" * 500}).encode()),
        ("pause with a number body", "POST", "/pause", good, b"42"),
        ("resume with junk bytes", "POST", "/resume", good, b"\xff\xfe\x00junk"),
        ("unknown action", "POST", "/explode", good, b"{}"),
        ("halt with GET", "GET", "/halt", good, b""),
        ("enable an unknown slot", "POST", "/slots/nope-1m/enable", good, b"{}"),
        ("stake out of bounds", "PATCH", f"/slots/{slot}", good, b'{"stake_usd": 1e9}'),
        ("negative stake", "PATCH", f"/slots/{slot}", good, b'{"stake_usd": -5}'),
        ("unknown param", "PATCH", f"/slots/{slot}", good, b'{"params": {"banana": 1}}'),
        ("body over 64 KiB", "POST", "/pause", good, b'{"reason": "' + b"x" * 70_000 + b'"}'),
    ]


def inject_garbage_api(ctx: Any, rnd: random.Random) -> Outcome:
    """Garbage control requests to the HTTP API: each must be refused (4xx; 503 while Redis
    is restarting), never carried out and never a server error."""
    out = Outcome()
    reqs = rnd.sample(garbage_requests(ctx.token, ctx.slot_ids[0]), rnd.randint(3, 7))
    answers = []
    with httpx.Client(base_url=ctx.api_base, timeout=15) as http:
        for label, method, path, headers, body in reqs:
            try:
                resp = http.request(method, path, headers=headers, content=body)
                status = resp.status_code
            except httpx.HTTPError as e:
                status = 0
                out.notes.append(f"{label}: {type(e).__name__}")
            answers.append({"request": label, "status": status})
            if 200 <= status < 300:
                out.problems.append(f"garbage request carried out: {label} -> {status}")
            elif status >= 500 and status != 503:
                out.problems.append(f"garbage request made the API fail: {label} -> {status}")
    out.details = {"requests": answers}
    return out


GARBAGE_COMMANDS: list[str | bytes] = [
    "halt please",
    '{"action": "explode"}',
    '{"action": "halt", "reson": "typo"}',
    '{"action": "enable_slot", "slot": "nope-1m"}',
    '{"action": "patch_slot", "slot": "btc-15s", "stake_usd": -3}',  # a slot of the chaos stack
    "[1, 2, 3]",
    '{"action": 7}',
    b"\xff\xfe\x00 not text",
]


def inject_garbage_file(ctx: Any, rnd: random.Random) -> Outcome:
    """A garbage command in the file door, var/control.json: it must be archived under
    var/control.d/ as refused (`ok: false`) and change nothing."""
    out = Outcome()
    var = Path(ctx.st.home) / "var"
    door, archive = var / "control.json", var / "control.d"
    cmd = rnd.choice(GARBAGE_COMMANDS)
    data = cmd if isinstance(cmd, bytes) else cmd.encode()
    before = set(os.listdir(archive)) if archive.is_dir() else set()
    tmp = var / f".chaos-{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, door)  # whole, never half-written
    consumed = ctx.poll(lambda: not door.exists(), 20)

    def archived() -> list[str]:
        return sorted(set(os.listdir(archive)) - before) if archive.is_dir() else []

    def results() -> list[dict[str, Any]] | None:
        """The archived commands' results; None while one is claimed but not yet answered
        (the door moves a command aside before it writes the result into it)."""
        got = []
        for name in archived():
            try:
                doc = json.loads((archive / name).read_text(errors="replace"))
            except (OSError, ValueError):
                return None
            if not isinstance(doc, dict) or "result" not in doc:
                return None
            got.append(doc["result"])
        return got or None

    ctx.poll(lambda: results() is not None, 10)
    new = archived()
    results_now = results() or []
    out.details = {"command": repr(cmd)[:120], "consumed": consumed, "archived": new, "results": results_now}
    if not consumed:
        out.notes.append(f"the file door did not take {cmd!r} within 20 s")
        with contextlib.suppress(OSError):
            door.unlink()
    if consumed and not results_now:
        out.notes.append(f"no answered archive for {cmd!r} within 10 s")
    for res in results_now:
        if not isinstance(res, dict) or res.get("ok"):
            out.problems.append(f"garbage command carried out by the file door: {cmd!r} -> {res}")
    return out


# --- the catalogue -------------------------------------------------------------------------------

CATALOGUE: dict[str, FaultKind] = {
    k.name: k
    for k in [
        FaultKind(
            "deploy",
            MAIN,
            True,
            "0 (blue/green handover)",
            240,
            2.0,
            "a blue/green deploy while trading: readiness gate, handover at a tick boundary, "
            "epoch + 1; no tick missed at the handover, nothing duplicated",
            inject_deploy,
        ),
        FaultKind(
            "rollback",
            MAIN,
            True,
            "0 (blue/green handover)",
            240,
            2.0,
            "hand back to the release before the last deploy, the same way",
            inject_rollback,
        ),
        FaultKind(
            "kill-worker",
            MAIN,
            True,
            "1-3 at 1 s ticks (supervisor restart + start-up)",
            30,
            2.0,
            "SIGKILL of the active worker at a random point of its tick: supervisor restarts it, "
            "it takes the lease from the dead holder (epoch + 1) and reconciles what was in flight "
            "by order id; nothing re-sent, nothing lost",
            inject_kill_worker,
            weight=1.5,
        ),
        FaultKind(
            "stop-worker",
            MAIN,
            True,
            "about the stop's length in ticks",
            30,
            2.0,
            "SIGSTOP/SIGCONT of the active worker for 1-3.5 ticks (past its lease at times): "
            "a stalled holder must resume without duplicating a tick or an order",
            inject_stop_worker,
        ),
        FaultKind(
            "redis-restart",
            MAIN,
            True,
            "the outage's length in ticks, plus reconnects",
            60,
            3.0,
            "a clean restart of the embedded Redis (AOF on): every program reconnects; intents, "
            "positions, ledger and journal survive; nothing posted twice",
            inject_redis_restart,
        ),
        FaultKind(
            "redis-kill",
            MAIN,
            True,
            "the outage's length in ticks",
            60,
            3.0,
            "SIGKILL of redis-server, restarted by supervisor from its AOF: nothing acknowledged "
            "is lost, every program reconnects",
            inject_redis_kill,
        ),
        FaultKind(
            "sim-latency",
            MAIN,
            True,
            "0, or the overrun when a spike exceeds a tick",
            30,
            3.0,
            "venue latency spikes (orders, books, order lookups, markets, klines) up to 2.5 s: "
            "slow ticks skip boundaries and count them, never run a tick twice",
            inject_sim_latency,
        ),
        FaultKind(
            "sim-errors",
            MAIN,
            True,
            "0",
            30,
            2.0,
            "venue error answers (5xx, 429) and lost answers, before or after the venue handled "
            "the order: failed posts are reconciled by order id, booked exactly once",
            inject_sim_errors,
        ),
        FaultKind(
            "halt",
            MAIN,
            False,
            "0",
            30,
            0.0,
            "an emergency halt over HTTP (half of them racing the tick that posts entries), held "
            "1.5-4 s, then resumed: no order at the venue after the acknowledgement",
            inject_halt,
            weight=2.0,  # the safety property of the control plane: checked often
        ),
        FaultKind(
            "garbage-keys",
            MAIN,
            False,
            "0",
            30,
            0.0,
            "garbage written into baton:control (halted/paused: fail safe, trading stops until "
            "resumed; a counter: a halt must still work) or into one slot's value in baton:slots",
            inject_garbage_keys,
        ),
        FaultKind(
            "kill-feed",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "SIGKILL of the feed: supervisor restarts it and it backfills; ticks go on",
            inject_kill_feed,
        ),
        FaultKind(
            "socket-drop",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "the sim cuts every kline WebSocket (and refuses new ones for up to 4 s): the feed "
            "reconnects with backoff and backfills",
            inject_socket_drop,
        ),
        FaultKind(
            "garbage-frames",
            BACKGROUND,
            False,
            "0",
            20,
            0.0,
            "malformed WebSocket frames (not JSON, wrong shape, unknown symbol, inconsistent "
            "kline, binary, 70 kB) into the feed's stream: counted as bad, skipped, feed kept",
            inject_garbage_frames,
        ),
        FaultKind(
            "garbage-api",
            BACKGROUND,
            False,
            "0",
            20,
            0.0,
            "garbage control requests to the HTTP API (no/wrong token, bad JSON, typo fields, "
            "unknown routes and slots, out-of-bounds stakes, 70 kB bodies): all refused",
            inject_garbage_api,
        ),
        FaultKind(
            "garbage-file",
            BACKGROUND,
            False,
            "0",
            30,
            0.0,
            "garbage commands in the file door var/control.json: archived as refused",
            inject_garbage_file,
        ),
    ]
}

DEFAULT_KINDS = list(CATALOGUE)


# --- the schedule ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    lane: str
    kind: str
    gap_s: float  # pause before it


def plan_lane(
    rnd: random.Random, kinds: list[str], n: int, gap_s: tuple[float, float], cover: bool = True
) -> list[Planned]:
    """`n` faults of one lane: with `cover`, the first len(kinds) are every kind once, in a
    seeded order (a rollback never before the first deploy); then kinds drawn at random,
    by their weights."""
    out: list[Planned] = []
    first = list(kinds) if cover else []
    rnd.shuffle(first)
    if "rollback" in first and "deploy" in first and first.index("rollback") < first.index("deploy"):
        i, j = first.index("rollback"), first.index("deploy")
        first[i], first[j] = first[j], first[i]
    deployed = False
    weights = [CATALOGUE[k].weight for k in kinds]
    for i in range(n):
        kind = first[i] if i < len(first) else rnd.choices(kinds, weights)[0]
        if kind == "rollback" and not deployed:
            kind = "deploy" if "deploy" in kinds else kind
        deployed = deployed or kind == "deploy"
        out.append(Planned(CATALOGUE[kind].lane, kind, round(rnd.uniform(*gap_s), 2)))
    return out


def plan(
    seed: int,
    kinds: list[str],
    main_gap_s: tuple[float, float],
    bg_gap_s: tuple[float, float],
    n: int = 400,
    cover: bool = True,
) -> dict[str, list[Planned]]:
    """The seeded schedule of both lanes (long enough for any duration: the runner stops the
    lanes when the time is up). The same seed and kinds give the same schedule."""
    main = [k for k in kinds if CATALOGUE[k].lane == MAIN]
    bg = [k for k in kinds if CATALOGUE[k].lane == BACKGROUND]
    return {
        MAIN: plan_lane(random.Random(f"{seed}:main"), main, n, main_gap_s, cover) if main else [],
        BACKGROUND: plan_lane(random.Random(f"{seed}:bg"), bg, n, bg_gap_s, cover) if bg else [],
    }


# --- a WebSocket proxy between the feed and the sim, for garbage frames ----------------------------


class WsProxy:
    """Forwards the feed's kline WebSockets to the sim's Binance server, frame for frame, and
    pushes garbage frames into them on demand. When the sim cuts a stream (socket-drop), the
    feed's side is cut too, without a close frame; a refused handshake is refused as well."""

    def __init__(self, upstream: str, port: int) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = port
        self.loop = asyncio.new_event_loop()
        self.clients: set[Any] = set()
        self._thread = threading.Thread(target=self._run, name="chaos-ws-proxy", daemon=True)
        self._ready = threading.Event()
        self._runner: Any = None
        self._session: Any = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        import aiohttp
        from aiohttp import web

        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_get("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _handle(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import WSMsgType, web

        url = self.upstream + request.path_qs
        try:
            timeout = aiohttp.ClientWSTimeout(ws_close=2)
            up = await self._session.ws_connect(url, autoping=True, timeout=timeout)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status or 502, text=f"upstream refused: {e.message}")
        except (aiohttp.ClientError, OSError) as e:
            return web.Response(status=502, text=f"upstream unreachable: {e}")
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        self.clients.add(ws)

        async def up_to_down() -> None:
            async for msg in up:
                if msg.type == WSMsgType.TEXT:
                    await ws.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await ws.send_bytes(msg.data)
                else:
                    break

        async def down_to_up() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await up.send_str(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await up.send_bytes(msg.data)
                else:
                    break

        tasks = [asyncio.ensure_future(up_to_down()), asyncio.ensure_future(down_to_up())]
        try:
            _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in pending:
                t.cancel()
        finally:
            self.clients.discard(ws)
            cut_by_upstream = up.closed or up.exception() is not None or tasks[0].done()
            await up.close()
            if cut_by_upstream and request.transport is not None:
                request.transport.abort()  # as the network failure upstream was: no close frame
            else:
                with contextlib.suppress(Exception):
                    await ws.close()
        return ws

    async def _inject(self, frames: list[str | bytes]) -> int:
        sent = 0
        for ws in list(self.clients):
            for f in frames:
                try:
                    if isinstance(f, bytes):
                        await ws.send_bytes(f)
                    else:
                        await ws.send_str(f)
                    sent += 1
                except Exception:
                    break
        return sent

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the WebSocket proxy did not start")

    def inject(self, frames: list[str | bytes]) -> int:
        """Push frames into every open stream; returns how many frames were sent."""
        return asyncio.run_coroutine_threadsafe(self._inject(frames), self.loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()

"""Faults on the control doors: halts over HTTP raced against the posting tick and garbage in
the control keys (main lane); garbage API requests and garbage in the file door (background
lane)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.lanes import (
    Outcome,
    sleep_until_ms,
)


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
    sleep_until_ms(ctx, at)
    return "posting"


def halt_bodies(seq: int) -> list[tuple[str, bytes, str]]:
    """(label, body, the warning the answer must carry): a halt is never refused for its body
    (an emergency stop must stop), so each of these must halt like a good one."""
    return [
        ("good", json.dumps({"reason": f"chaos halt {seq}"}).encode(), ""),
        ("long reason", json.dumps({"reason": "r" * 500}).encode(), "reason truncated to 200"),
        ("unknown field", json.dumps({"reason": "chaos", "reson": "typo"}).encode(), "unknown field"),
        ("not JSON", b'{"reason": "chaos halt, cut', "body is not JSON"),
        ("a JSON list", b"[1, 2]", "not an object"),
        ("not UTF-8", b'{"reason": "\xff\xfe chaos"}', "not valid UTF-8"),
        ("over 64 KiB", b'{"reason": "flood", "pad": "' + b"x" * 70_000 + b'"}', "over 65536 bytes"),
        ("nested deeply", b"[" * 20_000 + b"]" * 20_000, "nested deeper than"),
    ]


def inject_halt(ctx: Any, rnd: random.Random) -> Outcome:
    """POST /halt over HTTP, hold it 1.5-4 s, POST /resume. After the acknowledgement no
    order may reach the venue until the resume (checked from the sim's order list, whose
    times are whole seconds: a hold under a second could not be judged). Half the halts carry
    a bad body (a reason too long, an unknown field, not JSON, not UTF-8, over the body
    limit, nested 20,000 levels deep): each must halt all the same, say what was wrong in
    `warnings`, and take effect (a tick started after the acknowledgement journals `halted`)."""
    out = Outcome()
    moment = _entry_moment(ctx, rnd)
    bodies = halt_bodies(ctx.seq)
    body_label, body, warned = bodies[0] if rnd.random() < 0.5 else rnd.choice(bodies[1:])
    hold_s = rnd.uniform(1.5, 4.0)
    sent_ms = out.injected_ms = ctx.now_ms()
    resp = ctx.api.post("/halt", content=body)
    answered_ms = ctx.now_ms()
    if resp.status_code != 200:
        out.problems.append(f"POST /halt ({body_label}) answered {resp.status_code}: {resp.text[:200]}")
        out.details = {"moment": moment, "body": body_label, "sent_ms": sent_ms, "status": resp.status_code}
        out.recovered = ctx.wait_tick_after(ctx.now_ms(), 30) is not None
        return out
    res = resp.json()
    if not res.get("acknowledged"):
        # The active worker hears a halt within milliseconds; unacknowledged, nobody knows
        # when the last order went out.
        out.problems.append(f"the halt was not acknowledged: {str(res.get('cancel'))[:200]}")
    warnings = [str(w) for w in res.get("warnings") or []]
    if warned and not any(warned in w for w in warnings):
        out.problems.append(f"a halt with a bad body ({body_label}) did not say so: warnings {warnings}")
    if not warned and warnings:
        out.problems.append(f"a good halt answered warnings: {warnings}")
    time.sleep(hold_s)
    resume_sent_ms = ctx.now_ms()
    rr = ctx.api.post("/resume", json={})
    resumed_ms = ctx.now_ms()
    if rr.status_code != 200:
        out.problems.append(f"POST /resume after a halt answered {rr.status_code}: {rr.text[:200]}")
    out.details = {
        "moment": moment,
        "body": body_label,
        "warnings": warnings[:5],
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
    # The halt took effect: a tick that started after the acknowledgement and before the
    # resume was sent journaled `halted` (the hold is longer than a tick).
    ack_wall = res["control"]["halted_ms"] + (res.get("ack_ms") or 0)
    took = ctx.retry(lambda: ctx.st.redis.xrevrange("baton:journal:ticks", count=50), [])
    inside = [f for _id, f in took if ack_wall < int(f["started_ms"]) < resume_sent_ms]
    out.details["halted_ticks"] = sum(f.get("halted") == "1" for f in inside)
    if inside and not all(f.get("halted") == "1" for f in inside):
        out.problems.append(
            f"the halt ({body_label}) did not take effect: ticks after its acknowledgement ran unhalted"
        )
    if not inside and ctx.active() is not None:
        out.notes.append("no tick started inside the halt's hold (a slow tick): effect not observed")
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
    # A person's hand edit, with redis-cli as the admin Redis user.
    return ctx.st.client("admin", decoded=False)


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


def garbage_requests(token: str, slot: str) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(label, method, path, headers, body): none of these may change anything."""
    good = {"Authorization": f"Bearer {token}"}
    wrong = {"Authorization": f"Bearer {token[:-1]}{'x' if token[-1:] != 'x' else 'y'}"}
    return [
        ("halt without a token", "POST", "/halt", {}, b"{}"),
        ("halt with a wrong token", "POST", "/halt", wrong, b'{"reason": "x"}'),
        ("halt with a basic auth header", "POST", "/halt", {"Authorization": "Basic YTpi"}, b"{}"),
        ("resume with a wrong token", "POST", "/resume", wrong, b"{}"),
        # A halt or pause with a bad body is carried out (never refused for its body): the
        # halt lane sends those; here only what must be refused.
        ("halt with a bad body and no token", "POST", "/halt", {}, b'{"reason": '),
        ("pause with a bad body and a wrong token", "POST", "/pause", wrong, b"42"),
        ("resume with junk bytes", "POST", "/resume", good, b"\xff\xfe\x00junk"),
        ("resume with a typo field", "POST", "/resume", good, b'{"reson": "typo"}'),
        ("unknown action", "POST", "/explode", good, b"{}"),
        ("halt with GET", "GET", "/halt", good, b""),
        ("enable an unknown slot", "POST", "/slots/nope-1m/enable", good, b"{}"),
        ("stake out of bounds", "PATCH", f"/slots/{slot}", good, b'{"stake_usd": 1e9}'),
        ("negative stake", "PATCH", f"/slots/{slot}", good, b'{"stake_usd": -5}'),
        ("unknown param", "PATCH", f"/slots/{slot}", good, b'{"params": {"banana": 1}}'),
        ("body over 64 KiB", "POST", "/resume", good, b'{"x": "' + b"x" * 70_000 + b'"}'),
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


# A halt or pause is never refused for its text (a file saying `"action": "halt"` halts):
# these are all other commands.
GARBAGE_COMMANDS: list[str | bytes] = [
    "resume please",
    '{"action": "explode"}',
    '{"action": "resume", "reson": "typo"}',
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

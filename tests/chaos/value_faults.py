"""Garbage in the values the tick's entry checks read (issue #23 §2), main lane: the day's PnL,
an open position or intent, a candle window's member, and a candle dated in
the future. Each is written with a raw Redis command while the worker trades, held 2-4 s and
repaired (the old value put back in one step: nothing could book in between, since every
booking script refuses garbage). While it stands, new entries in its scope must stop
(tests/chaos/halts.py `blocked_windows`, judged by the order checks); the worker must report
it in `baton:blocked` and `/metrics`, and clear it after the repair. The future candle must
block nothing (it is never read)."""

from __future__ import annotations

import contextlib
import random
import re
import time
from typing import Any

from kernel.clock import wall_ms
from state.ledger import utc_day
from state.structs import CANDLE, Candle
from tests.chaos.control_faults import _raw_redis
from tests.chaos.lanes import Outcome, sleep_until_ms

# Sets a hash field and answers what it held, in one step.
SWAP = (
    "local old = redis.call('HGET', KEYS[1], ARGV[1]); "
    "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return old"
)
GARBAGE_NUMBERS: list[str | bytes] = ["lots", "1e3", " 5", "9" * 30, "", "0x10", b"\xff\xfe\x00"]
GARBAGE_RECORDS: list[str | bytes] = ["{not json", '{"id": 7}', "[]", "null", b"\xff\xfe\x00"]
# (Garbage in the ledger's running sums is tests/chaos/ledger_faults.py's.)
VARIANTS = ("day-pnl", "position", "intent", "candle", "future-candle")
# How long after the write the worker must show it in baton:blocked (a tick or two).
SHOWN_WITHIN_S = 6.0
# The longest wait for the entry zone before writing (else written at once).
ALIGN_WITHIN_MS = 6_000


def _metric(ctx: Any, scope: str) -> float | None:
    try:
        text = ctx.api.get("/metrics").text
    except Exception:
        return None
    m = re.search(rf'^baton_entries_blocked\{{scope="{scope}"\}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else None


def _write(raw: Any, variant: str, rnd: random.Random, asset: str, slot: str) -> dict[str, Any]:
    """Write one variant's garbage; returns what the checker and the repair need: key, field,
    the blocker's id in baton:blocked, its scope, and what to put back."""
    if variant == "day-pnl":
        key, field = f"baton:ledger:day:{utc_day(wall_ms())}", "realized_pnl_micros"
        old = raw.eval(SWAP, 1, key, field, rnd.choice(GARBAGE_NUMBERS))
        return {"key": key, "field": field, "id": f"{key} {field}", "scope": "all", "old": old}
    if variant in ("position", "intent"):
        key = "baton:positions:open" if variant == "position" else "baton:intents:open"
        field = f"{slot}:1" if variant == "position" else f"{slot}:1:entry"
        raw.hset(key, field, rnd.choice(GARBAGE_RECORDS))
        return {"key": key, "field": field, "id": f"{key} {field}", "scope": "all", "old": None}
    key = f"baton:candles:{asset}:1s"
    if variant == "candle":
        member = f"garbage {rnd.randrange(1 << 30)}"
        raw.zadd(key, {member: wall_ms()})
        return {"key": key, "field": member, "id": key, "scope": f"asset {asset}", "old": None}
    future = Candle(wall_ms() + rnd.randint(60, 86_400) * 1000, 1e9, 1e9, 1e9, 1e9, 1.0, True)
    member = CANDLE.encode(future).decode()
    raw.zadd(key, {member: future.open_ms})
    return {"key": key, "field": member, "id": key, "scope": "", "old": None}


def _repair(raw: Any, variant: str, w: dict[str, Any]) -> None:
    if variant == "day-pnl":
        if w["old"] is None:
            raw.hdel(w["key"], w["field"])
        else:
            raw.hset(w["key"], w["field"], w["old"])
    elif variant in ("position", "intent"):
        raw.hdel(w["key"], w["field"])
    else:
        raw.zrem(w["key"], w["field"])


def inject_garbage_values(ctx: Any, rnd: random.Random) -> Outcome:
    """One or two classes of garbage at once (on different keys), held 2-4 s after the worker
    showed it, then repaired."""
    out = Outcome()
    asset = rnd.choice(sorted({s.split("-")[0] for s in ctx.slot_ids}))
    slot = rnd.choice(ctx.slot_ids)
    # At least one that blocks (every run checks a block), sometimes a second, on another key.
    variants = [rnd.choice([v for v in VARIANTS if v != "future-candle"])]
    if rnd.random() < 0.6:
        variants.append(rnd.choice([v for v in VARIANTS if v not in variants]))
    if "candle" in variants and "future-candle" in variants:
        variants.remove("future-candle")
    raw = _raw_redis(ctx)
    written: dict[str, dict[str, Any]] = {}
    repaired = False
    try:
        # Written a moment before the tick where a window's entries are made (snipe enters with
        # a third of the window left) when that is near, so that the block has something to
        # stop; the wait stays short (the run's length). A candle window is read only while
        # its slots are in their entry zone: garbage in one is found (and reported) there, so
        # the candle goes only then.
        w, now = ctx.window_ms, ctx.now_ms()
        at = now - now % w + w * 2 // 3 - rnd.uniform(1500, 2500)
        if at < now + 200:
            at += w
        if at - now <= ALIGN_WITHIN_MS:
            sleep_until_ms(ctx, at)
        elif "candle" in variants:
            variants[variants.index("candle")] = rnd.choice(
                [v for v in VARIANTS if v not in variants and v not in ("candle", "future-candle")]
            )
        out.injected_ms = written_ms = ctx.now_ms()
        for v in variants:
            written[v] = _write(raw, v, rnd, asset, slot)
        hold_s = rnd.uniform(2.0, 4.0)
        blocking = {v: w for v, w in written.items() if w["scope"]}

        def shown() -> bool:
            have = set(raw.hkeys("baton:blocked"))
            return all(w["id"].encode() in have for w in blocking.values())

        reported = ctx.poll(shown, SHOWN_WITHIN_S) if blocking else True
        shown_ms = ctx.now_ms()
        scopes = {w["scope"].split(" ")[0] for w in blocking.values()}
        metrics = {s: _metric(ctx, s) for s in scopes}
        time.sleep(hold_s)  # held this long after the worker showed it
        if "future-candle" in written and raw.hexists("baton:blocked", written["future-candle"]["id"]):
            out.problems.append("a candle dated in the future blocked entries: it was read")
        for v, w in written.items():
            _repair(raw, v, w)
        repaired, repaired_ms = True, ctx.now_ms()
        if not reported:
            out.problems.append(
                f"garbage {variants} not reported in baton:blocked within {SHOWN_WITHIN_S} s: "
                f"{sorted(raw.hkeys('baton:blocked'))[:5]}"
            )
        for s, n in metrics.items():
            if reported and (n is None or n < 1):
                out.notes.append(f"/metrics baton_entries_blocked{{scope={s!r}}} read {n} while blocked")

        def cleared() -> bool:
            have = set(raw.hkeys("baton:blocked"))
            return not any(w["id"].encode() in have for w in blocking.values())

        # A candle window whose slots left their entry zone meanwhile is read again (and its
        # blocker cleared) at the next window's: up to a window later.
        clear_s = ctx.window_ms / 1000 + 8
        out.recovered = ctx.poll(cleared, clear_s)
        if not out.recovered:
            out.problems.append(f"baton:blocked still names {variants} {clear_s:.0f} s after the repair")
        out.details = {
            "variants": variants,
            "written_ms": written_ms,
            # When baton:blocked showed it: the worker had read it by then, and the tick that
            # wrote it made no entry in its scope.
            "shown_ms": shown_ms if reported and blocking else None,
            "repaired_ms": repaired_ms,
            "reported": reported,
            "blocked": [
                {"variant": v, "key": w["key"], "id": w["id"], "scope": w["scope"]}
                for v, w in blocking.items()
            ],
        }
    finally:
        # Whatever went wrong, nothing is left behind to spoil the rest of the run.
        for v, w in written.items() if not repaired else ():
            with contextlib.suppress(Exception):
                _repair(raw, v, w)
        raw.close()
    return out

"""Background-lane faults on the feed: its process killed, its WebSockets dropped, garbage frames
pushed into its streams (through tests/chaos/wsproxy.py)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
from typing import Any

import httpx

from tests.chaos.lanes import (
    Outcome,
)


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

"""Hot reload in place: a strategy file edited under a running worker takes effect on the
next tick, with no missed tick; a broken edit is refused, reported, and the running code
keeps trading."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

QUIET = """
def needs_quotes(inp):
    return False


def evaluate(inp):
    return None
"""


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.edit")
    tmp.write_text(text)
    os.replace(tmp, path)  # as editors do: the worker never reads half a file


def _reload_after(st: Stack, at_ms: int) -> dict:
    return wait_for(
        lambda: (h := st.redis.hgetall("baton:reload")) and int(h["at_ms"]) > at_ms and h,
        30,
        "the worker's reload verdict",
    )


def test_editing_a_strategy_under_a_running_worker_reloads_it_between_ticks():
    st = Stack(
        BATON_TICK_MS="500",
        **TRADING,
    )
    try:
        st.start()
        first = int(st.redis.hget("baton:stats", "last_tick"))
        code_dir = Path(st.redis.hget("baton:worker:blue", "code_dir"))
        snipe = code_dir / "worker" / "strategies" / "snipe.py"
        original = snipe.read_text()
        # Before: snipe asks for quotes in the last seconds of every window.
        wait_for(
            lambda: any(int(e["evaluated"]) > 0 for e in invariants.journal(st.redis)),
            60,
            "a tick that evaluated a slot",
        )

        _write(snipe, original + QUIET)
        res = _reload_after(st, 0)
        assert res["state"] == "ok" and res["modules"] == "snipe", res
        at_ms = int(res["at_ms"])
        # A whole window later, not one tick since the reload has evaluated or ordered anything.
        last = int(st.redis.hget("baton:stats", "last_tick"))
        wait_for(lambda: int(st.redis.hget("baton:stats", "last_tick")) >= last + 32, 60, "32 more ticks")
        after = [e for e in invariants.journal(st.redis) if int(e["started_ms"]) > at_ms]
        assert len(after) >= 32
        assert all(int(e["evaluated"]) == 0 and int(e["orders"]) == 0 for e in after), after[:3]
        before = [e for e in invariants.journal(st.redis) if int(e["started_ms"]) <= at_ms]
        assert int(after[0]["tick"]) == int(before[-1]["tick"]) + 1  # the very next tick

        # A broken edit is refused; the quiet version keeps running.
        _write(snipe, original + "\ndef evaluate(inp)\n    return None\n")
        res = _reload_after(st, at_ms)
        assert res["state"] == "refused" and "SyntaxError" in res["error"], res
        status = st.status()
        assert status["reload"]["state"] == "refused" and status["reloads"] == {"ok": 1, "refused": 1}
        last = int(st.redis.hget("baton:stats", "last_tick"))
        wait_for(lambda: int(st.redis.hget("baton:stats", "last_tick")) >= last + 4, 30, "4 more ticks")
        assert all(int(e["evaluated"]) == 0 for e in invariants.journal(st.redis) if int(e["tick"]) > last)

        # Put the original back: snipe evaluates again. `baton reload --no-sync` forces a check.
        _write(snipe, original)
        res = _reload_after(st, int(res["at_ms"]))
        assert res["state"] == "ok"
        out = st.baton("reload", "--no-sync", timeout_s=60)
        assert out.returncode == 0 and "reloaded" in out.stdout, out.stderr
        wait_for(
            lambda: any(
                int(e["evaluated"]) > 0 for e in invariants.journal(st.redis) if int(e["started_ms"]) > at_ms
            ),
            60,
            "snipe evaluating again",
        )
        rep = invariants.check_ticks(invariants.journal(st.redis), since_tick=first)
        assert rep.missed_not_overrun == [] and rep.overruns_are_rare() and len(rep.runs) == 1, rep
    finally:
        st.stop()

"""Issue #25's proof, on a real stack (redis-server, supervisord, the sim over sockets): a trader's
own strategy goes from `baton strategy new` to trading with exits, without a restart.

The template is written with `baton strategy new` (its own test passes as written), given a
new slot with `baton slots add` while the worker runs (beside the seeded snipe slot on the
same market), and hot-loaded with `baton reload`. It passes while its entry threshold is out of
reach; `baton slots set` lowers it, and it buys and sells again within one window at the sim. The
worker is SIGKILLed between the exit's commit and its post (worker/crash_hook.py, armed by a
file in this test stack only): the successor reconciles that exit leg as never sent, the
strategy exits with the next leg, and the venue sees each leg at most once, the crashed one
never; the position is closed once, the ledger exact. `baton decisions SLOT --json` holds the
buy, the sell and the passes, each with its reason. Last, `baton replay` over the whole run
makes every logged decision again with the code that made it: 100 % equal (issue #26)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from baton.settings import REPO_ROOT
from deploy.sandbox import STALE_MAKER, Stack, wait_for
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("stacks-b"), pytest.mark.timeout(420)]

WINDOW_S = 60
# The template's parameters for a stack that must trade at once: enter on any move, at any ask
# up to 0.99, and sell on a cent's loss or gain (the sim's spread is two cents: the first bid
# after the buy is a stop loss). It enters only with more than a third of the window left.
PARAMS = {"min_move_bps": 0, "confirm_bars": 0, "max_price": 0.99, "take_profit": 0.01, "stop_loss": 0.01}
# First out of reach (a move of 10%: it passes, saying so, tick after tick), then lowered live.
PASSING = {**PARAMS, "min_move_bps": 1000}
STAKE_USD = "5"  # five shares at least at any price up to 0.99: the venue's minimum order


def _intents(st: Stack, slot: str) -> list[Any]:
    return [i for i in invariants.redis_intents(st.redis) if i.slot == slot]


def _position(st: Stack, slot: str, window_start_s: int) -> dict[str, Any] | None:
    raw = st.redis.hget("baton:positions", f"{slot}:{window_start_s}")
    return json.loads(raw) if raw else None


def _ok(out: subprocess.CompletedProcess[str], what: str) -> str:
    assert out.returncode == 0, f"{what} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _params(params: dict[str, float]) -> list[str]:
    return [a for k, v in params.items() for a in ("--param", f"{k}={v}")]


def _actions(st: Stack, slot: str) -> list[str]:
    """The actions of the slot's decision log, oldest first (read straight from its stream)."""
    return [f["action"] for _, f in st.redis.xrange(f"baton:decisions:log:{slot}")]


def test_a_template_strategy_added_live_enters_and_exits_once_through_a_crash() -> None:
    name = f"e2e_{secrets.token_hex(3)}"
    slot = f"{name.replace('_', '-')}.btc-1m"
    # Written into this checkout, as a trader's are (`baton reload` copies from it), and
    # removed at the end whatever happens.
    module = REPO_ROOT / "worker" / "strategies" / f"{name}.py"
    test_file = REPO_ROOT / "tests" / "fast" / "strategies" / f"test_{name}.py"
    # The pre-#26 maker (deploy/sandbox.py): PARAMS count on its two-cent spread.
    st = Stack(BATON_TICK_MS="1000", BATON_TIMEFRAMES="1m", BATON_ASSETS="btc", **STALE_MAKER)
    armed = st.home / "crash-before-sell"
    st.env["BATON_TEST_CRASH_BEFORE_SELL"] = str(armed)
    try:
        started_s = time.time()
        st.start()
        # 1. The template, with its test, as a trader makes it; its test passes as written.
        out = _ok(st.baton("strategy", "new", name), "baton strategy new")
        assert module.is_file() and test_file.is_file(), out
        ran = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stdout[-3000:]

        # 2. A new slot for it while the worker runs, then the hot reload: it passes, its
        #    threshold out of reach, until `baton slots set` lowers it.
        add = ["slots", "add", slot, "--asset", "btc", "--timeframe", "1m", "--strategy", name]
        _ok(st.baton(*add, "--stake", STAKE_USD, *_params(PASSING)), "baton slots add")
        listed = {s["id"]: s for s in st.status()["slots"]}
        assert listed[slot]["strategy"] == name and listed["btc-1m"]["strategy"] == "snipe", listed
        armed.write_text("")  # the first SELL this stack's worker posts is where it dies
        out = _ok(st.baton("reload", timeout_s=60), "baton reload")
        assert name in out, out
        wait_for(lambda: _actions(st, slot).count("pass") >= 2, 30, "the new strategy passing")
        assert set(_actions(st, slot)) == {"pass"}
        _ok(st.baton("slots", "set", slot, *_params(PARAMS)), "baton slots set")
        set_window_s = int(time.time() // WINDOW_S * WINDOW_S)

        # 3. It buys, commits its first exit and dies before posting it: in this window (the
        #    next when less than a third of it is left), or a later one should the book kill
        #    its fill-or-kill buy.
        crashed = Path(f"{armed}.crashed")
        epoch = int(st.redis.get("baton:lease:epoch"))
        wait_for(crashed.exists, 3 * WINDOW_S, "the worker killing itself before its first SELL")
        crashed_order = crashed.read_text()
        [exit_1] = [i for i in _intents(st, slot) if i.order_id == crashed_order]
        window_s = exit_1.window_start_s
        assert exit_1.leg == "exit-1" and window_s >= set_window_s, exit_1
        [entry] = [i for i in _intents(st, slot) if i.id == f"{slot}:{window_s}:entry"]
        assert entry.status == "filled", entry

        # 4. The successor takes over, finds exit-1 never sent, and the strategy sells with
        #    exit-2, within the window.
        wait_for(lambda: int(st.redis.get("baton:lease:epoch")) > epoch, 60, "a new lease holder")
        closed = wait_for(
            lambda: (p := _position(st, slot, window_s)) and p["status"] == "closed" and p,
            window_s + WINDOW_S - time.time() + 5,
            "the position closed by the next exit leg",
        )
        assert time.time() < window_s + WINDOW_S, "the position was closed after its window ended"
        assert closed["sold_shares_micros"] == round(entry.filled_size * 1e6) and closed["shares_micros"] == 0
        # A few ticks more: whatever the crashed worker had signed never reaches the venue.
        last = int(st.redis.hget("baton:stats", "last_tick"))
        wait_for(lambda: int(st.redis.hget("baton:stats", "last_tick")) >= last + 3, 30, "three more ticks")

        legs = {i.leg: i for i in _intents(st, slot) if i.window_start_s == window_s}
        assert legs["exit-1"].status == "failed", legs["exit-1"]
        sold = [i for leg, i in legs.items() if leg.startswith("exit-") and i.status == "filled"]
        assert sold and all(i.leg != "exit-1" for i in sold), legs
        orders = st.sim_orders()
        leg_of = {i.order_id: i for i in legs.values()}
        ours = {o["id"]: o for o in orders if o["id"] in leg_of}
        assert crashed_order not in ours, ours[crashed_order]
        # The buy and every filled sale are at the venue, once each (the listing is by order id),
        # each on its side, all inside the window.
        assert {entry.order_id, *(i.order_id for i in sold)} <= set(ours), (ours, legs)
        for oid, o in ours.items():
            assert o["side"].upper() == ("SELL" if leg_of[oid].is_exit else "BUY"), (o, leg_of[oid])
            assert int(o["created_at"]) < window_s + WINDOW_S, o
        invariants.check_orders(st.redis, orders)
        invariants.check_ledger(st.redis)
        invariants.check_counts(st.redis)
        sells = [
            f["ref"] for _, f in st.redis.xrange("baton:ledger") if f["kind"] == "sell" and slot in f["ref"]
        ]
        assert sorted(sells) == sorted(f"sell:{i.id}" for i in sold), sells

        # 5. The decision log: passes before the window, the buy, the sell, each with a reason.
        out = _ok(st.baton("decisions", slot, "--limit", "200", "--json"), "baton decisions")
        decisions = json.loads(out)
        assert decisions and all(d["slot"] == slot and d["reason"] for d in decisions), decisions[:3]
        at = [d["at_ms"] for d in decisions]
        assert at == sorted(at, reverse=True), "not newest first"
        actions = {d["action"] for d in decisions}
        assert {"buy", "sell", "pass"} <= actions, actions
        [buy] = [d for d in decisions if d["action"] == "buy" and d["intent_id"] == entry.id]
        assert buy["window_start_s"] == window_s and buy["outcome"] == "intent", buy
        assert any(d["action"] == "sell" and d["intent_id"] in {i.id for i in sold} for d in decisions)
        assert any(d["action"] == "pass" and d["at_ms"] < buy["at_ms"] for d in decisions)

        # 6. Replay parity (issue #26): every decision this run logged, snipe's and the new
        #    strategy's, through the hot reload, the parameter change and the crash, made again
        #    by the code that made it (each record's release), equal to the last field.
        now = f"{time.time():.3f}"
        out = _ok(st.baton("replay", "--from", f"{started_s:.3f}", "--to", now, "--json"), "baton replay")
        replayed = json.loads(out)
        brief = {k: replayed[k] for k in ("decisions", "equal", "differ", "notes", "problems")}
        assert replayed["decisions"] > 0 and replayed["differ"] == 0, brief
        assert replayed["equal"] == replayed["decisions"] and not replayed["notes"], brief
        assert {slot, "btc-1m"} <= set(replayed["slots"]), replayed["slots"].keys()
    except BaseException:
        print(st.logs())
        raise
    finally:
        st.stop()
        for p in (module, test_file):
            p.unlink(missing_ok=True)

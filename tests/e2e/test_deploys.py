"""Blue/green deploys on a real stack (redis-server, supervisord, sim, feed, both colours):
many deploys while slots trade, broken releases, rollback. The invariants are checked from
the journal and the sim's order list (tests/e2e/invariants.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from deploy.releases import PACKAGES
from deploy.sandbox import TRADING, Stack, wait_for
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _deploy(st: Stack, *args: str) -> dict:
    out = st.baton("deploy", "--json", *args, timeout_s=240)
    assert out.returncode == 0, f"deploy failed:\n{out.stdout}\n{out.stderr}\n{st.logs()}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _source_copy(tmp: Path) -> Path:
    """A copy of the code to deploy from, so that a test can break it without touching the repo."""
    src = tmp / "src"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return src


def _ticks_since(st: Stack, tick: int, n: int) -> None:
    wait_for(
        lambda: int(st.redis.hget("baton:stats", "last_tick") or 0) >= tick + n,
        60,
        f"{n} more ticks after tick {tick}",
    )


@pytest.mark.serial
def test_twenty_deploys_while_trading_miss_no_tick_and_duplicate_nothing():
    st = Stack(BATON_TICK_MS="500", **TRADING)
    try:
        st.start()
        first = int(st.redis.hget("baton:stats", "last_tick"))
        results = [_deploy(st) for _ in range(20)]
        _ticks_since(st, results[-1]["handover_tick"], 3)

        # Every handover: the next colour took over right after the old one's tick.
        colors = [r["color"] for r in results]
        assert colors == ["green", "blue"] * 10
        assert [r["missed"] for r in results] == [0] * 20

        rep = invariants.check_ticks(invariants.journal(st.redis), since_tick=first)
        assert rep.missed_not_overrun == [], f"ticks missed during the deploys: {rep.missed}"
        assert rep.overruns_are_rare(), rep
        # One run of ticks per lease holder, colours alternating at every handover.
        run_colors = [c for c, _, _ in rep.runs]
        assert run_colors == ["blue", "green"] * 10 + ["blue"], rep.runs
        for r in results:  # the journal agrees with what each deploy reported
            entries = {int(e["tick"]): e for e in invariants.journal(st.redis)}
            assert entries[r["handover_tick"]]["color"] == r["from_color"]
            assert entries[r["handover_tick"] + 1]["color"] == r["color"]
            assert int(entries[r["handover_tick"] + 1]["epoch"]) == r["epoch"]
        stats = st.redis.hgetall("baton:stats")
        assert int(stats["handovers"]) == 20 and int(stats.get("ticks_missed", 0)) == 0

        orders = st.sim_orders()
        rep_o = invariants.check_orders(st.redis, orders)
        assert rep_o.posted >= 1, "no order was posted during the deploys: the test traded nothing"
        # The old worker was stopped every time: one worker process per colour at most, one running.
        states = {p["name"]: p["statename"] for p in st.supervisor("getAllProcessInfo")}
        assert states["worker-blue"] == "RUNNING" and states["worker-green"] == "STOPPED"
        assert st.redis.xlen("baton:deploys") == 20
    finally:
        st.stop()


@pytest.mark.xdist_group("stacks-c")
def test_broken_releases_never_take_over_and_rollback_hands_back(tmp_path):
    st = Stack(BATON_TICK_MS="500", **TRADING)
    try:
        st.start()
        first = int(st.redis.hget("baton:stats", "last_tick"))
        blue_release = st.redis.hget("baton:lease", "release")

        # 1. A strategy that raises: refused by the readiness gate's dry evaluation.
        src = _source_copy(tmp_path)
        snipe = src / "worker" / "strategies" / "snipe.py"
        snipe.write_text(
            snipe.read_text() + "\n\ndef evaluate(inp):\n    raise ZeroDivisionError('strategy bug 17')\n"
        )
        out = st.baton("deploy", "--source", str(src), timeout_s=240)
        assert out.returncode != 0
        assert "dry evaluation" in out.stderr and "strategy bug 17" in out.stderr, out.stderr
        assert "worker-blue keeps trading" in out.stderr

        # 2. A kernel module that cannot be imported: the traceback is the reason.
        src2 = _source_copy(tmp_path / "b")
        tick_py = src2 / "kernel" / "tick.py"
        tick_py.write_text(tick_py.read_text() + "\nimport baton_no_such_module_42\n")
        out = st.baton("deploy", "--source", str(src2), timeout_s=240)
        assert out.returncode != 0
        assert "ModuleNotFoundError" in out.stderr and "baton_no_such_module_42" in out.stderr, out.stderr

        # 3. Version skew: a release that cannot read the data in Redis refuses readiness.
        src4 = _source_copy(tmp_path / "d")
        structs = src4 / "state" / "structs.py"
        text = structs.read_text()
        for name in ("SCHEMA_VERSION", "SCHEMA_READS_FROM", "SCHEMA_READABLE_BY"):
            text = text.replace(f"{name} = 1\n", f"{name} = 3\n")
        structs.write_text(text)
        out = st.baton("deploy", "--source", str(src4), timeout_s=240)
        assert out.returncode != 0
        assert "Redis holds schema version 1; this release reads versions 3..3 only" in out.stderr, out.stderr
        assert st.redis.get("baton:schema:version") == "1"

        # The broken workers were stopped, blue never stopped trading, nothing was missed.
        assert st.supervisor("getProcessInfo", "worker-green")["statename"] in ("STOPPED", "EXITED", "FATAL")
        last = int(st.redis.hget("baton:stats", "last_tick"))
        _ticks_since(st, last, 2)
        rep = invariants.check_ticks(invariants.journal(st.redis), since_tick=first)
        assert rep.missed_not_overrun == [] and rep.overruns_are_rare(), rep
        assert [c for c, _, _ in rep.runs] == ["blue"], rep
        failed = [f for _, f in st.redis.xrange("baton:deploys")]
        assert [f["result"] for f in failed] == ["failed", "failed", "failed"]

        # 4. A good new release deploys; rollback hands back to the one before, the same way.
        src3 = _source_copy(tmp_path / "c")
        (src3 / "worker" / "strategies" / "snipe.py").write_text(
            (src3 / "worker" / "strategies" / "snipe.py").read_text() + "\n# release 3\n"
        )
        new = _deploy(st, "--source", str(src3))
        assert new["release"] != blue_release and new["color"] == "green" and new["missed"] == 0
        out = st.baton("rollback", "--json", timeout_s=240)
        assert out.returncode == 0, out.stderr
        back = json.loads(out.stdout.strip().splitlines()[-1])
        assert back["kind"] == "rollback" and back["release"] == blue_release and back["color"] == "blue"
        assert back["missed"] == 0
        _ticks_since(st, back["handover_tick"], 2)
        rep = invariants.check_ticks(invariants.journal(st.redis), since_tick=first)
        assert rep.missed_not_overrun == [] and rep.overruns_are_rare(), rep
        assert [(c, rel) for c, rel, _ in rep.runs] == [
            ("blue", blue_release),
            ("green", new["release"]),
            ("blue", blue_release),
        ]
        invariants.check_orders(st.redis, st.sim_orders())

        # 5. A shadow of a deliberately changed snipe (it passes where the live one bought or
        # passed, saying so; on xrp it reads the worker's Redis password): it posts nothing,
        # its diff lists the changed decisions, the read is refused, and so is its promotion.
        _shadow_posts_nothing_and_lists_the_change(st, tmp_path / "e")
        # 6. A promoted shadow hands over as a deploy does: no missed tick.
        _promoted_shadow_hands_over_without_a_missed_tick(st, src3, first)
    finally:
        st.stop()


# Ticks of the live worker a shadow follows: at 500 ms, 12 s, more than the 10 s between two
# entry zones of the 15 s windows (snipe evaluates only in the last third of a window).
SHADOW_TICKS = 24
CHANGED_SNIPE = """

_live_evaluate = evaluate


def evaluate(inp):
    answer = _live_evaluate(inp)
    if inp.slot_id == "xrp-15s":  # a release under test reaching for a secret: refused
        import os

        with open(os.path.join(os.environ["BATON_HOME"], "var", "secrets", "redis", "worker")) as f:
            return Pass(reason="stolen: " + f.read())
    return Pass(reason="changed: would " + (f"buy {answer.side}" if answer is not None else "pass"))
"""


def _shadow_posts_nothing_and_lists_the_change(st: Stack, tmp: Path) -> None:
    src = _source_copy(tmp)
    snipe = src / "worker" / "strategies" / "snipe.py"
    live_text = snipe.read_text()
    lease = st.redis.hgetall("baton:lease")
    # A release whose strategy raises cannot shadow: a clear message, and the live worker trades on.
    snipe.write_text(live_text + "\n\ndef evaluate(inp):\n    raise ZeroDivisionError('shadow bug 23')\n")
    out = st.baton("deploy", "--source", str(src), "--shadow", "4", timeout_s=240)
    assert out.returncode == 1 and "shadow bug 23" in out.stderr, out.stderr
    assert f"worker-{lease['color']} keeps trading" in out.stderr, out.stderr
    assert st.redis.hget("baton:lease", "holder") == lease["holder"]

    text = live_text.replace(
        "from kernel.strategy_api import Decision,", "from kernel.strategy_api import Decision, Pass,"
    )
    snipe.write_text(text + CHANGED_SNIPE)
    orders_before = {o["id"] for o in st.sim_orders()}
    t0 = time.monotonic()
    # --promote: refused, since the shadow erred (the refused read) where live did not. Every
    # 12 s holds the start of a 5 s entry zone, where each slot is evaluated at least once.
    out = st.baton("deploy", "--json", "--source", str(src), "--shadow", str(SHADOW_TICKS), "--promote")
    print(f"shadow deploy of {SHADOW_TICKS} ticks: {time.monotonic() - t0:.1f} s")
    assert out.returncode == 1 and "not promoted" in out.stderr, f"{out.stdout}\n{out.stderr}"
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["shadow_ticks"] >= SHADOW_TICKS and res["promoted"] is False
    assert "answered an error where live did not" in res["promote_refused"], res
    assert res["orders_posted"] == 0 and res["decisions"] >= 1, res
    assert res["differ"] == res["decisions"] and len(res["differences"]) == res["differ"]
    stolen = [d for d in res["differences"] if d["slot"] == "xrp-15s"]
    assert stolen and res["refused_io"] == res["erred"] == len(stolen), res
    for d in stolen:
        assert d["shadow"]["kind"] == "error" and "StrategyIORefused" in d["shadow"]["reason"]
        assert "opened a file" in d["shadow"]["reason"] and "redis/worker" in d["shadow"]["reason"]
    password = (st.home / "var" / "secrets" / "redis" / "worker").read_text().strip()
    shadow_log = (st.home / "var" / "log" / "shadow.log").read_text(errors="replace")
    assert password not in out.stdout + out.stderr + shadow_log
    assert password not in repr(st.redis.hgetall("baton:shadow")) + repr(st.redis.xrange("baton:shadow:log"))
    d = next(d for d in res["differences"] if d["slot"] != "xrp-15s")
    assert d["strategy"] == "snipe" and d["live_release"] == lease["release"]
    assert d["shadow"]["kind"] == "pass" and d["shadow"]["reason"].startswith("changed: would ")
    assert d["live"]["kind"] in ("buy", "none")
    if d["live"]["kind"] == "buy":  # both reasons: the live one says why it bought
        assert "beats ask" in d["live"]["reason"]
    # The shadow is stopped, the live worker never stopped trading, and the venue saw no order
    # but the live worker's: each is one of its intents (none without one, none doubled).
    assert st.supervisor("getProcessInfo", "shadow")["statename"] == "STOPPED"
    assert st.redis.hget("baton:lease", "holder") == lease["holder"]
    orders = st.sim_orders()
    rep_o = invariants.check_orders(st.redis, orders)
    new_orders = [o for o in orders if o["id"] not in orders_before]
    intents = {i.order_id: i for i in invariants.redis_intents(st.redis)}
    assert all(int(intents[o["id"]].epoch) == int(lease["epoch"]) for o in new_orders), new_orders
    assert rep_o.posted >= 1
    out = st.baton("shadow", "diff", "--json", timeout_s=30)
    assert out.returncode == 0 and json.loads(out.stdout)["shadow"]["differ"] == res["differ"], out.stderr


def _promoted_shadow_hands_over_without_a_missed_tick(st: Stack, src: Path, first: int) -> None:
    t0 = time.monotonic()
    # Promoted only on evidence: at least one decision compared (snipe evaluates only in the
    # last 5 s of each 15 s window, so 4 ticks alone usually compare none).
    res = _deploy(st, "--source", str(src), "--shadow", "4", "--shadow-decisions", "1", "--promote")
    print(f"promoted shadow deploy: {time.monotonic() - t0:.1f} s")
    assert res["promoted"] is True and res["orders_posted"] == 0 and res["shadow_ticks"] >= 4
    assert res["decisions"] >= 1 and res["promote_refused"] == "", res
    assert res["differ"] == 0 and res["erred"] == res["refused_io"] == 0, res["differences"]
    assert res["missed"] == 0 and res["deploy"]["missed"] == 0
    assert res["deploy"]["release"] == res["release"] and res["deploy"]["color"] == "green"
    _ticks_since(st, res["deploy"]["handover_tick"], 2)
    rep = invariants.check_ticks(invariants.journal(st.redis), since_tick=first)
    assert rep.missed_not_overrun == [] and rep.overruns_are_rare(), rep
    assert [c for c, _, _ in rep.runs][-2:] == ["blue", "green"]

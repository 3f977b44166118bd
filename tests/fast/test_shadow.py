"""The shadow (worker/shadow.py) on fakeredis: it follows input log batches appended as the
worker appends them, evaluates each recorded input with its own strategies, counts ticks and
decisions, and writes the differences with both answers (state/shadow.py); `baton shadow diff`
renders them. The real stack: tests/e2e/test_deploys.py (a shadow deploy and a promotion)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest

from baton import cli
from baton.cli.shadow import render_diff
from kernel.input_log import encode_batch, evaluation
from kernel.strategy_api import Buy, Pass, SlotInput
from state import acl
from state.keys import Keys
from state.shadow import ShadowRepo
from worker import shadow
from worker.strategies import snipe

REPO = Path(__file__).resolve().parents[2]
K = Keys("baton:")


def _input(slot: str = "btc-15s", up_ask: float = 0.4, down_ask: float | None = None) -> SlotInput:
    return SlotInput(
        slot_id=slot,
        asset="btc",
        timeframe="15s",
        now_ms=1_765_152_013_000,
        window_start_ms=1_765_152_000_000,
        window_end_ms=1_765_152_015_000,
        open_price=100.0,
        last_price=100.2,
        closes=(100.0, 100.1, 100.05, 100.15, 100.2, 100.2),
        stake_usd=5.0,
        params={"edge": 0.0},
        up_ask=up_ask,
        down_ask=1 - up_ask if down_ask is None else down_ask,
    )


def _append(r: Any, tick: int, inputs: list[SlotInput]) -> None:
    """One tick's batch as the worker appends it: live answers from the repo's snipe."""
    evs = [
        evaluation(
            tick, i.slot_id, i.window_start_ms // 1000, i.now_ms, "snipe", "live-rel", i, snipe.evaluate(i)
        )
        for i in inputs
    ]
    fields = {"tick": tick, "at_ms": 1_765_152_013_000 + tick, "release": "live-rel", "n": len(evs)}
    r.xadd(K.input_log(), {**fields, "data": encode_batch(evs) if evs else b""})


# A changed snipe: never enters, and says so.
CHANGED = SimpleNamespace(evaluate=lambda inp: Pass(reason="changed: never enter"))


def _shadow(r: Any, resolve: Any) -> shadow.Shadow:
    sh = shadow.Shadow(r, K, "new-rel", resolve=resolve)
    sh.last_id = "0-0"  # the batches appended before it started, as if it had been running
    return sh


def test_the_same_code_agrees_on_every_decision_and_empty_ticks_are_counted():
    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 1, [_input(), _input("eth-15s", up_ask=0.97, down_ask=0.97)])
    _append(r, 2, [])  # a tick that evaluated nothing: counted all the same
    sh = _shadow(r, lambda name: snipe)
    assert sh.step() == 2
    st = ShadowRepo(r, K).status()
    assert (st.ticks, st.decisions, st.differ, st.orders_posted) == (2, 2, 0, 0)
    assert st.release == "new-rel" and st.state == "following" and st.last_tick == 2
    assert r.xlen(K.shadow_log()) == 0


def test_a_changed_strategy_is_reported_with_both_answers_and_reasons():
    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 7, [_input(), _input("eth-15s", up_ask=0.97, down_ask=0.97)])
    live_buy = snipe.evaluate(_input())
    assert isinstance(live_buy, Buy)  # the live decision the change affects
    sh = _shadow(r, lambda name: CHANGED)
    sh.step()
    diff = ShadowRepo(r, K).diff()
    assert (diff.shadow.decisions, diff.shadow.differ, diff.equal) == (2, 2, 0)
    d = diff.differences[0]
    assert (d.tick, d.slot, d.strategy, d.live_release) == (7, "btc-15s", "snipe", "live-rel")
    assert d.live.kind == "buy" and d.live.side == live_buy.side and d.live.reason == live_buy.reason
    assert d.live.price == live_buy.limit_price and d.live.stake_usd == 5.0
    assert d.shadow.kind == "pass" and d.shadow.reason == "changed: never enter"
    assert diff.differences[1].live.kind == "none"  # the eth slot: no order live, a pass here
    text = render_diff(diff)
    assert "2 different" in text and "changed: never enter" in text and live_buy.reason in text


def test_a_strategy_that_raises_or_is_missing_is_an_error_answer_never_a_crash():
    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 3, [_input()])

    def resolve(name: str) -> Any:
        raise ModuleNotFoundError(
            f"No module named 'worker.strategies.{name}'", name=f"worker.strategies.{name}"
        )

    sh = _shadow(r, resolve)
    sh.step()
    (d,) = ShadowRepo(r, K).diff().differences
    assert d.shadow.kind == "error" and "not in release new-rel" in d.shadow.reason
    boom = SimpleNamespace(evaluate=lambda inp: 1 / 0)
    _append(r, 4, [_input()])
    _shadow(r, lambda name: boom).step()
    assert "ZeroDivisionError" in ShadowRepo(r, K).diff().differences[-1].shadow.reason
    # A price msgspec cannot even encode: would raise out of the comparison, and restart forever.
    junk = SimpleNamespace(
        evaluate=lambda inp: Buy(side="up", limit_price=Fraction(2, 5), stake_usd=5.0, reason="r")
    )
    _append(r, 5, [_input()])
    _shadow(r, lambda name: junk).step()
    d = ShadowRepo(r, K).diff().differences[-1]
    assert d.tick == 5 and d.shadow.kind == "error" and "cannot be recorded" in d.shadow.reason


def test_an_unreadable_batch_is_skipped_and_the_follower_goes_on():
    r = fakeredis.FakeRedis(decode_responses=True)
    r.xadd(K.input_log(), {"tick": 1, "at_ms": 1, "release": "x", "n": 1, "data": b"\x09garbage"})
    _append(r, 2, [_input()])
    sh = _shadow(r, lambda name: snipe)
    sh.step()
    sh.step()  # nothing new: returns after the block, still standing
    st = ShadowRepo(r, K).status()
    assert st.decisions == 1 and st.differ == 0 and st.last_tick == 2


def test_a_restarted_shadow_goes_on_after_the_last_tick_it_evaluated():
    r = fakeredis.FakeRedis(decode_responses=True)
    ShadowRepo(r, K).reset("new-rel", 1)
    _append(r, 1, [_input()])
    _shadow(r, lambda name: CHANGED).step()
    _append(r, 2, [_input()])
    again = shadow.Shadow(r, K, "new-rel", resolve=lambda name: CHANGED)
    again.resume()
    again.step()
    st = ShadowRepo(r, K).status()
    assert (st.ticks, st.decisions, st.differ, st.last_tick) == (2, 2, 2, 2)


def test_the_shadow_user_reads_the_input_log_and_writes_only_the_shadow_keys():
    rules = acl.rules("shadow", "baton:")
    writable = [x for x in rules if x.startswith("~")]
    assert sorted(writable) == ["~baton:shadow", "~baton:shadow:*"]
    assert "%R~baton:inputs:*" in rules
    assert not any("rq:" in x or x.startswith("&") for x in rules)  # no queue, no channel


def test_the_shadow_module_imports_no_venue_client():
    code = (
        "import sys, worker.shadow; print(sorted(m for m in sys.modules if m.startswith(('venues', 'sim'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_release_whose_strategy_fails_its_dry_evaluation_cannot_shadow(monkeypatch: pytest.MonkeyPatch):
    r = fakeredis.FakeRedis(decode_responses=True)

    def refuse() -> list[str]:
        raise shadow.strategy_check.StrategyCheckError("strategy snipe: bug 17")

    monkeypatch.setattr(shadow, "check_release", refuse)
    assert shadow.Shadow(r, K, "bad-rel").run() == shadow.EXIT_CANNOT_SHADOW
    st = ShadowRepo(r, K).status()
    assert st.state == "failed" and "bug 17" in st.error


def test_the_repos_strategies_pass_the_shadows_own_check():
    assert "snipe" in shadow.check_release()


# --- the doors: GET /shadow and `baton shadow diff` ---------------------------------------------------
async def test_get_shadow_answers_the_counters_and_differences(api: Any):
    status, body, _ = await api.call("GET", "/shadow")
    assert status == 200 and body["shadow"]["release"] == "" and body["differences"] == []
    _append(api.r, 5, [_input(), _input("eth-15s", up_ask=0.97, down_ask=0.97)])
    _shadow(api.r, lambda name: CHANGED).step()
    status, body, _ = await api.call("GET", "/shadow?count=1")
    assert status == 200 and body["shadow"]["differ"] == 2 and body["shadow"]["orders_posted"] == 0
    assert [d["slot"] for d in body["differences"]] == ["eth-15s"]  # the newest one
    assert body["differences"][0]["shadow"]["reason"] == "changed: never enter"
    status, body, _ = await api.call("GET", "/shadow?count=0")
    assert status == 400 and "bad query string" in body["error"]


def test_baton_shadow_diff_prints_the_differences(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
):
    for name in [n for n in os.environ if n.startswith("BATON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    r = fakeredis.FakeRedis(decode_responses=True)
    monkeypatch.setattr("baton.cli.shadow.connection.client", lambda s, **kw: r)
    assert cli.main(["shadow", "diff"]) == 0
    assert "no shadow has run" in capsys.readouterr().out
    _append(r, 5, [_input()])
    _shadow(r, lambda name: CHANGED).step()
    assert cli.main(["shadow", "diff", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["shadow"]["differ"] == 1 and body["differences"][0]["live"]["kind"] == "buy"
    assert cli.main(["deploy", "--promote"]) == 1
    assert "--promote goes with --shadow" in capsys.readouterr().err


def test_a_shadow_deploy_refuses_a_bad_count_and_a_stack_that_is_not_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
):
    for name in [n for n in os.environ if n.startswith("BATON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    assert cli.main(["deploy", "--shadow", "0"]) == 1
    assert "at least 1" in capsys.readouterr().err
    assert cli.main(["deploy", "--shadow", "3", "--promote", "--json"]) == 1
    err = capsys.readouterr().err
    assert "supervisord is not running" in err and "make run" in err


# --- the release under test runs guarded: no file, socket or process (worker/shadow.py) -------------
SECRET = "0x" + "5ec2e7" * 10 + "abcd"


def _home_with_a_secret(tmp_path: Path) -> Path:
    secrets = tmp_path / "var" / "secrets"
    secrets.mkdir(parents=True)
    key = secrets / "private-key"
    key.write_text(SECRET + "\n")
    key.chmod(0o600)
    return key


def _everything_the_shadow_wrote(r: Any) -> str:
    return repr(r.hgetall(K.shadow())) + repr(r.xrange(K.shadow_log()))


def test_a_strategy_that_reads_the_venue_key_is_refused_and_the_key_goes_nowhere(tmp_path: Path, caplog: Any):
    key = _home_with_a_secret(tmp_path)

    def steal(inp: SlotInput) -> Any:
        return Pass(reason="key " + key.read_text())

    def steal_quietly(inp: SlotInput) -> Any:
        try:  # a refusal swallowed is refused all the same
            return Pass(reason="key " + open(key).read())
        except Exception as e:
            return Pass(reason=f"no key: {e}")

    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 1, [_input()])
    _append(r, 2, [_input()])
    sh = _shadow(r, lambda name: SimpleNamespace(evaluate=steal))
    sh.step()
    sh.resolve = lambda name: SimpleNamespace(evaluate=steal_quietly)
    _append(r, 3, [_input()])
    sh.step()
    diff = ShadowRepo(r, K).diff()
    st = diff.shadow
    assert (st.decisions, st.differ, st.erred, st.refused_io, st.orders_posted) == (3, 3, 3, 3, 0)
    for d in diff.differences:
        assert d.shadow.kind == "error" and "StrategyIORefused" in d.shadow.reason
        assert f"opened a file ({str(key)!r})" in d.shadow.reason and "in a shadow" in d.shadow.reason
    everything = _everything_the_shadow_wrote(r) + caplog.text + render_diff(diff)
    assert SECRET not in everything and "5ec2e7" not in everything


def test_a_strategy_that_opens_a_socket_or_a_process_is_refused(tmp_path: Path):
    import encodings.idna  # noqa: F401  (loaded as by a live worker: the socket is what is refused)
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    port = listener.getsockname()[1]

    def post(inp: SlotInput) -> Any:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as c:
            c.sendall(b"POST /order")
        return Pass(reason="posted")

    def shell(inp: SlotInput) -> Any:
        subprocess.run(["true"], check=False)
        return Pass(reason="ran")

    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 1, [_input()])
    sh = _shadow(r, lambda name: SimpleNamespace(evaluate=post))
    sh.step()
    _append(r, 2, [_input()])
    sh.resolve = lambda name: SimpleNamespace(evaluate=shell)
    sh.step()
    with pytest.raises(TimeoutError):
        listener.accept()  # nobody connected
    listener.close()
    net, proc = ShadowRepo(r, K).diff().differences
    assert "strategy 'snipe' reached the network (socket." in net.shadow.reason, net.shadow.reason
    assert "started a process (subprocess.Popen)" in proc.shadow.reason, proc.shadow.reason
    st = ShadowRepo(r, K).status()
    assert (st.refused_io, st.erred, st.orders_posted) == (2, 2, 0)


def test_the_guard_refuses_nothing_a_strategy_needs_frames_classes_and_late_imports(tmp_path: Path):
    """I/O only: a strategy that builds a dataclass, logs, or imports a module inside evaluate
    (loaded ahead by the shadow, outside the guard) answers as it does live."""
    import importlib.util

    f = tmp_path / "late.py"
    f.write_text(
        "import dataclasses, logging\n"
        "from kernel.strategy_api import Pass\n\n"
        "def evaluate(inp):\n"
        "    import colorsys  # not loaded anywhere else\n"
        "    logging.getLogger('late').info('evaluating %s', inp.slot_id)\n"
        "    P = dataclasses.make_dataclass('P', [('x', float)])\n"
        "    return Pass(reason=f'hue {colorsys.rgb_to_hsv(P(0.5).x, 0.2, 0.1)[0]:.3f}')\n"
    )
    spec = importlib.util.spec_from_file_location("_shadow_late_strategy", f)
    assert spec is not None and spec.loader is not None
    late = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(late)
    i = _input()
    live = late.evaluate(i)
    sys.modules.pop("colorsys", None)  # as if nothing had loaded it yet
    r = fakeredis.FakeRedis(decode_responses=True)
    r.xadd(
        K.input_log(),
        {
            "tick": 1,
            "at_ms": 1,
            "release": "live-rel",
            "n": 1,
            "data": encode_batch([evaluation(1, i.slot_id, 0, i.now_ms, "late", "live-rel", i, live)]),
        },
    )
    _shadow(r, lambda name: late).step()
    st = ShadowRepo(r, K).status()
    assert (st.decisions, st.differ, st.refused_io) == (1, 0, 0), ShadowRepo(r, K).diff().differences


def test_a_release_whose_strategy_reads_a_file_in_its_dry_evaluation_cannot_shadow(tmp_path: Path):
    from baton.errors import StrategyIORefused
    from kernel import strategy_check

    key = _home_with_a_secret(tmp_path)
    reads = SimpleNamespace(API=1, evaluate=lambda inp: Pass(reason=key.read_text()))
    inputs = strategy_check.sample_inputs(1_765_152_013_000)
    with pytest.raises(StrategyIORefused, match="opened a file") as e:
        shadow.dry_check(reads, "reads", inputs)
    assert SECRET not in str(e.value)
    shadow.dry_check(snipe, "snipe", inputs)  # the repo's own: nothing refused


def test_the_shadow_programs_environment_holds_nothing_but_its_redis_user():
    import configparser

    conf = configparser.RawConfigParser(strict=False)
    conf.read(REPO / "supervisor.conf")
    env = conf.get("program:shadow", "environment")
    assert env.strip() == 'BATON_REDIS_USER="shadow"'  # no key, no password: those are files
    assert "shadow" in acl.GRANTS and set(acl.GRANTS["shadow"].concerns) == {"inputs", "shadow"}


# --- promote only on evidence (deploy/shadow.py) --------------------------------------------------------
def test_a_promotion_wants_decisions_compared_and_no_error_live_did_not_make():
    from deploy.shadow import promote_refusal
    from state.shadow import ShadowStatus

    nothing = promote_refusal(ShadowStatus(ticks=4, decisions=0))
    assert "compared 0 decisions in 4 ticks" in nothing and "--force" in nothing
    erred = promote_refusal(ShadowStatus(ticks=4, decisions=8, differ=2, erred=2, refused_io=1))
    assert "error where live did not in 2 decision(s)" in erred and "1 refused" in erred
    assert promote_refusal(ShadowStatus(ticks=4, decisions=8, differ=3)) == ""


def test_a_refused_promotion_prints_the_report_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
):
    from deploy import shadow as shadow_deploy

    for name in [n for n in os.environ if n.startswith("BATON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    asked: dict[str, Any] = {}

    def fake(s: Any, ticks: int, **kw: Any) -> shadow_deploy.ShadowResult:
        asked.update(kw, ticks=ticks)
        return shadow_deploy.ShadowResult(
            release="r2", from_release="r1", shadow_ticks=4, decisions=0, equal=0, differ=0, erred=0,
            refused_io=0, orders_posted=0, differences=[], promoted=False, ready_s=1.0, total_s=3.0,
            promote_refused="the shadow compared 0 decisions in 4 ticks: it shows nothing: not promoted",
        )  # fmt: skip

    monkeypatch.setattr(shadow_deploy, "shadow_deploy", fake)
    assert cli.main(["deploy", "--shadow", "4", "--promote", "--shadow-decisions", "2"]) == 1
    out = capsys.readouterr()
    assert "0 decisions compared" in out.out and "compared 0 decisions: this shadow shows nothing" in out.out
    assert "not promoted" in out.err
    assert asked["promote"] is True and asked["min_decisions"] == 2 and asked["force"] is False
    assert cli.main(["deploy", "--shadow", "4", "--promote", "--force", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["promote_refused"].startswith("the shadow compared 0")
    assert asked["force"] is True
    assert cli.main(["deploy", "--force"]) == 1
    assert "go with --shadow N" in capsys.readouterr().err


def test_an_exceptions_repr_is_strategy_code_and_runs_guarded_too(tmp_path: Path):
    """classify() formats a strategy's exception after evaluate returned: its __repr__ would
    run unguarded and could carry a file's content into the shadow log."""
    key = _home_with_a_secret(tmp_path)

    class Leak(Exception):
        def __repr__(self) -> str:
            return "Leak(" + key.read_text() + ")"

    def evaluate(inp: SlotInput) -> Any:
        raise Leak()

    r = fakeredis.FakeRedis(decode_responses=True)
    _append(r, 1, [_input()])
    _shadow(r, lambda name: SimpleNamespace(evaluate=evaluate)).step()
    (d,) = ShadowRepo(r, K).diff().differences
    assert d.shadow.kind == "error" and "opened a file" in d.shadow.reason
    assert SECRET not in _everything_the_shadow_wrote(r)
    assert ShadowRepo(r, K).status().refused_io == 1


def test_a_fresh_shadow_process_agrees_with_the_repos_strategies_under_the_guard():
    """In a process of its own (nothing loaded but what worker.shadow imports), as under
    supervisor: a lazy import in the repo's strategies or the kernel would be refused there."""
    code = """
import fakeredis
from kernel.input_log import encode_batch, evaluation as ev
from kernel.readiness import resolve_strategy
from kernel.strategy_api import SlotInput
from state.keys import Keys
from state.shadow import ShadowRepo
from worker import shadow

K, T = Keys("baton:"), 1_765_152_013_000
closes = (100.0, 100.1, 100.05, 100.15, 100.2, 100.2)
inputs = [
    SlotInput(slot_id=f"{a}-15s", asset=a, timeframe="15s", now_ms=T, window_start_ms=T - 13_000,
              window_end_ms=T + 2000, open_price=100.0, last_price=100.2, closes=closes,
              stake_usd=5.0, params={"edge": 0.0}, up_ask=up, down_ask=1 - up)
    for a, up in (("btc", 0.4), ("eth", 0.97), ("sol", 0.6))
]
evs = [ev(1, i.slot_id, 0, T, n, "live", i, resolve_strategy(n).evaluate(i)) for n in ("snipe", "momentum") for i in inputs]
r = fakeredis.FakeRedis(decode_responses=True)
r.xadd(K.input_log(), {"tick": 1, "at_ms": 1, "release": "live", "n": len(evs), "data": encode_batch(evs)})
sh = shadow.Shadow(r, K, "new-rel")
sh.last_id = "0-0"
shadow.check_release()
sh.step()
st = ShadowRepo(r, K).status()
print(st.decisions, st.differ, st.refused_io, [d.shadow.reason for d in ShadowRepo(r, K).diff().differences])
"""  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6 0 0 []"

"""The `baton` CLI in-process over fakeredis and a fake supervisord: what it prints (tables and
--json), its exit codes (0 done, 1 refused, 2 usage) and the audit lines it leaves."""

from __future__ import annotations

import json
import os
from typing import Any

import fakeredis
import msgspec
import pytest

from baton import cli
from control import commands as c
from deploy import logs
from deploy.ports import free_port
from state.keys import Keys
from state.structs import SLOT, Slot

K = Keys("baton:")
TOKEN = "t0ken-for-the-fast-tests-only-0123456789"


class FakeSupervisor:
    def __init__(self, **states: str) -> None:
        self.states = {"worker-blue": "RUNNING", "worker-green": "STOPPED", **states}
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, method: str, *args: Any) -> Any:
        self.calls.append((method, *args))
        if method == "getAllProcessInfo":
            return [{"name": n, "statename": s} for n, s in self.states.items()]
        if method == "startProcess":
            self.states[args[0]] = "RUNNING"
        elif method == "stopProcess":
            self.states[args[0]] = "STOPPED"
        return True


@pytest.fixture
def env(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setenv("BATON_ASSETS", "btc,eth")
    monkeypatch.setenv("BATON_TIMEFRAMES", "15m")
    monkeypatch.setenv("LOGNAME", "alice")  # getpass.getuser() reads it first
    return tmp_path


@pytest.fixture
def r(env, monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    for sid, asset in (("btc-15m", "btc"), ("eth-15m", "eth")):
        client.hset(K.slots(), sid, SLOT.encode(Slot(id=sid, asset=asset, timeframe="15m")).decode())
    monkeypatch.setattr(cli, "redis_client", lambda s: client)
    return client


@pytest.fixture
def sup(monkeypatch):
    fake = FakeSupervisor()
    monkeypatch.setattr(cli, "supervisor_for", lambda s: fake)
    return fake


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def last_audit(r: fakeredis.FakeRedis) -> dict[str, str]:
    [(_id, fields)] = r.xrevrange(K.audit(), count=1)
    return fields


def slot(r: fakeredis.FakeRedis, sid: str) -> Slot:
    return SLOT.decode(r.hget(K.slots(), sid))


# --- slots -------------------------------------------------------------------------------------


def test_slots_prints_an_aligned_table_and_json(r, sup, capsys):
    code, out, _ = run(capsys, "slots")
    assert code == 0
    head, *rows = out.splitlines()
    columns = ("slot", "enabled", "stake", "strategy", "window ends in", "position", "last decision")
    assert head.split("  ")[0] == "slot" and all(col in head for col in (*columns, "blocked"))
    assert [row.split()[0] for row in rows] == ["btc-15m", "eth-15m"]
    # Aligned: every value starts where its column's title does.
    for row in rows:
        assert row[head.index("enabled") :].startswith("yes ") and row[head.index("stake") :].startswith("5 ")
        assert row[head.index("strategy") :].startswith("snipe ")
    assert "stale data" in rows[0]  # no feed has written: entries are blocked, and the table says why

    code, out, _ = run(capsys, "slots", "--json")
    res = msgspec.json.decode(out, type=c.SlotsResult)
    assert code == 0 and [v.id for v in res.slots] == ["btc-15m", "eth-15m"]
    assert res.slots[0].enabled and res.slots[0].stake_usd == 5.0 and 0 < res.slots[0].remaining_s <= 900


def test_slots_disable_and_enable_change_redis_and_are_audited_as_cli(r, sup, capsys):
    code, out, _ = run(capsys, "slots", "disable", "btc-15m")
    assert code == 0 and out.startswith("btc-15m: disabled") and not slot(r, "btc-15m").enabled
    a = last_audit(r)
    assert (a["source"], a["who"], a["action"], a["target"], a["result"]) == (
        "cli", "alice", "disable_slot", "btc-15m", "ok",
    )  # fmt: skip
    code, out, _ = run(capsys, "slots", "disable", "btc-15m")
    assert code == 0 and out.startswith("btc-15m: unchanged")

    code, out, _ = run(capsys, "slots", "enable", "btc-15m", "--json")
    res = msgspec.json.decode(out, type=c.SlotResult)
    assert code == 0 and res.changed and res.slot.enabled and slot(r, "btc-15m").enabled


def test_slots_set_changes_stake_and_params(r, sup, capsys):
    code, out, _ = run(capsys, "slots", "set", "eth-15m", "--stake", "3", "--param", "edge=0.05", "--json")
    res = msgspec.json.decode(out, type=c.SlotResult)
    assert code == 0 and res.changed and res.slot.stake_usd == 3 and res.slot.params == {"edge": 0.05}
    assert slot(r, "eth-15m").stake_usd == 3 and slot(r, "eth-15m").params == {"edge": 0.05}
    a = last_audit(r)
    assert a["action"] == "patch_slot" and a["target"] == "eth-15m"
    assert json.loads(a["args"]) == {"stake_usd": 3.0, "params": {"edge": 0.05}}


@pytest.mark.parametrize(
    ("argv", "message", "status"),
    [
        (["slots", "enable", "nope-1m"], "no slot 'nope-1m'; slots are btc-15m, eth-15m", 404),
        (["slots", "set", "btc-15m", "--param", "bogus=1"], "has no parameter 'bogus'", 400),
        (["slots", "set", "btc-15m", "--stake", "1000"], "above the risk limit", 400),
        (["slots", "set", "btc-15m", "--param", "edge=0.9"], "outside [0.0, 0.5]", 400),
        (["slots", "set", "btc-15m"], "nothing to change", 400),
        (["resume"], "nothing to resume", 409),
        (["start"], "worker-blue already running", 409),
    ],
)
def test_refusals_exit_1_with_the_reason_and_are_audited(r, sup, capsys, argv, message, status):
    before = r.hget(K.slots(), "btc-15m")
    code, out, err = run(capsys, *argv)
    assert code == 1 and out == "" and message in err and err.startswith("baton: ")
    assert r.hget(K.slots(), "btc-15m") == before
    a = last_audit(r)
    assert a["result"] == "refused" and int(a["status"]) == status and a["source"] == "cli"


@pytest.mark.parametrize(
    "argv",
    [
        ["slots", "set", "btc-15m", "--param", "edge"],
        ["slots", "set", "btc-15m", "--param", "edge=high"],
        ["slots", "enable"],
        ["frobnicate"],
        ["resume", "--force"],
        ["slots", "--reason", "x"],
    ],
)
def test_usage_errors_exit_2_and_change_nothing(r, sup, capsys, argv):
    code, _out, err = run(capsys, *argv)
    assert code == 2 and "usage: baton" in err
    assert r.xlen(K.audit()) == 0


# --- halt, pause, resume -----------------------------------------------------------------------


def test_halt_without_an_active_worker_sets_the_flag_and_says_nobody_acknowledged(r, sup, capsys):
    code, out, _ = run(capsys, "halt", "--reason", "venue  looks\nwrong")
    assert code == 0
    assert "halted (seq 1): venue looks wrong" in out and "no active worker" in out
    assert "ledger" in out and "baton resume" in out
    assert r.hget(K.control(), "halted") == "1" and r.hget(K.control(), "halted_by") == "cli:alice"
    a = last_audit(r)
    assert (a["action"], a["source"], a["who"]) == ("halt", "cli", "alice")
    # The audit stream records the reason as kept: one line.
    assert json.loads(a["args"]) == {"reason": "venue looks wrong"} and "warnings" not in a


@pytest.mark.parametrize(
    ("argv", "reason", "warned"),
    [
        (["--reason", "y" * 230], "y" * 200, "reason truncated to 200 characters (it had 230)"),
        (["--reason", "caf\udce9 down"], "caf\ufffd down", "reason is not valid UTF-8"),
        (["--force", "--reason", "forced"], "forced", "unknown argument '--force' ignored"),
        (["venue", "is", "down"], "venue is down", ""),
        (["--reason", "a", "b"], "a", "words besides --reason ignored: 'b'"),
        (["--reason"], "operator halt", ""),
    ],
)
@pytest.mark.parametrize("stop", ["halt", "pause"])
def test_a_stop_with_bad_arguments_still_stops_and_prints_what_was_wrong(
    r, sup, capsys, stop, argv, reason, warned
):
    code, out, err = run(capsys, stop, *argv)
    field = "halt_reason" if stop == "halt" else "pause_reason"
    default = f"operator {stop}"
    assert code == 0, err
    assert r.hget(K.control(), "halted" if stop == "halt" else "paused") == "1"
    assert r.hget(K.control(), field) == (default if reason == "operator halt" else reason)
    assert (f"warning  {warned}" in out) if warned else ("warning" not in out), out
    a = last_audit(r)
    assert (a["action"], a["result"]) == (stop, "ok")
    assert (warned in a.get("warnings", "")) if warned else "warnings" not in a
    code, out, _ = run(capsys, stop, *argv, "--json")
    assert code == 0 and any(warned in w for w in json.loads(out)["warnings"]) == bool(warned)


def test_halt_reports_the_workers_acknowledgement_and_its_cancels(r, sup, capsys, monkeypatch):
    now_ms = int(__import__("time").time() * 1000)
    r.hset(K.lease(), mapping={"holder": "blue:host:1:x", "color": "blue", "expires_ms": now_ms + 60_000})
    # The worker's two answers, queued before the halt: seq 1 is the one the halt will get.
    ack = {"halted": True, "color": "blue", "holder": "blue:host:1:x", "inflight": 0, "at_ms": now_ms}
    r.lpush(K.control_ack(1), json.dumps(ack))
    r.rpush(K.control_ack(1), json.dumps({"cancel": "cancelled 2 open orders"}))
    code, out, _ = run(capsys, "halt", "--json")
    res = msgspec.json.decode(out, type=c.HaltResult)
    assert code == 0 and res.acknowledged and res.ack_ms is not None and res.ack_ms < 1000
    assert res.worker == "worker-blue" and res.cancel == "cancelled 2 open orders"
    assert res.control.halted and res.control.halt_reason == "operator halt"

    r.hset(K.control(), "halted", "0")
    r.lpush(K.control_ack(2), json.dumps({**ack, "seq": 2}))
    r.rpush(K.control_ack(2), json.dumps({"cancel": "no open orders"}))
    code, out, _ = run(capsys, "halt")
    assert code == 0 and "worker-blue acknowledged in" in out and "orders   no open orders" in out


def test_pause_then_pause_again_then_resume(r, sup, capsys):
    code, out, _ = run(capsys, "pause", "--reason", "news at 14:00")
    assert code == 0 and out.startswith("paused (seq 1): no new entries") and "news at 14:00" in out
    code, out, _ = run(capsys, "pause", "--json")
    res = msgspec.json.decode(out, type=c.FlagResult)
    assert code == 0 and not res.changed and res.control.paused

    code, out, _ = run(capsys, "resume")
    assert code == 0 and out.startswith("resumed (seq 3)")
    assert r.hget(K.control(), "paused") == "0"
    code, out, _ = run(capsys, "status", "--json")
    st = json.loads(out)
    assert code == 0 and st["paused"] is False and st["halted"] is False
    actions = [f["action"] for _, f in r.xrange(K.audit())]
    assert actions == ["pause", "pause", "resume"]


def test_audit_lists_the_calls_oldest_first(r, sup, capsys):
    run(capsys, "pause")
    run(capsys, "slots", "disable", "nope")
    code, out, _ = run(capsys, "audit")
    head, first, second = out.splitlines()
    assert code == 0 and head.startswith("at (UTC)")
    assert "cli:alice" in first and "pause" in first and "ok 200" in first
    assert "disable_slot nope" in second and "refused 404" in second
    code, out, _ = run(capsys, "audit", "-n", "1", "--json")
    [entry] = msgspec.json.decode(out, type=c.AuditResult).entries
    assert entry.action == "disable_slot" and entry.status == 404


# --- lifecycle ---------------------------------------------------------------------------------


def test_stop_workers_and_start_go_through_supervisor(r, sup, capsys):
    code, out, _ = run(capsys, "stop-workers")
    assert code == 0 and "worker-blue STOPPED" in out
    assert ("stopProcess", "worker-blue", True) in sup.calls
    r.hset(K.lease(), "color", "green")  # the colour that traded last starts again
    code, out, _ = run(capsys, "start", "--json")
    res = msgspec.json.decode(out, type=c.LifecycleResult)
    assert code == 0 and res.programs == {"worker-blue": "STOPPED", "worker-green": "RUNNING"}
    code, _, err = run(capsys, "stop-workers")
    assert code == 0
    code, _, err = run(capsys, "stop-workers")
    assert code == 1 and "no worker is running" in err


def test_reload_without_a_lease_is_refused_and_audited(r, sup, capsys):
    for argv in (["reload"], ["reload", "--no-sync"]):
        code, _, err = run(capsys, *argv)
        assert code == 1 and "no worker holds the lease" in err
        a = last_audit(r)
        assert (a["action"], a["result"], a["status"], a["source"]) == ("reload", "refused", "409", "cli")


# --- Redis down --------------------------------------------------------------------------------


def test_an_unreachable_redis_is_one_clear_line_not_a_traceback(env, sup, capsys, monkeypatch):
    port = free_port()  # closed again: nothing listens there
    monkeypatch.setenv("BATON_REDIS_URL", f"redis://127.0.0.1:{port}/0")  # the real client, no seam
    for argv in (["halt"], ["slots", "disable", "btc-15m"], ["status"]):
        code, out, err = run(capsys, *argv)
        assert code == 1 and out == "", argv
        assert err.startswith("baton: cannot reach Redis at") and len(err.splitlines()) == 1, err
    # Logs need no Redis: without it, the worker log written last is the active worker's.
    _write_log(env, "worker-blue", 2)
    code, out, err = run(capsys, "logs", "-n", "1")
    assert code == 0 and out == "worker-blue line 1\n" and "Redis is not reachable" in err


# --- logs --------------------------------------------------------------------------------------


def _write_log(home, name: str, lines: int) -> None:
    d = home / "var" / "log"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}.log").write_text("".join(f"{name} line {i}\n" for i in range(lines)))


def test_logs_tails_the_active_workers_log_by_default(r, sup, capsys, env):
    _write_log(env, "worker-blue", 10)
    _write_log(env, "worker-green", 3000)
    r.hset(K.lease(), "color", "green")
    code, out, _ = run(capsys, "logs", "-n", "3")
    assert code == 0 and out.splitlines() == [f"worker-green line {i}" for i in (2997, 2998, 2999)]
    code, out, _ = run(capsys, "logs", "worker-blue")
    assert code == 0 and len(out.splitlines()) == 10


def test_logs_of_an_unknown_program_lists_the_known_ones(r, sup, capsys, env):
    _write_log(env, "feed", 1)
    _write_log(env, "sim", 1)
    code, out, err = run(capsys, "logs", "fed")
    assert code == 1 and out == "" and "no log for 'fed'" in err and "feed, sim" in err


def test_tail_reads_whole_lines_across_blocks(tmp_path):
    p = tmp_path / "x.log"
    p.write_text("".join(f"{i:05d}\n" for i in range(1000)))
    assert logs.tail(p, 4, block=7) == "00996\n00997\n00998\n00999\n"
    assert logs.tail(p, 5000, block=64).count("\n") == 1000
    assert logs.tail(p, 0) == ""


def test_follow_prints_appended_lines_and_survives_rotation(tmp_path):
    import io

    p = tmp_path / "w.log"
    p.write_text("old\n")
    out = io.StringIO()
    steps = iter(range(10))

    def stop() -> bool:
        step = next(steps)
        if step == 0:
            with p.open("a") as f:
                f.write("a\n")
        elif step == 1:  # supervisor's rotation: rename, then a new file
            p.rename(tmp_path / "w.log.1")
            p.write_text("b\n")
        return step >= 4

    logs.follow(p, out, interval_s=0, stop=stop)
    assert out.getvalue() == "a\nb\n"


# --- token -------------------------------------------------------------------------------------


def test_token_prints_the_token_with_a_warning_and_id_alone(env, capsys, monkeypatch):
    monkeypatch.setenv("BATON_API_TOKEN", TOKEN)
    code, out, err = run(capsys, "token")
    assert code == 0 and out == TOKEN + "\n" and "keep it out of logs" in err and TOKEN not in err
    code, out, err = run(capsys, "token", "--id")
    assert code == 0 and TOKEN not in out + err and len(out.strip()) == 12 and err == ""


def test_token_without_one_says_how_to_get_one(env, capsys):
    code, out, err = run(capsys, "token")
    assert code == 1 and out == "" and "no API token" in err
    assert not (env / "var" / "api-token").exists()  # reading never creates a secret


def test_token_metrics_prints_the_read_only_metrics_token(env, capsys, monkeypatch):
    from api.__main__ import load_metrics_token
    from baton.settings import load

    code, out, err = run(capsys, "token", "--metrics")
    assert code == 1 and out == "" and "BATON_METRICS_AUTH=loopback" in err
    monkeypatch.setenv("BATON_METRICS_AUTH", "token")
    code, out, err = run(capsys, "token", "--metrics")
    assert code == 1 and out == "" and "metrics-token is missing" in err  # reading never creates it
    made = load_metrics_token(load())  # what the api program does at its start
    assert made is not None
    code, out, err = run(capsys, "token", "--metrics")
    assert code == 0 and out == made.reveal() + "\n" and "opens GET /metrics only" in err
    code, out, _ = run(capsys, "token", "--metrics", "--id")
    assert code == 0 and out.strip() == made.id

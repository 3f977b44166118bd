"""The decision log at the doors: `baton decisions` (its --json list is a contract for tools),
GET /decisions, and each slot's newest evaluation and sleep in `baton slots`, `baton status
--json`, GET /slots and the dashboard's data (where unfilled orders are not errors)."""

from __future__ import annotations

import json
import os

import fakeredis
import msgspec
import pytest

from api.dashboard_data import snapshot
from baton import cli
from control import commands as c
from control.decisions import DecisionsResult
from state.decisions import DecisionsRepo
from state.keys import Keys
from state.structs import SLOT, DecisionLogEntry, Slot

K = Keys("baton:")
NOW_MS = 1_795_000_000_000
FAR_MS = 4_102_444_800_000  # 2100: ahead of any test's clock


def entry(
    slot: str, at_ms: int, action: str = "pass", reason: str = "edge 0.01 < 0.03", **kw
) -> DecisionLogEntry:
    return DecisionLogEntry(
        slot=slot,
        at_ms=at_ms,
        tick=at_ms // 1000,
        window_start_s=at_ms // 1000 - 10,
        strategy="snipe",
        action=action,  # type: ignore[arg-type]
        reason=reason,
        **kw,
    )


LOG = [
    entry("btc-15m", NOW_MS, figures={"remaining_s": 30.0, "up_ask": 0.55, "down_ask": 0.47}),
    entry("eth-15m", NOW_MS + 1000, reason="no decision"),
    entry(
        "btc-15m",
        NOW_MS + 2000,
        "buy",
        "edge 0.05",
        outcome="intent",
        side="up",
        price=0.56,
        stake_usd=5.0,
        order_type="FOK",
        intent_id="btc-15m:1:entry",
        figures={"remaining_s": 28.0, "up_ask": 0.55, "up_bid": 0.53},
    ),
    entry(
        "btc-15m", NOW_MS + 3000, "sell", "take profit", outcome="intent", side="up", price=0.7, shares=8.9
    ),
]


def seed_log(r: fakeredis.FakeRedis) -> None:
    DecisionsRepo(r, K).append_decisions(LOG, 500)


@pytest.fixture
def r(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setenv("BATON_ASSETS", "btc,eth")
    monkeypatch.setenv("BATON_TIMEFRAMES", "15m")
    monkeypatch.setenv("LOGNAME", "alice")
    client = fakeredis.FakeRedis(decode_responses=True)
    for sid, asset in (("btc-15m", "btc"), ("eth-15m", "eth")):
        client.hset(K.slots(), sid, SLOT.encode(Slot(id=sid, asset=asset, timeframe="15m")).decode())
    monkeypatch.setattr(cli, "redis_client", lambda s: client)
    monkeypatch.setattr(cli, "supervisor_for", lambda s: lambda method, *a: [])
    return client


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(list(argv))
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


# --- baton decisions ------------------------------------------------------------------------------
def test_json_is_a_list_newest_first_with_slot_at_ms_action_and_reason(r, capsys):
    seed_log(r)
    code, out, err = run(capsys, "decisions", "--json")
    got = json.loads(out)
    assert code == 0 and err == "" and isinstance(got, list)
    assert [(d["slot"], d["at_ms"], d["action"], d["reason"]) for d in got] == [
        ("btc-15m", NOW_MS + 3000, "sell", "take profit"),
        ("btc-15m", NOW_MS + 2000, "buy", "edge 0.05"),
        ("eth-15m", NOW_MS + 1000, "pass", "no decision"),
        ("btc-15m", NOW_MS, "pass", "edge 0.01 < 0.03"),
    ]
    assert got[1]["intent_id"] == "btc-15m:1:entry" and got[1]["figures"]["up_bid"] == 0.53
    assert msgspec.convert(got, list[DecisionLogEntry]) == list(reversed(LOG))


def test_one_slot_and_a_limit(r, capsys):
    seed_log(r)
    code, out, _ = run(capsys, "decisions", "btc-15m", "--limit", "2", "--json")
    assert code == 0 and [d["action"] for d in json.loads(out)] == ["sell", "buy"]
    code, out, _ = run(capsys, "decisions", "eth-15m", "-n", "5", "--json")
    assert [d["reason"] for d in json.loads(out)] == ["no decision"]


def test_the_table_reads_like_a_log_oldest_first(r, capsys):
    seed_log(r)
    code, out, _ = run(capsys, "decisions")
    head, *rows = out.splitlines()
    assert code == 0 and head.split()[:5] == ["at", "(UTC)", "slot", "action", "order"]
    assert (
        len(rows) == 4 and "edge 0.01 < 0.03" in rows[0] and "30s left" in rows[0] and "up -/0.55" in rows[0]
    )
    assert "buy" in rows[2] and "up @0.56 $5 FOK" in rows[2] and "intent" in rows[2]
    assert "sell" in rows[3] and "8.9 sh up @0.7" in rows[3] and rows[3].endswith("take profit")
    code, out, _ = run(capsys, "decisions", "btc-15m")
    assert "slot" not in out.splitlines()[0]
    r.delete(K.decision_log("btc-15m"), K.decision_log("eth-15m"))
    assert run(capsys, "decisions") == (0, "no decisions logged yet\n", "")


def test_an_unknown_slot_and_a_bad_limit_are_refused_by_name(r, capsys):
    code, _, err = run(capsys, "decisions", "doge-5m")
    assert code == 1 and "no slot 'doge-5m'" in err and "btc-15m" in err
    # A configured slot with no log yet is no error: an empty list.
    assert run(capsys, "decisions", "btc-15m", "--json") == (0, "[]\n", "")
    for bad in ("0", "1001", "ten"):
        code, _, err = run(capsys, "decisions", "--limit", bad)
        assert code == 2 and "--limit" in err, bad


def test_a_removed_slots_log_stays_readable(r, capsys):
    r.sadd(K.slots_removed(), "old-5m")
    DecisionsRepo(r, K).append_decisions([entry("old-5m", NOW_MS)], 500)
    code, out, _ = run(capsys, "decisions", "old-5m", "--json")
    assert code == 0 and [d["slot"] for d in json.loads(out)] == ["old-5m"]


def test_an_unreadable_entry_is_named_on_stderr_and_the_rest_printed(r, capsys):
    seed_log(r)
    bad = r.xadd(K.decision_log("eth-15m"), {"slot": "eth-15m", "at_ms": "yesterday"})
    code, out, err = run(capsys, "decisions", "--json")
    assert code == 0 and len(json.loads(out)) == 4
    assert f"baton:decisions:log:eth-15m {bad}: unreadable entry" in err


# --- each slot's newest evaluation and sleep ---------------------------------------------------------
def test_slots_and_status_show_the_last_reason_and_until_when_a_slot_sleeps(r, capsys):
    seed_log(r)
    r.hset(K.slot_wakes(), mapping={"btc-15m": str(FAR_MS), "eth-15m": "1000"})  # eth's wake has passed
    code, out, _ = run(capsys, "slots", "--json")
    views = {v.id: v for v in msgspec.json.decode(out, type=c.SlotsResult).slots}
    assert (
        code == 0 and views["btc-15m"].asleep_until_ms == FAR_MS and views["eth-15m"].asleep_until_ms is None
    )
    assert views["btc-15m"].last_log == LOG[3] and views["eth-15m"].last_log == LOG[1]
    code, out, _ = run(capsys, "slots")
    btc = next(line for line in out.splitlines() if line.startswith("btc-15m"))
    assert "(asleep until 00:00:00 UTC)" in btc and "sell up@0.7 intent (take profit)" in btc
    eth = next(line for line in out.splitlines() if line.startswith("eth-15m"))
    assert "asleep" not in eth and "pass (no decision)" in eth

    code, out, _ = run(capsys, "status", "--json")
    slots = {s["id"]: s for s in json.loads(out)["slots"]}
    assert slots["btc-15m"]["asleep_until_ms"] == FAR_MS
    assert slots["btc-15m"]["last_decision"] == {
        "at_ms": NOW_MS + 3000,
        "action": "sell",
        "reason": "take profit",
        "outcome": "intent",
    }
    assert (
        slots["eth-15m"]["asleep_until_ms"] is None
        and slots["eth-15m"]["last_decision"]["reason"] == "no decision"
    )
    code, out, _ = run(capsys, "status")
    assert code == 0 and "2/2 enabled, 1 asleep" in out


def test_a_slot_never_evaluated_has_no_last_decision(r, capsys):
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0
    assert all(s["last_decision"] is None and s["asleep_until_ms"] is None for s in json.loads(out)["slots"])
    code, out, _ = run(capsys, "slots")
    assert code == 0 and "asleep" not in out


# --- the API -------------------------------------------------------------------------------------------
async def test_get_decisions_answers_the_log_and_checks_its_query(api):
    seed_log(api.r)
    status, body, _ = await api.call("GET", "/decisions")
    res = msgspec.convert(body, DecisionsResult)
    assert status == 200 and res.decisions == list(reversed(LOG)) and res.problems == []
    status, body, _ = await api.call("GET", "/decisions?slot=btc-15m&limit=1")
    assert status == 200 and [d["action"] for d in body["decisions"]] == ["sell"]
    status, body, _ = await api.call("GET", "/decisions?slot=doge-5m")
    assert status == 404 and "no slot 'doge-5m'" in body["error"]
    for bad in ("limit=0", "limit=1001", "limit=many", f"slot={'x' * 65}"):
        status, body, _ = await api.call("GET", f"/decisions?{bad}")
        assert status == 400 and "bad query string" in body["error"], bad
    status, _, _ = await api.call("GET", "/decisions", token=None)
    assert status == 401


async def test_the_dashboard_data_has_each_slots_sleep_and_tells_unfilled_from_errors(api):
    seed_log(api.r)
    api.r.hset(K.slot_wakes(), "eth-15m", str(FAR_MS))
    api.r.xadd(K.journal_ticks(), {"tick": 9, "orders": 5, "errors": 0, "unfilled": 5, "exits": 1})
    api.r.xadd(K.journal_ticks(), {"tick": 10, "orders": 1, "errors": 1})
    data = await snapshot(api.ctx)
    slots = {v.id: v for v in data.slots}
    assert slots["eth-15m"].asleep_until_ms == FAR_MS and slots["btc-15m"].last_log == LOG[3]
    assert [(t.tick, t.errors, t.unfilled, t.exits) for t in data.ticks] == [(10, 1, 0, 0), (9, 0, 5, 1)]

"""`baton replay` in-process over fakeredis, on records stored as the worker stores them (the
input log's stream): the report, its --json contract (issue #26), and exit 2 naming a bad
argument."""

from __future__ import annotations

import itertools
import json
import os
import shutil

import fakeredis
import pytest

import baton.cli as cli
from kernel.input_log import Evaluation, encode_batch
from state.keys import Keys
from state.structs import SLOT, Slot
from tests.fast.test_replay import CHECKOUT, RELEASE, START_MS, live_records, release_home, variant

K = Keys("baton:")
T0, T1 = str(START_MS // 1000 - 60), str(START_MS // 1000 + 1500)


def store(r: fakeredis.FakeRedis, records: list[Evaluation]) -> None:
    """One stream entry per tick, as the worker appends them (kernel/notes.py)."""
    for tick, group in itertools.groupby(records, key=lambda e: e.tick):
        batch = list(group)
        r.xadd(
            K.input_log(),
            {
                "tick": tick,
                "at_ms": batch[0].at_ms,
                "release": RELEASE,
                "n": len(batch),
                "data": encode_batch(batch),
            },
            id=f"{batch[0].at_ms}-*",
        )


@pytest.fixture
def home(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    return release_home(tmp_path)


@pytest.fixture
def r(home, monkeypatch):
    client = fakeredis.FakeRedis(decode_responses=True)
    client.hset(K.slots(), "btc-5m", SLOT.encode(Slot(id="btc-5m", asset="btc", timeframe="5m")).decode())
    monkeypatch.setattr(cli, "redis_client", lambda s: client)
    return client


@pytest.fixture
def stored(r):
    store(r, live_records())
    return r


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["replay", *argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_replay_json_reports_full_parity_with_the_code_that_decided(stored, capsys) -> None:
    code, out, err = run(capsys, "--from", T0, "--to", T1, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert rep["decisions"] == 400 and rep["equal"] == 400 and rep["differ"] == 0
    assert set(rep["slots"]) == {"btc-5m", "btc-5m.momentum"}
    s = rep["slots"]["btc-5m"]
    assert {"decisions", "equal", "differ", "differences", "pnl_delta_usd"} <= set(s)
    assert s["decisions"] == 240 and s["differences"] == []


def test_replay_with_a_file_prints_a_table_and_the_first_differences(stored, home, capsys) -> None:
    path = variant(home, "snipe", '"edge": 0.03,', '"edge": 0.08,')
    code, out, err = run(capsys, "--from", T0, "--to", T1, "--strategy-file", str(path), "-n", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("replay ") and str(path) in lines[0]
    [row] = [ln for ln in lines if ln.startswith("btc-5m ")]
    assert row.split()[1:4] == ["240", "219", "21"], row
    assert "first 2 of 21 differences:" in out
    assert out.count("    live      buy ") == 2 and out.count("    replayed  none") == 2
    assert "160 record(s) of other strategies not replayed" in out and "pnl assumes:" in out


def test_one_slot_and_a_release(stored, home, capsys) -> None:
    code, out, _ = run(
        capsys, "--from", T0, "--to", T1, "--slot", "btc-5m.momentum", "--release", RELEASE, "--json"
    )
    rep = json.loads(out)
    assert code == 0 and set(rep["slots"]) == {"btc-5m.momentum"} and rep["decisions"] == 160 == rep["equal"]


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--from", T1, "--to", T0], "must be after --from"),
        (["--from", "yesterday", "--to", T1], "'yesterday' is not a time"),
        (["--from", T0, "--to", T1, "--slot", "nope-1m"], "unknown slot 'nope-1m'"),
        (["--from", T0, "--to", T1, "--slot", "Bad Slot"], "bad slot id 'Bad Slot'"),
        (
            ["--from", T0, "--to", T1, "--strategy-file", "/nonexistent/x.py"],
            "/nonexistent/x.py: no such file",
        ),
        (["--from", T0, "--to", T1, "--release", "nope"], "no release 'nope'"),
        (["--from", T0, "--to", T1, "--strategy", "snipe"], "give both"),
    ],
)
def test_bad_arguments_exit_2_naming_what_was_wrong(r, capsys, argv: list[str], said: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and said in err and out == "", err


def test_a_strategy_file_that_fails_to_import_exits_2(r, home, capsys) -> None:
    bad = home / "snipe.py"
    bad.write_text("def evaluate(inp):\n    return None\nimport not_a_module_anywhere\n")
    code, _, err = run(capsys, "--from", T0, "--to", T1, "--strategy-file", str(bad))
    assert code == 2 and "cannot be used" in err and "not_a_module_anywhere" in err


def test_a_configured_slot_with_nothing_recorded_reports_zero(r, capsys) -> None:
    r.hset(K.slots(), "eth-5m", SLOT.encode(Slot(id="eth-5m", asset="eth", timeframe="5m")).decode())
    code, out, _ = run(capsys, "--from", T0, "--to", T1, "--slot", "eth-5m", "--json")
    assert code == 0 and json.loads(out)["decisions"] == 0


def test_checkout_is_used_when_the_release_is_gone(stored, home, capsys) -> None:
    shutil.rmtree(home / "var" / "releases")
    code, out, _ = run(capsys, "--from", T0, "--to", T1)
    assert code == 0 and f"note: release '{RELEASE}' is not under" in out and str(CHECKOUT) in out

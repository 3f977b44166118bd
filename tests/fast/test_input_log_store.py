"""The input log as the worker records it (kernel/notes.py, state/inputs.py), as the shadow
follows it (read_batches), as the settle program rolls it into var/inputs/ (worker/
input_files.py) and as tools read it back (control/input_archive.py), garbage included."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import fakeredis
import msgspec
import pytest
from redis.client import NEVER_DECODE

from baton.errors import SettingsError
from baton.settings import load
from control.input_archive import iter_evaluations
from kernel import input_stream
from kernel.input_log import (
    decode_batch,
    encode_batch,
    evaluation,
    from_json_line,
    same_decision,
    to_json_line,
)
from kernel.input_stream import decode_entry, read_batches
from kernel.notes import DecisionNotes
from kernel.strategy_api import Buy, Pass, SlotInput
from state import inputs as state_inputs
from state.keys import Keys
from state.store import Store
from tests.fast.rig import last_five_seconds
from worker import input_files
from worker.input_files import day_file, roll

K = Keys("baton:")
DAY_MS = 86_400_000
T0 = 1_765_152_000_000  # 2025-12-08 00:00 UTC


def _input(slot: str = "btc-5m", now_ms: int = T0) -> SlotInput:
    return SlotInput(
        slot_id=slot,
        asset=slot.split("-")[0],
        timeframe="5m",
        now_ms=now_ms,
        window_start_ms=now_ms - now_ms % 300_000,
        window_end_ms=now_ms - now_ms % 300_000 + 300_000,
        open_price=0.1 + 0.2,
        last_price=97_123.456789012345,
        closes=(97_100.1, 1e-300),
        stake_usd=5.0,
        params={"edge": 0.03},
        up_ask=0.53,
    )


def _eval(tick: int, slot: str = "btc-5m", answer: object = None, at_ms: int | None = None):
    at = T0 + tick * 5000 if at_ms is None else at_ms
    return evaluation(tick, slot, 0, at, "snipe", "r1", _input(slot, at), answer or Pass(reason=f"t{tick}"))


def _fields(tick: int, evaluations: list, at_ms: int | None = None) -> dict:
    at = T0 + tick * 5000 if at_ms is None else at_ms
    data = encode_batch(evaluations) if evaluations else b""
    return {"tick": tick, "at_ms": at, "release": "r1", "n": len(evaluations), "data": data}


def _add(r, tick: int, evaluations: list) -> str:
    """XADD with an id at the tick's time plus a second, as the worker's append would get."""
    return r.xadd(K.input_log(), _fields(tick, evaluations), id=f"{T0 + tick * 5000 + 1000}-0")


@pytest.fixture
def sync() -> fakeredis.FakeRedis:
    # decoded, as the CLI's client is: the reads must still get the batch as bytes
    return fakeredis.FakeRedis(decode_responses=True)


# --- recording (the worker's tick) -------------------------------------------------------


class AlwaysPass:
    @staticmethod
    def quotes_from_ms(start_ms, end_ms, params):
        return start_ms

    @staticmethod
    def needs_quotes(inp):
        return True

    @staticmethod
    def evaluate(inp):
        return Pass(reason=f"looked at {inp.slot_id}")


class JunkBuy(AlwaysPass):
    @staticmethod
    def evaluate(inp):
        return Buy(side="up", limit_price="cheap", stake_usd=5.0, reason="junk")  # type: ignore[arg-type]


async def _entries(store: Store) -> list:
    raw = await store.r.execute_command("XRANGE", K.input_log(), "-", "+", NEVER_DECODE=True)
    return [decode_entry(i, f) for i, f in raw]


async def test_every_tick_appends_one_entry_with_each_evaluation_and_its_release(rig):
    rig.resolver = lambda name: AlwaysPass
    outs = await rig.run_ticks(3)
    got = await _entries(rig.store)
    assert [b.tick for b, _ in got] == [o.record.tick for o in outs]
    for (batch, evaluations), out in zip(got, outs, strict=True):
        assert batch.n == len(evaluations) == out.record.evaluated > 0
        assert batch.release == "test" and batch.at_ms == out.record.started_ms
        assert {e.release for e in evaluations} == {"test"}
        assert all(e.kind == "pass" and e.passed.reason == f"looked at {e.slot}" for e in evaluations)
        assert all(e.input.slot_id == e.slot and e.tick == batch.tick for e in evaluations)
    # the decision log holds the same evaluations
    logged = sum([await rig.store.r.xlen(K.decision_log(s)) for s in {e.slot for _, es in got for e in es}])
    assert logged == sum(b.n for b, _ in got)


async def test_a_tick_that_evaluates_nothing_still_appends_an_empty_entry(rig):
    rig.resolver = lambda name: last_five_seconds([])  # asleep: nothing evaluated
    await rig.run_ticks(2)
    await rig.store.set_halt("test", rig.clock.now_ms(), who="test")
    await rig.run_ticks(1)  # halted: nothing evaluated either
    got = await _entries(rig.store)
    assert len(got) == 3
    assert all(b.n == 0 and b.data == b"" and es == [] for b, es in got)


async def test_an_answer_that_would_not_read_back_is_recorded_as_an_error(rig):
    rig.resolver = lambda name: JunkBuy
    (out,) = await rig.run_ticks(1)
    [(batch, evaluations)] = await _entries(rig.store)  # the batch reads
    assert batch.n == out.record.evaluated > 0
    assert {e.kind for e in evaluations} == {"error"}
    assert "answer cannot be recorded" in evaluations[0].error and "cheap" in evaluations[0].error


async def test_an_input_log_key_of_another_type_is_a_problem_not_a_failed_tick(rig):
    rig.resolver = lambda name: AlwaysPass
    await rig.store.r.set(K.input_log(), "garbage")
    await rig.clock.sleep_until_ms((rig.clock.now_ms() // 1000 + 1) * 1000)
    await rig.feed()
    out = await rig.runner.run(rig.clock.now_ms() // 1000)
    problems = await rig.runner.between_ticks(rig.clock.now_ms() + 1000)
    assert out.record.evaluated > 0
    assert any(p.startswith("input log: 1 tick(s) not appended") for p in problems), problems
    assert not any(p.startswith("decision log") for p in problems)
    assert await rig.store.r.xlen(K.decision_log("btc-15s")) == 1  # the decision log is in


async def test_the_append_trims_entries_older_than_the_retention(store):
    now_ms = int(time.time() * 1000)
    for i in range(250):  # 2.5 stream nodes of long ago (MINID ~ trims whole nodes only)
        await store.r.xadd(K.input_log(), _fields(1, []), id=f"{1000 + i}-0")
    notes = DecisionNotes(store, 500, "r2", input_log_s=60)
    notes.ticked(7, now_ms)
    assert await notes.flush() == []
    got = await _entries(store)
    assert len(got) <= 51
    assert (got[-1][0].tick, got[-1][0].release, got[-1][0].n) == (7, "r2", 0)


async def test_after_a_redis_restart_each_tick_is_appended_once(store):
    notes = DecisionNotes(store, 500, "r1")
    await store.r.script_flush()  # a restarted Redis: the first EVALSHAs answer NOSCRIPT
    notes.ticked(5, T0)
    assert await notes.flush() == []
    assert [b.tick for b, _ in await _entries(store)] == [5]


async def test_late_ticks_are_appended_in_order_each_with_its_own_entry(store):
    notes = DecisionNotes(store, 500, "r1")

    class Ref:
        def __init__(self, sid: str) -> None:
            self.id, self.window_start_s = sid, 0

    notes.ticked(2, T0 + 10_000)
    notes.keep(2, T0 + 10_000, [[Ref("btc-5m"), "snipe", _input(), Pass(reason="a"), "", ""]])
    notes.keep(3, T0 + 15_000, [[Ref("eth-5m"), "snipe", None, RuntimeError("x"), "error", ""]])
    assert await notes.flush() == []
    got = await _entries(store)
    assert [(b.tick, b.n) for b, _ in got] == [(2, 1), (3, 0)]  # no input: nothing to replay


# --- following (the shadow) ---------------------------------------------------------------


def test_read_batches_follows_the_stream_and_skips_a_corrupt_entry_naming_it(sync):
    assert read_batches(sync, K, "$", 0, 10) == []
    a = sync.xadd(K.input_log(), _fields(1, [_eval(1), _eval(1, "eth-5m")]))
    bad = sync.xadd(K.input_log(), {"tick": "2", "at_ms": "1", "n": "1", "data": b"\x01garbage"})
    c = sync.xadd(K.input_log(), _fields(3, []))
    problems: list[str] = []
    got = read_batches(sync, K, "0-0", 0, 10, problems)
    assert [(i, t, len(es)) for i, t, _, es in got] == [(a, 1, 2), (c, 3, 0)]
    assert got[0][3][1].slot == "eth-5m"
    assert len(problems) == 1 and bad in problems[0] and "baton:inputs:log" in problems[0]
    assert read_batches(sync, K, a, 0, 1, problems)[0][0] == c  # count 1: read on past the bad one
    assert len(problems) == 2 and bad in problems[1]
    assert read_batches(sync, K, c, 5, 10) == []  # blocks 5 ms, nothing new


async def test_read_batches_on_an_asyncio_client(store):
    await store.r.xadd(K.input_log(), _fields(4, [_eval(4)]))
    [(_, tick, at_ms, [e])] = await read_batches(store.r, K, "0-0", 0, 10)
    assert (tick, at_ms, e.tick, e.passed.reason) == (4, T0 + 20_000, 4, "t4")


def test_a_batch_whose_count_disagrees_is_skipped(sync):
    sync.xadd(K.input_log(), {**_fields(1, [_eval(1)]), "n": 2})
    sync.xadd(K.input_log(), {"at_ms": "1", "n": "0"})  # no tick
    problems: list[str] = []
    assert read_batches(sync, K, "0-0", 0, 10, problems) == []
    assert "n says 2" in problems[0] and "field tick missing" in problems[1]


# --- the roll into var/inputs/ and the reader ---------------------------------------------


def _lines(path: Path) -> list:
    with gzip.open(path, "rb") as f:
        return [from_json_line(x) for x in f.read().splitlines()]


def test_the_roll_copies_new_entries_into_day_files_once(sync, tmp_path):
    sync.xadd(K.input_log(), _fields(1, [_eval(1)]))
    sync.xadd(K.input_log(), _fields(2, [_eval(2, at_ms=T0 + DAY_MS)], at_ms=T0 + DAY_MS))
    sync.xadd(K.input_log(), _fields(3, []))
    out = roll(sync, K, tmp_path, T0, 30)
    assert (out.entries, out.evaluations, out.problems) == (3, 2, [])
    assert out.files == {"2025-12-08.jsonl.gz": 1, "2025-12-09.jsonl.gz": 1}
    again = roll(sync, K, tmp_path, T0, 30)
    assert (again.entries, again.files) == (0, {})
    sync.xadd(K.input_log(), _fields(4, [_eval(4), _eval(4, "eth-5m")]))
    third = roll(sync, K, tmp_path, T0, 30)
    assert third.files == {"2025-12-08.jsonl.gz": 2}
    # two gzip members, read as one file
    assert [(e.tick, e.slot) for e in _lines(day_file(tmp_path, T0))] == [
        (1, "btc-5m"),
        (4, "btc-5m"),
        (4, "eth-5m"),
    ]
    state = json.loads((tmp_path / "var/inputs/cursor").read_text())
    assert state == {
        "id": third.cursor,
        "sizes": {"2025-12-08.jsonl.gz": day_file(tmp_path, T0).stat().st_size},
    }


def test_the_roll_skips_a_corrupt_entry_and_names_a_gap(sync, tmp_path):
    first = sync.xadd(K.input_log(), _fields(1, [_eval(1)]))
    bad = sync.xadd(K.input_log(), {"tick": "x", "at_ms": "1", "n": "0", "data": ""})
    assert roll(sync, K, tmp_path, T0, 30).problems == [
        f"baton:inputs:log {bad}: unreadable input log entry (skipped): not an input log entry: "
        "invalid literal for int() with base 10: 'x'"
    ]
    sync.xdel(K.input_log(), first, bad)  # trimmed before it could be copied
    sync.xadd(K.input_log(), _fields(5, [_eval(5)]))
    out = roll(sync, K, tmp_path, T0, 30)
    assert out.evaluations == 1 and "is no longer in Redis" in out.problems[0] and bad in out.problems[0]


def test_a_garbage_cursor_rolls_from_the_oldest_entry(sync, tmp_path):
    (tmp_path / "var/inputs").mkdir(parents=True)
    (tmp_path / "var/inputs/cursor").write_text("yesterday")
    sync.xadd(K.input_log(), _fields(1, [_eval(1)]))
    out = roll(sync, K, tmp_path, T0, 30)
    assert out.evaluations == 1 and "is not a roll's state" in out.problems[0]


def test_a_roll_that_died_mid_write_is_cut_back_and_copied_again_once(sync, tmp_path, monkeypatch):
    _add(sync, 1, [_eval(1)])
    roll(sync, K, tmp_path, T0, 30)
    _add(sync, 2, [_eval(2)])
    real_save = input_files._save
    saves: list[object] = []

    def dies_after_the_append(d, state):
        saves.append(state)
        if len(saves) == 2:  # the sizes after: the member is written, its record is not
            with open(day_file(tmp_path, T0), "ab") as f:
                f.write(b"\x1f\x8b half a member")  # and a crash left more garbage
            raise OSError("killed")
        real_save(d, state)

    monkeypatch.setattr(input_files, "_save", dies_after_the_append)
    with pytest.raises(OSError):
        roll(sync, K, tmp_path, T0, 30)
    monkeypatch.setattr(input_files, "_save", real_save)
    out = roll(sync, K, tmp_path, T0, 30)
    assert "an unfinished roll's tail cut off" in out.problems[0] and out.evaluations == 1
    assert [e.tick for e in _lines(day_file(tmp_path, T0))] == [1, 2]


def test_the_roll_deletes_files_older_than_the_days_kept(sync, tmp_path):
    d = tmp_path / "var/inputs"
    d.mkdir(parents=True)
    for day in ("2025-11-01", "2025-11-07", "2025-11-08", "notes"):
        (d / f"{day}.jsonl.gz").write_bytes(b"")
    out = roll(sync, K, tmp_path, T0, 30)  # kept: days ending after 2025-11-08 00:00
    assert out.deleted == ["2025-11-01.jsonl.gz", "2025-11-07.jsonl.gz"]
    assert sorted(p.name for p in d.glob("*.gz")) == ["2025-11-08.jsonl.gz", "notes.jsonl.gz"]
    assert roll(sync, K, tmp_path, T0 + 365 * DAY_MS, 0).deleted == []  # 0: kept forever


def test_the_reader_merges_files_and_redis_once_each_oldest_first(sync, tmp_path):
    for t in (1, 2):
        _add(sync, t, [_eval(t), _eval(t, "eth-5m")])
    roll(sync, K, tmp_path, T0, 30)
    _add(sync, 3, [_eval(3)])  # in Redis only; 1 and 2 in both
    problems: list[str] = []
    got = list(iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems))
    assert [(e.tick, e.slot) for e in got] == [
        (1, "btc-5m"),
        (1, "eth-5m"),
        (2, "btc-5m"),
        (2, "eth-5m"),
        (3, "btc-5m"),
    ]
    assert problems == []
    only = iter_evaluations(sync, K, tmp_path, T0 + 10_000, T0 + 15_000, slot="btc-5m")
    assert [(e.tick, e.slot) for e in only] == [(2, "btc-5m"), (3, "btc-5m")]
    assert [e.tick for e in iter_evaluations(None, K, tmp_path, T0, T0 + DAY_MS)] == [1, 1, 2, 2]


def test_the_reader_reads_redis_from_where_the_files_end(sync, tmp_path):
    _add(sync, 1, [_eval(1)])
    bad = sync.xadd(K.input_log(), {"tick": "x"}, id=f"{T0 + 7000}-0")
    _add(sync, 2, [_eval(2)])
    assert len(roll(sync, K, tmp_path, T0, 30).problems) == 1  # the bad entry, named by the roll
    problems: list[str] = []
    got = [e.tick for e in iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems)]
    assert (got, problems) == ([1, 2], [])  # the entries the files hold were not read again
    day_file(tmp_path, T0).unlink()  # without the day's file, Redis from the range's start
    got = [e.tick for e in iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems)]
    assert got == [1, 2] and len(problems) == 1 and bad in problems[0]


def test_the_reader_skips_a_corrupt_line_and_a_cut_file_naming_them(sync, tmp_path):
    d = tmp_path / "var/inputs"
    d.mkdir(parents=True)
    good = json.dumps(json.loads(input_files.to_json_line(_eval(1)))).encode()
    day = day_file(tmp_path, T0)
    day.write_bytes(gzip.compress(good + b"\n{not json\n") + gzip.compress(b"\n".join([good] * 50))[:40])
    problems: list[str] = []
    got = list(iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems))
    assert [e.tick for e in got] == [1]
    assert problems[0].startswith(f"{day}:2: input log line unreadable")
    assert problems[1].startswith(f"{day}:") and "unreadable from here on" in problems[1]


def test_the_reader_skips_a_corrupt_stream_entry_naming_it(sync, tmp_path):
    _add(sync, 1, [_eval(1)])
    bad = sync.xadd(
        K.input_log(), {"tick": "2", "at_ms": str(T0 + 10_000), "n": "1", "data": "x"}, id=f"{T0 + 11_000}-0"
    )
    problems: list[str] = []
    assert [e.tick for e in iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems)] == [1]
    assert problems == [
        f"baton:inputs:log {bad}: unreadable input log entry (skipped): input log batch of version 120: "
        "this code reads version 1"
    ]


# --- settings ------------------------------------------------------------------------------


def test_retention_settings_and_their_garbage():
    s = load({})
    assert (s.input_log_redis_s, s.input_log_days) == (21600, 30.0)
    s = load({"BATON_INPUT_LOG_REDIS_S": "3600", "BATON_INPUT_LOG_DAYS": "0"})
    assert (s.input_log_redis_s, s.input_log_days) == (3600, 0.0)
    for name, bad in [
        ("BATON_INPUT_LOG_REDIS_S", "6h"),
        ("BATON_INPUT_LOG_REDIS_S", "10"),
        ("BATON_INPUT_LOG_DAYS", "-1"),
        ("BATON_INPUT_LOG_DAYS", "nan"),
    ]:
        with pytest.raises(SettingsError, match=name):
            load({name: bad})


def test_batches_survive_the_store_exactly():
    e = _eval(1, answer=Buy(side="up", limit_price=0.1 + 0.2, stake_usd=5.0, reason="x"))
    assert decode_batch(encode_batch([e])) == [e]


# --- who rolls: the settle program's thread, and `baton inputs roll` -------------------------


def test_the_settle_programs_roller_rolls_and_journals_what_went_wrong(sync, tmp_path):
    roller = input_files.Roller(sync, K, tmp_path, redis_s=60, keep_days=30)
    assert roller.every_s == 15  # a quarter of a short retention
    _add(sync, 1, [_eval(1)])
    out = roller.once()
    assert out is not None and out.evaluations == 1
    sync.delete(K.input_log())
    sync.set(K.input_log(), "not a stream")
    assert roller.once() is None  # raised inside: logged and journaled, not the program's end
    [(_, fields)] = sync.xrange(K.journal_errors())
    assert fields["source"] == "settle" and "input log roll failed" in fields["error"]
    roller.every_s = 0.01
    roller.start()
    roller.stop()


def test_baton_inputs_roll(sync, tmp_path, monkeypatch, capsys):
    from baton import cli

    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "redis_client", lambda s: sync)
    _add(sync, 1, [_eval(1), _eval(1, "eth-5m")])
    assert cli.main(["inputs", "roll"]) == 0
    out = capsys.readouterr().out
    assert "1 entries (2 evaluations) rolled into 2025-12-08.jsonl.gz (+2)" in out
    assert cli.main(["inputs", "roll", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["entries"], got["evaluations"], got["files"]) == (0, 0, {})
    monkeypatch.setenv("BATON_INPUT_LOG_DAYS", "a month")
    assert cli.main(["inputs", "roll"]) == 1
    assert "BATON_INPUT_LOG_DAYS='a month' is not a number" in capsys.readouterr().err


def test_a_reader_asked_for_all_time_lists_the_folder_not_the_days(sync, tmp_path):
    _add(sync, 1, [_eval(1)])
    roll(sync, K, tmp_path, T0, 30)
    (tmp_path / "var/inputs/notes.txt").write_text("not a day file")
    got = list(iter_evaluations(sync, K, tmp_path, 0, 2**62))
    assert [e.tick for e in got] == [1]


# --- review findings 5, 6, 7 and the virtual clock -----------------------------------------


def _nan_input(now_ms: int) -> SlotInput:
    """An input whose floats are not all finite (a feed's NaN, an infinite ratio)."""
    nan = float("inf") - float("inf")  # the sign bit set, as x86 makes it: kept too
    return msgspec.structs.replace(
        _input(now_ms=now_ms),
        last_price=nan,
        open_price=float("inf"),
        closes=(1.0, float("nan"), float("-inf")),
        params={"edge": float("nan")},
        up_ask=float("nan"),
    )


def test_a_nan_in_an_answer_survives_the_roll_into_the_day_files(sync, tmp_path):
    # p_up is for the log only: a model that divided by zero still buys; the tick records
    # it (msgpack keeps NaN), and so must the files: JSON has no NaN (msgspec writes null)
    nan_buy = Buy(side="up", limit_price=0.55, stake_usd=5.0, reason="x", p_up=float("nan"))
    _add(sync, 1, [_eval(1, answer=nan_buy)])
    at = T0 + 2 * 5000
    odd = evaluation(2, "btc-5m", 0, at, "snipe", "r1", _nan_input(at), Pass(reason="null"))
    _add(sync, 2, [odd])
    in_redis = list(iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=[]))
    assert len(in_redis) == 2
    out = roll(sync, K, tmp_path, T0 + 10_000, 30)
    assert not out.problems
    sync.delete(K.input_log())  # trimmed from Redis: the file is all there is
    problems: list[str] = []
    from_files = list(iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems))
    assert problems == [] and len(from_files) == 2
    # bit for bit: the answer (same_decision) and the input (what a replay evaluates)
    for live, filed in zip(in_redis, from_files, strict=True):
        assert same_decision(live, filed)
        assert msgspec.msgpack.encode(live) == msgspec.msgpack.encode(filed)
    line = json.loads(gzip.decompress(day_file(tmp_path, T0).read_bytes()).splitlines()[1])
    assert line["input"]["last_price"] == "-nan" and line["input"]["closes"] == [1.0, "nan", "-inf"]


def test_a_line_with_a_wrong_type_is_still_refused_naming_it():
    line = json.loads(to_json_line(_eval(1)))
    line["tick"] = "soon"
    with pytest.raises(ValueError, match=r"input log line unreadable: .*\$\.tick"):
        from_json_line(json.dumps(line))


def test_a_damaged_day_file_falls_back_to_what_redis_still_holds(sync, tmp_path):
    for t in (1, 2, 3):
        _add(sync, t, [_eval(t)])
    roll(sync, K, tmp_path, T0, 30)
    f = day_file(tmp_path, T0)
    f.write_bytes(f.read_bytes()[:30])  # cut (disk full, a copy gone wrong)
    problems: list[str] = []
    got = [e.tick for e in iter_evaluations(sync, K, tmp_path, T0, T0 + DAY_MS, problems=problems)]
    assert problems  # named, as it should be
    assert got == [1, 2, 3]  # all three are still in Redis: none is lost


def test_the_reader_selects_by_the_ticks_time_on_a_virtual_clock(sync, tmp_path):
    # a rig's ticks are at a virtual time, the ids at Redis's: years apart
    for t in (1, 2, 3):
        sync.xadd(K.input_log(), _fields(t, [_eval(t)]), id=f"{1_900_000_000_000 + t * 7}-0")
    got = [e.tick for e in iter_evaluations(sync, K, tmp_path, T0 + 10_000, T0 + DAY_MS)]
    assert got == [2, 3]
    assert [e.tick for e in iter_evaluations(sync, K, tmp_path, 0, 2**62)] == [1, 2, 3]
    assert list(iter_evaluations(sync, K, tmp_path, T0 + 20_000, T0 + DAY_MS)) == []


def _big(tick: int, slots: int) -> dict:
    return _fields(tick, [_eval(tick, f"s{i}-5m") for i in range(slots)])


def test_reads_are_paged_by_bytes_not_by_entries(sync, tmp_path, monkeypatch):
    monkeypatch.setattr(state_inputs, "PAGE_BYTES", 20_000)
    for t in range(1, 41):
        sync.xadd(K.input_log(), _big(t, 20 if t % 2 else 0), id=f"{T0 + t * 5000 + 1000}-0")
    first = sync.execute_command("XRANGE", K.input_log(), "-", "+", "COUNT", 1, **{NEVER_DECODE: True})
    entry = state_inputs.entry_bytes(first[0][1])
    counts: list[int] = []
    real = state_inputs.InputsRepo.input_range

    def spy(self, min_id, max_id, count=state_inputs.PAGE):
        counts.append(count)
        return real(self, min_id, max_id, count)

    monkeypatch.setattr(state_inputs.InputsRepo, "input_range", spy)
    out = roll(sync, K, tmp_path, T0, 30)
    assert (out.entries, out.evaluations) == (40, 400)
    fits = 20_000 // entry  # entries of about one size (the ticks' batches differ a little)
    assert counts[0] == state_inputs.FIRST_PAGE and fits * 0.8 <= max(counts[1:]) <= fits
    counts.clear()
    assert len(list(iter_evaluations(sync, K, tmp_path / "none", T0, T0 + DAY_MS))) == 400
    assert fits * 0.8 <= max(counts[3:]) <= fits  # after the two ends' single entries
    # a follower too: however many it asks for, a reply is about PAGE_BYTES
    input_stream._PAGERS.clear()
    got = read_batches(sync, K, "0-0", 0, 100)
    assert len(got) == state_inputs.FIRST_PAGE
    got = read_batches(sync, K, got[-1][0], 0, 100)
    assert len(got) <= fits


def test_pages_shrink_for_large_entries_and_grow_back_slowly():
    pager = state_inputs.Pager()
    assert pager.count() == state_inputs.FIRST_PAGE
    pager.saw([("1-0", {b"data": b"x" * 213_000})])  # an entry of 1,024 slots
    assert pager.count() == state_inputs.PAGE_BYTES // (213_000 + state_inputs.ENTRY_OVERHEAD_BYTES)
    pager.saw([("2-0", {b"n": b"0", b"data": b""})])  # one quiet page: half the estimate only
    assert pager.count() == state_inputs.PAGE_BYTES // ((213_000 + state_inputs.ENTRY_OVERHEAD_BYTES) / 2)
    for _ in range(30):
        pager.saw([("3-0", {b"n": b"0", b"data": b""})])
    assert pager.count() == state_inputs.PAGE


async def test_the_byte_budget_trims_the_stream_and_says_so_once_in_a_while(store):
    notes = DecisionNotes(store, 500, "r1", input_log_bytes=60_000)
    said = []
    for t in range(1, 401):
        notes.ticked(t, T0 + t * 1000)  # 400 s: one notice (BUDGET_NOTICE_MS)
        batch = encode_batch([_eval(t, f"s{i}-5m") for i in range(3)])
        said += await _flush_with(notes, batch)
    entries = await store.r.xlen(K.input_log())
    per = len(batch) + state_inputs.ENTRY_OVERHEAD_BYTES
    assert 60_000 / 2 < entries * per < 60_000 * 2  # MAXLEN ~ keeps whole nodes: about the budget
    assert len(said) == 1 and "BATON_INPUT_LOG_REDIS_MB" in said[0] and "trimmed" in said[0]
    assert notes.budget_cut > 0  # counted on, said again after BUDGET_NOTICE_MS


async def _flush_with(notes: DecisionNotes, batch: bytes) -> list[str]:
    """flush, with the tick's batch as given (the append's path, not the recording's)."""
    notes.unlogged.clear()
    real = notes._input_batches
    notes._input_batches = lambda ticks, *_: [  # type: ignore[method-assign]
        (t, at, 3, batch) for t, at in sorted(ticks.items())
    ]
    try:
        return await notes.flush()
    finally:
        notes._input_batches = real  # type: ignore[method-assign]


def test_the_byte_budget_setting_and_its_garbage():
    assert load({}).input_log_redis_mb == 256
    assert load({"BATON_INPUT_LOG_REDIS_MB": "64"}).input_log_redis_mb == 64
    for bad in ("0", "lots"):
        with pytest.raises(SettingsError, match="BATON_INPUT_LOG_REDIS_MB"):
            load({"BATON_INPUT_LOG_REDIS_MB": bad})


def test_an_empty_optional_field_and_a_nan_one_stay_apart_in_the_files():
    plain = _eval(1)  # down_ask, the books, the position: None
    assert from_json_line(to_json_line(plain)) == plain
    odd = evaluation(
        1, "btc-5m", 0, T0, "snipe", "r1", msgspec.structs.replace(_input(), up_ask=float("nan")), None
    )
    back = from_json_line(to_json_line(odd))
    assert back.input.up_ask != back.input.up_ask and back.input.down_ask is None

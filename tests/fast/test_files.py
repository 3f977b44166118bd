"""The file door over fakeredis and a tmp BATON_HOME: status.json follows the tick journal and
is always whole; control.json commands are applied as the file's owner and archived with
their result; garbage and half-written files never stop the loop."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import stat
import threading
import time

import fakeredis
import pytest

from api import control_file, files
from api.context import ApiContext
from baton import settings
from control.ops import Ops
from state.keys import Keys
from state.store import Store
from state.structs import SLOT, Slot, TickRecord

K = Keys("baton:")
ME = pwd.getpwuid(os.getuid()).pw_name


@pytest.fixture
def door(tmp_path, fake_server):
    s = settings.load({"BATON_HOME": str(tmp_path), "BATON_ASSETS": "btc", "BATON_TIMEFRAMES": "15m"})
    s.var_dir.mkdir()
    r = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    r.hset(K.slots(), "btc-15m", SLOT.encode(Slot(id="btc-15m", asset="btc", timeframe="15m")))
    r.set(K.lease_epoch(), 1)
    ops = Ops(s, r, supervisor=lambda *a: [])
    aredis = fakeredis.FakeAsyncRedis(server=fake_server)
    return ApiContext(s=s, ops=ops, token=None, redis=aredis)  # type: ignore[arg-type]


def archive_dir(ctx: ApiContext):
    return control_file.archive_dir_of(ctx)


def write_command(ctx: ApiContext, text: str | bytes) -> None:
    if isinstance(text, bytes):
        ctx.s.control_file.write_bytes(text)
    else:
        ctx.s.control_file.write_text(text)


def process(ctx: ApiContext, text: str | bytes) -> dict:
    write_command(ctx, text)
    path = control_file.process_control_file(ctx.ops, ctx.s.control_file, archive_dir(ctx))
    assert path is not None and not ctx.s.control_file.exists()
    return json.loads(path.read_text())


def tick(n: int) -> TickRecord:
    return TickRecord(
        tick=n, color="blue", release="r", epoch=1, started_ms=0, duration_ms=4, jitter_ms=1, orders=0
    )


async def until(cond, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def stop(task: asyncio.Task) -> None:
    """Cancel a loop and wait until it has ended, asking again every 0.2 s: fakeredis's
    blocking read (on Python 3.11, whose wait_for can swallow a cancel) may lose one and go on
    waiting out the block. A loop still running after 5 s fails the test that started it,
    instead of hanging the event loop's teardown for the next one."""
    deadline = time.monotonic() + 5
    while not task.done():
        assert time.monotonic() < deadline, "the loop did not stop when cancelled"
        task.cancel()
        await asyncio.wait([task], timeout=0.2)
    if not task.cancelled() and task.exception() is not None:
        raise task.exception()  # the loop died of something else before the cancel


def read_status(ctx: ApiContext) -> dict:
    try:
        return json.loads(ctx.s.status_file.read_text())
    except FileNotFoundError:
        return {}


# --- status.json ------------------------------------------------------------------------------
async def test_status_json_is_written_at_start_and_after_every_tick(door, store: Store, monkeypatch):
    writes = []
    real = files.write_status_atomic

    def counting(path, obj):
        writes.append(obj["ticks"]["done"])
        real(path, obj)

    monkeypatch.setattr(files, "write_status_atomic", counting)
    task = asyncio.create_task(files.status_loop(door, refresh_s=30))
    try:
        await until(lambda: read_status(door).get("ticks", {}).get("done") == 0)
        first = read_status(door)
        assert first["generated_ms"] > 0 and first["halted"] is False
        await store.append_tick(tick(1))
        await until(lambda: read_status(door)["ticks"]["done"] == 1)
        assert read_status(door)["ticks"]["last"]["tick"] == 1
        # A burst (here: one pipeline of 20 ticks) is one write, not twenty.
        before = len(writes)
        pipe = store.r.pipeline(transaction=False)
        for n in range(2, 22):
            store.append_tick(tick(n), pipeline=pipe)
        await pipe.execute()
        await until(lambda: read_status(door)["ticks"]["done"] == 21)
        assert writes[before:] == [21]
    finally:
        await stop(task)


async def test_a_tick_journaled_while_the_first_status_is_written_is_not_missed(
    door, store: Store, monkeypatch
):
    # The loop fixes where it follows the journal from before it makes the snapshot: a tick
    # that lands in between is read after it, not left for the next refresh (30 s here).
    loop = asyncio.get_running_loop()
    real = files.write_status_atomic
    appended: list[str] = []

    def tick_lands_meanwhile(path, obj):
        real(path, obj)
        if not appended:
            asyncio.run_coroutine_threadsafe(store.append_tick(tick(1)), loop).result(5)
            appended.append("tick 1")

    monkeypatch.setattr(files, "write_status_atomic", tick_lands_meanwhile)
    task = asyncio.create_task(files.status_loop(door, refresh_s=30))
    try:
        await until(lambda: read_status(door).get("ticks", {}).get("done") == 1)
        assert appended == ["tick 1"]
    finally:
        await stop(task)


async def test_status_json_stays_fresh_without_ticks(door):
    task = asyncio.create_task(files.status_loop(door, refresh_s=0.05))
    try:
        await until(lambda: "generated_ms" in read_status(door))
        first = read_status(door)["generated_ms"]
        await until(lambda: read_status(door)["generated_ms"] > first)
    finally:
        await stop(task)


async def test_status_loop_outlives_redis_going_away(door, fake_server, store: Store):
    task = asyncio.create_task(files.status_loop(door, refresh_s=0.05, retry_s=0.02))
    try:
        await until(lambda: "generated_ms" in read_status(door))
        fake_server.connected = False
        await asyncio.sleep(0.2)
        assert not task.done()
        stale = read_status(door)["generated_ms"]  # the last snapshot stays; its time says how old
        fake_server.connected = True
        await store.append_tick(tick(1))
        await until(lambda: read_status(door)["ticks"]["done"] == 1)
        assert read_status(door)["generated_ms"] > stale
    finally:
        await stop(task)


async def test_status_loop_stops_on_a_cancel_its_redis_client_swallowed(door, monkeypatch):
    # Python 3.11's asyncio.wait_for (which Redis clients use to wait for a reply) returns the
    # reply instead of raising when the cancel lands in the same loop pass: the loop must
    # still end, or the api's shutdown waits forever.
    swallowed = []
    reading = asyncio.Event()
    real_xread = door.redis.xread

    async def xread(*args, **kwargs):
        reading.set()
        try:
            return await real_xread(*args, **kwargs)
        except asyncio.CancelledError:
            if swallowed:  # only the first: without the fix, the test fails instead of hanging
                raise
            swallowed.append(True)
            return []

    monkeypatch.setattr(door.redis, "xread", xread)
    task = asyncio.create_task(files.status_loop(door, refresh_s=0.2))
    # The cancel lands inside that XREAD: either fakeredis swallows it (the bug itself) or the
    # wrapper does; either way the read returns as if nothing had happened.
    await asyncio.wait_for(reading.wait(), 3)
    task.cancel()  # once: the loop must end on it all the same
    done, _ = await asyncio.wait([task], timeout=3)
    ended_on_one_cancel = bool(done) and task.cancelled()
    if not done:
        await stop(task)  # a loop that lost its cancel: ended here, not left to the teardown
    assert ended_on_one_cancel, "the loop ran on after its cancel was swallowed"


def test_a_reader_never_sees_a_partial_status_file(tmp_path):
    path = tmp_path / "status.json"
    files.write_status_atomic(path, {"n": -1})
    done = threading.Event()
    seen, bad = [], []

    def reader():
        while not done.is_set():
            try:
                seen.append(json.loads(path.read_text())["n"])
            except ValueError as e:
                bad.append(e)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for n in range(200):
            # Big enough (~100 KB) that a plain write would be seen half done.
            files.write_status_atomic(path, {"n": n, "pad": ["x" * 100] * (1000 + n)})
    finally:
        done.set()
        t.join()
    assert bad == []
    assert len(seen) > 0 and seen == sorted(seen)
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"], "a temp file was left behind"


# --- control.json -----------------------------------------------------------------------------
def test_a_halt_in_control_json_is_applied_and_archived(door):
    record = process(door, '{"action": "halt", "reason": "from a file"}')

    control = door.ops.r.hgetall(K.control())
    assert control["halted"] == "1" and control["halt_reason"] == "from a file"
    [(_, audit)] = door.ops.r.xrevrange(K.audit(), count=1)
    assert (audit["source"], audit["who"], audit["action"], audit["result"]) == ("file", ME, "halt", "ok")
    assert record["action"] == "halt" and record["reason"] == "from a file"
    assert record["result"]["ok"] is True and record["result"]["status"] == 200
    assert record["result"]["result"]["halted"] is True
    [archived] = archive_dir(door).iterdir()
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-halt\.json", archived.name)
    assert stat.S_IMODE(archive_dir(door).stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("text", "action", "names"),
    [
        ("resume please", "invalid", "not valid JSON"),
        ('{"action": "explode"}', "invalid", "'explode'"),
        ('{"action": "resume", "reson": "typo"}', "resume", "`reson`"),
        ('resume after the halt: {"reason": "halt"}', "invalid", "not valid JSON"),
        ('{"action": ["halt"]}', "invalid", "Expected `str`"),
        ('{"action": "patch_slot", "slot": "btc-15m", "stake_usd": "lots"}', "patch_slot", "$.stake_usd"),
        ('{"action": "enable_slot"}', "enable_slot", "`slot`"),
        ("[1, 2]", "invalid", "got `array`"),
    ],
)
def test_a_bad_command_is_archived_with_what_was_wrong(door, text, action, names):
    record = process(door, text)
    assert record["result"]["ok"] is False and record["result"]["status"] == 400
    assert names in record["result"]["error"]
    if text.startswith("{"):
        assert record["action"] == json.loads(text)["action"]  # the command as written
    else:
        assert record["command_text"] == text  # not a JSON object: kept verbatim
    [archived] = archive_dir(door).iterdir()
    assert archived.name.endswith(f"-{action}.json")
    assert door.ops.r.hget(K.control(), "halted") is None, "nothing was applied"


@pytest.mark.parametrize(
    ("text", "reason", "warned"),
    [
        (
            '{"action": "halt", "reason": "feed is wrong", "foo": 1}',
            "feed is wrong",
            "unknown field 'foo' ignored",
        ),
        (
            '{"action": "halt", "reason": "' + "r" * 260 + '"}',
            "r" * 200,
            "reason truncated to 200 characters",
        ),
        ('{"action": "halt", "reason": "cut off', "cut off", "body is not JSON"),
        ("halt please, the venue is down", "halt please, the venue is down", "body is not JSON"),
        (b'{"action": "halt", "reason": "caf\xe9"}', "caf\ufffd", "not valid UTF-8"),
        ('{"action": "halt", "reason": 7}', "7", "reason is a JSON number"),
        (
            '{"action": "halt", "reason": ' + "[" * 20_000 + "]" * 20_000 + "}",
            ('{"action": "halt", "reason": ' + "[" * 200)[:200],
            "nested deeper than 64 levels",
        ),
    ],
)
def test_a_halt_in_control_json_is_never_refused_for_its_text(door, text, reason, warned):
    record = process(door, text)
    control = door.ops.r.hgetall(K.control())
    assert control["halted"] == "1" and control["halt_reason"] == reason
    result = record["result"]
    assert result["ok"] is True and result["status"] == 200 and result["result"]["halted"] is True
    assert any(warned in w for w in result["warnings"]), result
    assert result["warnings"] == result["result"]["warnings"]
    [archived] = archive_dir(door).iterdir()
    assert archived.name.endswith("-halt.json")
    [(_, audit)] = door.ops.r.xrevrange(K.audit(), count=1)
    assert (audit["source"], audit["action"], audit["result"]) == ("file", "halt", "ok")
    assert json.loads(audit["warnings"]) == result["warnings"]


def test_a_halt_in_a_control_json_over_the_size_limit_still_halts(door):
    big = '{"action": "halt", "reason": "huge file", "pad": "' + "p" * 100_000 + '"}'
    record = process(door, big)
    assert door.ops.r.hget(K.control(), "halt_reason") == "huge file"
    assert any("over 65536 bytes" in w for w in record["result"]["warnings"]), record["result"]
    # Any other command that big is refused, as before.
    record = process(door, '{"action": "resume", "pad": "' + "p" * 100_000 + '"}')
    assert record["result"]["status"] == 400 and "at most 65536" in record["result"]["error"]
    assert door.ops.r.hget(K.control(), "halted") == "1"


def test_a_pause_in_control_json_with_an_unknown_field_still_pauses(door):
    record = process(door, '{"action": "pause", "reason": "lunch", "until": "14:00"}')
    assert door.ops.r.hget(K.control(), "paused") == "1"
    assert record["result"]["warnings"] == ["unknown field 'until' ignored"]


def test_an_unknown_slot_is_archived_as_404(door):
    record = process(door, '{"action": "enable_slot", "slot": "nope-1m"}')
    assert record["result"]["status"] == 404 and "'nope-1m'" in record["result"]["error"]
    [(_, audit)] = door.ops.r.xrevrange(K.audit(), count=1)
    assert (audit["source"], audit["result"], audit["status"]) == ("file", "refused", "404")


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give the file to another user")
def test_a_command_file_of_another_user_commands_nothing(door):
    write_command(door, '{"action": "halt", "reason": "not mine"}')
    os.chown(door.s.control_file, 65534, 65534)
    path = control_file.process_control_file(door.ops, door.s.control_file, archive_dir(door))
    assert path is not None
    record = json.loads(path.read_text())
    assert record["result"]["status"] == 403 and "belongs to" in record["result"]["error"]
    assert door.ops.r.hget(K.control(), "halted") is None, "a foreign file halted trading"


def test_a_symlink_or_fifo_commands_nothing_and_never_blocks(door, tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text('{"action": "halt"}')
    door.s.control_file.symlink_to(target)
    path = control_file.process_control_file(door.ops, door.s.control_file, archive_dir(door))
    assert path is not None and json.loads(path.read_text())["result"]["status"] == 403
    os.mkfifo(door.s.control_file)  # a reader would block forever on a FIFO with no writer
    path = control_file.process_control_file(door.ops, door.s.control_file, archive_dir(door))
    assert path is not None and "not a regular file" in json.loads(path.read_text())["result"]["error"]
    assert not door.s.control_file.exists() and door.ops.r.hget(K.control(), "halted") is None


def test_a_half_written_file_is_not_judged_on_the_first_look(door):
    now = [100.0]
    poller = control_file.ControlPoller(
        door.ops, door.s.control_file, archive_dir(door), clock=lambda: now[0]
    )
    write_command(door, '{"action": "pa')
    assert poller.poll() is None
    now[0] += 0.6
    assert poller.poll() is None and door.s.control_file.exists()
    write_command(door, '{"action": "pause", "reason": "saved at last"}')
    path = poller.poll()
    assert path is not None and json.loads(path.read_text())["result"]["ok"] is True
    assert door.ops.r.hget(K.control(), "paused") == "1"


def test_a_file_that_stays_unparsable_is_judged_bad_after_the_settle_time(door):
    now = [100.0]
    poller = control_file.ControlPoller(
        door.ops, door.s.control_file, archive_dir(door), clock=lambda: now[0]
    )
    write_command(door, '{"action": "pa')
    assert poller.poll() is None
    now[0] += control_file.SETTLE_S
    path = poller.poll()
    assert path is not None and not door.s.control_file.exists()
    record = json.loads(path.read_text())
    assert record["command_text"] == '{"action": "pa' and "not valid JSON" in record["result"]["error"]


def test_a_command_waits_for_redis(door, fake_server):
    poller = control_file.ControlPoller(door.ops, door.s.control_file, archive_dir(door))
    write_command(door, '{"action": "halt"}')
    fake_server.connected = False
    assert poller.poll() is None and door.s.control_file.exists()
    fake_server.connected = True
    assert poller.poll() is not None
    assert door.ops.r.hget(K.control(), "halted") == "1"


def test_a_command_interrupted_by_a_stop_is_archived_not_applied_again(door):
    d = archive_dir(door)
    d.mkdir(mode=0o700)
    (d / f"{control_file.APPLYING}123-ab.json").write_text('{"action": "resume"}')
    [path] = control_file.recover_interrupted(d)
    record = json.loads(path.read_text())
    assert record["action"] == "resume" and record["result"]["status"] == 500
    assert [p.name for p in d.iterdir()] == [path.name]
    assert door.ops.r.xlen(K.audit()) == 0


async def test_run_files_applies_commands_and_writes_status(door):
    task = asyncio.create_task(files.run_files(door))
    try:
        await until(lambda: "generated_ms" in read_status(door))
        write_command(door, "garbage first")
        await until(lambda: not door.s.control_file.exists())  # judged after ~1 s, loop goes on
        write_command(door, '{"action": "disable_slot", "slot": "btc-15m"}')
        await until(lambda: any(archive_dir(door).glob("*-disable_slot.json")))
        [ok] = archive_dir(door).glob("*-disable_slot.json")
        assert len(list(archive_dir(door).glob("*-invalid.json"))) == 1
        assert json.loads(ok.read_text())["result"]["result"]["slot"]["enabled"] is False
    finally:
        await stop(task)
        with pytest.raises(asyncio.CancelledError):
            await task

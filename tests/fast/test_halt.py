"""The emergency halt inside one tick (kernel/halt.py, kernel/executor.py, control/halt.py).

The safety property: once a halt is acknowledged, no order reaches the venue, and no
strategy code runs after the worker heard of it. Posts already on their way are waited for
before the acknowledgement; intents committed but not yet posted are never sent.
"""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import fakeredis
import msgspec
import pytest

from baton.errors import Conflict
from baton.settings import load
from control import commands as c
from control import halt
from control.ops import Ops
from kernel import entries as entries_mod
from kernel import executor
from kernel.halt import HaltGate, HaltResponder
from kernel.lease import active_color
from kernel.markets import MarketCache
from kernel.strategy_api import SlotInput
from kernel.wakes import WakeSchedule
from state.keys import Keys
from state.structs import Intent
from tests.factories import intent as make_intent
from tests.fast.rig import ASSETS

ACTOR = c.Actor(source="cli", who="test")


class Venue:
    """Posts that can be held in flight; records when each post returned; cancel-all."""

    def __init__(self, hold: bool = False) -> None:
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.entered = threading.Event()
        self.posted: list[tuple[str, float]] = []
        self.cancels = 0
        self.lock = threading.Lock()

    def sign_buy(self, token_id: str, price: float, size: float) -> SimpleNamespace:
        return SimpleNamespace(order_id=f"0x{token_id}")

    def post(self, signed: SimpleNamespace, order_type: str = "FOK", timeout_s=None) -> SimpleNamespace:
        self.entered.set()
        self.release.wait(10)
        with self.lock:
            self.posted.append((signed.order_id, time.monotonic()))
        return SimpleNamespace(
            order_id=signed.order_id, status="unmatched", size_matched=0.0, avg_price=0.0, price=0.0, error=""
        )

    def cancel_all(self) -> dict:
        self.cancels += 1
        return {"canceled": ["0xresting"], "not_canceled": {}}


def intents(epoch: int, n: int) -> list[Intent]:
    return [
        msgspec.structs.replace(
            make_intent(f"s{k}-15m:1700000000:entry", epoch=epoch), slot=f"s{k}-15m", token_id=str(1000 + k)
        )
        for k in range(n)
    ]


async def lease(store, holder: str = "blue:h:1:x") -> int:
    _, epoch, _ = await store.acquire_lease(holder, "blue", "r1", int(time.time() * 1000), 60_000)
    return epoch


def responder(store, venue, gate: HaltGate) -> HaltResponder:
    return HaltResponder(store, venue, gate, lambda: {"color": "blue", "holder": "blue:h:1:x"})


async def acks(store, seq: int) -> list[str]:
    return await store.r.lrange(store.k.control_ack(seq), 0, -1)


async def test_an_intent_committed_before_the_halt_is_never_posted_after_it(store):
    epoch = await lease(store)
    venue, gate = Venue(), HaltGate()
    real = store.commit_intents

    async def commit_then_halt(epoch, intents):
        # The halt lands right after the commit: the intents are committed (the flag was not
        # set yet when the script ran), but not one may be posted.
        out = await real(epoch, intents)
        seq = await store.set_halt("test", 1)
        await responder(store, venue, gate).on_halt(seq, seq)
        return out

    store.commit_intents = commit_then_halt
    sent, problems = await executor.commit_and_submit(store, venue, epoch, intents(epoch, 3), gate=gate)
    assert sent == 0 and venue.posted == []
    stored = await store.read_intents()
    assert len(stored) == 3 and {i.status for i in stored} == {"failed"}
    assert all("never sent" in i.error for i in stored)
    assert sum("halted before it was posted" in p for p in problems) == 3
    assert await store.r.hlen(store.k.intents_open()) == 0


async def test_the_acknowledgement_waits_for_posts_already_in_flight(store):
    epoch = await lease(store)
    venue, gate = Venue(hold=True), HaltGate()
    task = asyncio.ensure_future(
        executor.commit_and_submit(store, venue, epoch, intents(epoch, 2), gate=gate)
    )
    await asyncio.to_thread(venue.entered.wait, 5)
    assert gate.inflight == 2
    seq = await store.set_halt("test", 1)
    halting = asyncio.ensure_future(responder(store, venue, gate).on_halt(seq, seq))
    await asyncio.sleep(0.3)
    assert not halting.done() and await acks(store, seq) == [], "acknowledged with posts in flight"
    venue.release.set()
    await asyncio.wait_for(halting, 5)
    acked_at = time.monotonic()
    sent, _ = await task
    assert sent == 2
    assert all(t <= acked_at for _, t in venue.posted)
    first = (await acks(store, seq))[0]
    assert '"halted": true' in first and '"inflight": 0' in first


async def test_no_strategy_code_runs_after_the_worker_hears_the_halt(store, monkeypatch):

    calls: list[str] = []
    gate = HaltGate()

    class Strategy:
        @staticmethod
        def needs_quotes(inp):
            return True

        @staticmethod
        def evaluate(inp):
            calls.append(inp.slot_id)
            gate.close(99)  # the halt message is handled right after this call
            return None

    def resolve(name):
        return Strategy

    refs = [
        SimpleNamespace(id=f"{a}-15m", slug=f"{a}-s", window_start_s=0, entry_intent_id=f"{a}-15m:0:entry")
        for a in ASSETS.split(",")
    ]
    market = SimpleNamespace(up_token="1", down_token="2")
    snap = SimpleNamespace(
        refs=refs,
        slots={r.id: SimpleNamespace(strategy="x", enabled=True, params={}) for r in refs},
        open_intents=[],
        open_positions=[],
        totals={},
        day_pnl_micros=0,
    )
    venue = SimpleNamespace(books=lambda tokens: {})
    markets = MarketCache(store, venue, clock=None, floor=0)

    async def discover(cached, refs, problems):
        return {r.slug: market for r in refs}

    markets.discover = discover
    entries = entries_mod.Entries(store, venue, None, 0, markets, WakeSchedule(resolve), resolve, gate)
    # The tick builds each slot's input through the tick's shared inputs (kernel/inputs.py
    # TickInputs.slot): this test's snapshot is a stand-in, so its inputs are made here.
    fake_input = lambda ref, strat=None, entered=False, exit_legs=None: SlotInput(  # noqa: E731
        slot_id=ref.id,
        asset="btc",
        timeframe="15m",
        now_ms=0,
        window_start_ms=0,
        window_end_ms=900_000,
        open_price=1.0,
        last_price=1.0,
        closes=(1.0,),
        stake_usd=5.0,
        params={},
    )
    entries._tick_inputs = lambda snap, now_ms: SimpleNamespace(slot=fake_input)  # type: ignore[method-assign]
    monkeypatch.setattr(entries_mod, "with_asks", lambda inp, up, down: inp)
    got = await entries.run(snap, 0, 1, 1)
    evaluated, orders, problems = got.evaluated, got.orders, got.problems
    assert calls == [refs[0].id], "a strategy ran after the halt"
    assert evaluated == 1 and orders == 0
    assert any("no strategy code runs after the halt" in p for p in problems)


@pytest.fixture
def settings(tmp_path):
    return load({"BATON_HOME": str(tmp_path), "BATON_HALT_ACK_TIMEOUT_MS": "3000"})


async def test_a_halt_through_ops_is_heard_at_once_acknowledged_and_swept(store, fake_server, settings):
    await lease(store)
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    stopping = asyncio.Event()
    listening = asyncio.ensure_future(resp.listen(stopping))
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    for _ in range(100):  # until the listener is subscribed
        if sync.pubsub_numsub(store.k.control_events())[0][1]:
            break
        await asyncio.sleep(0.01)
    res = await asyncio.to_thread(ops.halt, ACTOR, c.HaltBody(reason="2 a.m."))
    stopping.set()
    await listening
    await resp.close()
    assert res.acknowledged and res.worker == "worker-blue"
    assert res.ack_ms is not None and res.ack_ms < 1000  # generous: the target is 100 ms
    assert "1 open order(s) cancelled" in res.cancel and venue.cancels == 1
    assert gate.halted and res.control.halted and res.control.halt_reason == "2 a.m."
    assert (await store.read_control()).halted
    audit = await store.r.xrevrange(store.k.audit(), count=1)
    assert audit[0][1]["action"] == "halt" and audit[0][1]["result"] == "ok"


async def test_a_halt_without_a_message_is_acknowledged_and_swept_by_the_next_tick_read(store):
    # Set by hand with redis-cli (or while no worker listened): no pub/sub message at all.
    await store.r.hset(store.k.control(), mapping={"halted": "1", "halt_reason": "by hand"})
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    await resp.sync(await store.read_control())
    await resp.close()
    assert gate.halted and venue.cancels == 1
    assert len(await acks(store, 0)) == 2
    # Every later tick sees the same halt: nothing more is done.
    await resp.sync(await store.read_control())
    await resp.close()
    assert venue.cancels == 1 and len(await acks(store, 0)) == 2


async def test_a_stale_read_cannot_reopen_the_gate_only_a_later_resume_does(store):
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    before = await store.read_control()  # a snapshot taken before the halt
    seq = await store.set_halt("test", 1)
    await resp.on_event(f'{{"action": "halt", "seq": {seq}}}')
    await resp.sync(before)
    assert gate.halted, "a snapshot older than the halt reopened the gate"
    halted_snapshot = await store.read_control()
    await store.clear_halt(2)
    await resp.on_event('{"action": "resume", "seq": 0}')
    assert not gate.halted and gate.begin_post()
    gate.end_post()
    # A tick snapshot read before the resume still says halted: it must not close the gate
    # again, nor sweep the venue a second time.
    await resp.sync(halted_snapshot)
    await resp.close()
    assert not gate.halted and venue.cancels == 1


async def test_a_message_is_only_a_wake_up_redis_decides(store):
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    # A forged or stray halt message with no halt in Redis halts nothing...
    await resp.on_event('{"action": "halt", "seq": 99999999}')
    assert not gate.halted and venue.cancels == 0
    # ...and a bogus huge seq cannot pin the gate shut against the next real resume.
    seq = await store.set_halt("real", 1)
    await resp.on_event(f'{{"action": "halt", "seq": {seq}}}')
    await store.clear_halt(2)
    await resp.on_event('{"action": "resume", "seq": 1e400}')
    await resp.close()
    assert not gate.halted


async def test_the_listener_survives_garbage_and_still_hears_the_next_halt(store):
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    stopping = asyncio.Event()
    listening = asyncio.ensure_future(resp.listen(stopping))
    await asyncio.sleep(0.05)
    for raw in ('{"action": "halt", "seq": 1e400}', '{"action": ["x"]}', "\x00\xff"):
        await store.r.publish(store.k.control_events(), raw)
    await asyncio.sleep(0.1)
    assert not listening.done(), "garbage ended the listener"
    await store.set_halt("after the garbage", 1)
    for _ in range(100):
        if gate.halted:
            break
        await asyncio.sleep(0.01)
    stopping.set()
    await listening
    await resp.close()
    assert gate.halted and venue.cancels == 1


async def test_garbage_on_the_control_channel_is_reported_and_changes_nothing(store):
    venue, gate = Venue(), HaltGate()
    resp = responder(store, venue, gate)
    for raw in ("not json", '{"seq": "x"}', "[1, 2]", '{"action": 7}'):
        await resp.on_event(raw)
    assert not gate.halted and venue.cancels == 0
    errors = await store.r.xrange(store.k.journal_errors())
    assert len(errors) == 4 and all(f["source"] == "control" for _, f in errors)


async def test_a_halt_with_no_active_worker_stands_and_says_so(store, fake_server, settings):
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    res = ops.halt(ACTOR, c.HaltBody())
    assert res.halted and not res.acknowledged and res.ack_ms is None
    assert "next worker" in res.cancel
    assert (await store.read_control()).halted
    # The commit script refuses every intent from now on, whatever the worker's gate says.
    epoch = await lease(store)
    sent, problems = await executor.commit_and_submit(store, Venue(), epoch, intents(epoch, 1))
    assert sent == 0 and any("HALTED" in p for p in problems)


async def test_only_the_lease_holders_acknowledgement_counts(store, fake_server, settings):
    await lease(store, holder="green:h:2:y")
    # A worker that handed over a moment ago (blue) answers first; the holder never does.
    blue = HaltResponder(store, Venue(), HaltGate(), lambda: {"color": "blue", "holder": "blue:h:1:x"})
    stopping = asyncio.Event()
    listening = asyncio.ensure_future(blue.listen(stopping))
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    fast = msgspec.structs.replace(settings, halt_ack_timeout_ms=300)
    ops = Ops(fast, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    await asyncio.sleep(0.05)
    res = await asyncio.to_thread(ops.halt, ACTOR, c.HaltBody())
    stopping.set()
    await listening
    await blue.close()
    assert not res.acknowledged and "did not acknowledge" in res.cancel
    assert res.control.halted


async def test_a_resume_made_on_a_stale_view_cannot_lift_a_halt_it_never_saw(store, fake_server, settings):
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    ops.pause(ACTOR, c.PauseBody())
    seen = ops.control().seq  # the operator looks: paused
    ops.halt(c.Actor(source="api", who="token:other"), c.HaltBody(reason="someone else"))
    with pytest.raises(Conflict, match="changed meanwhile"):
        halt.set_flags(ops, "resume", "", ACTOR, expect_seq=seen)
    assert ops.control().halted


async def test_garbage_of_the_wrong_type_in_the_control_key_cannot_block_a_halt(store, fake_server, settings):
    await store.r.set(store.k.control(), "banana")
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    res = ops.halt(ACTOR, c.HaltBody(reason="through the garbage"))
    assert res.control.halted and (await store.read_control()).halted


async def test_no_reload_under_a_halt(store, fake_server, settings):
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    ops.halt(ACTOR, c.HaltBody())
    with pytest.raises(Conflict, match="no strategy code"):
        ops.reload(ACTOR, timeout_s=0.1)


async def test_start_after_a_clean_stop_runs_the_colour_deployed_last(fake_server, settings):
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    k = Keys("baton:")
    assert active_color(sync, k) == "blue"
    sync.xadd(k.deploys(), {"kind": "deploy", "color": "green", "result": "ok"})
    sync.xadd(k.deploys(), {"kind": "deploy", "color": "blue", "result": "failed"})
    assert active_color(sync, k) == "green"  # the lease is gone after a clean stop
    sync.hset(k.lease(), "color", "blue")
    assert active_color(sync, k) == "blue"


@pytest.mark.parametrize("garbage", ["2.5", "banana", "-3", "99999999999999999999"])
async def test_a_garbage_control_counter_cannot_block_halts_or_resumes(store, fake_server, settings, garbage):
    sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    ops = Ops(settings, sync, supervisor=lambda *a: [], sleep=lambda s: None)
    ops.halt(ACTOR, c.HaltBody())
    before = ops.control().seq
    sync.hset(store.k.control(), "seq", garbage)
    res = ops.halt(ACTOR, c.HaltBody(reason="again"))
    # The count goes on above every seq handed out before (a worker acknowledges it).
    assert res.seq > before and ops.control().seq == res.seq and not ops.control().problems
    assert ops.resume(ACTOR).control.halted is False

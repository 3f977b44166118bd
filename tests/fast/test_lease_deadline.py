"""The lease deadline (kernel/lease.py LeaseDeadline): a worker whose lease may have passed to
another posts nothing. Checked before every commit and every post (kernel/executor.py), re-armed
by each tick's renewal; a refusal is journaled, counted, and leaves the intent in a state that
reconciliation settles without a lost intent or a duplicate."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import msgspec
import pytest

from baton.errors import LeaseDeadlinePassed, SettingsError
from baton.settings import load
from kernel import executor, reconcile
from kernel.halt import HaltGate, HaltResponder
from kernel.lease import LeaseDeadline
from state.structs import Intent
from tests.factories import intent as make_intent


class FakeMono:
    def __init__(self) -> None:
        self.ms = 1_000.0

    def __call__(self) -> float:
        return self.ms


class Venue:
    """Every post is recorded; `on_post` runs first (a stall: the fake clock jumps)."""

    def __init__(self, on_post=None) -> None:
        self.posted: list[str] = []
        self.on_post = on_post
        self.known: dict[str, SimpleNamespace] = {}

    def sign_buy(self, token_id: str, price: float, size: float) -> SimpleNamespace:
        return SimpleNamespace(order_id=f"0x{token_id}")

    def post(
        self, signed: SimpleNamespace, order_type: str = "FOK", timeout_s=None
    ) -> SimpleNamespace:
        if self.on_post is not None:
            self.on_post()
        self.posted.append(signed.order_id)
        res = SimpleNamespace(
            order_id=signed.order_id, status="unmatched", size_matched=0.0, avg_price=0.0, price=0.0, error=""
        )
        self.known[signed.order_id] = res
        return res

    def order(self, order_id: str) -> SimpleNamespace | None:
        return self.known.get(order_id)


def intents(epoch: int, n: int) -> list[Intent]:
    now_ms = int(time.time() * 1000)
    return [
        msgspec.structs.replace(
            make_intent(f"s{k}-15m:1700000000:entry", epoch=epoch),
            slot=f"s{k}-15m",
            token_id=str(1000 + k),
            order_id=f"0x{1000 + k}",
            created_ms=now_ms,
        )
        for k in range(n)
    ]


async def take_lease(store, holder: str = "blue:h:1:x", ttl_ms: int = 60_000) -> int:
    held, epoch, _ = await store.acquire_lease(holder, "blue", "r1", int(time.time() * 1000), ttl_ms)
    assert held
    return epoch


async def lease_journal(store) -> list[dict[str, str]]:
    return [f for _id, f in await store.r.xrange(store.k.journal_errors()) if f["source"] == "lease"]


# --- the arithmetic -------------------------------------------------------------------------------
def test_the_deadline_is_the_last_renewal_plus_the_lease_less_the_margin():
    mono = FakeMono()
    d = LeaseDeadline(3000, 1000, mono)
    assert d.passed(), "no lease taken yet: nothing may be posted"
    stamp = d.stamp()
    mono.ms += 400  # the renewal's round trip: the deadline runs from the stamp, not the answer
    d.renewed(stamp)
    assert d.remaining_ms() == pytest.approx(1600)
    mono.ms = stamp + 1999
    assert not d.passed()
    d.check()
    mono.ms = stamp + 2000
    assert d.passed()
    with pytest.raises(LeaseDeadlinePassed, match=r"last renewal 2000 ms ago, lease 3000 ms, margin 1000 ms"):
        d.check()
    # A renewal re-arms it; an older stamp answered late never moves it back.
    d.renewed(stamp + 2500)
    d.renewed(stamp)
    assert d.remaining_ms() == pytest.approx(2500)  # (stamp + 2500) + 2000 - now
    d.lost()
    assert d.passed()
    with pytest.raises(LeaseDeadlinePassed, match="no lease held"):
        d.check()


def test_the_margin_is_a_setting_with_a_third_of_the_lease_by_default():
    # A second's lease whatever the tick, renewed four times a second by the heartbeat.
    for tick_ms in ("1000", "5000"):
        s = load({"BATON_TICK_MS": tick_ms})
        assert (s.lease_ms, s.lease_margin_ms, s.lease_renew_ms) == (1000, 333, 250)
    s = load({"BATON_LEASE_MS": "9000", "BATON_LEASE_MARGIN_MS": "250"})
    assert (s.lease_ms, s.lease_margin_ms, s.lease_renew_ms) == (9000, 250, 2250)
    assert load({"BATON_LEASE_RENEW_MS": "100"}).lease_renew_ms == 100
    with pytest.raises(SettingsError, match="BATON_LEASE_RENEW_MS=700 must be below the lease less"):
        load({"BATON_LEASE_RENEW_MS": "700"})
    with pytest.raises(SettingsError, match="BATON_LEASE_MARGIN_MS=3000 must be below the lease length"):
        load({"BATON_LEASE_MS": "3000", "BATON_LEASE_MARGIN_MS": "3000"})
    with pytest.raises(SettingsError, match="BATON_LEASE_MARGIN_MS"):
        load({"BATON_LEASE_MARGIN_MS": "-1"})


# --- before every post ------------------------------------------------------------------------------
async def test_a_post_after_a_stall_past_the_deadline_is_not_sent_and_is_recorded(store):
    epoch = await take_lease(store)
    mono = FakeMono()
    deadline = LeaseDeadline(3000, 1000, mono)
    deadline.renewed(deadline.stamp())

    def stall() -> None:
        mono.ms += 5000  # the first post hangs past the deadline (or the process was stopped)

    venue = Venue(on_post=stall)
    # One lane: the three posts go one after the other, so the 2nd and 3rd come after the stall.
    sent, problems = await executor.commit_and_submit(
        store, venue, epoch, intents(epoch, 3), n_lanes=1, deadline=deadline
    )
    assert sent == 1 and venue.posted == ["0x1000"]
    by_id = {i.id: i for i in await store.read_intents()}
    assert by_id["s0-15m:1700000000:entry"].status == "rejected"  # the venue's answer, booked
    for k in (1, 2):
        refused = by_id[f"s{k}-15m:1700000000:entry"]
        assert refused.status == "failed" and "lease deadline passed" in refused.error
    assert sum("lease deadline passed" in p for p in problems) == 2
    # Journaled and counted.
    journal = await lease_journal(store)
    assert len(journal) == 2 and all("not posted" in f["error"] for f in journal)
    assert await store.r.hget(store.k.stats(), "errors_lease") == "2"


async def test_past_the_deadline_nothing_is_committed_so_the_next_tick_decides_again(store):
    epoch = await take_lease(store)
    mono = FakeMono()
    deadline = LeaseDeadline(3000, 1000, mono)
    deadline.renewed(deadline.stamp())
    mono.ms += 2500
    venue = Venue()
    entered: set[str] = set()
    sent, problems = await executor.commit_and_submit(
        store, venue, epoch, intents(epoch, 2), entered=entered, deadline=deadline
    )
    assert sent == 0 and venue.posted == [] and entered == set()
    assert await store.read_intents() == []
    assert problems == [problems[0]] and "2 intent(s) not committed: lease deadline passed" in problems[0]
    assert [f["error"].split(":")[-1].strip() for f in await lease_journal(store)] == ["not posted"] * 2
    # Renewed: the same decisions go out.
    deadline.renewed(deadline.stamp())
    sent, _ = await executor.commit_and_submit(store, venue, epoch, intents(epoch, 2), deadline=deadline)
    assert sent == 2 and len(venue.posted) == 2


async def test_a_refused_post_after_the_lease_passed_is_reconciled_once_and_never_duplicated(store):
    """The stall outlasted the lease and another worker took it: the refusal's fenced write is
    refused too, the intent stays open, and the new holder's reconciliation settles it; the
    new holder cannot enter the same slot-window again."""
    old = await take_lease(store, "blue:h:1:x", ttl_ms=1)
    mono = FakeMono()
    deadline = LeaseDeadline(3000, 1000, mono)
    deadline.renewed(deadline.stamp())
    batch = intents(old, 2)
    new_epoch: list[int] = []

    async def stall_then_taken_over() -> None:
        mono.ms += 5000
        new_epoch.append(await take_lease(store, "green:h:2:y"))

    real = store.commit_intents

    async def commit_then_stall(epoch, intents):
        out = await real(epoch, intents)
        await stall_then_taken_over()
        return out

    store.commit_intents = commit_then_stall
    venue = Venue()
    sent, problems = await executor.commit_and_submit(store, venue, old, batch, deadline=deadline)
    store.commit_intents = real
    assert sent == 0 and venue.posted == []
    assert any("STALE_EPOCH" in p for p in problems), problems
    still_open = await store.read_intents(open_only=True)
    assert {i.id for i in still_open} == {i.id for i in batch}
    # The new holder reconciles: unknown at the venue, given up after the grace period.
    [epoch] = new_epoch
    later_ms = int(time.time() * 1000) + 20_000
    done, errs = await reconcile.reconcile_open(store, venue, epoch, later_ms, unknown_grace_ms=13_000)
    assert done == 2 and errs == []
    assert {i.status for i in await store.read_intents()} == {"failed"}
    # And it cannot enter the same slot-windows a second time.
    verdicts = await store.commit_intents(epoch, [msgspec.structs.replace(i, epoch=epoch) for i in batch])
    assert verdicts == ["DUPLICATE", "DUPLICATE"]
    assert venue.posted == []


# --- re-armed by the tick ---------------------------------------------------------------------------
async def test_every_tick_renewal_rearms_the_deadline_and_a_lost_lease_drops_it(rig):
    await rig.start()
    mono = FakeMono()
    d = LeaseDeadline(rig.settings.lease_ms, rig.settings.lease_margin_ms, mono)
    rig.runner.deadline = rig.runner.entries.deadline = d
    assert d.passed()
    await rig.run_ticks(1)
    assert d.remaining_ms() == pytest.approx(rig.settings.lease_ms - rig.settings.lease_margin_ms)
    mono.ms += 10_000
    assert d.passed()
    await rig.run_ticks(1)
    assert not d.passed()
    # Another holder: the next tick's renewal is refused, the deadline dropped.
    await rig.store.r.hset(rig.store.k.lease(), "holder", "green:other")
    with pytest.raises(Exception, match="no longer ours"):
        await rig.run_ticks(1)
    assert d.passed()


async def test_a_halt_sweep_past_the_deadline_cancels_nothing_and_says_who_will(store):
    epoch = await take_lease(store)
    assert epoch
    cancels: list[int] = []
    venue = SimpleNamespace(cancel_all=lambda: cancels.append(1) or {"canceled": [], "not_canceled": {}})
    mono = FakeMono()
    deadline = LeaseDeadline(3000, 1000, mono)
    gate = HaltGate()
    responder = HaltResponder(store, venue, gate, lambda: {"holder": "blue:h:1:x"}, deadline=deadline)
    seq = await store.set_halt("test", 1)
    await responder.on_halt(seq, seq)  # never renewed: the deadline has passed
    await responder.close()
    assert cancels == []
    answers = [json.loads(a) for a in await store.r.lrange(store.k.control_ack(seq), 0, -1)]
    assert "lease deadline passed" in answers[-1]["cancel"]
    # Within the deadline the sweep is made.
    deadline.renewed(deadline.stamp())
    seq = await store.set_halt("again", 2)
    gate.halted = False
    await responder.on_halt(seq, seq)
    await responder.close()
    assert cancels == [1]

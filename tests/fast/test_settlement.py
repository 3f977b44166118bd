"""Settlement on rq: the kernel enqueues one job per closed window with a deterministic id,
the settle program's rq worker runs it against the venue (the sim's CLOB over a real socket),
and the booking happens once however often the job is enqueued or run."""

from __future__ import annotations

import asyncio
import json
import zlib

import fakeredis
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from kernel import settlement
from kernel.settlement import Enqueuer, job_id, queue_name
from tests.factories import position
from worker import settle as settle_program

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_job_ids_are_deterministic_and_legal_for_rq():
    assert job_id("baton:", "btc-15m:1795000500") == "settle-btc-15m-1795000500"
    assert queue_name("baton:") == "settle"
    # another prefix (a second stack on the same Redis) gets its own ids and queue
    assert job_id("t1.x:", "eth-5m:1795000500") == "t1_x-settle-eth-5m-1795000500"
    # Free-form slot ids may hold dots, which rq refuses in an id, and underscores: escaped.
    assert job_id("baton:", "momo.btc-1m:1795000500") == "settle-momo_2ebtc-1m-1795000500"
    assert job_id("baton:", "momo_btc-1m:1795000500") == "settle-momo_5fbtc-1m-1795000500"
    assert queue_name("t1.x:") == "t1_x-settle"


async def _a_closed_position(rig):
    """Tick (without settling) until a position's window has closed."""
    rig_settle, rig.settle = rig.settle, lambda: 0
    try:
        for _ in range(120):
            await rig.run_ticks(1)
            now_s = rig.clock.now_ms() // 1000
            closed = [p for p in await rig.store.read_positions(open_only=True) if p.window_end_s <= now_s]
            if closed:
                return closed[0]
    finally:
        rig.settle = rig_settle
    raise AssertionError("no position closed in 120 ticks")


def _stats(rig) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in rig.sync.hgetall(rig.store.k.settle_stats()).items()}


async def test_settlement_enqueued_twice_runs_once(rig):
    p = await _a_closed_position(rig)
    q = settlement.settle_queue(rig.sync, "baton:")
    jid = job_id("baton:", p.id)
    assert jid in q.job_ids, "the tick enqueued the settlement of the closed window"
    # Enqueued again: by a later tick (its claim stops it), by another worker that does not
    # see the claim (rq's unique id stops it), and straight through rq.
    assert rig.settler.due([p], rig.clock.now_ms()) == []  # remembered: no round trip per tick
    assert rig.settler.enqueue_due([p], rig.clock.now_ms()) == (0, [])
    other = Enqueuer(rig.sync, "baton:")
    rig.sync.delete(rig.store.k.settle_claim(p.id))
    assert other.enqueue_due([p], rig.clock.now_ms()) == (0, [])
    assert settlement.enqueue(q, "baton:", p) is False
    assert q.job_ids.count(jid) == 1
    jobs = q.count  # other slots' windows closed at the same time
    settle_program.settle_worker(q, "baton:").work(burst=True)
    assert Job.fetch(jid, connection=rig.sync, serializer=JSONSerializer).return_value() == "settled"
    assert _stats(rig)["runs"] == jobs and _stats(rig)["settled"] == jobs
    payouts = [e for e in await rig.store.read_ledger() if e.ref == f"settle:{p.id}"]
    assert len(payouts) == 1
    (after,) = [x for x in await rig.store.read_positions() if x.id == p.id]
    up = rig.model.outcome_up(p.asset, p.window_start_s, p.window_end_s)
    assert after.status == "settled" and after.won == ((p.side == "up") == up)
    assert payouts[0].amount_micros == after.payout_micros

    # Even a job that rq itself runs a second time (its record gone, enqueued anew) books
    # nothing more: the script's ledger ref is the last guard.
    Job.fetch(jid, connection=rig.sync, serializer=JSONSerializer).delete()
    assert settlement.enqueue(q, "baton:", p) is True
    settle_program.settle_worker(q, "baton:").work(burst=True)
    assert Job.fetch(jid, connection=rig.sync, serializer=JSONSerializer).return_value() == "already"
    assert len([e for e in await rig.store.read_ledger() if e.ref == f"settle:{p.id}"]) == 1
    assert _stats(rig)["runs"] == jobs + 1 and _stats(rig)["settled"] == jobs


async def test_a_job_queued_under_the_former_job_path_still_settles(rig):
    p = await _a_closed_position(rig)
    q = settlement.settle_queue(rig.sync, "baton:")
    q.empty()
    # What a worker of the release before the job moved to worker/settle.py enqueued.
    q.enqueue("kernel.settlement.settle_job", "baton:", p.id, job_id=job_id("baton:", p.id))
    settle_program.settle_worker(q, "baton:").work(burst=True)
    job = Job.fetch(job_id("baton:", p.id), connection=rig.sync, serializer=JSONSerializer)
    assert job.return_value() == "settled"
    assert len([e for e in await rig.store.read_ledger() if e.ref == f"settle:{p.id}"]) == 1


async def test_an_unresolved_market_is_retried_by_rq_not_booked(rig):
    p = await _a_closed_position(rig)

    # The sim resolves every market the instant its window ends, so "not resolved yet" (live:
    # minutes of Chainlink and market close) is the one answer it cannot give: this venue
    # gives it, and the real sim answers the retry.
    class NotYet:
        def resolution(self, condition_id: str):
            return None

    settle_program.configure(NotYet(), rig.clock.now_ms)
    q = settlement.settle_queue(rig.sync, "baton:")
    settle_program.settle_worker(q, "baton:").work(burst=True)
    job = Job.fetch(job_id("baton:", p.id), connection=rig.sync, serializer=JSONSerializer)
    # scheduled for a retry (the settle program's scheduler moves it back to the queue)
    assert job.get_status() == "scheduled"
    assert job.retries_left is not None and job.retries_left < settlement.RETRY.max
    assert _stats(rig)["unresolved"] >= 1
    assert p.id in {x.id for x in await rig.store.read_positions(open_only=True)}
    # resolution known: once the retry is due (1 s), the scheduler requeues it and it settles
    settle_program.configure(rig.venue, rig.clock.now_ms)
    for _ in range(50):
        await asyncio.sleep(0.2)
        settle_program.settle_worker(q, "baton:").work(burst=True, with_scheduler=True)
        if p.id not in {x.id for x in await rig.store.read_positions(open_only=True)}:
            break
    assert job.get_status(refresh=True) == "finished"
    assert p.id not in {x.id for x in await rig.store.read_positions(open_only=True)}


async def test_a_garbage_running_sum_leaves_the_settlement_pending_until_repaired(rig):
    """The script refuses before its first write: the position stays open, nothing is booked,
    rq retries; once the sum is repaired the payout is booked once and the ledger adds up."""
    p = await _a_closed_position(rig)
    k = rig.store.k
    good = rig.sync.hget(k.ledger_totals(), "realized_pnl_micros") or b"0"
    rig.sync.hset(k.ledger_totals(), "realized_pnl_micros", "garbage")
    q = settlement.settle_queue(rig.sync, "baton:")
    settle_program.settle_worker(q, "baton:").work(burst=True)
    job = Job.fetch(job_id("baton:", p.id), connection=rig.sync, serializer=JSONSerializer)
    assert job.get_status() == "scheduled"
    assert _stats(rig)["unreadable"] >= 1
    journaled = [f[b"error"] for _, f in rig.sync.xrange(k.journal_errors()) if f[b"source"] == b"settle"]
    assert any(p.id.encode() in e and b"realized_pnl_micros" in e for e in journaled), journaled
    assert p.id in {x.id for x in await rig.store.read_positions(open_only=True)}
    assert not [e for e in await rig.store.read_ledger() if e.ref == f"settle:{p.id}"]
    rig.sync.hset(k.ledger_totals(), "realized_pnl_micros", good)
    for _ in range(50):
        await asyncio.sleep(0.2)
        settle_program.settle_worker(q, "baton:").work(burst=True, with_scheduler=True)
        if p.id not in {x.id for x in await rig.store.read_positions(open_only=True)}:
            break
    assert job.get_status(refresh=True) == "finished"
    # Journaled once per job, not once per retry.
    journaled = [f[b"error"] for _, f in rig.sync.xrange(k.journal_errors()) if f[b"source"] == b"settle"]
    assert len([e for e in journaled if p.id.encode() in e]) == 1, journaled
    entries = await rig.store.read_ledger()
    assert len([e for e in entries if e.ref == f"settle:{p.id}"]) == 1
    totals = await rig.store.read_ledger_totals()
    assert totals["cash_micros"] == sum(e.amount_micros for e in entries)
    assert totals["realized_pnl_micros"] == sum(e.pnl_micros for e in entries)


async def test_jobs_say_what_they_settle_to_redis_cli_users(rig):
    p = await _a_closed_position(rig)
    job = rig.sync.hgetall(f"rq:job:{job_id('baton:', p.id)}")
    assert p.id.encode() in job[b"description"] and p.condition_id.encode() in job[b"description"]
    # rq compresses the payload; inside it is JSON (no pickle), so any client can read it
    payload = json.loads(zlib.decompress(job[b"data"]))
    assert payload[0] == "worker.settle.settle_job" and payload[2] == ["baton:", p.id]


def test_a_remembered_claim_counts_until_it_expires_though_pruned_only_once_a_minute():

    p = position()
    enq = Enqueuer(fakeredis.FakeRedis(), "baton:", claim_ttl_s=10)
    end_ms = p.window_end_s * 1000
    assert enq.due([p], end_ms) == [p]
    enq._claimed_until[p.id] = end_ms + 10_000  # what enqueue_due remembers of its claim
    assert enq.due([p], end_ms + 9_999) == []
    # Expired: due again at once, though the memory is pruned only every PRUNE_EVERY_MS.
    assert enq.due([p], end_ms + 10_000) == [p]
    assert p.id in enq._claimed_until
    assert enq.due([p], end_ms + settlement.PRUNE_EVERY_MS) == [p]
    assert p.id not in enq._claimed_until


async def test_a_settlement_waits_for_an_open_exit_and_then_pays_on_the_shares_still_held(rig):
    """The window closed with an exit leg still open (its fill not booked): the job is
    retried, not paid on shares that may be sold; once the sale is booked it pays on what
    is left."""
    import msgspec

    from state.positions import sale
    from state.structs import INTENT, exit_leg

    p = await _a_closed_position(rig)
    entry = INTENT.decode(rig.sync.hget(rig.store.k.intents(), p.intent_id))
    x = msgspec.structs.replace(entry, id=f"{p.id}:{exit_leg(1)}", leg=exit_leg(1), status="posted")
    epoch = int(rig.sync.get(rig.store.k.lease_epoch()))
    assert await rig.store.commit_intent(epoch, x) == "OK"
    q = settlement.settle_queue(rig.sync, "baton:")
    settle_program.settle_worker(q, "baton:").work(burst=True)
    job = Job.fetch(job_id("baton:", p.id), connection=rig.sync, serializer=JSONSerializer)
    assert job.get_status() == "scheduled" and _stats(rig)["exit_pending"] >= 1
    assert p.id in {x.id for x in await rig.store.read_positions(open_only=True)}
    half = round(p.shares_micros / 2e6, 2)
    sold = msgspec.structs.replace(x, status="filled", filled_size=half, avg_price=0.5)
    b = sale(p, sold, rig.clock.now_ms())
    assert await rig.store.record_exit(epoch, sold, b) == "OK"
    for _ in range(50):
        await asyncio.sleep(0.2)
        if job.get_status(refresh=True) == "finished":
            break
        settle_program.settle_worker(q, "baton:").work(burst=True, with_scheduler=True)
    assert job.return_value() == "settled"
    (after,) = [y for y in await rig.store.read_positions() if y.id == p.id]
    assert after.status == "settled" and after.sold_shares_micros == round(half * 1e6)
    assert after.payout_micros in (0, p.shares_micros - after.sold_shares_micros)
    assert after.pnl_micros == after.payout_micros - after.cost_micros


async def test_a_position_sold_out_by_exits_is_never_settled(rig):
    import msgspec

    from state.positions import sale
    from state.structs import INTENT, exit_leg

    p = await _a_closed_position(rig)
    entry = INTENT.decode(rig.sync.hget(rig.store.k.intents(), p.intent_id))
    x = msgspec.structs.replace(entry, id=f"{p.id}:{exit_leg(1)}", leg=exit_leg(1), status="posted")
    epoch = int(rig.sync.get(rig.store.k.lease_epoch()))
    assert await rig.store.commit_intent(epoch, x) == "OK"
    sold = msgspec.structs.replace(x, status="filled", filled_size=p.shares_micros / 1e6, avg_price=0.5)
    assert await rig.store.record_exit(epoch, sold, sale(p, sold, rig.clock.now_ms())) == "OK"
    q = settlement.settle_queue(rig.sync, "baton:")
    settle_program.settle_worker(q, "baton:").work(burst=True)
    job = Job.fetch(job_id("baton:", p.id), connection=rig.sync, serializer=JSONSerializer)
    assert job.return_value() == "already"
    assert not [e for e in await rig.store.read_ledger() if e.ref == f"settle:{p.id}"]
    (after,) = [y for y in await rig.store.read_positions() if y.id == p.id]
    assert after.status == "closed" and after.payout_micros == 0


def test_a_settlement_looks_for_every_exit_leg_the_kernel_may_commit():
    # state/ may not import the kernel: the settlement's own count must cover the kernel's cap,
    # or a sale on a late leg would be paid again at resolution.
    from kernel.strategy_api import MAX_EXIT_LEGS
    from state.settlements import EXIT_LEGS_CHECKED

    assert EXIT_LEGS_CHECKED >= MAX_EXIT_LEGS

"""GET /metrics over fakeredis: what a scrape reports against what Redis holds, the journal
follower's histograms, and a scrape that survives garbage and a Redis that is down."""

from __future__ import annotations

import asyncio
import time

import fakeredis
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from api import metrics as m
from api.context import CTX_KEY, ApiContext
from baton import settings
from baton.errors import NotFound
from control.commands import Actor, HaltBody, PauseBody
from control.ops import Ops
from feed.store import Batch, CandleStore
from state.counts import recount_sync
from state.keys import Keys
from state.store import Store
from state.structs import FEED_STATUS, INTENT, Candle, FeedStatus, TickRecord
from tests.factories import intent

NOW_MS = 1_800_000_000_000
K = Keys("baton:")


@pytest.fixture
def env(tmp_path, fake_server):
    s = settings.load({"BATON_HOME": str(tmp_path), "BATON_ASSETS": "btc,eth,sol"})
    r = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
    return s, r


def scrape(metrics: m.Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def one(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def new_metrics(s, r, **kw) -> m.Metrics:
    return m.Metrics(s, r, clock_ms=lambda: NOW_MS, **kw)


def test_a_scrape_reports_what_redis_holds(env):
    s, r = env
    r.hset(K.stats(), mapping={"ticks_done": 41, "ticks_missed": 2, "handovers": 3, "reloads_ok": 4})
    r.hset(K.stats(), mapping={"errors_settle": 2, "errors_feed": 5, "errors_Bad Name!": 9})
    r.hset(K.stats(), "last_tick_ms", NOW_MS - 5000)
    statuses = ["filled", "filled", "posted", "rejected", "committed"]
    for i, st in enumerate(statuses):
        r.hset(K.intents(), f"btc-15m:{i}:entry", INTENT.encode(intent(f"btc-15m:{i}:entry", status=st)))
    r.hset(K.positions_open(), mapping={"a": "{}", "b": "{}"})
    r.hset(K.ledger_totals(), mapping={"cash_micros": 95_250_000, "realized_pnl_micros": -1_500_000})
    r.hset(K.ledger_totals(), mapping={"fee_micros": 120_000, "sell_micros": 4_000_000})
    r.hset(K.control(), mapping={"halted": 1, "paused": 0})
    r.set(K.lease_epoch(), 7)
    r.hset(K.feed_stats(), mapping={"frames": 10, "candles": 9, "candles:btc": 6, "candles:eth": 3})
    r.hset(K.feed_stats(), mapping={"frames@h1": 6, "frames@h2": 4, "candles:btc@h1": 4})
    r.hset(K.feed_status(), "btc:1s", FEED_STATUS.encode(FeedStatus(NOW_MS - 1500, 0, 1.0)))
    r.hset(K.feed_status(), "eth:1s", FEED_STATUS.encode(FeedStatus(NOW_MS - 60_000, 0, 1.0)))
    r.xadd(K.journal_ticks(), {"tick": 9, "color": "blue", "duration_ms": 37, "jitter_ms": 2})

    got = scrape(new_metrics(s, r))

    assert one(got, "baton_redis_up") == 1
    assert one(got, "baton_ticks_done_total") == 41
    assert one(got, "baton_ticks_missed_total") == 2
    assert one(got, "baton_handovers_total") == 3
    assert one(got, "baton_reloads_total", result="ok") == 4
    assert one(got, "baton_reloads_total", result="refused") == 0
    # journaled errors by source: a refused settle job counts under settle
    assert one(got, "baton_errors_total", source="settle") == 2
    assert one(got, "baton_errors_total", source="feed") == 5
    assert not [k for k in got if k[0] == "baton_errors_total" and "Bad" in str(k[1])]
    assert one(got, "baton_last_tick_timestamp_seconds") == (NOW_MS - 5000) / 1000
    assert one(got, "baton_last_tick_duration_ms") == 37
    assert one(got, "baton_last_tick_jitter_ms") == 2
    want_orders = {"committed": 1, "posted": 1, "filled": 2, "rejected": 1, "failed": 0}
    assert {st: one(got, "baton_orders", status=st) for st in want_orders} == want_orders
    assert one(got, "baton_positions_open") == 2
    assert one(got, "baton_cash_usd") == 95.25
    assert one(got, "baton_pnl_realized_usd") == -1.5
    assert (one(got, "baton_fees_usd"), one(got, "baton_sells_usd")) == (0.12, 4.0)
    assert (one(got, "baton_halted"), one(got, "baton_paused")) == (1, 0)
    assert one(got, "baton_lease_epoch") == 7
    assert one(got, "baton_feed_candles_total", asset="btc") == 6
    assert one(got, "baton_feed_candles_total", asset="eth") == 3
    assert one(got, "baton_feed_events_total", event="frames") == 10
    # Each host's feed on its own (several hosts), never mixed into the sums.
    assert one(got, "baton_feed_host_events_total", host="h1", event="frames") == 6
    assert one(got, "baton_feed_host_events_total", host="h2", event="frames") == 4
    assert one(got, "baton_feed_host_events_total", host="h1", event="candles:btc") == 4
    assert not [k for k in got if k[0] == "baton_feed_candles_total" and "@" in str(k[1])]
    # Staleness per asset; sol is configured but never written: stale, no age.
    assert one(got, "baton_feed_staleness_seconds", asset="btc") == 1.5
    assert one(got, "baton_feed_staleness_seconds", asset="eth") == 60
    assert ("baton_feed_staleness_seconds", (("asset", "sol"),)) not in got
    stale = {a: one(got, "baton_feed_stale", asset=a) for a in ("btc", "eth", "sol")}
    assert stale == {"btc": 0, "eth": 1, "sol": 1}
    assert one(got, "baton_metrics_problems", part="scrape") == 0


def test_a_scrape_is_one_round_trip_whatever_the_number_of_intents(env):
    s, r = env
    for i in range(200):
        r.hset(K.intents(), f"x:{i}:entry", INTENT.encode(intent(f"x:{i}:entry")))
    # As a new lease holder does: the history counted once (state/counts.py); from then on the
    # scripts keep the counts and a scrape reads them, not the intents.
    assert recount_sync(r, K, NOW_MS, force=False)
    direct, pipes = [], []
    execute, pipeline = r.execute_command, r.pipeline

    def counting_execute(*args, **kw):
        direct.append(args[0])
        return execute(*args, **kw)

    def counting_pipeline(*args, **kw):
        pipes.append(args)
        return pipeline(*args, **kw)

    r.execute_command, r.pipeline = counting_execute, counting_pipeline
    got = scrape(new_metrics(s, r))
    assert one(got, "baton_orders", status="committed") == 200
    assert (len(pipes), direct) == (1, [])


async def test_feed_batches_count_candles_per_asset(env, fake_server):
    s, r = env
    aredis = fakeredis.FakeAsyncRedis(server=fake_server)
    store = CandleStore(aredis, K, interval="1s", retention_s=60, clock_ms=lambda: NOW_MS)
    b = Batch()
    for i in range(4):
        store.accept(b, "btc", Candle(i * 1000, 1.0, 1.0, 1.0, 1.0, 0.0, True))
    store.accept(b, "eth", Candle(0, 1.0, 1.0, 1.0, 1.0, 0.0, False))
    store.accept(b, "eth", Candle(0, 1.0, 2.0, 1.0, 2.0, 0.0, False))  # an update: counted too
    await store.write(b)
    got = scrape(new_metrics(s, r))
    assert one(got, "baton_feed_candles_total", asset="btc") == 4
    assert one(got, "baton_feed_candles_total", asset="eth") == 2
    assert one(got, "baton_feed_events_total", event="candles") == 6
    assert one(got, "baton_feed_staleness_seconds", asset="btc") == 0


def ctx_for(s, r, fake_server) -> ApiContext:
    aredis = fakeredis.FakeAsyncRedis(server=fake_server)
    return ApiContext(s=s, ops=Ops(s, r, supervisor=lambda *a: []), token=None, redis=aredis)  # type: ignore[arg-type]


async def follow(ctx: ApiContext, metrics: m.Metrics) -> tuple[asyncio.Task, asyncio.Event]:
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(m.follow_journal(ctx, metrics, stop, block_ms=50, retry_s=0.05, ready=ready))
    await asyncio.wait_for(ready.wait(), 2)
    return task, stop


async def until(cond, timeout_s: float = 3.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def tick(n: int, duration_ms: int = 5, jitter_ms: int = 0, color: str = "blue") -> TickRecord:
    return TickRecord(
        tick=n,
        color=color,
        release="r",
        epoch=1,
        started_ms=0,
        duration_ms=duration_ms,
        jitter_ms=jitter_ms,
        orders=0,
    )


def count(metrics: m.Metrics, color: str = "blue") -> float:
    return scrape(metrics).get(("baton_tick_duration_ms_count", (("color", color),)), 0)


async def test_the_follower_fills_the_tick_histograms_from_the_journal(env, fake_server, store: Store):
    s, r = env
    r.set(K.lease_epoch(), 1)
    # Written before the api started: not observed (counters start from the stream's end).
    await store.append_tick(tick(1, duration_ms=1))
    ctx = ctx_for(s, r, fake_server)
    metrics = new_metrics(s, r)
    task, stop = await follow(ctx, metrics)
    await store.append_tick(tick(2, duration_ms=3, jitter_ms=9, color="green"))
    durations = [40, 40, 150, 700, 6000]  # the last one overran a 5 s tick: only +Inf holds it
    for i, d in enumerate(durations):
        await store.append_tick(tick(3 + i, duration_ms=d, jitter_ms=i + 1))
    await until(lambda: count(metrics) == 5)
    stop.set()
    await asyncio.wait_for(task, 2)

    got = scrape(metrics)
    assert one(got, "baton_tick_duration_ms_count", color="green") == 1
    assert one(got, "baton_tick_duration_ms_sum", color="blue") == 40 + 40 + 150 + 700 + 6000
    buckets = {
        le: one(got, "baton_tick_duration_ms_bucket", color="blue", le=le)
        for le in ("50.0", "200.0", "5000.0", "+Inf")
    }
    assert buckets == {"50.0": 2, "200.0": 3, "5000.0": 4, "+Inf": 5}
    assert one(got, "baton_tick_jitter_ms_sum", color="blue") == 1 + 2 + 3 + 4 + 5
    assert one(got, "baton_metrics_problems", part="journal") == 0


async def test_the_follower_counts_control_actions_by_result(env, fake_server):
    s, r = env
    ctx = ctx_for(s, r, fake_server)
    metrics = new_metrics(s, r)
    task, stop = await follow(ctx, metrics)
    who = Actor(source="cli", who="ops")
    ctx.ops.halt(who, HaltBody(reason="test"))
    ctx.ops.pause(who, PauseBody())
    ctx.ops.resume(who)
    with pytest.raises(NotFound):
        ctx.ops.set_slot_enabled(who, "nope-1m", True)
    r.xadd(K.audit(), {"action": "../../etc", "result": "ok"})  # garbage: no series for it
    await until(lambda: metrics.followed_problems == 1)
    stop.set()
    await asyncio.wait_for(task, 2)
    got = scrape(metrics)
    assert one(got, "baton_control_actions_total", action="halt", result="ok") == 1
    assert one(got, "baton_control_actions_total", action="pause", result="ok") == 1
    assert one(got, "baton_control_actions_total", action="resume", result="ok") == 1
    assert one(got, "baton_control_actions_total", action="enable_slot", result="refused") == 1
    assert one(got, "baton_metrics_problems", part="journal") == 1
    assert not any(
        name == "baton_control_actions_total" and ("action", "../../etc") in labels for name, labels in got
    )


def test_garbage_in_redis_is_skipped_and_counted(env):
    s, r = env
    r.hset(K.stats(), mapping={"ticks_done": "lots", "ticks_missed": 1})  # 1 problem
    r.hset(
        K.intents(), mapping={"a": "{not json", "b": '{"status": "exploded"}', "c": '{"status": "filled"}'}
    )  # 2
    r.set(K.positions_open(), "a string, not a hash")  # WRONGTYPE: 1
    r.hset(K.ledger_totals(), "cash_micros", "1e3")  # 1
    r.hset(K.control(), mapping={"halted": "maybe"})  # fails safe to halted: 1
    r.hset(K.feed_stats(), mapping={"candles:btc": "x", "frames": 3})  # 1
    r.hset(K.feed_status(), "btc:1s", "[1, 2")  # 1
    r.xadd(K.journal_ticks(), {"tick": 1, "duration_ms": "slow"})  # 2: unreadable, and no jitter_ms

    got = scrape(new_metrics(s, r))

    assert one(got, "baton_redis_up") == 1
    assert one(got, "baton_metrics_problems", part="scrape") == 10
    assert ("baton_ticks_done_total", ()) not in got
    assert one(got, "baton_ticks_missed_total") == 1
    assert one(got, "baton_orders", status="filled") == 1
    assert ("baton_positions_open", ()) not in got and ("baton_cash_usd", ()) not in got
    assert one(got, "baton_halted") == 1
    assert one(got, "baton_feed_events_total", event="frames") == 3
    assert one(got, "baton_feed_stale", asset="btc") == 1


def test_redis_down_answers_redis_up_0_and_nothing_read_from_redis(env, fake_server):
    s, r = env
    r.hset(K.stats(), "ticks_done", 5)
    fake_server.connected = False
    metrics = new_metrics(s, r, programs=lambda: {"redis": "FATAL", "api": "RUNNING"})
    got = scrape(metrics)
    assert one(got, "baton_redis_up") == 0
    assert one(got, "baton_up", program="redis") == 0 and one(got, "baton_up", program="api") == 1
    from_redis = {name for name, _ in got} - {
        "baton_redis_up",
        "baton_metrics_problems",
        "baton_supervisor_up",
        "baton_up",
    }
    assert from_redis == set()
    fake_server.connected = True
    assert one(scrape(metrics), "baton_ticks_done_total") == 5


def test_supervisor_unreachable_is_reported_not_raised(env):
    s, r = env

    def down():
        raise ConnectionRefusedError("no socket")

    got = scrape(new_metrics(s, r, programs=down))
    assert one(got, "baton_supervisor_up") == 0
    assert one(got, "baton_redis_up") == 1
    assert not any(name == "baton_up" for name, _ in got)


async def test_the_follower_survives_redis_going_away(env, fake_server, store: Store):
    s, r = env
    r.set(K.lease_epoch(), 1)
    ctx = ctx_for(s, r, fake_server)
    metrics = new_metrics(s, r)
    task, stop = await follow(ctx, metrics)
    fake_server.connected = False
    await asyncio.sleep(0.2)  # a few failed reads and retries
    assert not task.done()
    fake_server.connected = True
    await store.append_tick(tick(1))
    await until(lambda: count(metrics) == 1)
    stop.set()
    await asyncio.wait_for(task, 2)


async def test_the_handler_serves_the_text_format(env, fake_server):
    s, r = env
    r.hset(K.stats(), "ticks_done", 12)
    # A mocked request has no client address; the door is tested in tests/fast/test_api_doors.py.
    ctx = ctx_for(msgspec.structs.replace(s, metrics_auth="open"), r, fake_server)
    app = web.Application()
    app[CTX_KEY] = ctx
    m.setup(app, ctx)
    resp = await m.metrics(make_mocked_request("GET", "/metrics", app=app))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    got = {s.name: s.value for f in text_string_to_metric_families(resp.body.decode()) for s in f.samples}
    assert got["baton_ticks_done_total"] == 12
    assert got["baton_supervisor_up"] == 1  # the fake supervisor answers, with no programs
    assert len(app.cleanup_ctx) == 1


async def test_concurrent_scrapes_share_one_render_and_a_later_one_reads_again():
    renders = []

    async def render() -> bytes:
        renders.append(1)
        await asyncio.sleep(0.05)
        return f"n {len(renders)}".encode()

    shared = m.SharedRender(ttl_s=0.2)
    bodies = await asyncio.gather(*(shared.get(render) for _ in range(50)))
    assert set(bodies) == {b"n 1"} and len(renders) == 1
    await asyncio.sleep(0.25)
    assert await shared.get(render) == b"n 2"

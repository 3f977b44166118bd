"""Every Lua script checks what it will read or write before its first write: fed garbage in
any field it depends on, or a key of the wrong type, it answers a BADVALUE error naming the key
and field, and Redis holds exactly what it held before (Redis does not roll a script back).

Run on fakeredis and on a real redis-server: Redis's Lua 5.1 is the one that counts.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import msgspec
import pytest
import redis

from baton.errors import UnreadableValue
from bench.redis_server import RedisServer
from kernel.settlement import settled
from state.keys import Keys
from state.positions import sale
from state.scripts import scripts_for
from state.structs import INTENT, POSITION
from tests.factories import INTENT_ID, NOW, intent, position

K = Keys("baton:")
EPOCH = "7"
DAY = K.ledger_day("20231114")
READ = POSITION.encode(position()).decode()


@pytest.fixture(scope="module")
def real_server() -> Iterator[RedisServer | None]:
    if shutil.which("redis-server") is None:
        yield None
        return
    with RedisServer(aof=False) as server:
        yield server


@pytest.fixture(params=["fakeredis", "redis-server"])
def r(request: Any, real_server: RedisServer | None) -> Iterator[Any]:
    if request.param == "fakeredis":
        client: Any = fakeredis.FakeRedis(decode_responses=True)
    else:
        if real_server is None:
            pytest.skip("no redis-server installed: `make bootstrap` installs it")
        client = redis.Redis.from_url(real_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.flushall()
    client.close()


def dump(r: Any) -> dict[str, Any]:
    """Everything Redis holds, by key: its type and value (streams with their entry ids)."""
    out: dict[str, Any] = {}
    for key in sorted(r.keys("*")):
        t = r.type(key)
        if t == "string":
            v: Any = r.get(key)
        elif t == "hash":
            v = r.hgetall(key)
        elif t == "set":
            v = sorted(r.smembers(key))
        elif t == "zset":
            v = r.zrange(key, 0, -1, withscores=True)
        elif t == "list":
            v = r.lrange(key, 0, -1)
        elif t == "stream":
            v = r.xrange(key)
        else:
            raise AssertionError(f"{key}: type {t}")
        out[key] = (t, v)
    return out


def run(r: Any, name: str, keys: list[str], args: list[Any]) -> Any:
    return getattr(scripts_for(r), name)(keys=keys, args=args)


@dataclass
class Case:
    """One script: how to set Redis up for a call that succeeds, the call, and what it
    depends on: hash fields it reads as numbers, and keys with the type each must have."""

    script: str
    prepare: Callable[[Any], None]
    keys: list[str]
    args: list[Any]
    ok: Any
    fields: list[tuple[str, str]] = field(default_factory=list)
    types: dict[str, str] = field(default_factory=dict)


def _ledger(r: Any) -> None:
    r.set(K.lease_epoch(), EPOCH)
    run(r, "ledger_deposit", LEDGER_KEYS, [EPOCH, "deposit:paper-initial", 1_000_000_000, NOW])
    r.hset(DAY, "realized_pnl_micros", 0)


LEDGER_KEYS = [K.lease_epoch(), K.ledger(), K.ledger_totals(), K.ledger_refs(), DAY]
LEDGER_TYPES = {K.ledger(): "stream", K.ledger_totals(): "hash", K.ledger_refs(): "set", DAY: "hash"}


def _fill_prepare(r: Any) -> None:
    _ledger(r)
    raw = INTENT.encode(intent()).decode()
    r.hset(K.intents(), INTENT_ID, raw)
    r.hset(K.intents_open(), INTENT_ID, raw)


def _settle_prepare(r: Any) -> None:
    _fill_prepare(r)
    run(r, "record_fill", FILL_KEYS, FILL_ARGS)


FILL_KEYS = [
    K.lease_epoch(),
    K.intents(),
    K.intents_open(),
    K.positions(),
    K.positions_open(),
    K.ledger(),
    K.ledger_totals(),
    K.ledger_refs(),
    K.counts(),
]
FILLED = INTENT.encode(intent(status="filled")).decode()
FILL_ARGS = [EPOCH, INTENT_ID, FILLED, position().id, READ, 5_000_000, NOW, 0]
WON = settled(position(), up_won=True, now_ms=NOW + 900_000)
SETTLE_KEYS = [
    K.lease_epoch(),
    K.positions(),
    K.positions_open(),
    K.ledger(),
    K.ledger_totals(),
    K.ledger_refs(),
    DAY,
    K.counts(),
    K.intents_open(),
]
EXIT_IDS = [f"{WON.id}:exit-{n}" for n in range(1, 9)]
SETTLE_ARGS = [READ, WON.id, POSITION.encode(WON).decode(), WON.payout_micros, WON.pnl_micros, NOW, *EXIT_IDS]
EXIT_ID = f"{WON.id}:exit-1"
EXIT = msgspec.structs.replace(intent(EXIT_ID), leg="exit-1", size=4.0, limit_price=0.6)
EXIT_FILLED = msgspec.structs.replace(
    EXIT, status="filled", filled_size=4.0, avg_price=0.6, fee_micros=10_000
)
SOLD = sale(position(), EXIT_FILLED, NOW)
EXIT_KEYS = [*FILL_KEYS, DAY]
EXIT_ARGS = [
    *(
        EPOCH,
        EXIT_ID,
        INTENT.encode(EXIT_FILLED).decode(),
        SOLD.position.id,
        POSITION.encode(SOLD.position).decode(),
    ),
    *(SOLD.shares_before_micros, 0, SOLD.proceeds_micros, SOLD.fee_micros, SOLD.pnl_micros, NOW),
]


def _exit_prepare(r: Any) -> None:
    _settle_prepare(r)
    raw = INTENT.encode(EXIT).decode()
    r.hset(K.intents(), EXIT_ID, raw)
    r.hset(K.intents_open(), EXIT_ID, raw)


def _journal_prepare(r: Any) -> None:
    r.set(K.lease_epoch(), EPOCH)
    run(r, "tick_journal", JOURNAL_KEYS, [EPOCH, 99, 0, 99 * 5000, 1000, "tick", 99])


JOURNAL_KEYS = [K.lease_epoch(), K.journal_ticks(), K.stats()]

CASES = [
    Case(
        "ledger_deposit",
        _ledger,
        LEDGER_KEYS,
        [EPOCH, "deposit:more", 5_000_000, NOW],
        "OK",
        fields=[
            (K.ledger_totals(), "cash_micros"),
            (K.ledger_totals(), "entries"),
            (K.ledger_totals(), "deposit_micros"),
        ],
        types={K.lease_epoch(): "string", **LEDGER_TYPES},
    ),
    Case(
        "record_fill",
        _fill_prepare,
        FILL_KEYS,
        FILL_ARGS,
        ["OK"],
        fields=[
            (K.ledger_totals(), "cash_micros"),
            (K.ledger_totals(), "entries"),
            (K.ledger_totals(), "buy_micros"),
            (K.counts(), "intents:filled"),
            (K.counts(), "positions:open"),
        ],
        types={
            K.lease_epoch(): "string",
            K.intents(): "hash",
            K.intents_open(): "hash",
            K.positions(): "hash",
            K.positions_open(): "hash",
            K.ledger(): "stream",
            K.ledger_totals(): "hash",
            K.ledger_refs(): "set",
            K.counts(): "hash",
        },
    ),
    Case(
        "settle_position",
        _settle_prepare,
        SETTLE_KEYS,
        SETTLE_ARGS,
        "OK",
        fields=[
            (K.ledger_totals(), "cash_micros"),
            (K.ledger_totals(), "entries"),
            (K.ledger_totals(), "payout_micros"),
            (K.ledger_totals(), "realized_pnl_micros"),
            (DAY, "realized_pnl_micros"),
            (K.counts(), "positions:settled"),
            (K.counts(), "positions:won"),
        ],
        types={
            K.lease_epoch(): "string",
            K.positions(): "hash",
            K.positions_open(): "hash",
            **LEDGER_TYPES,
            K.counts(): "hash",
            K.intents_open(): "hash",
        },
    ),
    Case(
        "record_exit",
        _exit_prepare,
        EXIT_KEYS,
        EXIT_ARGS,
        ["OK"],
        fields=[
            (K.ledger_totals(), "cash_micros"),
            (K.ledger_totals(), "entries"),
            (K.ledger_totals(), "sell_micros"),
            (K.ledger_totals(), "fee_micros"),
            (K.ledger_totals(), "realized_pnl_micros"),
            (DAY, "realized_pnl_micros"),
            (K.counts(), "intents:filled"),
            (K.counts(), "positions:open"),
        ],
        types={
            K.lease_epoch(): "string",
            K.intents(): "hash",
            K.intents_open(): "hash",
            K.positions(): "hash",
            K.positions_open(): "hash",
            **LEDGER_TYPES,
            K.counts(): "hash",
        },
    ),
    Case(
        "tick_journal",
        _journal_prepare,
        JOURNAL_KEYS,
        [EPOCH, 100, 0, 100 * 5000, 1000, "tick", 100],
        "OK",
        fields=[(K.stats(), "ticks_done"), (K.stats(), "ticks_missed")],
        types={K.lease_epoch(): "string", K.journal_ticks(): "stream", K.stats(): "hash"},
    ),
]


ACQUIRE_KEYS = [K.lease(), K.lease_epoch(), K.lease_log()]


def _epoch(r: Any) -> None:
    r.set(K.lease_epoch(), EPOCH)


def _held(r: Any) -> None:
    """blue:1 holds the lease with epoch 7; green:2 is ready and asked for."""
    run(r, "lease_acquire", ACQUIRE_KEYS, ["blue:1", "blue", "r1", NOW, 60_000, "", 100])
    r.set(K.lease_epoch(), EPOCH)
    r.hset(K.lease(), "epoch", EPOCH)
    r.hset(K.handover(), mapping={"id": "h1", "state": "requested", "to_holder": "green:2"})
    r.hset(K.handover(), mapping={"to_color": "green", "to_release": "r2"})
    r.hset(K.worker("green"), mapping={"holder": "green:2", "state": "ready"})
    r.hset(K.stats(), "handovers", 3)


INTENT_KEYS = [K.lease_epoch(), K.control(), K.intents(), K.intents_open(), K.counts()]
HISTORY_KEYS = [
    K.lease_epoch(),
    K.positions(),
    K.positions_open(),
    K.intents(),
    K.intents_open(),
    K.ledger_refs(),
    K.ledger(),
    K.counts(),
]
TRANSFER_KEYS = [
    *(K.lease(), K.lease_epoch(), K.handover(), K.stats(), K.worker("green"), K.wake("green:2")),
    K.lease_log(),
]
LEASE_TYPES = {K.lease(): "hash", K.lease_epoch(): "string"}
CASES += [
    Case(
        "intent_commit",
        _epoch,
        INTENT_KEYS,
        [EPOCH, INTENT_ID, INTENT.encode(intent()).decode()],
        ["OK"],
        fields=[(K.counts(), "intents:committed")],
        types={K.lease_epoch(): "string", K.intents(): "hash", K.intents_open(): "hash", K.counts(): "hash"},
    ),
    Case(
        "intent_adopt",
        _epoch,
        [K.lease_epoch(), K.intents(), K.intents_open(), K.counts()],
        [EPOCH, INTENT_ID, INTENT.encode(intent()).decode(), "0"],
        ["OK"],
        fields=[(K.counts(), "intents:committed")],
        types={K.lease_epoch(): "string", K.intents(): "hash", K.intents_open(): "hash", K.counts(): "hash"},
    ),
    Case(
        "intent_update",
        _fill_prepare,
        [K.lease_epoch(), K.intents(), K.intents_open(), K.counts()],
        [EPOCH, INTENT_ID, FILLED, "1"],
        "OK",
        fields=[(K.counts(), "intents:committed"), (K.counts(), "intents:filled")],
        types={K.lease_epoch(): "string", K.intents(): "hash", K.intents_open(): "hash", K.counts(): "hash"},
    ),
    Case(
        "lease_acquire",
        lambda r: r.set(K.lease_epoch(), EPOCH),
        ACQUIRE_KEYS,
        ["blue:1", "blue", "r1", NOW, 60_000, "", 100],
        [1, 8],
        types={**LEASE_TYPES, K.lease_log(): "stream"},
    ),
    Case(
        "lease_renew",
        _held,
        [K.lease(), K.lease_epoch()],
        ["blue:1", EPOCH, NOW, 60_000],
        1,
        types=LEASE_TYPES,
    ),
    Case("lease_release", _held, [K.lease()], ["blue:1", EPOCH], 1, types={K.lease(): "hash"}),
    Case(
        "lease_transfer",
        _held,
        TRANSFER_KEYS,
        ["blue:1", EPOCH, "h1", "green:2", 41, NOW, 60_000, 100],
        [1, 8],
        fields=[(K.stats(), "handovers")],
        types={
            **LEASE_TYPES,
            K.handover(): "hash",
            K.stats(): "hash",
            K.worker("green"): "hash",
            K.wake("green:2"): "list",
            K.lease_log(): "stream",
        },
    ),
    Case(
        "handover_cancel",
        _held,
        [K.handover()],
        ["h1", "timed out", NOW],
        "cancelled",
        types={K.handover(): "hash"},
    ),
    Case(
        "deploy_unlock",
        lambda r: r.set(K.deploy_lock(), "mine"),
        [K.deploy_lock()],
        ["mine"],
        1,
        types={K.deploy_lock(): "string"},
    ),
    Case(
        "history_prune",
        _settle_prepare,
        HISTORY_KEYS,
        [EPOCH, 86_400_000, 0],
        [0, 0, 0],
        types={
            K.lease_epoch(): "string",
            K.positions(): "hash",
            K.positions_open(): "hash",
            K.intents(): "hash",
            K.intents_open(): "hash",
            K.ledger_refs(): "set",
            K.ledger(): "stream",
            K.counts(): "hash",
        },
    ),
]
CASES += [
    Case(
        "blocked_sync",
        _epoch,
        [K.lease_epoch(), K.blocked(), K.journal_errors(), K.stats()],
        [EPOCH, NOW, 1000, 1, 1, "baton:stats last_tick", "{}", "entries blocked (all): ..."],
        "OK",
        fields=[(K.stats(), "errors_blocked")],
        types={K.journal_errors(): "stream", K.stats(): "hash"},
    ),
    Case(
        "schema_adopt",
        lambda r: r.set(K.schema_version(), 1),
        [K.schema_version(), K.schema_readable_by()],
        [2, 1],
        2,
        types={K.schema_version(): "string", K.schema_readable_by(): "string"},
    ),
]
BY_NAME = {c.script: c for c in CASES}


@pytest.mark.parametrize(
    ("script", "keys", "args", "error"),
    [
        ("markets_cache", [K.market("a"), K.market("b")], ["{}", 60, "{}", "soon"], "^BADARG ttl_s"),
        ("markets_cache", [K.market("a"), K.market("b")], ["{}", 60, "{}", 0], "^BADARG ttl_s"),
        ("markets_cache", [K.market("a")], ["{}"], "^BADARG ARGV"),
        ("control_set", [K.control()], [K.control_events(), "halt", "now", "r", "w", ""], "now_ms"),
        ("ratelimit", [K.ratelimit("x"), K.ratelimit("y")], [NOW, 1, 1000, 10, 5, 10, "x"], "^BADARG"),
        ("ratelimit", [K.ratelimit("x")], [NOW, 1, 1000, 0, 5], "^BADARG bucket 1"),
        ("schema_adopt", [K.schema_version(), K.schema_readable_by()], ["two", 1], "^BADARG version"),
    ],
)
def test_a_bad_argument_is_refused_before_any_write(
    r: Any, script: str, keys: list[str], args: list[Any], error: str
) -> None:
    r.hset(K.ratelimit("x"), mapping={"tokens": "garbage", "updated_ms": NOW})  # a reset is a write
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=error):
        run(r, script, keys, args)
    assert dump(r) == before


def test_a_garbage_schema_version_is_refused_not_read_as_zero(r: Any) -> None:
    r.set(K.schema_version(), "garbage")
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=rf"^BADVALUE {K.schema_version()} \(value\)"):
        run(r, "schema_adopt", [K.schema_version(), K.schema_readable_by()], [2, 1])
    assert dump(r) == before


def test_a_control_key_of_another_type_reads_as_halted_and_commits_nothing(r: Any) -> None:
    _epoch(r)
    r.set(K.control(), "garbage")
    before = dump(r)
    args = [EPOCH, INTENT_ID, INTENT.encode(intent()).decode()]
    assert run(r, "intent_commit", INTENT_KEYS, args) == ["HALTED"]
    assert dump(r) == before


@pytest.mark.parametrize("garbage", ["garbage", "9" * 25, "1.5"])
def test_a_garbage_epoch_counter_refuses_the_lease_and_writes_nothing(r: Any, garbage: str) -> None:
    r.set(K.lease_epoch(), garbage)
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=rf"^BADVALUE {K.lease_epoch()} \(value\)"):
        run(r, "lease_acquire", ACQUIRE_KEYS, ["blue:1", "blue", "r1", NOW, 60_000, "", 100])
    assert dump(r) == before


# What garbage looks like: text, a number Redis cannot add to, a float, padding, hex.
GARBAGE = ["garbage", "9" * 25, "1.5", " 12", "0x10", ""]


def _field_cases() -> list[Any]:
    return [
        pytest.param(c, key, f, g, id=f"{c.script}-{key.split(':', 1)[1]}-{f}-{g[:8]!r}")
        for c in CASES
        for key, f in c.fields
        for g in GARBAGE
    ]


def _type_cases() -> list[Any]:
    return [
        pytest.param(c, key, t, id=f"{c.script}-{key.split(':', 1)[1]}")
        for c in CASES
        for key, t in c.types.items()
    ]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.script)
def test_each_script_succeeds_on_readable_values(r: Any, case: Case) -> None:
    case.prepare(r)
    assert run(r, case.script, case.keys, case.args) == case.ok


@pytest.mark.parametrize(("case", "key", "fld", "garbage"), _field_cases())
def test_a_garbage_field_is_refused_before_any_write(
    r: Any, case: Case, key: str, fld: str, garbage: str
) -> None:
    case.prepare(r)
    r.hset(key, fld, garbage)
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=rf"^BADVALUE {key} {fld}: holds "):
        run(r, case.script, case.keys, case.args)
    assert dump(r) == before


@pytest.mark.parametrize(("case", "key", "want"), _type_cases())
def test_a_key_of_the_wrong_type_is_refused_before_any_write(r: Any, case: Case, key: str, want: str) -> None:
    case.prepare(r)
    r.delete(key)
    if want == "string":
        r.rpush(key, "garbage")
    else:
        r.set(key, "garbage")
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=rf"^BADVALUE {key} \(type\): holds a "):
        run(r, case.script, case.keys, case.args)
    assert dump(r) == before


def test_a_garbage_epoch_counter_stops_a_settlement_before_any_write(r: Any) -> None:
    """The settle job records the epoch with the payout: one it cannot read is refused (the
    ledger stream must stay readable as integers), not booked half."""
    _settle_prepare(r)
    r.set(K.lease_epoch(), "garbage")
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=rf"^BADVALUE {K.lease_epoch()} \(value\)"):
        run(r, "settle_position", SETTLE_KEYS, SETTLE_ARGS)
    assert dump(r) == before


@pytest.mark.parametrize("bad", ["garbage", "1e3", "9" * 16])
def test_a_bad_amount_argument_is_refused_before_any_write(r: Any, bad: str) -> None:
    _settle_prepare(r)
    before = dump(r)
    with pytest.raises(redis.ResponseError, match=r"^BADARG pnl_micros"):
        run(r, "settle_position", SETTLE_KEYS, [*SETTLE_ARGS[:4], bad, NOW, *EXIT_IDS])
    with pytest.raises(redis.ResponseError, match=r"^BADARG cost_micros"):
        run(r, "record_fill", FILL_KEYS, [*FILL_ARGS[:5], bad, NOW, 0])
    with pytest.raises(redis.ResponseError, match=r"^BADARG fee_micros"):
        run(r, "record_fill", FILL_KEYS, [*FILL_ARGS[:5], 5_000_000, NOW, bad])
    r.hset(K.intents_open(), EXIT_ID, INTENT.encode(EXIT).decode())
    before = dump(r)
    for i in (7, 8, 9, 10):  # proceeds, fee, pnl, at_ms
        with pytest.raises(redis.ResponseError, match=r"^BADARG \w+ \(ARGV"):
            run(r, "record_exit", EXIT_KEYS, [*EXIT_ARGS[:i], bad, *EXIT_ARGS[i + 1 :]])
    assert dump(r) == before


def test_after_a_repair_the_refused_booking_is_made_once_and_the_ledger_adds_up(r: Any) -> None:
    _settle_prepare(r)
    r.hset(K.ledger_totals(), "realized_pnl_micros", "garbage")
    with pytest.raises(redis.ResponseError):
        run(r, "settle_position", SETTLE_KEYS, SETTLE_ARGS)
    # The repair: the running sum recomputed from the stream (docs/state.md).
    entries = r.xrange(K.ledger())
    r.hset(K.ledger_totals(), "realized_pnl_micros", sum(int(f["pnl_micros"]) for _, f in entries))
    assert run(r, "settle_position", SETTLE_KEYS, SETTLE_ARGS) == "OK"
    assert run(r, "settle_position", SETTLE_KEYS, SETTLE_ARGS) == "ALREADY"
    entries = r.xrange(K.ledger())
    totals = r.hgetall(K.ledger_totals())
    assert [f["kind"] for _, f in entries] == ["deposit", "buy", "payout"]
    assert int(totals["cash_micros"]) == sum(int(f["amount_micros"]) for _, f in entries)
    assert int(totals["cash_micros"]) == 1_000_000_000 - 5_000_000 + WON.payout_micros
    assert int(totals["realized_pnl_micros"]) == WON.pnl_micros


def test_large_fills_are_booked_as_exact_integers(r: Any) -> None:
    """Amounts past 1e14 micros are written as integers, not in Lua's %.14g (1e+14)."""
    _fill_prepare(r)
    big = 123_456_789_012_345
    assert run(r, "record_fill", FILL_KEYS, [*FILL_ARGS[:5], big, NOW, 0]) == ["OK"]
    (_, entry) = r.xrange(K.ledger())[-1]
    assert entry["amount_micros"] == str(-big)
    assert int(r.hget(K.ledger_totals(), "cash_micros")) == 1_000_000_000 - big


# --- feed_write: one garbage key must not stop every asset's candles ---------------------------


def _feed_batch(r: Any) -> Any:
    from state.candles import CandlesRepo
    from state.structs import Candle, FeedStatus

    def candles(asset: str) -> tuple[str, int, FeedStatus, list[Candle]]:
        cs = [Candle(NOW + i * 1000, 1.0, 1.0, 1.0, 1.0, 1.0, True) for i in range(3)]
        return (asset, NOW - 60_000, FeedStatus(NOW, cs[-1].open_ms, 1.0), cs)

    return CandlesRepo(r, K).write_batch(
        "1s", [candles("btc"), candles("eth")], [("candles", 6)], [], NOW + 60_000
    )


FEED_KEYS = {
    K.feed_status(): "hash",
    K.feed_stats(): "hash",
    K.journal_errors(): "stream",
    K.candle_marks(): "hash",
}


def test_feed_write_writes_every_window(r: Any) -> None:
    assert _feed_batch(r) == 2
    assert r.zcard(K.candles("btc", "1s")) == r.zcard(K.candles("eth", "1s")) == 3
    assert r.hget(K.feed_stats(), "candles") == "6"


@pytest.mark.parametrize(("key", "want"), FEED_KEYS.items())
def test_feed_write_refuses_a_feed_key_of_another_type_before_any_write(r: Any, key: str, want: str) -> None:
    r.set(key, "garbage")
    before = dump(r)
    with pytest.raises(UnreadableValue, match=rf"^{key} \(type\): holds a string"):
        _feed_batch(r)
    assert dump(r) == before


def test_feed_write_leaves_a_window_of_another_type_alone_and_writes_the_others(r: Any) -> None:
    r.set(K.candles("btc", "1s"), "garbage")
    assert _feed_batch(r) == 1
    assert r.get(K.candles("btc", "1s")) == "garbage"
    assert r.zcard(K.candles("eth", "1s")) == 3
    assert set(r.hgetall(K.feed_status())) == {"eth:1s"}
    (_, e), *_ = r.xrange(K.journal_errors())
    assert e["source"] == "feed_write" and e["error"].startswith(f"BADVALUE {K.candles('btc', '1s')} (type)")


def test_feed_write_does_not_add_to_a_garbage_counter_and_says_so(r: Any) -> None:
    r.hset(K.feed_stats(), "candles", "garbage")
    assert _feed_batch(r) == 2
    assert r.hget(K.feed_stats(), "candles") == "garbage"
    (_, e), *_ = r.xrange(K.journal_errors())
    assert e["error"].startswith(f"BADVALUE {K.feed_stats()} candles: holds")

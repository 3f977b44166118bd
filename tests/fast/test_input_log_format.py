"""The input log's record and its two encodings (kernel/input_log.py), and the times the
evaluation commands take (baton/cli/timespec.py)."""

from __future__ import annotations

import math

import pytest

from baton.cli.timespec import parse_time_ms, time_range_ms
from kernel.input_log import (
    decode_batch,
    encode_batch,
    evaluation,
    from_json_line,
    same_decision,
    to_json_line,
)
from kernel.strategy_api import Bar, BookSide, Buy, Exit, Holding, Pass, SlotInput


def _input(**kw: object) -> SlotInput:
    base: dict[str, object] = dict(
        slot_id="btc-5m",
        asset="btc",
        timeframe="5m",
        now_ms=1_765_152_290_123,
        window_start_ms=1_765_152_000_000,
        window_end_ms=1_765_152_300_000,
        open_price=0.1 + 0.2,  # not representable in short decimal: must survive exactly
        last_price=97_123.456789012345,
        closes=(97_100.1, 97_101.2, 1e-300),
        stake_usd=5.0,
        params={"edge": 0.03},
        up_ask=0.53,
        api=2,
        strategy="momentum",
        bars={"15s": (Bar(1_765_152_285_000, 1.0, 2.0, 0.5, 1.5, 3.25),)},
        up_book=BookSide(((0.51, 10.0),), ((0.53, 3.0), (0.54, 7.5))),
        position=Holding(side="up", shares=9.43, cost_usd=5.0, avg_price=5.0 / 9.43, opened_ms=1),
    )
    base.update(kw)
    return SlotInput(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "answer",
    [
        Buy(side="up", limit_price=0.53, stake_usd=5.0, reason="edge 0.04"),
        Exit(limit_price=0.6, reason="take profit", shares=3.0),
        Pass(reason="no edge"),
        None,
        ValueError("bad"),
        {"not": "an answer"},
    ],
)
def test_both_encodings_keep_input_and_answer_exactly(answer: object) -> None:
    e = evaluation(7, "btc-5m", 1_765_152_000, 1_765_152_290_123, "momentum", "rel-1", _input(), answer)
    (back,) = decode_batch(encode_batch([e]))
    assert back == e
    assert from_json_line(to_json_line(e)) == e
    assert back.input.open_price == 0.1 + 0.2
    if isinstance(answer, (Buy, Exit, Pass)):
        assert back.answer == answer
    else:
        assert back.answer is None
        assert back.kind == ("none" if answer is None else "error")


def test_same_decision_compares_answers_not_inputs() -> None:
    buy = Buy(side="up", limit_price=0.53, stake_usd=5.0, reason="edge")
    a = evaluation(1, "s", 0, 1, "x", "r1", _input(), buy)
    b = evaluation(1, "s", 0, 1, "x", "r2", _input(last_price=1.0), buy)
    c = evaluation(
        1, "s", 0, 1, "x", "r1", _input(), Buy(side="up", limit_price=0.54, stake_usd=5.0, reason="edge")
    )
    nan = evaluation(
        1, "s", 0, 1, "x", "r1", _input(), Buy(side="up", limit_price=math.nan, stake_usd=5.0, reason="")
    )
    assert same_decision(a, b)
    assert not same_decision(a, c)
    assert same_decision(nan, nan)


def test_a_batch_of_another_version_or_garbage_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="version 9"):
        decode_batch(b"\x09abc")
    with pytest.raises(ValueError, match="unreadable"):
        decode_batch(b"\x01not zlib")
    with pytest.raises(ValueError, match="unreadable"):
        from_json_line(b'{"slot": 1}')
    assert decode_batch(b"") == []


def test_times_are_unix_seconds_or_iso() -> None:
    assert parse_time_ms("1765152000") == 1_765_152_000_000
    assert parse_time_ms("1765152000.5") == 1_765_152_000_500
    assert parse_time_ms("2025-12-08T00:00:00Z") == 1_765_152_000_000
    assert parse_time_ms("2025-12-08T01:00:00+01:00") == 1_765_152_000_000
    assert parse_time_ms("2025-12-08 00:00:00") == 1_765_152_000_000  # no zone: UTC
    assert time_range_ms("1765152000", "2025-12-08T00:05:00Z") == (1_765_152_000_000, 1_765_152_300_000)
    for bad in ("", "yesterday", "nan", "-5", "inf"):
        with pytest.raises(ValueError, match="time"):
            parse_time_ms(bad)
    with pytest.raises(ValueError, match="after"):
        time_range_ms("1765152300", "1765152000")

"""A slot's decision record (state/structs.py DecisionRecord) is written to `baton:decisions`
byte for byte as the tick wrote it from dict literals before the records were structs: the
API, the dashboard, `baton slots` and docs/state.md read that JSON, key order included."""

from __future__ import annotations

import msgspec
import pytest

from state.structs import EntryRecord, PassRecord, StrategyErrorRecord

ENCODER = msgspec.json.Encoder()  # as state/slots.py's, the one record_decisions encodes with

# Each shape: the struct, the dict literal the tick wrote before it, and the bytes of both.
SHAPES = [
    (
        StrategyErrorRecord(
            tick=7,
            at_ms=1_795_000_000_123,
            window_start_s=1_794_999_990,
            outcome="error",
            reason="ValueError('x')",
        ),
        {
            "tick": 7,
            "at_ms": 1_795_000_000_123,
            "window_start_s": 1_794_999_990,
            "outcome": "error",
            "reason": "ValueError('x')",
        },
        b'{"tick":7,"at_ms":1795000000123,"window_start_s":1794999990,"outcome":"error",'
        b'"reason":"ValueError(\'x\')"}',
    ),
    (
        PassRecord(
            tick=7,
            at_ms=1_795_000_000_123,
            window_start_s=1_794_999_990,
            outcome="pass",
            up_ask=0.53,
            down_ask=None,
        ),
        {
            "tick": 7,
            "at_ms": 1_795_000_000_123,
            "window_start_s": 1_794_999_990,
            "outcome": "pass",
            "up_ask": 0.53,
            "down_ask": None,
        },
        b'{"tick":7,"at_ms":1795000000123,"window_start_s":1794999990,"outcome":"pass",'
        b'"up_ask":0.53,"down_ask":null}',
    ),
    (
        EntryRecord(
            tick=7,
            at_ms=1_795_000_000_123,
            window_start_s=1_794_999_990,
            side="up",
            price=0.7599999999999999,
            stake_usd=5.0,
            p_up=0.9123,
            reason="edge 0.04",
            outcome="risk refused: exposure",
        ),
        {
            "tick": 7,
            "at_ms": 1_795_000_000_123,
            "window_start_s": 1_794_999_990,
            "side": "up",
            "price": 0.7599999999999999,
            "stake_usd": 5.0,
            "p_up": 0.9123,
            "reason": "edge 0.04",
            "outcome": "risk refused: exposure",
        },
        b'{"tick":7,"at_ms":1795000000123,"window_start_s":1794999990,"side":"up",'
        b'"price":0.7599999999999999,"stake_usd":5.0,"p_up":0.9123,"reason":"edge 0.04",'
        b'"outcome":"risk refused: exposure"}',
    ),
]


@pytest.mark.parametrize(("record", "literal", "encoded"), SHAPES, ids=["error", "pass", "entry"])
def test_each_decision_record_encodes_to_the_json_its_dict_literal_did(record, literal, encoded):
    assert ENCODER.encode(literal) == encoded
    assert ENCODER.encode(record) == encoded


@pytest.mark.parametrize(("record", "literal", "encoded"), SHAPES, ids=["error", "pass", "entry"])
async def test_the_store_writes_each_decision_record_as_pinned(store, record, literal, encoded):
    await store.record_decisions({"btc-15m": record})
    assert await store.r.hget(store.k.decisions(), "btc-15m") == encoded.decode()  # a text client

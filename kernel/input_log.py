"""The input log: every evaluation's input (exactly the SlotInput the strategy was given) with
its answer and what the kernel made of it, so that `baton replay` can evaluate the same inputs
with other code, a shadow can diff a new release's decisions against the live ones, and a
backtest can use the books that were really there.

One tick's evaluations are one batch: msgpack of a list of Evaluation, zlib-compressed (slots
of one tick share their closes and bars, which compress well). Redis keeps the recent batches
(keys.input_log(), state/inputs.py); older days roll into JSON-lines files under var/inputs/
(one Evaluation per line: docs/evaluate.md). Floats survive both encodings exactly, so a
replay with the code that made a decision makes it again bit for bit: JSON has no NaN or
infinity, so in the files a non-finite float is written as the string "nan", "-nan", "inf"
or "-inf" (the sign of a NaN kept) and read back as that float.

Pure: encoding, decoding and comparing; no I/O.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from kernel.raised import safe_repr
from kernel.strategy_api import Buy, Exit, Pass, SlotInput

# What a strategy answered: an entry, an exit, a pass with a reason, None (a pass without
# one), or "error" (it raised, or answered something that is none of these).
AnswerKind = Literal["buy", "sell", "pass", "none", "error"]
# zlib level: 1 compresses a tick's batch to about a fifth at a fraction of level 6's cost.
ZLIB_LEVEL = 1
# The batch format's version (the first byte of a batch): a reader refuses one it does not know.
BATCH_VERSION = 1


class Evaluation(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One evaluation of one slot: the input the strategy saw and its answer (one of buy, sell,
    passed, or error), with the kernel's outcome ("intent", "refused: <why>", "error", "")."""

    slot: str
    tick: int
    at_ms: int
    window_start_s: int
    strategy: str
    release: str
    input: SlotInput
    kind: AnswerKind
    buy: Buy | None = None
    sell: Exit | None = None
    passed: Pass | None = None
    # The exception's repr, or the repr of an answer that is not Buy/Exit/Pass/None.
    error: str = ""
    outcome: str = ""
    intent_id: str = ""
    # The code that evaluated: kernel/strategy_store.py code_id of the strategy file (its
    # version under var/strategies/), "" in records made before it was recorded. The release
    # alone does not say: a hot reload rewrites a release's strategies in place.
    code: str = ""

    @property
    def answer(self) -> Buy | Exit | Pass | None:
        """The answer as the strategy gave it (None for a pass without reason or an error)."""
        return self.buy or self.sell or self.passed


def evaluation(
    tick: int,
    slot: str,
    window_start_s: int,
    at_ms: int,
    strategy: str,
    release: str,
    inp: SlotInput,
    answer: Any,
    outcome: str = "",
    intent_id: str = "",
    code: str = "",
) -> Evaluation:
    """The log's record of one evaluation (`answer` as evaluate returned it, or its exception)."""
    kind, buy, sell, passed, error = classify(answer)
    return Evaluation(
        slot=slot,
        tick=tick,
        at_ms=at_ms,
        window_start_s=window_start_s,
        strategy=strategy,
        release=release,
        input=inp,
        kind=kind,
        buy=buy,
        sell=sell,
        passed=passed,
        error=error,
        outcome=outcome,
        intent_id=intent_id,
        code=code,
    )


def classify(answer: Any) -> tuple[AnswerKind, Buy | None, Exit | None, Pass | None, str]:
    """(kind, buy, sell, passed, error) of an answer or an exception."""
    if answer is None:
        return "none", None, None, None, ""
    cls = type(answer)
    if cls is Buy:
        return "buy", answer, None, None, ""
    if cls is Exit:
        return "sell", None, answer, None, ""
    if cls is Pass:
        return "pass", None, None, answer, ""
    if isinstance(answer, BaseException):
        return "error", None, None, None, safe_repr(answer)
    return "error", None, None, None, f"answer is not Buy, Exit, Pass or None: {safe_repr(answer)}"[:500]


_ENC = msgspec.msgpack.Encoder()
# One decoder per answer type: what `recordable` checks an answer against.
_ANSWER_DEC = {t: msgspec.msgpack.Decoder(t) for t in (Buy, Exit, Pass)}
_DEC = msgspec.msgpack.Decoder(list[Evaluation])
_ONE = msgspec.msgpack.Decoder(Evaluation)
_JSON_ENC = msgspec.json.Encoder()
_JSON_DEC = msgspec.json.Decoder(Evaluation)
# Lax: also takes a float written as a string ("nan", "-inf": to_json_line's non-finite
# floats); used only for a line the strict decoder refused, so ordinary lines stay fast.
_JSON_LAX = msgspec.json.Decoder(Evaluation, strict=False)


def recordable(e: Evaluation) -> Evaluation:
    """`e`, or when its answer would not read back (a Buy whose price is a str: msgspec
    encodes what it is given, and one such answer would make its whole batch unreadable) the
    same evaluation as an error naming the answer. Raises nothing."""
    answer = e.buy or e.sell or e.passed
    if answer is None:
        return e
    try:
        _ANSWER_DEC[type(answer)].decode(_ENC.encode(answer))
        return e
    except Exception as err:  # msgspec's ValidationError, or an EncodeError/TypeError
        why = f"answer cannot be recorded ({err}): {safe_repr(answer)}"[:500]
        return msgspec.structs.replace(e, kind="error", buy=None, sell=None, passed=None, error=why)


def answer_bytes(e: Evaluation) -> bytes:
    """The answer alone, encoded: two answers are the same decision when these are equal (a
    NaN price compares equal to itself here, unlike with ==)."""
    return _ENC.encode((e.kind, e.buy, e.sell, e.passed, e.error))


def same_decision(a: Evaluation, b: Evaluation) -> bool:
    return answer_bytes(a) == answer_bytes(b)


def encode_batch(evaluations: Iterable[Evaluation]) -> bytes:
    """One tick's evaluations as stored in Redis: a version byte, then zlib(msgpack(list))."""
    return bytes([BATCH_VERSION]) + zlib.compress(_ENC.encode(list(evaluations)), ZLIB_LEVEL)


def decode_batch(blob: bytes) -> list[Evaluation]:
    """A stored batch's evaluations; raises ValueError naming what is wrong."""
    if not blob:
        return []
    if blob[0] != BATCH_VERSION:
        raise ValueError(f"input log batch of version {blob[0]}: this code reads version {BATCH_VERSION}")
    try:
        return _DEC.decode(zlib.decompress(blob[1:]))
    except (zlib.error, msgspec.DecodeError) as e:
        raise ValueError(f"input log batch unreadable: {e}") from None


def to_json_line(e: Evaluation) -> bytes:
    """One evaluation as a line of the var/inputs/ files (no newline). A non-finite float (a
    NaN last_price, an answer's p_up of 0/0) is written as a string, "nan", "-nan", "inf" or
    "-inf": msgspec's JSON would write null, which reads back as no float at all."""
    line = _JSON_ENC.encode(e)
    # Each non-finite float became a null: none beyond the input's empty optional fields (and
    # a "null" in a reason, rare: the slow way, which is as right) is the usual case.
    if line.count(b"null") == sum(getattr(e.input, f) is None for f in _NULLABLE):
        return line
    return _JSON_ENC.encode(_finite(msgspec.to_builtins(e)))


# SlotInput's fields that may be None (written as null when they are).
_NULLABLE = tuple(f.name for f in msgspec.structs.fields(SlotInput) if f.default is None)


def _finite(v: Any) -> Any:
    """`v` (builtins: dicts, lists, scalars) with its non-finite floats as strings."""
    if type(v) is float:
        if math.isfinite(v):
            return v
        if math.isnan(v):
            return "-nan" if math.copysign(1.0, v) < 0 else "nan"
        return "inf" if v > 0 else "-inf"
    if type(v) is dict:
        return {k: _finite(x) for k, x in v.items()}
    if type(v) is list or type(v) is tuple:
        return [_finite(x) for x in v]
    return v


def from_json_line(line: bytes | str) -> Evaluation:
    """An evaluation from a line of the var/inputs/ files; raises ValueError naming what is
    wrong."""
    try:
        return _JSON_DEC.decode(line)
    except msgspec.ValidationError:
        pass  # perhaps a non-finite float written as a string (to_json_line)
    except msgspec.DecodeError as e:
        raise ValueError(f"input log line unreadable: {e}") from None
    try:
        return _JSON_LAX.decode(line)
    except msgspec.DecodeError as e:
        raise ValueError(f"input log line unreadable: {e}") from None


def decode_one(raw: bytes) -> Evaluation:
    return _ONE.decode(raw)

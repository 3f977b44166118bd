"""Replay (control/replay.py): recorded evaluations evaluated again with the code that made them
agree 100 %; with a changed strategy, exactly the decisions the change affects differ; the
differing windows are valued (control/replay_value.py); bad code choices are refused by name."""

from __future__ import annotations

import functools
import math
import random
import runpy
import shutil
import sys
from pathlib import Path
from typing import Any

import fakeredis
import msgspec
import pytest

from baton.errors import BadRequest
from baton.settings import REPO_ROOT
from control.replay import Code, replay
from control.replay_value import RedisOutcomes
from kernel.input_log import Evaluation, evaluation
from kernel.strategy_api import Bar, BookSide, Buy, Holding, SlotInput
from state.keys import Keys
from state.structs import CANDLE, MARKET, Candle, Market
from worker.strategies import momentum, snipe

START_MS = 1_765_152_000_000  # a 5 m window's start
END_MS = START_MS + 300_000
RELEASE = "20261207T230000-0123456789"
CHECKOUT = REPO_ROOT / "worker" / "strategies"


class Known:
    """Window results and fee rates a test states."""

    def __init__(self, up_won: bool | None = True, rate: float = 0.0) -> None:
        self.won, self.rate = up_won, rate

    def up_won(self, asset: str, start_ms: int, end_ms: int) -> bool | None:
        return self.won

    def fee_rate(self, asset: str, timeframe: str, window_start_s: int) -> float:
        return self.rate


def _book(ask: float) -> BookSide:
    return BookSide(bids=((round(ask - 0.02, 2), 200.0),), asks=((ask, 100.0), (round(ask + 0.01, 2), 400.0)))


def snipe_inputs(n: int = 240, seed: int = 7) -> list[SlotInput]:
    """Late-window inputs (and some early ones) over a grid of moves and asks: snipe buys on
    some, passes on the rest, and the margins spread over [0, 0.3]."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        left_ms = rng.choice((10_000, 10_000, 10_000, 120_000))  # 1 in 4 outside the entry zone
        closes = [100.0]
        for _ in range(59):
            closes.append(closes[-1] * math.exp(rng.gauss(0.0, 1e-4)))
        up_ask = round(rng.uniform(0.2, 0.8), 2)
        start = START_MS + 300_000 * (i * 4 // n)  # four windows
        out.append(
            SlotInput(
                slot_id="btc-5m",
                asset="btc",
                timeframe="5m",
                now_ms=start + 300_000 - left_ms + i,
                window_start_ms=start,
                window_end_ms=start + 300_000,
                open_price=closes[-1] * math.exp(rng.gauss(0.0, 3e-4)),
                last_price=closes[-1],
                closes=tuple(closes),
                stake_usd=5.0,
                params={},
                up_ask=up_ask,
                down_ask=round(1.02 - up_ask, 2),
            )
        )
    return out


def momentum_inputs(n: int = 160, seed: int = 11) -> list[SlotInput]:
    """Mid-window version 2 inputs with 20 bars of 15 s moving -30..+30 bps, books on both sides;
    a few hold a position (exits)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        now = START_MS + 100_000 + i
        drift = rng.uniform(-30, 30) / 1e4 / 8
        price, bars = 100.0, []
        for b in range(20):
            o = price
            price = o * (1 + drift + rng.gauss(0.0, 2e-4))
            bars.append(Bar(now - (20 - b) * 15_000, o, max(o, price), min(o, price), price, 1.0))
        up_ask = round(rng.uniform(0.3, 0.7), 2)
        pos = None
        if i % 10 == 0:
            pos = Holding(side="up", shares=10.0, cost_usd=5.0, avg_price=0.5, opened_ms=now - 30_000)
        out.append(
            SlotInput(
                slot_id="btc-5m.momentum",
                asset="btc",
                timeframe="5m",
                now_ms=now,
                window_start_ms=START_MS,
                window_end_ms=END_MS,
                open_price=100.0,
                last_price=price,
                closes=(100.0, price),
                stake_usd=5.0,
                params={},
                up_ask=up_ask,
                down_ask=round(1.02 - up_ask, 2),
                api=2,
                strategy="momentum",
                bars={"15s": tuple(bars)},
                up_book=_book(up_ask),
                down_book=_book(round(1.02 - up_ask, 2)),
                position=pos,
                entered=pos is not None,
                cash_usd=1000.0,
                exposure_room_usd=100.0,
            )
        )
    return out


def _answer(module: Any, inp: SlotInput) -> Any:
    try:
        return module.evaluate(inp)
    except Exception as e:
        return e


def record(module: Any, name: str, inp: SlotInput, release: str = RELEASE) -> Evaluation:
    """What the tick logs of one evaluation by `module` (the live code)."""
    tick, window_s = inp.now_ms // 5000, inp.window_start_ms // 1000
    return evaluation(tick, inp.slot_id, window_s, inp.now_ms, name, release, inp, _answer(module, inp))


def live_records(release: str = RELEASE) -> list[Evaluation]:
    return list(_live_records(release))


@functools.cache
def _live_records(release: str) -> tuple[Evaluation, ...]:
    recs = [record(snipe, "snipe", i, release) for i in snipe_inputs()]
    recs += [record(momentum, "momentum", i, release) for i in momentum_inputs()]
    # One evaluation per slot and tick, as a worker makes them (the reader dedupes on both).
    recs.sort(key=lambda e: e.at_ms)
    return tuple(msgspec.structs.replace(e, tick=353_030_000 + n) for n, e in enumerate(recs))


def release_home(tmp_path: Path, release: str = RELEASE) -> Path:
    """A BATON_HOME whose var/releases/<release> holds the checkout's strategies."""
    d = tmp_path / "var" / "releases" / release / "worker" / "strategies"
    d.mkdir(parents=True)
    for name in ("snipe", "momentum"):
        shutil.copy(CHECKOUT / f"{name}.py", d / f"{name}.py")
    return tmp_path


def variant(tmp_path: Path, name: str, old: str, new: str) -> Path:
    """A copy of a strategy with one line changed, as a trader would edit it."""
    src = (CHECKOUT / f"{name}.py").read_text()
    assert src.count(old) == 1, old
    path = tmp_path / "variants" / f"{name}.py"
    path.parent.mkdir(exist_ok=True)
    path.write_text(src.replace(old, new))
    return path


def differing(report: Any) -> set[tuple[str, int]]:
    return {(sid, d.at_ms) for sid, s in report.slots.items() for d in s.differences}


# --- parity --------------------------------------------------------------------------------------


def test_the_code_that_made_the_decisions_makes_them_all_again(tmp_path: Path) -> None:
    recs = live_records()
    live = dict(sys.modules)
    assert {e.kind for e in recs} >= {"buy", "none", "pass", "sell"}
    rep = replay(recs, Code(release_home(tmp_path)), Known(), START_MS, END_MS)
    assert rep.decisions == len(recs) and rep.equal == rep.decisions and rep.differ == 0
    assert set(rep.slots) == {"btc-5m", "btc-5m.momentum"} and rep.notes == []
    assert rep.pnl_delta_usd == 0.0
    # Throwaway modules: the live ones are the very same objects, and nothing was left behind.
    assert sys.modules["worker.strategies.snipe"] is live["worker.strategies.snipe"]
    assert set(sys.modules) - set(live) == set()


def test_a_release_that_is_gone_is_replayed_with_the_checkout_and_says_so(tmp_path: Path) -> None:
    recs = live_records(release="gone-release")
    rep = replay(recs, Code(tmp_path), Known(), START_MS, END_MS)
    assert rep.differ == 0 and rep.equal == len(recs)
    [note] = rep.notes
    assert "'gone-release' is not under" in note and str(CHECKOUT) in note


def test_a_strategy_that_raises_raises_again_and_that_is_equal(tmp_path: Path) -> None:
    home = release_home(tmp_path)
    bad = home / "var" / "releases" / RELEASE / "worker" / "strategies" / "boom.py"
    bad.write_text("def evaluate(inp):\n    raise ValueError(f'no {inp.slot_id}')\n")
    boom = runpy.run_path(str(bad))
    recs = [record(type("M", (), boom), "boom", i) for i in snipe_inputs(5)]
    assert {e.kind for e in recs} == {"error"}
    rep = replay(recs, Code(home), Known(), START_MS, END_MS)
    assert rep.equal == 5 and rep.differ == 0


# --- a changed strategy --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [
        ("snipe", '"edge": 0.03,', '"edge": 0.08,'),
        ("momentum", '"min_move_bps": 10.0,', '"min_move_bps": 18.0,'),
        ("momentum", '"take_profit": 0.08,', '"take_profit": 0.02,'),
    ],
)
def test_a_changed_strategy_differs_on_exactly_the_decisions_the_change_affects(
    tmp_path: Path, name: str, old: str, new: str
) -> None:
    recs = live_records()
    path = variant(tmp_path, name, old, new)
    # Expected, independently: the original and the variant each evaluated on every recorded
    # input of the strategy, their answers compared as values.
    changed = runpy.run_path(str(path))
    original = {"snipe": snipe, "momentum": momentum}[name]
    mine = [e for e in recs if e.strategy == name]
    expected = {
        (e.slot, e.at_ms)
        for e in mine
        if repr(_answer(original, e.input)) != repr(changed["evaluate"](e.input))
    }
    assert 0 < len(expected) < len(mine), len(expected)  # some, not all

    rep = replay(recs, Code(tmp_path, strategy_file=path), Known(), START_MS, END_MS)
    assert differing(rep) == expected
    assert rep.differ == len(expected) and rep.decisions == len(mine)
    assert rep.equal == len(mine) - len(expected) and rep.skipped == len(recs) - len(mine)
    assert str(path) in rep.code and name in rep.code


def test_the_differences_show_both_answers(tmp_path: Path) -> None:
    path = variant(tmp_path, "snipe", '"edge": 0.03,', '"edge": 0.08,')
    rep = replay(live_records(), Code(tmp_path, strategy_file=path), Known(), START_MS, END_MS)
    d = rep.slots["btc-5m"].differences[0]
    assert d.live.kind == "buy" and d.live.side in ("up", "down") and d.live.stake_usd == 5.0
    assert 0 < (d.live.price or 0) < 1 and "beats ask" in d.live.reason
    assert d.replayed.kind == "none" and d.release == RELEASE and d.window == "up"


def test_a_release_replays_every_record_with_its_strategies(tmp_path: Path) -> None:
    home = release_home(tmp_path)
    other = release_home(tmp_path, "20261208T000000-abcdefabcd")
    edited = other / "var" / "releases" / "20261208T000000-abcdefabcd" / "worker" / "strategies" / "snipe.py"
    edited.write_text(edited.read_text().replace('"edge": 0.03,', '"edge": 0.08,'))
    recs = live_records()
    rep = replay(recs, Code(home, release="20261208T000000-abcdefabcd"), Known(), START_MS, END_MS)
    path = variant(tmp_path, "snipe", '"edge": 0.03,', '"edge": 0.08,')
    by_file = replay(recs, Code(home, strategy_file=path), Known(), START_MS, END_MS)
    assert rep.decisions == len(recs) and rep.skipped == 0
    assert differing(rep) == differing(by_file) and rep.slots["btc-5m.momentum"].differ == 0


# --- what the differences would have earned -------------------------------------------------------


def _buy(price: float, side: str = "up") -> Buy:
    return Buy(side=side, limit_price=price, stake_usd=5.0, reason="r")  # type: ignore[arg-type]


def test_a_window_is_valued_with_one_entry_filled_at_its_limit_less_the_fee(tmp_path: Path) -> None:
    strat = tmp_path / "variants" / "never.py"
    strat.parent.mkdir()
    strat.write_text("def evaluate(inp):\n    return None\n")
    ins = snipe_inputs(3)
    # Live bought up at 0.5, then (a second entry the kernel refuses) again: only one counts.
    recs = [evaluation(1, "btc-5m", START_MS // 1000, i.now_ms, "never", RELEASE, i, _buy(0.5)) for i in ins]
    rep = replay(recs, Code(tmp_path, strategy_file=strat), Known(True, rate=0.072), START_MS, END_MS)
    s = rep.slots["btc-5m"]
    fee = math.floor(10 * 0.072 * 0.25 * 100_000 + 1e-9) / 100_000
    assert s.differ == 3 and s.windows_differing == 1
    assert s.pnl_live_usd == pytest.approx(10 - 5 - fee) and s.pnl_replayed_usd == 0.0
    assert s.pnl_delta_usd == pytest.approx(-(10 - 5 - fee)) == rep.pnl_delta_usd
    lost = replay(recs, Code(tmp_path, strategy_file=strat), Known(False), START_MS, END_MS)
    assert lost.slots["btc-5m"].pnl_delta_usd == pytest.approx(5.0)
    unknown = replay(recs, Code(tmp_path, strategy_file=strat), Known(None), START_MS, END_MS)
    u = unknown.slots["btc-5m"]
    assert u.windows_unknown == 1 and u.pnl_delta_usd == 0.0 and u.differences[0].window == "unknown"


def test_an_exit_is_valued_against_holding_to_resolution(tmp_path: Path) -> None:
    path = variant(tmp_path, "momentum", '"take_profit": 0.08,', '"take_profit": 0.02,')
    # 10 shares of up at 0.50, the bid at 0.55: live holds (its target is 0.58), the variant
    # takes profit at 0.52.
    inp = msgspec.structs.replace(momentum_inputs(1)[0], up_book=_book(0.57))
    assert inp.position is not None and inp.position.shares == 10.0
    recs = [record(momentum, "momentum", inp)]
    won = replay(recs, Code(tmp_path, strategy_file=path), Known(True), START_MS, END_MS)
    [d] = won.slots["btc-5m.momentum"].differences
    assert (d.live.kind, d.replayed.kind, d.replayed.price, d.replayed.shares) == ("pass", "sell", 0.52, 10.0)
    assert won.pnl_delta_usd == pytest.approx(10 * 0.52 - 10)  # sold winning shares for 0.52
    lost = replay(recs, Code(tmp_path, strategy_file=path), Known(False), START_MS, END_MS)
    assert lost.pnl_delta_usd == pytest.approx(10 * 0.52)  # sold losing shares for 0.52


def test_window_results_and_fees_come_from_redis() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    k = Keys("baton:")
    key = k.candles("btc", "1s")
    for open_ms, o, c in ((START_MS, 100.0, 100.5), (END_MS - 1000, 100.2, 100.1)):
        r.zadd(key, {CANDLE.encode(Candle(open_ms, o, max(o, c), min(o, c), c, 1.0, True)).decode(): open_ms})
    r.zadd(key, {"garbage": END_MS - 1000})
    m = Market(slug="btc-updown-5m-1765152000", condition_id="c", up_token="u", down_token="d", fee_rate=0.05)
    r.set(k.market(m.slug), MARKET.encode(m))
    out = RedisOutcomes(r, k)
    assert out.up_won("btc", START_MS, END_MS) is True  # 100.1 >= 100.0
    assert out.up_won("btc", START_MS + 300_000, END_MS + 300_000) is None
    assert out.fee_rate("btc", "5m", START_MS // 1000) == 0.05
    assert out.fee_rate("btc", "15m", 0) == 0.072 and out.fee_rate("btc", "5m", 0) == 0.0


# --- bad choices ---------------------------------------------------------------------------------


def test_bad_code_choices_are_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match="no such file"):
        Code(tmp_path, strategy_file=tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module_here\n")
    with pytest.raises(BadRequest, match=r"broken.py cannot be used: .*no_such_module_here"):
        Code(tmp_path, strategy_file=broken)
    exits = tmp_path / "exits.py"
    exits.write_text("raise SystemExit(3)\n")
    with pytest.raises(BadRequest, match=r"exit\(3\)"):
        Code(tmp_path, strategy_file=exits)
    with pytest.raises(BadRequest, match="no release 'nope'"):
        Code(release_home(tmp_path), release="nope")
    with pytest.raises(BadRequest, match="not both"):
        Code(tmp_path, release=RELEASE, strategy_file=broken)
    with pytest.raises(BadRequest, match="--strategy-file"):
        Code(tmp_path, strategy="snipe")


def test_a_strategy_file_may_import_its_siblings_relatively(tmp_path: Path) -> None:
    wrapper = tmp_path / "snipe.py"
    wrapper.write_text("from . import snipe as base\n\n\ndef evaluate(inp):\n    return base.evaluate(inp)\n")
    rep = replay(live_records(), Code(tmp_path, strategy_file=wrapper), Known(), START_MS, END_MS)
    assert rep.decisions == 240 and rep.differ == 0 and rep.notes == []


def test_a_file_named_after_no_strategy_says_which_to_name(tmp_path: Path) -> None:
    edge = tmp_path / "snipe_edge.py"
    shutil.copy(variant(tmp_path, "snipe", '"edge": 0.03,', '"edge": 0.08,'), edge)
    rep = replay(live_records(), Code(tmp_path, strategy_file=edge), Known(), START_MS, END_MS)
    assert rep.decisions == 0 and rep.skipped == 400
    assert rep.notes == [
        "no record of strategy 'snipe_edge' in the range; the records are of momentum, snipe: "
        "say which with --strategy NAME"
    ]
    code = Code(tmp_path, strategy_file=edge, strategy="snipe")
    named = replay(live_records(), code, Known(), START_MS, END_MS)
    assert named.decisions == 240 and named.differ == 21 and named.notes == []


def test_a_buy_the_risk_checks_refused_live_earned_nothing_and_its_twin_neither() -> None:
    """A live Buy the kernel refused never traded: valued at 0; a replayed Buy staking as much
    at the same tick would have been refused the same way, a smaller one is valued."""
    from control.replay import refused_alike
    from control.replay_value import window_value_usd
    from kernel.input_log import evaluation
    from kernel.strategy_api import Buy
    from tests.fast.test_input_log_store import _input

    why = "refused: risk: open exposure 105.00 USD would exceed 100.00 USD"
    buy = Buy(side="up", limit_price=0.5, stake_usd=5.0, reason="edge")
    live = evaluation(1, "btc-5m", 0, 0, "snipe", "r1", _input(), buy, outcome=why)
    assert window_value_usd([live], up_won=True, rate=0.0) == 0.0
    same = evaluation(1, "btc-5m", 0, 0, "snipe", "replay", _input(), buy)
    bigger = evaluation(
        1,
        "btc-5m",
        0,
        0,
        "snipe",
        "replay",
        _input(),
        Buy(side="up", limit_price=0.5, stake_usd=6.0, reason="x"),
    )
    smaller = evaluation(
        1,
        "btc-5m",
        0,
        0,
        "snipe",
        "replay",
        _input(),
        Buy(side="up", limit_price=0.5, stake_usd=1.0, reason="x"),
    )
    assert refused_alike(live, same).outcome == why
    assert refused_alike(live, bigger).outcome == why
    assert refused_alike(live, smaller).outcome == ""
    assert window_value_usd([refused_alike(live, smaller)], up_won=True, rate=0.0) == 1.0  # 2 shares - 1 USD

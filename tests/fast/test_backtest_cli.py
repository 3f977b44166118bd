"""`baton backtest` in-process: its slots (the stack's, --slots, the settings'), its --json
contract (the same inputs print the same bytes), its files and its refusals."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from baton import cli
from baton.errors import BacktestError, LookAheadError
from control import backtest as bt
from kernel.backtest.types import SlotSpec
from kernel.input_log import evaluation, to_json_line
from kernel.strategy_api import BookSide, Pass, SlotInput
from state.keys import Keys
from state.structs import SLOT, Slot
from tests.fast.backtest_rig import DAY0_S, walk
from worker.input_files import day_file

K = Keys("baton:")
FROM, TO = str(DAY0_S), "2025-12-08T00:30:00Z"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setenv("BATON_ASSETS", "btc,eth")
    monkeypatch.setenv("BATON_TIMEFRAMES", "5m,15m")
    loaded: list[str] = []

    def load(home: str, asset: str, lo: int, hi: int, problems: list[str]) -> list[Any]:
        loaded.append(asset)
        return [c for c in walk(asset, DAY0_S - 3600, DAY0_S + 2 * 3600) if lo <= c.open_ms < hi]

    monkeypatch.setattr(bt, "history_loader", lambda: load)
    r = fakeredis.FakeRedis(decode_responses=True)
    r.hset(
        K.slots(),
        "s-btc",
        SLOT.encode(Slot(id="s-btc", asset="btc", timeframe="15m", stake_usd=3.0)).decode(),
    )
    r.hset(
        K.slots(),
        "m-eth",
        SLOT.encode(Slot(id="m-eth", asset="eth", timeframe="5m", strategy="momentum")).decode(),
    )
    monkeypatch.setattr(bt.connection, "client", lambda s, **kw: r)
    return tmp_path


def _json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    assert cli.main(["backtest", "--from", FROM, "--to", TO, *args, "--json"]) == 0
    out = capsys.readouterr().out
    return json.loads(out), out


def test_json_has_the_contracts_keys_and_the_same_inputs_print_the_same_bytes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got, raw = _json(capsys, "--strategy", "snipe")
    for key in (
        "trades",
        "pnl_usd",
        "win_rate",
        "max_drawdown_usd",
        "fees_usd",
        "slots",
        "equity",
        "picture",
    ):
        assert key in got
    assert "wall_s" not in got
    assert list(got["slots"]) == ["s-btc"]  # the stack's slot that runs snipe, at its stake
    assert got["slots_from"] == "the stack's slots hash"
    assert got["picture"] == str(env / "var" / "backtests" / Path(got["picture"]).parent.name / "equity.html")
    assert Path(got["report_file"]).is_file() and Path(got["picture"]).is_file()
    _, again = _json(capsys, "--strategy", "snipe")
    assert again == raw


def test_slots_named_on_the_command_line_with_their_stakes(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    got, _ = _json(capsys, "--strategy", "momentum", "--slots", "btc-5m,eth:15m:2.5")
    assert sorted(got["slots"]) == ["btc-5m", "eth-15m"]
    assert bt.parse_slots("btc-5m,eth:15m:2.5", 5.0) == (
        SlotSpec(id="btc-5m", asset="btc", timeframe="5m", stake_usd=5.0),
        SlotSpec(id="eth-15m", asset="eth", timeframe="15m", stake_usd=2.5),
    )


def test_without_stack_slots_of_the_strategy_one_slot_per_asset_and_timeframe(
    env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    src = Path(bt.REPO_ROOT) / "worker" / "strategies" / "snipe.py"
    (tmp_path / "worker" / "strategies").mkdir(parents=True)
    (tmp_path / "worker" / "strategies" / "sniper2.py").write_text(src.read_text())
    res, _ = bt.backtest(
        cli.settings_mod.load(), "sniper2", DAY0_S * 1000, (DAY0_S + 600) * 1000, root=tmp_path
    )
    assert sorted(res.report.slots) == ["btc-15m", "btc-5m", "eth-15m", "eth-5m"]


def test_the_text_report_has_the_totals_and_the_slot_table(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["backtest", "--strategy", "snipe", "--from", FROM, "--to", TO]) == 0
    out = capsys.readouterr().out
    assert "backtest of snipe" in out and "max drawdown" in out and "x real time" in out
    assert "s-btc" in out and "picture: " in out


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--strategy", "snipe", "--slots", "btc"], "'btc' is not a slot"),
        (["--strategy", "snipe", "--slots", "btc-5m,btc:5m"], "names btc-5m twice"),
        (["--strategy", "snipe", "--slots", "btc-7x"], "is not a slot"),
        (["--strategy", "nope"], "no strategy 'nope'"),
        (["--strategy", "Bad-Name"], "bad strategy name"),
        (["--strategy", "snipe", "--lag-ms", "-5"], "--lag-ms -5 is below 0"),
        (["--strategy", "snipe", "--spread", "0.9"], "--spread 0.9 is not between 0 and 0.5"),
        (["--strategy", "../../etc"], "bad strategy name"),
    ],
)
def test_bad_arguments_are_refused_naming_what_is_wrong(
    env: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    assert cli.main(["backtest", "--from", FROM, "--to", TO, *args]) == 2
    err = capsys.readouterr().err
    assert says in err and err.startswith("baton backtest: ")


def test_a_period_that_ends_before_it_starts_is_refused(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["backtest", "--strategy", "snipe", "--from", TO, "--to", FROM]) == 2
    assert "must be after --from" in capsys.readouterr().err
    assert cli.main(["backtest", "--strategy", "snipe", "--from", "yesterday", "--to", TO]) == 2
    assert "yesterday" in capsys.readouterr().err


def test_no_history_for_an_asset_says_how_to_fetch_it(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bt, "history_loader", lambda: lambda *a: [])
    with pytest.raises(BacktestError, match="baton history fetch --asset btc"):
        bt.backtest(cli.settings_mod.load(), "snipe", DAY0_S * 1000, (DAY0_S + 600) * 1000)


PEEK = '''"""peek: reads tomorrow's candles from the history store on disk."""
import gzip
import os

from kernel.strategy_api import Buy

API = 2


def evaluate(inp):
    path = os.path.join(os.environ["BATON_HOME"], "var", "history", inp.asset, "2025-12-08.csv.gz")
    with gzip.open(path, "rt") as f:
        later = [line for line in f if line.startswith(str(inp.now_ms + 60_000))]
    side = "up" if later and float(later[0].split(",")[4]) >= inp.open_price else "down"
    return Buy(side=side, limit_price=0.5, stake_usd=5.0, reason="I know what comes")
'''


def _strategy_root(tmp_path: Path, name: str, source: str) -> Path:
    root = tmp_path / "checkout"
    (root / "worker" / "strategies").mkdir(parents=True)
    (root / "worker" / "strategies" / f"{name}.py").write_text(source)
    return root


def test_a_look_ahead_strategy_is_refused_naming_it_and_what_it_did(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bt, "ROOT", _strategy_root(env, "peek", PEEK))
    assert cli.main(["backtest", "--strategy", "peek", "--from", FROM, "--to", TO, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # nothing of it is reported
    assert "baton: backtest: strategy 'peek' opened a file (" in captured.err
    assert "2025-12-08.csv.gz" in captured.err and "tick at 2025-12-08T" in captured.err


def test_a_strategy_that_reads_the_history_when_it_loads_is_refused(env: Path) -> None:
    source = (
        'import os\nROWS = open(os.environ["BATON_HOME"] + "/prices.csv").read()\n'
        "def evaluate(inp):\n    return None\n"
    )
    (env / "prices.csv").write_text("1,2,3\n")
    with pytest.raises(
        LookAheadError, match=r"strategy 'early' opened a file \(.*prices.csv'\) while its module loaded"
    ):
        bt.load_strategy("early", _strategy_root(env, "early", source))


def test_a_strategy_may_import_what_it_needs_inside_evaluate(env: Path) -> None:
    source = (
        "def evaluate(inp):\n    import colorsys\n    colorsys.rgb_to_hsv(0.1, 0.2, 0.3)\n    return None\n"
    )
    module = bt.load_strategy("lazy", _strategy_root(env, "lazy", source))
    res, _ = bt.backtest(
        cli.settings_mod.load(), "lazy", DAY0_S * 1000, (DAY0_S + 600) * 1000, root=env / "checkout"
    )
    assert res.report.evaluations > 0 and callable(module.evaluate)


TAKER = """from kernel.strategy_api import Buy

API = 2


def evaluate(inp):
    if inp.entered or inp.up_ask is None:
        return None
    return Buy(side="up", limit_price=inp.up_ask, stake_usd=5.0, reason="take the ask")
"""


def test_books_the_input_log_recorded_are_used_where_they_exist(env: Path) -> None:
    start = DAY0_S + 300  # the second 5-minute window: recorded; the others: the model's
    book_up = BookSide(bids=((0.35, 1000.0),), asks=((0.37, 1000.0),))
    book_down = BookSide(bids=((0.61, 1000.0),), asks=((0.63, 1000.0),))
    lines = []
    for at in range(start * 1000, (start + 300) * 1000, 5000):
        inp = SlotInput(
            slot_id="live-btc", asset="btc", timeframe="5m", now_ms=at, window_start_ms=start * 1000,
            window_end_ms=(start + 300) * 1000, open_price=100.0, last_price=100.0, closes=(100.0,),
            stake_usd=5.0, params={}, api=2, up_book=book_up, down_book=book_down,
        )  # fmt: skip
        e = evaluation(at // 5000, "live-btc", start, at, "snipe", "r1", inp, Pass(reason="-"))
        lines.append(to_json_line(e))
    # The input log's day file, as docs/evaluate.md documents it: gzip, one record a line.
    path = day_file(env, start * 1000)
    path.parent.mkdir(parents=True)
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines)))
    root = _strategy_root(env, "taker", TAKER)
    res, _ = bt.backtest(
        cli.settings_mod.load(), "taker", DAY0_S * 1000, (DAY0_S + 900) * 1000, slots_text="btc-5m", root=root
    )
    r = res.report
    assert r.books_recorded == 1 and r.books_modelled == 2  # one entry a window
    recorded = next(t for t in r.trade_list if t.window_start_s == start)
    assert recorded.cost_usd / recorded.shares == pytest.approx(0.37)  # the recorded ask
    assert all(t.cost_usd / t.shares != pytest.approx(0.37) for t in r.trade_list if t is not recorded)


def test_a_strategy_that_imports_its_siblings_relatively_loads_with_its_own_helpers(env: Path) -> None:
    root = _strategy_root(
        env,
        "rel",
        "from kernel.strategy_api import Pass\nfrom ._edge import EDGE\nfrom . import _more\n\n"
        "def evaluate(inp):\n    return Pass(reason=f'edge {EDGE} {_more.NOTE}')\n",
    )
    (root / "worker" / "strategies" / "_edge.py").write_text("EDGE = 0.07\n")
    (root / "worker" / "strategies" / "_more.py").write_text("NOTE = 'mine'\n")
    module = bt.load_strategy("rel", root)
    assert module.evaluate(None).reason == "edge 0.07 mine"
    import sys

    assert not [n for n in sys.modules if n.startswith("_baton_pkg_")]  # nothing left behind
    res, _ = bt.backtest(cli.settings_mod.load(), "rel", DAY0_S * 1000, (DAY0_S + 600) * 1000, root=root)
    assert res.report.evaluations > 0 and all(s.errors == 0 for s in res.report.slots.values())
    # its helper is its code: another helper, another run
    (root / "worker" / "strategies" / "_edge.py").write_text("EDGE = 0.08\n")
    again, _ = bt.backtest(cli.settings_mod.load(), "rel", DAY0_S * 1000, (DAY0_S + 600) * 1000, root=root)
    assert again.report_file != res.report_file


def test_other_candle_history_is_another_run_and_the_same_is_the_same(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = cli.settings_mod.load()
    first, _ = bt.backtest(s, "snipe", DAY0_S * 1000, (DAY0_S + 600) * 1000, "btc-5m")
    same, _ = bt.backtest(s, "snipe", DAY0_S * 1000, (DAY0_S + 600) * 1000, "btc-5m")
    assert same.report_file == first.report_file
    assert Path(same.report_file).read_bytes() == Path(first.report_file).read_bytes()

    def other(home: str, asset: str, lo: int, hi: int, problems: list[str]) -> list[Any]:
        return [c for c in walk(asset, DAY0_S - 3600, DAY0_S + 2 * 3600, seed=8) if lo <= c.open_ms < hi]

    monkeypatch.setattr(bt, "history_loader", lambda: other)
    refetched, _ = bt.backtest(s, "snipe", DAY0_S * 1000, (DAY0_S + 600) * 1000, "btc-5m")
    assert refetched.report_file != first.report_file
    assert Path(first.report_file).is_file() and Path(first.picture).is_file()  # kept


def test_a_run_that_cannot_run_exits_1(
    env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bt, "history_loader", lambda: lambda *a: [])
    assert cli.main(["backtest", "--strategy", "snipe", "--from", FROM, "--to", TO]) == 1
    assert "baton history fetch" in capsys.readouterr().err

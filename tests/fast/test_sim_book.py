"""The sim's maker (sim/book.py): its parameters, read from the environment with a clear error
for a bad one, and what each does to the book."""

from __future__ import annotations

import pytest

from baton.errors import SettingsError
from sim.book import BookParams, book, maker_fair_up
from sim.markets import Catalogue
from sim.model import PriceModel

SEED = 7
NOW_MS = 1_796_000_100_000  # 100 s into a 5m window


def _window():
    start_s = NOW_MS // 1000 - 100
    w = Catalogue(("btc",), ("5m",)).register(f"btc-updown-5m-{start_s}")
    assert w is not None
    return w


def test_an_unset_environment_gives_the_honest_defaults():
    p = BookParams.from_env({})
    assert p == BookParams()
    # About as late as a live maker re-quotes, a cent wide (docs/sim.md, "The maker").
    assert (p.lag_ms, p.spread, p.noise, p.levels, p.depth_shares) == (500, 0.01, 0.01, 5, 100)


def test_every_parameter_is_read_from_its_variable():
    env = {
        "BATON_SIM_BOOK_LAG_MS": "3000",
        "BATON_SIM_SPREAD": "0.02",
        "BATON_SIM_BOOK_NOISE": "0",
        "BATON_SIM_BOOK_LEVELS": "3",
        "BATON_SIM_BOOK_DEPTH": " 2000 ",
    }
    assert BookParams.from_env(env) == BookParams(
        lag_ms=3000, spread=0.02, noise=0.0, levels=3, depth_shares=2000
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("BATON_SIM_BOOK_LAG_MS", "1.5", "is not an integer"),
        ("BATON_SIM_BOOK_LAG_MS", "-1", "must be between 0 and"),
        ("BATON_SIM_SPREAD", "wide", "is not a number"),
        ("BATON_SIM_SPREAD", "0.6", "must be between 0.0 and 0.5"),
        ("BATON_SIM_BOOK_NOISE", "nan", "must be between"),
        ("BATON_SIM_BOOK_LEVELS", "0", "must be between 1 and"),
        ("BATON_SIM_BOOK_DEPTH", "lots", "is not an integer"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, says):
    with pytest.raises(SettingsError, match=f"{name}=.*{says}"):
        BookParams.from_env({name: value})


def test_the_maker_sees_the_model_lag_ms_late_within_its_noise():
    model, w = PriceModel(SEED), _window()
    quiet = BookParams(noise=0.0)
    assert maker_fair_up(model, w, NOW_MS, quiet, SEED) == model.fair_up(
        "btc", w.start_s, w.end_s, NOW_MS - 500
    )
    for p in (BookParams(), BookParams(lag_ms=3000)):
        lagged = model.fair_up("btc", w.start_s, w.end_s, NOW_MS - p.lag_ms)
        assert abs(maker_fair_up(model, w, NOW_MS, p, SEED) - lagged) <= p.noise + 1e-12


def test_spread_levels_and_depth_shape_the_book():
    model, w = PriceModel(SEED), _window()
    bids, asks = book(model, w, w.up_token, NOW_MS, BookParams(noise=0.0), SEED)
    assert asks[0][0] - bids[0][0] in (1, 2)  # a cent wide, rounded out to whole ticks
    assert len(asks) == len(bids) == 5 and all(100 <= size < 600 for _, size in asks + bids)
    bids3, asks3 = book(
        model, w, w.up_token, NOW_MS, BookParams(noise=0.0, levels=3, depth_shares=1000), SEED
    )
    assert len(asks3) == len(bids3) == 3
    assert [t for t, _ in asks3] == [t for t, _ in asks[:3]]
    # Ten times the depth: every level ten times as deep, give or take the seeded extra.
    assert all(10 * a - 10 <= a3 <= 10 * a + 10 for (_, a), (_, a3) in zip(asks, asks3, strict=False))
    wide_bids, wide_asks = book(model, w, w.up_token, NOW_MS, BookParams(noise=0.0, spread=0.1), SEED)
    assert wide_asks[0][0] - wide_bids[0][0] in (10, 11)

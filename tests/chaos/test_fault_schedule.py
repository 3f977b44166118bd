"""The chaos harness's fault schedule (tests/chaos/faults.py): seeded, covering every kind, never
a rollback before a deploy; and every fault in the catalogue says what it tests."""

from __future__ import annotations

import random

import pytest

from tests.chaos import faults


def test_the_schedule_is_seeded_covers_every_kind_and_never_rolls_back_first():
    kinds = list(faults.DEFAULT_KINDS)
    a = faults.plan(11, kinds, (1, 2), (1, 2), n=40)
    assert a == faults.plan(11, kinds, (1, 2), (1, 2), n=40)
    assert a != faults.plan(12, kinds, (1, 2), (1, 2), n=40)
    main = [k for k in kinds if faults.CATALOGUE[k].lane == faults.MAIN]
    bg = [k for k in kinds if faults.CATALOGUE[k].lane == faults.BACKGROUND]
    assert sorted(p.kind for p in a[faults.MAIN][: len(main)]) == sorted(main)
    assert sorted(p.kind for p in a[faults.BACKGROUND][: len(bg)]) == sorted(bg)
    for seed in range(50):
        seq = [p.kind for p in faults.plan(seed, kinds, (1, 2), (1, 2), n=30)[faults.MAIN]]
        assert seq.index("deploy") < seq.index("rollback")
    # Without cover, a rollback drawn before any deploy becomes a deploy.
    lane = faults.plan_lane(random.Random(3), ["rollback", "deploy"], 10, (1, 1), cover=False)
    assert lane[0].kind == "deploy"


@pytest.mark.parametrize("kind", sorted(faults.CATALOGUE))
def test_every_fault_says_what_it_tests(kind):
    k = faults.CATALOGUE[kind]
    assert k.tests and k.max_effect_s > 0 and k.lane in (faults.MAIN, faults.BACKGROUND)
    # Faults of the background lane overlap the others: they must never be allowed to cost ticks.
    assert not (k.lane == faults.BACKGROUND and k.costs_ticks)

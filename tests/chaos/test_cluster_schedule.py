"""The cluster chaos harness without a cluster: its schedule is seeded and covers every kind
first, every fault says what it tests and what it may cost, a deploy waits for the cluster
to be able to deploy, and a fault's record carries the allowance its injector decided."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from tests.chaos import cluster_faults as F
from tests.chaos import cluster_harness
from tests.chaos.lanes import Outcome


def test_the_schedule_is_seeded_and_covers_every_kind_first():
    kinds = list(F.DEFAULT_KINDS)
    a = F.plan(5, kinds, (1, 2), n=40)
    assert a == F.plan(5, kinds, (1, 2), n=40)
    assert a != F.plan(6, kinds, (1, 2), n=40)
    assert sorted(p.kind for p in a[: len(kinds)]) == sorted(kinds)
    assert all(1 <= p.gap_s <= 2 for p in a)
    for seed in range(30):
        seq = [p.kind for p in F.plan(seed, kinds, (1, 2), n=30)]
        assert seq.index("deploy") < seq.index("rollback")


@pytest.mark.parametrize("kind", sorted(F.CATALOGUE))
def test_every_cluster_fault_says_what_it_tests_and_costs(kind):
    k = F.CATALOGUE[kind]
    assert k.tests and k.max_effect_s > 0 and k.grace_s >= 0
    # The target: a host kill, a partition, a primary kill cost one tick at most.
    if kind.startswith(("kill-", "cut-", "redis-primary-kill")):  # kill-holder-worker too
        assert k.allowed_missed == 1
    if kind in ("sentinel-restart", "deploy", "rollback"):
        assert k.allowed_missed == 0


def test_a_deploy_is_injected_only_once_the_cluster_can_deploy():
    class Old:
        pass

    class New:
        def deploy(self, source):  # the shape cluster_faults.inject_deploy calls
            return {}

    assert not F.CATALOGUE["deploy"].available(Old())
    assert F.CATALOGUE["deploy"].available(New())
    assert all(F.CATALOGUE[k].available(Old()) for k in F.DEFAULT_KINDS if k not in ("deploy", "rollback"))


class _Ctx:
    tick_ms = 1000

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0


def test_a_faults_record_carries_the_allowance_its_injector_decided(monkeypatch):
    def pause(ctx, rnd):
        return Outcome(details={"target": "h1", "allowed_missed": 4}, injected_ms=1_000_500)

    monkeypatch.setitem(
        F.CATALOGUE,
        "redis-primary-pause",
        dataclasses.replace(F.CATALOGUE["redis-primary-pause"], inject=pause),
    )
    rec = cluster_harness.run_fault(_Ctx(), 1, 0, F.Planned("redis-primary-pause", 0))
    assert rec["allowed_missed"] == 4 and "allowed_missed" not in rec["details"]
    assert rec["start_ms"] == 1_000_500 and rec["costs_ticks"] and rec["recovered"]


def test_a_fault_that_raises_is_recorded_as_not_recovered(monkeypatch):
    def boom(ctx, rnd):
        raise RuntimeError("no such host")

    monkeypatch.setitem(
        F.CATALOGUE, "sentinel-restart", dataclasses.replace(F.CATALOGUE["sentinel-restart"], inject=boom)
    )
    rec = cluster_harness.run_fault(_Ctx(), 1, 0, F.Planned("sentinel-restart", 0))
    assert rec["recovered"] is False and rec["error"] == "RuntimeError: no such host"
    assert rec["allowed_missed"] == 0


def test_the_harness_refuses_make_clusters_name():
    with pytest.raises(SystemExit):
        cluster_harness.parse_args(["--name", "baton"])
    args = cluster_harness.parse_args(["--seed", "3", "--faults", "kill-holder-host,deploy"])
    assert args.faults == ["kill-holder-host", "deploy"] and args.name == "chaos" and args.seed == 3

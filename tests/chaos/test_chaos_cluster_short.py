"""The cluster chaos harness, short: the three-host cluster under a fixed seed's few faults —
the lease holder's host SIGKILLed and brought back, the holder's host cut off and healed,
the Redis primary killed — then the drain and every invariant of cluster_checks.py (the
single-host ones and "no order after the poster's lease deadline"). `make chaos-cluster` is
the long run (10 minutes, every fault kind).

The cluster gets a name and subnet of this test's own (from the pid), so that it never
meets `make cluster`'s or another run's; the harness removes it whatever happens."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.chaos import cluster_harness

pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.timeout(420)]

SEED = 20261207
FAULTS = ["kill-holder-host", "cut-holder-host", "redis-primary-kill"]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root and ip")
def test_host_kills_partitions_and_a_primary_kill_break_no_invariant(tmp_path):
    pid = os.getpid()
    name, net = f"ct{pid % 100_000}", f"10.79.{pid % 250}.0/24"
    out = tmp_path / "chaos-cluster.json"
    args = cluster_harness.parse_args(
        [
            "--duration-s",
            "1",  # the first pass (every kind given, once) runs whatever the duration
            "--seed",
            str(SEED),
            "--name",
            name,
            "--net",
            net,
            "--faults",
            ",".join(FAULTS),
            "--gap-s",
            "1,2",
            "--quiet-s",
            "4",
            "--json-out",
            str(out),
        ]
    )
    rc = cluster_harness.run(args)
    res = json.loads(out.read_text())
    assert res["left_behind"] == []  # no namespace, link or process of the cluster left
    broken = res.get("report", {}).get("broken", res.get("error"))
    assert rc == 0, f"chaos-cluster seed {SEED}: broken {broken}; logs under {res.get('home')}"
    assert res["kinds_injected"] == sorted(FAULTS)
    figs = res["report"]["figures"]
    # It traded through the faults, and the new invariant judged its orders.
    assert figs["orders"]["posted"] >= 1 and figs["lease"]["judged"] == figs["orders"]["posted"], figs
    assert figs["lease"]["epochs"] >= 3  # two takeovers at least: the kill and the cut
    # Both strategies traded: momentum's exit legs were committed and sold positions.
    assert res["exits_strategy"] == "momentum" and figs["orders"]["exits"] >= 1, figs["orders"]

"""A blue/green deploy across hosts (deploy/cluster/deploys.py) in the simulated three-host
cluster: the new release goes to the standby's host, the lease is handed over at a tick
boundary with no tick missed, and the old colour's worker restarts on the new release as the
warm standby on its own host. Network namespaces need root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from baton.errors import DeployError
from deploy.cluster import Cluster
from deploy.releases import PACKAGES, pointed
from deploy.supervisord import wait_until
from tests.e2e import invariants

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root"),
]

REPO = Path(__file__).resolve().parents[2]
BATON = Path(sys.executable).with_name("baton")
# This test's own cluster: no other test or helper uses this name or subnet.
NAME, NET = "bdpt", "10.78.44.0/24"


SETTINGS = {"BATON_TICK_MS": "1000", "BATON_TIMEFRAMES": "15s", "BATON_ASSETS": "btc"}


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    # A short home: each host's supervisord socket lies under it, and a unix socket's path
    # has at most 107 bytes (pytest's tmp_path under xdist is longer than that allows).
    home = Path(tempfile.mkdtemp(prefix="bdp-"))
    c = Cluster.from_env(home=home, name=NAME, net=NET, env=SETTINGS)
    if c.exists():
        pytest.fail(f"a cluster named {NAME} exists already: `BATON_CLUSTER_NAME={NAME} baton cluster stop`")
    env = {
        **os.environ,
        **SETTINGS,
        "BATON_HOME": str(home),
        "BATON_CLUSTER_NAME": NAME,
        "BATON_CLUSTER_NET": NET,
    }
    try:
        # As `make cluster` does it: the sim it leaves running is no child of this process.
        out = subprocess.run(
            [str(BATON), "cluster", "start", "--wait-s", "90"],
            env=env,
            capture_output=True,
            text=True,
            timeout=150,
        )
        assert out.returncode == 0, f"cluster start failed:\n{out.stdout}\n{out.stderr}"
        yield c
    finally:
        c.stop()
        shutil.rmtree(home, ignore_errors=True)
        assert not c.exists(), f"cluster {NAME} left namespaces or links behind"


def _new_code(tmp: Path, broken: bool = False) -> Path:
    """The repository's packages plus one harmless line: a release of its own; `broken`: one
    whose strategy raises, which its readiness check refuses."""
    src = tmp / ("broken" if broken else "src")
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (src / "worker" / "deploy_marker.py").write_text("MARKER = 'test_cluster_deploy'\n")
    if broken:
        with open(src / "worker" / "strategies" / "snipe.py", "a") as f:
            f.write("\n\ndef evaluate(inp):\n    raise RuntimeError('broken on purpose')\n")
    return src


def test_a_cluster_deploy_misses_no_tick_and_leaves_a_warm_standby_on_the_new_release(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = cluster.status()
    assert before.lease is not None and before.lease.host == "h1" and before.lease.color == "blue"
    standby_release = pointed(cluster.host("h2").home, "green")

    # A release that fails its readiness check never takes over, and the standby stays warm on
    # the release it ran.
    with pytest.raises(DeployError, match="readiness check refused"):
        cluster.deploy(source=_new_code(tmp_path, broken=True))
    failed = cluster.status()
    assert failed.lease is not None and (failed.lease.host, failed.lease.epoch) == ("h1", before.lease.epoch)
    assert pointed(cluster.host("h2").home, "green") == standby_release
    wait_until(
        lambda: [(s.host, s.state) for s in cluster.status().standbys] == [("h2", "ready")],
        30,
        "worker-green on h2 ready again on its release",
    )

    res = cluster.deploy(source=_new_code(tmp_path))

    # The lease went to the standby's host at a tick boundary, with a larger epoch.
    assert (res.from_host, res.from_color, res.host, res.color) == ("h1", "blue", "h2", "green")
    assert res.missed == 0 and res.missed_during == 0, res
    assert res.epoch_after > res.epoch_before >= before.lease.epoch
    r = cluster.client(user="admin")
    try:
        journal = {int(e["tick"]): e for e in invariants.journal(r)}
        assert journal[res.handover_tick]["color"] == "blue"
        assert journal[res.handover_tick + 1]["color"] == "green"
        assert journal[res.handover_tick + 1]["release"] == res.release
        wait_until(
            lambda: max(journal_ticks(r)) >= res.handover_tick + 3, 30, "three ticks after the handover"
        )
        rep = invariants.check_ticks(invariants.journal(r), since_tick=res.handover_tick - 2)
        assert rep.missed_not_overrun == [], rep.missed
    finally:
        r.close()

    # Both hosts run the new release; the old colour stands by, warm, on its own host.
    placed = {(x.host, x.color): x for x in res.hosts}
    assert set(placed) == {("h1", "blue"), ("h2", "green")}
    assert {x.release for x in res.hosts} == {res.release}
    assert placed[("h1", "blue")].state == "ready" and placed[("h2", "green")].state == "active"
    for host, color in (("h1", "blue"), ("h2", "green")):
        assert pointed(cluster.host(host).home, color) == res.release
    after = cluster.status()
    assert after.lease is not None and (after.lease.host, after.lease.color) == ("h2", "green")
    assert after.lease.epoch == res.epoch_after
    assert [(s.host, s.color, s.state) for s in after.standbys] == [("h1", "blue", "ready")]

    # A rollback goes the same way: back to the release the deploy replaced, on both hosts.
    back = cluster.rollback()
    assert (back.kind, back.release, back.host, back.from_host) == (
        "cluster-rollback",
        res.from_release,
        "h1",
        "h2",
    )
    assert back.missed == 0 and back.epoch_after > res.epoch_after, back
    assert {(x.host, x.release, x.state) for x in back.hosts} == {
        ("h1", res.from_release, "active"),
        ("h2", res.from_release, "ready"),
    }


def journal_ticks(r: object) -> list[int]:
    return [int(e["tick"]) for e in invariants.journal(r)]

"""The simulated three-host deployment end to end: `baton cluster start`'s cluster answers
`baton cluster status --json` and `exec`, a host whose every process was killed comes back
with `baton cluster up` (its Redis a replica, its worker a standby, the lease untouched), and
the stop leaves no namespace, link or process behind.

Root only (network namespaces); its own cluster name and subnet, never a user's `make
cluster` (baton, 10.77.0.0/24)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from deploy.cluster import Cluster
from deploy.cluster import net as netmod
from deploy.sandbox import TRADING, wait_for

# Its own name and subnet: never a user's `make cluster` (baton) or a developer's.
NAME = "bclt"
NET = "10.78.11.0/24"
BATON = str(Path(sys.executable).with_name("baton"))

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root"),
    pytest.mark.timeout(240),
]


@pytest.fixture
def cluster() -> Any:
    if netmod.leftovers(netmod.network(NAME, NET)):
        pytest.fail(f"a cluster named {NAME} exists already: `BATON_CLUSTER_NAME={NAME} baton cluster stop`")
    home = Path(tempfile.mkdtemp(prefix="bcl-"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    c = Cluster(home, NAME, NET, {**environ, **TRADING})
    CLI_ENV.clear()
    CLI_ENV.update(environ, BATON_HOME=str(home), BATON_CLUSTER_NAME=NAME, BATON_CLUSTER_NET=NET)
    pids: set[int] = set()
    try:
        yield c, pids
    finally:
        for node in netmod.NODES:
            pids.update(netmod.pids(c.net, node))
        c.stop()
        shutil.rmtree(home, ignore_errors=True)


# The `baton` command's environment: the test's cluster (BATON_HOME, its name and subnet).
CLI_ENV: dict[str, str] = {}


def baton(c: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BATON, *args], env=CLI_ENV, capture_output=True, text=True, timeout=60, check=False
    )


def status(c: Any) -> dict[str, Any]:
    out = baton(c, "cluster", "status", "--json")
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_a_cluster_answers_loses_a_host_brings_it_back_and_leaves_nothing(cluster: Any) -> None:
    c, pids = cluster
    c.start(timeout_s=120)

    # Status: three hosts up on their addresses, blue on h1 holds the lease, h1's Redis is the
    # primary with two replicas, three Sentinels agree, green stands by on h2.
    st = wait_for(
        lambda: (s := status(c))["redis"]["replicas"] and len(s["standbys"]) == 1 and s,
        30,
        "replicas and the standby in the status",
    )
    assert [(h["name"], h["addr"], h["up"]) for h in st["hosts"]] == [
        ("h1", c.net.addr("h1"), True),
        ("h2", c.net.addr("h2"), True),
        ("h3", c.net.addr("h3"), True),
    ]
    assert (st["lease"]["host"], st["lease"]["color"]) == ("h1", "blue") and st["lease"]["epoch"] >= 1
    # The primary starts on h3, apart from the lease holder (deploy/cluster/cluster.py).
    assert st["redis"]["primary"] == "h3" and st["running"] is True
    assert sorted(r["host"] for r in st["redis"]["replicas"]) == ["h1", "h2"]
    assert all("offset_lag" in r and "lag_ms" in r for r in st["redis"]["replicas"])
    assert [(s["host"], s["up"], s["primary"]) for s in st["redis"]["sentinels"]] == [
        ("h1", True, "h3"),
        ("h2", True, "h3"),
        ("h3", True, "h3"),
    ]
    assert [(s["host"], s["color"]) for s in st["standbys"]] == [("h2", "green")]
    epoch = st["lease"]["epoch"]

    # Exec: inside h2's namespace, with h2's environment.
    out = baton(c, "cluster", "exec", "h2", "--", "baton", "status", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["active"]["color"] == "blue"
    out = baton(c, "cluster", "exec", "h1", "--", "baton", "redis-cli", "PING")
    assert (out.returncode, out.stdout.strip()) == (0, "PONG"), out.stderr
    out = baton(c, "cluster", "exec", "h3", "--", "sh", "-c", 'echo "$BATON_HOST"; ip -br addr show eth0')
    assert out.stdout.split()[0] == "h3" and f"{c.net.addr('h3')}/24" in out.stdout

    # Every process of h2 killed: it is down, h1 trades on.
    killed = c.kill_host("h2")
    assert killed
    pids.update(killed)
    wait_for(lambda: not status(c)["hosts"][1]["up"], 15, "h2 down in the status")
    assert netmod.pids(c.net, "h2") == []

    # `baton cluster up h2`: its Redis replicates from h3 again, green stands by again.
    out = baton(c, "cluster", "up", "h2")
    assert out.returncode == 0, out.stderr
    green_pid = c.host("h2").supervisor("getProcessInfo", "worker-green")["pid"]
    assert green_pid

    def back() -> dict[str, Any] | None:
        s = status(c)
        replicas = {r["host"]: r["state"] for r in s["redis"]["replicas"]}
        with c.direct("h3") as r:
            beat = r.hgetall("baton:worker:green")
        ok = (
            s["hosts"][1]["up"]
            and replicas.get("h2") == "online"
            and beat.get("pid") == str(green_pid)
            and beat.get("state") == "ready"
        )
        return s if ok else None

    st = wait_for(back, 60, "h2's Redis online and green standing by")
    # The lease stayed with blue on h1 (a renewal lost to a loaded machine may have re-taken it).
    assert (st["lease"]["host"], st["lease"]["color"]) == ("h1", "blue") and st["lease"]["epoch"] >= epoch
    assert st["redis"]["primary"] == "h3"
    # And the cluster could lose a host again: every Sentinel knows both replicas and the others.
    wait_for(lambda: c.failover_ready() == "", 30, "every Sentinel to know h2 again")

    # Every program did its work as its own Redis user: the primary refused none of them.
    with c.direct("h3") as r:
        entries = [
            dict(zip(e[0::2], e[1::2], strict=True)) if isinstance(e, list) else dict(e)
            for e in r.execute_command("ACL", "LOG", 128)
        ]
    refused = [e for e in entries if e.get("reason") != "auth"]
    assert refused == [], refused

    # Stop: no namespace, no link, no process.
    for node in netmod.NODES:
        pids.update(netmod.pids(c.net, node))
    out = baton(c, "cluster", "stop")
    assert out.returncode == 0, out.stderr
    assert netmod.leftovers(c.net) == []
    alive = [p for p in pids if not netmod.zombie(p)]
    assert alive == [], f"processes left: {alive}"
    out = baton(c, "cluster", "stop")
    assert out.returncode == 0 and "nothing to stop" in out.stdout
    assert status(c)["running"] is False

"""The feeds and settle programs of the simulated three-host cluster (deploy/cluster) through
the loss of the host that holds the Redis primary (h3 at first): every process of it SIGKILLed
at once, its feed and settle program with it. The feeds of the other hosts keep the candle
windows whole across the failover, and every closed window is settled once by whichever host's
settle worker takes it.

Root only (network namespaces); its own cluster name and subnet."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from deploy.cluster import Cluster
from deploy.cluster import net as netmod
from deploy.sandbox import TRADING, wait_for
from state.structs import CANDLE
from tests.e2e import invariants

NAME = "bfh"
NET = "10.78.61.0/24"
ASSETS = ("btc", "eth", "sol", "xrp")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="network namespaces need root"),
    pytest.mark.timeout(420),
]


@pytest.fixture
def cluster() -> Any:
    if netmod.leftovers(netmod.network(NAME, NET)):
        pytest.fail(f"a cluster named {NAME} exists already: `BATON_CLUSTER_NAME={NAME} baton cluster stop`")
    home = Path(tempfile.mkdtemp(prefix="bfh-"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    c = Cluster(home, NAME, NET, {**environ, **TRADING, "BATON_ASSETS": ",".join(ASSETS)})
    try:
        yield c
    finally:
        c.stop()
        shutil.rmtree(home, ignore_errors=True)


def _complete(r: Any, first_ms: int, last_ms: int) -> list[str]:
    """The assets whose window is not whole and closed from first_ms to last_ms."""
    bad = []
    for a in ASSETS:
        got = [CANDLE.decode(m) for m in r.zrange(f"baton:candles:{a}:1s", first_ms, last_ms, byscore=True)]
        opens = [c.open_ms for c in got]
        if opens != list(range(first_ms, last_ms + 1, 1000)) or not all(c.closed for c in got):
            bad.append(a)
    return bad


def test_a_lost_primary_host_leaves_no_hole_and_no_settlement_twice(cluster: Any) -> None:
    c = cluster
    c.start(timeout_s=240)
    r = c.client()

    def feeding() -> bool:
        stats = r.hgetall("baton:feed:stats")
        return all(int(stats.get(f"candles@{h}", 0)) > 0 for h in ("h1", "h2", "h3"))

    wait_for(feeding, 60, "the feeds of three hosts writing")
    wait_for(lambda: int(r.hget("baton:counts", "positions:settled") or 0) > 0, 90, "a first settlement")
    first_ms = (int(time.time()) + 1) * 1000
    wait_for(lambda: time.time() * 1000 > first_ms + 2000, 10, "a few candles more")

    lost = c.primary_host()
    assert lost == "h3"
    c.kill_host(lost)
    killed_s = time.time()
    wait_for(lambda: c.primary_host() not in ("", lost), 60, "a new primary")
    failover_s = time.time() - killed_s
    r = c.client()  # a fresh one: the old one's Sentinel list includes the dead host

    last_ms = (int(killed_s) + 5) * 1000
    wait_for(lambda: time.time() * 1000 > last_ms + 3000, 20, "candles past the failover")
    wait_for(lambda: not _complete(r, first_ms, last_ms), 60, "candle windows with no hole")

    # Every window closed 10 s before now is settled, each payout booked once.
    def settled_up() -> bool:
        now_s = time.time()
        ps = invariants.redis_positions(r)
        return bool(ps) and not [p for p in ps if p.status == "open" and p.window_end_s < now_s - 10]

    wait_for(settled_up, 120, "every closed window settled")
    payouts = [f["ref"] for _, f in r.xrange("baton:ledger") if f["kind"] == "payout"]
    assert len(payouts) == len(set(payouts)), "a settlement booked twice"
    settled = {p.id for p in invariants.redis_positions(r) if p.status == "settled"}
    assert {f"settle:{i}" for i in settled} == set(payouts)
    invariants.check_ledger(r)
    print(f"\nfailover {failover_s:.1f} s; {len(settled)} settled; feed stats per host:")
    stats = r.hgetall("baton:feed:stats")
    for h in ("h1", "h2", "h3"):
        print(h, {k.split("@")[0]: v for k, v in stats.items() if k.endswith(f"@{h}") and ":" not in k})

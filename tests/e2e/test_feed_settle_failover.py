"""The feeds and settle programs of three hosts through a Sentinel failover, on real servers:
the primary, two replicas and three Sentinels of tests/e2e/test_sentinel_failover.py on
loopback ports, the sim as the venue, and `python -m feed` and `python -m worker.settle` for
each host. Host h1 (the primary's) is lost whole: its Redis, its Sentinel, its feed and its
settle program SIGKILLed. The others' programs follow the new primary without a restart, the
candle windows have no hole across the failover, and a settlement job enqueued afterwards is
run once by a surviving settle worker."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from deploy.ports import free_port
from kernel import settlement
from state import connection
from state.structs import CANDLE
from tests.e2e.test_sentinel_failover import HOSTS, MASTER, Rig, rig, wait_until
from tests.factories import position

__all__ = ["rig"]  # the fixture, used by name

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
ASSETS = "btc,eth"
BASE_ENV = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}


class Proc:
    """A program in its own process group (killed with its children, as a lost host's)."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.p = subprocess.Popen(
                argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def alive(self) -> bool:
        return self.p.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.p.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.p.wait(15)
        self.kill()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def hosts(rig: Rig, tmp_path: Path) -> Iterator[tuple[Rig, dict[str, Proc]]]:
    binance_port, clob_port = free_port(), free_port()
    venue_env = {
        **BASE_ENV,
        "BATON_HOME": str(tmp_path / "venue"),
        "BATON_ASSETS": ASSETS,
        "BATON_SIM_BINANCE_PORT": str(binance_port),
        "BATON_SIM_CLOB_PORT": str(clob_port),
    }
    (tmp_path / "venue").mkdir()
    procs: dict[str, Proc] = {}
    try:
        procs["sim"] = Proc([sys.executable, "-m", "sim"], venue_env, tmp_path / "sim.log")
        wait_until(lambda: _listening(binance_port) and _listening(clob_port), 30, "the sim")
        for n in rig.nodes:
            for module, user in (("feed", "feed"), ("worker.settle", "settle")):
                env = {
                    **venue_env,
                    "BATON_HOME": str(n.settings.home),
                    "BATON_REDIS_SENTINELS": rig.sentinels,
                    "BATON_REDIS_MASTER": MASTER,
                    "BATON_REDIS_MIN_REPLICAS": "1",
                    "BATON_REDIS_USER": user,
                    "BATON_HOST": n.name,
                }
                name = f"{module}-{n.name}"
                procs[name] = Proc([sys.executable, "-m", module], env, n.settings.var_dir / f"{name}.log")
        yield rig, procs
    finally:
        for p in procs.values():
            p.stop()


def _window(r: Any, asset: str, first_ms: int, last_ms: int) -> list[Any]:
    return [CANDLE.decode(m) for m in r.zrange(f"baton:candles:{asset}:1s", first_ms, last_ms, byscore=True)]


def _complete(r: Any, first_ms: int, last_ms: int) -> bool:
    for a in ASSETS.split(","):
        got = _window(r, a, first_ms, last_ms)
        if [c.open_ms for c in got] != list(range(first_ms, last_ms + 1, 1000)) or not all(
            c.closed for c in got
        ):
            return False
    return True


def test_feeds_and_settle_programs_follow_a_failover_and_keep_windows_whole(hosts):
    rig, procs = hosts
    admin_s = msgspec.structs.replace(rig.nodes[1].settings, redis_user="admin")
    r = connection.client(admin_s)
    jobs = connection.client(admin_s, timeout_s=connection.BLOCKING, decoded=False)
    try:

        def at_work() -> bool:
            stats = r.hgetall("baton:feed:stats")
            feeding = all(int(stats.get(f"candles@{h}", 0)) > 0 for h in HOSTS)
            return feeding and len(r.smembers("rq:workers:settle")) >= 3

        wait_until(at_work, 60, "three feeds writing and three settle workers listening")
        first_ms = (int(time.time()) + 1) * 1000
        wait_until(lambda: int(time.time() * 1000) > first_ms + 2000, 10, "a few candles more")

        # Host h1 (the primary's) is lost whole.
        old = rig.node(rig.primary_port())
        assert old.name == "h1"
        rig.kill_redis(old)
        assert old.sentinel is not None
        old.sentinel.kill()
        old.sentinel.wait(10)
        procs["feed-h1"].kill()
        procs["worker.settle-h1"].kill()
        killed_ms = int(time.time() * 1000)

        wait_until(lambda: rig.primary_port() != old.redis_port, 30, "a new primary")
        last_ms = (killed_ms // 1000 + 3) * 1000
        wait_until(lambda: int(time.time() * 1000) > last_ms + 3000, 15, "candles past the failover")
        wait_until(lambda: _complete(r, first_ms, last_ms), 60, "candle windows with no hole")

        # A settlement enqueued after the failover is run once, by a surviving worker (the
        # position is not open: the job answers that it is already settled, writing nothing).
        p = msgspec.structs.replace(position(), id="btc-15s:1700000000")
        q = settlement.settle_queue(jobs, "baton:")
        assert settlement.enqueue(q, "baton:", p)
        job_id = settlement.job_id("baton:", p.id)

        def done() -> Any:
            job = Job.fetch(job_id, connection=jobs, serializer=JSONSerializer)
            return job.get_status() == "finished" and job

        job = wait_until(done, 60, "the job after the failover")
        assert job.return_value() == "already"
        assert "-h1-" not in (job.worker_name or "")

        # No program of the surviving hosts exited; each feed counted its own read-back.
        for h in ("h2", "h3"):
            assert procs[f"feed-{h}"].alive() and procs[f"worker.settle-{h}"].alive(), h
        stats = {k: int(v) for k, v in r.hgetall("baton:feed:stats").items()}
        assert all(stats.get(f"redis_recoveries@{h}", 0) >= 1 for h in ("h2", "h3")), stats
        print(f"\nfeed stats: { {k: v for k, v in stats.items() if '@' in k and ':' not in k} }")
    finally:
        r.close()
        jobs.close()

"""Redis Sentinel on real servers: a primary, two replicas and three Sentinels on loopback
ports, configured by deploy/redis_ha.py with the ACL users and passwords of state/acl.py. A sync
and an asyncio client of the factory (state/connection.py) and an rq queue keep working, with no
new client, when the primary is SIGKILLed and the Sentinels fail over; WAIT counts the replicas'
acknowledgements (state/replication.py), and a primary left without replicas refuses writes
(min-replicas-to-write). Nobody, program, replica or Sentinel, is refused anything by the ACLs.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis
from rq import Queue, SimpleWorker
from rq.scheduler import RQScheduler

from baton.errors import NotReplicated
from baton.settings import Settings, load
from deploy import redis_ha
from deploy.ports import free_port
from state import acl, connection, rediscli, replication

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

MASTER = "baton"
HOSTS = ("h1", "h2", "h3")


def double(x: int) -> int:
    """The rq job of the test (imported by name by the worker)."""
    return 2 * x


def wait_until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            v = cond()
            if v:
                return v
        except redis.RedisError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last error: {last})")


class Node(msgspec.Struct):
    name: str
    settings: Settings
    redis_port: int
    sentinel_port: int
    redis: subprocess.Popen[bytes] | None = None
    sentinel: subprocess.Popen[bytes] | None = None


class Rig:
    """Three loopback 'hosts', each with its own home, Redis and Sentinel."""

    def __init__(self, base: Path) -> None:
        ports = [(free_port(), free_port()) for _ in HOSTS]
        self.sentinels = ",".join(f"127.0.0.1:{sp}" for _, sp in ports)
        first = base / HOSTS[0]
        acl.ensure_passwords(first, ha=True)
        self.nodes: list[Node] = []
        for name, (rp, sp) in zip(HOSTS, ports, strict=True):
            home = base / name
            if home != first:  # the same users and passwords on every host, owner-only
                shutil.copytree(first / "var" / "secrets", home / "var" / "secrets")
            self.nodes.append(Node(name, self.settings(home, rp), rp, sp))

    def settings(self, home: Path, redis_port: int = 0, **env: str) -> Settings:
        return load(
            {
                "BATON_HOME": str(home),
                "BATON_REDIS_PORT": str(redis_port or free_port()),
                "BATON_REDIS_SENTINELS": self.sentinels,
                "BATON_REDIS_MASTER": MASTER,
                "BATON_REDIS_MIN_REPLICAS": "1",
                "BATON_REDIS_WAIT_MS": "1000",
                **env,
            }
        )

    def program(self, user: str) -> Settings:
        """A program of host h2 (its secrets are h2's copy)."""
        return msgspec.structs.replace(self.nodes[1].settings, redis_user=user)

    def start(self) -> None:
        primary = f"127.0.0.1:{self.nodes[0].redis_port}"
        for i, n in enumerate(self.nodes):
            role = "primary" if i == 0 else "replica"
            conf = redis_ha.render_redis_ha(
                n.settings, role=role, primary_addr=primary, announce_ip="127.0.0.1"
            )
            n.redis = self._spawn(n, "redis", [str(conf)])
        wait_until(lambda: self.info(self.nodes[0])["min_slaves_good_slaves"] == 2, 20, "two replicas online")
        for n in self.nodes:
            conf = redis_ha.render_sentinel(
                n.settings, primary_addr=primary, announce_ip="127.0.0.1", quorum=2, port=n.sentinel_port
            )
            n.sentinel = self._spawn(n, "sentinel", [str(conf), "--sentinel"])
        for n in self.nodes:
            wait_until(
                functools.partial(self._knows_all, n),
                20,
                f"sentinel of {n.name} to know the replicas and the other Sentinels",
            )

    def _knows_all(self, n: Node) -> bool:
        master = self.sentinel_master(n)
        return bool(master["num-slaves"] == 2 and master["num-other-sentinels"] == 2)

    def _spawn(self, n: Node, what: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(n.settings.var_dir / f"{what}.log", "ab")  # noqa: SIM115 (closed with the process)
        try:
            return subprocess.Popen(["redis-server", *args], stdout=log, stderr=subprocess.STDOUT)
        finally:
            log.close()

    def admin(self, port: int) -> redis.Redis:
        pw = acl.password_file(Path(self.nodes[0].settings.home), acl.ADMIN).read_text().strip()
        return redis.Redis(
            port=port, username=acl.ADMIN, password=pw, decode_responses=True, socket_timeout=2
        )

    def info(self, n: Node) -> dict[str, Any]:
        with self.admin(n.redis_port) as r:
            return r.info("replication")

    def sentinel_master(self, n: Node) -> dict[str, Any]:
        with self.admin(n.sentinel_port) as r:
            return r.sentinel_master(MASTER)

    def primary_port(self) -> int:
        with self.admin(self.nodes[1].sentinel_port) as r:
            return int(r.sentinel_get_master_addr_by_name(MASTER)[1])

    def node(self, redis_port: int) -> Node:
        (n,) = [n for n in self.nodes if n.redis_port == redis_port]
        return n

    def kill_redis(self, n: Node) -> None:
        assert n.redis is not None
        n.redis.send_signal(signal.SIGKILL)
        n.redis.wait(10)

    def refusals(self) -> list[tuple[int, dict[str, Any]]]:
        """What every live Redis and Sentinel refused anyone (ACL LOG): the replicas, the
        Sentinels and the programs all did their work as their own users (state/acl.py)."""
        out = []
        for n in self.nodes:
            for proc, port in ((n.redis, n.redis_port), (n.sentinel, n.sentinel_port)):
                if proc is not None and proc.poll() is None:
                    with self.admin(port) as r:
                        out += [(port, entry) for entry in r.acl_log()]
        return out

    def stop(self) -> None:
        for n in self.nodes:
            for p in (n.sentinel, n.redis):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait(10)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    try:
        rig.start()
        yield rig
    finally:
        rig.stop()


class AsyncWriter(threading.Thread):
    """An asyncio client of the factory writing every 20 ms: when each write succeeded."""

    def __init__(self, s: Settings) -> None:
        super().__init__(daemon=True)
        self.s = s
        self.ok_at: list[float] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        r = connection.async_client(self.s)
        try:
            while not self.stop.is_set():
                try:
                    async with r.pipeline(transaction=False) as pipe:
                        pipe.incr("baton:journal:ha:async")
                        replication.queue_wait(self.s, pipe)
                        await pipe.execute()
                    self.ok_at.append(time.monotonic())
                except Exception as e:  # recorded, the test fails on it
                    self.errors.append(e)
                await asyncio.sleep(0.02)
        finally:
            await r.aclose()


def _gap_s(ok_at: list[float], since: float) -> float:
    """The longest time without a successful write from `since` on."""
    times = [since, *[t for t in ok_at if t >= since]]
    return max(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else float("inf")


def test_clients_and_rq_follow_the_primary_through_a_failover(rig: Rig):
    worker = rig.program("worker")
    r = connection.client(worker)
    jobs = connection.client(rig.program("settle"), timeout_s=connection.BLOCKING, decoded=False)
    queue = Queue("ha-test", connection=jobs)
    try:
        # Before: WAIT counts both replicas' acknowledgements on the writing pipeline.
        with r.pipeline(transaction=False) as pipe:
            pipe.set("baton:journal:ha:before", "1")
            assert replication.queue_wait(worker, pipe)
            _, acked = pipe.execute()
        assert acked in (1, 2)  # WAIT answers once min_replicas acknowledged
        replication.check(worker, acked, "before")
        assert r.execute_command("WAIT", 2, 5000) == 2
        before_job = queue.enqueue(double, 21)
        replication.wait_sync(rig.program("settle"), jobs, "the job before")

        writer = AsyncWriter(worker)
        writer.start()
        wait_until(lambda: len(writer.ok_at) >= 3 or writer.errors, 10, "the asyncio writer")
        assert writer.errors == [], [f"{type(e).__name__}: {e}" for e in writer.errors[:3]]

        old = rig.node(rig.primary_port())
        killed_at = time.monotonic()
        rig.kill_redis(old)
        # The same sync client, no restart: its next write blocks through the failover.
        r.incr("baton:journal:ha:sync")
        sync_s = time.monotonic() - killed_at
        new_port = rig.primary_port()
        assert new_port != old.redis_port
        wait_until(lambda: len([t for t in writer.ok_at if t > killed_at + sync_s]) >= 5, 15, "async writes")
        writer.stop.set()
        writer.join(15)
        assert writer.errors == [], [f"{type(e).__name__}: {e}" for e in writer.errors[:3]]
        async_gap_s = _gap_s(writer.ok_at, killed_at)
        print(f"\nfailover: sync client wrote again {sync_s:.2f} s after the kill, ", end="")
        print(f"asyncio longest gap {async_gap_s:.2f} s")
        assert sync_s < 20 and async_gap_s < 20

        assert r.get("baton:journal:ha:before") == "1"  # acknowledged by both replicas before the kill
        # What names the primary for redis-cli and rq's scheduler (a connection rebuilt in its
        # child process) follows too.
        assert connection.primary_address(worker) == ("127.0.0.1", new_port)
        argv, _ = rediscli.command(rig.program("cli"), ["PING"], {"PATH": os.environ["PATH"]})
        assert argv[1:6] == ["-h", "127.0.0.1", "-p", str(new_port), "-n"]
        assert RQScheduler([queue.name], connection=jobs).connection.ping()
        # rq through the Sentinels: the job enqueued before the failover and one after it run.
        after_job = queue.enqueue(double, 4)
        w = NoClientListWorker([queue], connection=jobs)
        assert w.work(burst=True)
        assert before_job.latest_result().return_value == 42  # type: ignore[union-attr]
        assert after_job.latest_result().return_value == 8  # type: ignore[union-attr]

        # The new primary has one replica left: WAIT counts one, which is enough.
        replication.wait_sync(worker, r, "after the failover")
        with r.pipeline(transaction=False) as pipe:
            pipe.set("baton:journal:ha:after", "1")
            replication.queue_wait(worker, pipe)
            assert pipe.execute()[-1] == 1

        # Without any replica the primary refuses writes, and WAIT counts none.
        (last,) = [n for n in rig.nodes if n.redis_port not in (old.redis_port, new_port)]
        rig.kill_redis(last)
        wait_until(lambda: rig.info(rig.node(new_port))["connected_slaves"] == 0, 10, "the replica gone")
        # NOREPLICAS: retried for a moment (a new primary counts its replicas once a second),
        # then the client gives up with it.
        with pytest.raises(redis.ConnectionError, match="NOREPLICAS"):
            r.set("baton:journal:ha:alone", "1")
        with pytest.raises(NotReplicated, match="acknowledged by 0 replica"):
            replication.wait_sync(worker, r, "alone")
        assert r.get("baton:journal:ha:after") == "1"  # reads still served
        assert rig.refusals() == []
    finally:
        r.close()
        jobs.close()


def test_clients_follow_a_forced_failover_away_from_a_live_primary(rig: Rig):
    """A forced failover (SENTINEL FAILOVER, as an operator moving the primary): the old
    primary lives on, and its clients find the new one."""
    worker = rig.program("worker")
    r = connection.client(worker)
    try:
        r.set("baton:journal:ha:x", "0")
        writer = AsyncWriter(worker)
        writer.start()
        wait_until(lambda: len(writer.ok_at) >= 3 or writer.errors, 10, "the asyncio writer")
        old_port = rig.primary_port()
        moved_at = time.monotonic()
        with rig.admin(rig.nodes[0].sentinel_port) as sentinel:
            assert sentinel.sentinel_failover(MASTER)
        wait_until(lambda: rig.primary_port() != old_port, 20, "the Sentinels to name a new primary")
        new_port = rig.primary_port()
        # The same sync client writes to the new primary. The old one stays a primary for a
        # while (Sentinel demotes it some 10 s later), but one its replicas left: it refuses
        # writes (min-replicas-to-write), which sends its clients to the Sentinels again.
        assert r.incr("baton:journal:ha:x") >= 1
        assert connection.primary_address(worker) == ("127.0.0.1", new_port)
        settled_at = time.monotonic()
        wait_until(lambda: len([t for t in writer.ok_at if t > settled_at]) >= 5, 15, "async writes")
        writer.stop.set()
        writer.join(15)
        assert writer.errors == [], [f"{type(e).__name__}: {e}" for e in writer.errors[:3]]
        print(f"\nforced failover: asyncio longest gap {_gap_s(writer.ok_at, moved_at):.2f} s")
        assert rig.refusals() == []
    finally:
        r.close()


class NoClientListWorker(SimpleWorker):
    """rq's SimpleWorker without its CLIENT LIST, which no program's user is given (as the
    settle program's worker, worker/settle_guard.py)."""

    def _set_ip_address(self, connection: Any) -> None:
        connection.client_setname(self.name)
        self.ip_address = "unknown"

    # No command channel: at the end of a burst, rq's unsubscribe races its pubsub thread,
    # which then waits out its 60 s sleep for a subscription (rq 2.12, redis-py 8.2; seen in
    # 2 of 5 runs, with or without Sentinel).
    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass

"""Feeds and settle programs of three hosts on one Redis, as the cluster runs them: the stack's
own (host "h1", under its supervisor) and two more of each (h2, h3) started beside it. One
settle program is SIGKILLed in the middle of a job and one feed is SIGKILLed (their host is
lost), then Redis restarts. Afterwards the candle windows have no hole, every settlement is
booked once (the dead worker's job is retried by another), and the programs that lived
reconnected instead of exiting."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rq.job import Job
from rq.serializers import JSONSerializer

from deploy.sandbox import TRADING, Stack, wait_for
from state.structs import CANDLE
from tests.e2e import invariants

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
ASSETS = ("btc", "eth")


class Extra:
    """A program of another host: its own process group, killed as a lost host's would be."""

    def __init__(self, st: Stack, module: str, user: str, host: str) -> None:
        self.name = f"{module}-{host}"
        self.log = st.home / "var" / "log" / f"extra-{self.name}.log"
        env = {**st.env, "BATON_REDIS_USER": user, "BATON_HOST": host}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", module],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(ProcessLookupError):  # rq's scheduler child, if orphaned
            os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def stack() -> Iterator[tuple[Stack, dict[str, Extra]]]:
    st = Stack(**{**TRADING, "BATON_ASSETS": ",".join(ASSETS)})
    extras: dict[str, Extra] = {}
    try:
        st.start()
        for host in ("h2", "h3"):
            for module, user in (("feed", "feed"), ("worker.settle", "settle")):
                e = Extra(st, module, user, host)
                extras[e.name] = e
        yield st, extras
    finally:
        for e in extras.values():
            e.stop()
        st.stop()


def _stats(st: Stack) -> dict[str, int]:
    return {k: int(v) for k, v in st.redis.hgetall("baton:feed:stats").items()}


def _window(st: Stack, asset: str, first_ms: int, last_ms: int) -> list[Any]:
    return [
        CANDLE.decode(m)
        for m in st.redis.zrange(f"baton:candles:{asset}:1s", first_ms, last_ms, byscore=True)
    ]


def _complete(st: Stack, first_ms: int, last_ms: int) -> bool:
    for a in ASSETS:
        got = _window(st, a, first_ms, last_ms)
        if [c.open_ms for c in got] != list(range(first_ms, last_ms + 1, 1000)) or not all(
            c.closed for c in got
        ):
            return False
    return True


def _busy_extra_job(st: Stack, rq_redis: Any) -> tuple[str, str] | None:
    """(job id, worker name) of a settlement job an extra settle worker is running now."""
    for member in st.redis.zrange("rq:wip:settle", 0, -1):
        job_id = member.rsplit(":", 1)[0]
        with contextlib.suppress(Exception):
            job = Job.fetch(job_id, connection=rq_redis, serializer=JSONSerializer)
            if job.worker_name and ("-h2-" in job.worker_name or "-h3-" in job.worker_name):
                return job_id, job.worker_name
    return None


def test_windows_stay_complete_and_settlements_book_once_through_host_loss_and_redis_restart(stack):
    st, extras = stack

    def extras_at_work() -> bool:
        s = _stats(st)
        workers = st.redis.smembers("rq:workers:settle")
        return s.get("candles@h2", 0) > 0 and s.get("candles@h3", 0) > 0 and len(workers) >= 3

    wait_for(extras_at_work, 60, "the other hosts' feeds writing and settle workers listening")
    first_ms = (int(time.time()) + 1) * 1000
    pids_before = {p: st.supervisor("getProcessInfo", p)["pid"] for p in ("feed", "settle")}

    # Resolution look-ups take 2 s for a while: a settlement job is then caught running.
    with httpx.Client(base_url=st.clob_url) as http:
        rule = {"path": "/markets/*", "method": "GET", "app": "clob", "latency_ms": 2000}
        http.post("/_sim/faults", json={"rules": [rule]}).raise_for_status()
        try:
            rq_redis = st.client("admin", decoded=False)
            busy = wait_for(lambda: _busy_extra_job(st, rq_redis), 60, "a settlement job running on h2 or h3")
        finally:
            http.delete("/_sim/faults").raise_for_status()
    job_id, worker_name = busy
    lost_host = "h2" if "-h2-" in worker_name else "h3"
    # That host is lost: its settle program dies mid-job, and its feed with it.
    extras[f"worker.settle-{lost_host}"].kill()
    extras[f"feed-{lost_host}"].kill()
    survivor = "h3" if lost_host == "h2" else "h2"

    # Then Redis restarts (every write it acknowledged is in its AOF), down long enough for
    # the feeds' writes to be refused (a restart of a few hundred ms hides in the clients'
    # retries).
    st.supervisor("stopProcess", "redis", True)
    feed_log = extras[f"feed-{survivor}"].log
    wait_for(
        lambda: "redis refused a write" in feed_log.read_text(), 30, f"the {survivor} feed refused by Redis"
    )
    st.supervisor("startProcess", "redis", True)
    wait_for(lambda: st.redis.ping(), 30, "Redis back")

    # The dead worker's job is retried by another (its execution expires, a registry cleanup
    # finds it) and the position it was settling leaves the open set.
    position_id = None
    for p in invariants.redis_positions(st.redis):
        if job_id.endswith(p.id.replace(":", "-")):
            position_id = p.id
    assert position_id is not None, job_id
    wait_for(lambda: not st.redis.hexists("baton:positions:open", position_id), 120, f"{position_id} settled")

    last_ms = (int(time.time()) - 3) * 1000
    wait_for(lambda: _complete(st, first_ms, last_ms), 60, "candle windows with no hole")

    # Every closed window settled, each payout booked once, the ledger adds up.
    def all_settled() -> bool:
        now_s = time.time()
        return not [
            p
            for p in invariants.redis_positions(st.redis)
            if p.status == "open" and p.window_end_s < now_s - 8
        ]

    wait_for(all_settled, 90, "every closed window settled")
    payouts = [f["ref"] for _, f in st.redis.xrange("baton:ledger") if f["kind"] == "payout"]
    assert len(payouts) == len(set(payouts)), "a settlement booked twice"
    assert f"settle:{position_id}" in payouts
    settled = {p.id for p in invariants.redis_positions(st.redis) if p.status == "settled"}
    assert {f"settle:{i}" for i in settled} == set(payouts)
    invariants.check_ledger(st.redis)

    # Those that lived went through the restart by reconnecting: no process was restarted.
    assert extras[f"feed-{survivor}"].alive() and extras[f"worker.settle-{survivor}"].alive()
    assert {p: st.supervisor("getProcessInfo", p)["pid"] for p in ("feed", "settle")} == pids_before
    # The surviving feed kept the frames Redis refused and wrote them once it was back (then
    # read the windows back), on the connection it had: no reconnect to the venue.
    s = _stats(st)
    assert s.get(f"redis_recoveries@{survivor}", 0) >= 1 and s.get(f"reconnects@{survivor}", 0) == 0, s
    assert "took the write again" in feed_log.read_text()

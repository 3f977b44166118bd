"""Hostile tests of what each program may do, on one real stack (redis-server, supervisord, the
sim, the settle program): a job injected into rq's keys runs nothing in the settle program and is
reported, and settlement goes on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.sandbox import TRADING, Stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    st = Stack(BATON_TICK_MS="1000", **TRADING)
    try:
        st.start()
        yield st
    finally:
        st.stop()


def _pid(st: Stack, name: str) -> int:
    return int(st.supervisor("getProcessInfo", name)["pid"])


def _settled(st: Stack) -> int:
    return int(st.redis.hget("baton:settle:stats", "settled") or 0)


def test_an_injected_rq_job_runs_nothing_is_reported_and_settlement_goes_on(stack: Stack, tmp_path: Path):
    st = stack
    wait_for(lambda: _settled(st) >= 1, 150, "a first settlement")
    settle_pid = _pid(st, "settle")
    markers = {name: tmp_path / f"pwned-{name}" for name in ("system", "run")}
    # What anyone with Redis access could write: rq's job hash (JSON, as the settle queue's
    # serializer reads it) and its id on the settle queue.
    jobs = {
        "evil-system": ["os.system", None, [f"touch {markers['system']}"], {}],
        "evil-run": ["subprocess.run", None, [["touch", str(markers["run"])]], {}],
    }
    for job_id, data in jobs.items():
        st.redis.hset(
            f"rq:job:{job_id}", mapping={"data": json.dumps(data), "origin": "settle", "status": "queued"}
        )
        st.redis.rpush("rq:queue:settle", job_id)

    wait_for(lambda: int(st.redis.hget("baton:settle:stats", "refused") or 0) >= 2, 60, "both jobs refused")
    assert not any(m.exists() for m in markers.values())
    failed = set(st.redis.zrange("rq:failed:settle", 0, -1))
    assert set(jobs) <= failed
    assert {st.redis.hget(f"rq:job:{j}", "status") for j in jobs} == {"failed"}
    errors = [f for _, f in st.redis.xrange("baton:journal:errors") if f["source"] == "settle"]
    assert {j for j in jobs if any(f"refused job {j}:" in e["error"] for e in errors)} == set(jobs)
    assert int(st.redis.hget("baton:stats", "errors_settle")) >= 2
    status = st.status()["settlement"]
    assert status["refused"] >= 2 and status["failed"] >= 2
    assert "refused job evil-system" in (st.home / "var" / "log" / "settle.log").read_text()

    # The settle program kept running (same process), and settles the next windows.
    before = _settled(st)
    wait_for(lambda: _settled(st) > before, 120, "a settlement after the refusals")
    assert _pid(st, "settle") == settle_pid
    assert not any(m.exists() for m in markers.values())

"""The settle program runs the settlement function and nothing else: a job written straight into
rq's keys that names another function (or carries callbacks, another shape, unreadable data) is
never imported nor run, is left failed with its reason, journaled and counted, and the worker
goes on to the next job. The end-to-end proof on a real stack is tests/e2e/test_hardening.py."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import fakeredis
import msgspec
import pytest
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from baton.errors import JobRefused
from kernel import settlement
from state.keys import Keys
from worker import settle as settle_program
from worker.settle_guard import refusal

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

PREFIX = "baton:"
K = Keys(PREFIX)


def _inject(r: fakeredis.FakeRedis, job_id: str, data: list, compress: bool = True, **fields: str) -> None:
    """What an intruder with Redis access writes: a job hash and its id on the settle queue."""
    raw = json.dumps(data).encode()
    r.hset(
        f"rq:job:{job_id}",
        mapping={
            "data": zlib.compress(raw) if compress else raw,
            "origin": "settle",
            "status": "queued",
            **fields,
        },
    )
    r.rpush("rq:queue:settle", job_id)


@pytest.fixture
def r() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


class _NoVenue:
    def resolution(self, condition_id: str) -> bool | None:
        raise AssertionError("no settlement here reaches the venue")


def _work(r: fakeredis.FakeRedis) -> None:
    settle_program.configure(_NoVenue())
    settle_program.settle_worker(settlement.settle_queue(r, PREFIX), PREFIX).work(burst=True)


def _failed(r: fakeredis.FakeRedis, job_id: str) -> str:
    assert job_id in FailedJobRegistry("settle", connection=r, serializer=JSONSerializer).get_job_ids()
    assert r.hget(f"rq:job:{job_id}", "status") == b"failed"
    if (raw := r.hget(f"rq:job:{job_id}", "exc_info")) is not None:  # a record rq cannot read
        return raw.decode()
    result = Job.fetch(job_id, connection=r, serializer=JSONSerializer).latest_result()
    assert result is not None and result.exc_string
    return result.exc_string


@pytest.mark.parametrize(
    "func",
    [
        "os.system",
        "subprocess.run",
        "builtins.exec",
        "worker.settle.configure",
        "worker.settle.settle_job.__call__",
    ],
)
def test_a_job_naming_another_function_is_refused_not_run(r, tmp_path: Path, func: str):
    marker = tmp_path / "pwned"
    _inject(r, "evil", [func, None, [f"touch {marker}"], {}])
    _work(r)
    assert not marker.exists()
    assert "is not the settlement function" in _failed(r, "evil")
    assert r.hget(K.settle_stats(), "refused") == b"1"
    assert r.hget(K.stats(), "errors_settle") == b"1"
    (entry,) = r.xrange(K.journal_errors())
    assert entry[1][b"source"] == b"settle" and b"refused job evil" in entry[1][b"error"]
    assert r.llen("rq:queue:settle") == 0 and r.llen("rq:queue:settle:intermediate") == 0


@pytest.mark.parametrize(
    ("data", "fields", "why"),
    [
        ([settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500", "x"], {}], {}, "two strings"),
        ([settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {"a": 1}], {}, "keyword"),
        ([settlement.JOB_FUNC, "os", [PREFIX, "btc-15m:1795000500"], {}], {}, "instance"),
        ([settlement.JOB_FUNC, None, ["other:", "btc-15m:1795000500"], {}], {}, "prefix"),
        ([settlement.JOB_FUNC, None, [PREFIX, "../../etc"], {}], {}, "position id"),
        (
            [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}],
            {"success_callback_name": "os.system"},
            "callbacks",
        ),
        (
            [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}],
            {"failure_callback_name": "os.system"},
            "callbacks",
        ),
        (
            [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}],
            {"stopped_callback_name": "os.system"},
            "callbacks",
        ),
        (
            [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}],
            {"dependency_ids": '["x"]'},
            "depends",
        ),
        (
            [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}],
            {"webhooks": json.dumps([{"url": "http://127.0.0.1:9/", "job_status": "failed"}])},
            "webhooks",
        ),
        (["os.system", None], {}, "unreadable job data"),
        ([["os", "system"], None, [], {}], {}, "is not the settlement function"),
        ([{"f": 1}, None, [], {}], {}, "is not the settlement function"),
    ],
)
def test_a_job_of_another_shape_is_refused(r, data, fields, why):
    _inject(r, "odd", data, **fields)
    _work(r)
    assert why in _failed(r, "odd")
    assert r.hget(K.settle_stats(), "refused") == b"1"
    assert r.hget(K.settle_stats(), "runs") is None  # settle_job never started


def test_unreadable_data_and_records_are_refused_and_the_worker_goes_on(r):
    r.hset("rq:job:pickled", mapping={"data": b"\x80\x04\x95garbage", "origin": "settle", "status": "queued"})
    r.rpush("rq:queue:settle", "pickled")
    _inject(r, "badstatus", ["os.system", None, ["true"], {}], status="not-a-status")
    _inject(r, "good", [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}], compress=False)
    _work(r)
    assert "unreadable job data" in _failed(r, "pickled")
    assert "unreadable job record" in _failed(r, "badstatus")
    # the settlement behind them ran (its position is not open: nothing to do)
    good = Job.fetch("good", connection=r, serializer=JSONSerializer)
    assert good.get_status() == "finished" and good.return_value() == "already"
    assert r.hget(K.settle_stats(), "refused") == b"2"


def test_garbage_in_rqs_keys_neither_stops_the_worker_nor_its_restart(r):
    # A job key of another type on the queue, and job ids rq's maintenance fetches (the
    # intermediate queue, the started registry) whose records it cannot read: before, each
    # stopped the settle program at every start.
    r.set("rq:job:junk", "not a hash")
    r.rpush("rq:queue:settle", "junk")
    r.hset("rq:job:stuck", mapping={"data": b"x", "status": "no-such-status"})
    r.rpush("rq:queue:settle:intermediate", "stuck")
    r.zadd("rq:wip:settle", {"stuck:x1": 1})
    _inject(r, "good", [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}])
    _work(r)
    assert "unreadable job record (ResponseError)" in _failed(r, "junk")
    assert Job.fetch("good", connection=r, serializer=JSONSerializer).return_value() == "already"
    errors = [f[b"error"].decode() for _, f in r.xrange(K.journal_errors())]
    assert any("registry cleanup stopped on an unreadable record" in e for e in errors)
    _work(r)  # and again, as a restart would: it starts, cleans, and waits for work
    assert r.llen("rq:queue:settle") == 0


def test_a_refused_job_with_retries_is_not_retried(r, tmp_path: Path):
    marker = tmp_path / "pwned"
    _inject(r, "retry", ["os.system", None, [f"touch {marker}"], {}], retries_left="5", retry_intervals="[0]")
    _work(r)
    _work(r)
    assert not marker.exists()
    assert _failed(r, "retry")
    assert r.zcard("rq:scheduled:settle") == 0 and r.llen("rq:queue:settle") == 0
    assert r.hget(K.settle_stats(), "refused") == b"1"


@pytest.fixture
def evil(tmp_path: Path, monkeypatch) -> Path:
    """An importable module whose import alone leaves a marker: proof that nothing imports it."""
    (tmp_path / "evilmod.py").write_text(
        f"open({str(tmp_path / 'imported')!r}, 'w').close()\n"
        f"def run(*a, **k):\n    open({str(tmp_path / 'ran')!r}, 'w').close()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_the_job_class_never_imports_even_when_asked_directly(r, evil: Path):
    _inject(
        r,
        "direct",
        ["evilmod.run", None, ["true"], {"x": 1}],
        success_callback_name="evilmod.run",
        failure_callback_name="evilmod.run",
        stopped_callback_name="evilmod.run",
    )
    job = settle_program.SettleJob.fetch("direct", connection=r, serializer=JSONSerializer)
    with pytest.raises(JobRefused, match="not the settlement function"):
        _ = job.func
    assert job.success_callback is None and job.failure_callback is None and job.stopped_callback is None
    assert not (evil / "imported").exists()


def test_an_abandoned_job_s_failure_callback_is_never_imported(r, evil: Path):
    # rq cleans its started registry before dequeuing, and runs an abandoned job's failure
    # callback there, outside any job's run: through the settle program's job class too.
    _inject(r, "abandoned", [settlement.JOB_FUNC, None, [PREFIX, "btc-15m:1795000500"], {}])
    r.lrem("rq:queue:settle", 0, "abandoned")
    r.hset("rq:job:abandoned", mapping={"failure_callback_name": "evilmod.run", "status": "started"})
    r.zadd("rq:wip:settle", {"abandoned:x1": 1})
    _inject(r, "evil", ["evilmod.run", None, [], {}])
    _work(r)
    assert not (evil / "imported").exists() and not (evil / "ran").exists()
    assert "abandoned" in FailedJobRegistry("settle", connection=r, serializer=JSONSerializer).get_job_ids()
    assert "is not the settlement function" in _failed(r, "evil")


def test_the_kernels_own_job_passes_the_check(r):
    from tests.factories import position

    p = position()
    q = settlement.settle_queue(r, PREFIX)
    assert settlement.enqueue(q, PREFIX, p)
    job = Job.fetch(settlement.job_id(PREFIX, p.id), connection=r, serializer=JSONSerializer)
    assert refusal(job, PREFIX) is None
    assert refusal(job, "other:") is not None
    # A free-form slot id's position (issue #25: `baton slots add momo.btc-1m ...`) too.
    free = msgspec.structs.replace(p, id="momo.btc_1m-x:1795000500", slot="momo.btc_1m-x")
    assert settlement.enqueue(q, PREFIX, free)
    job = Job.fetch(settlement.job_id(PREFIX, free.id), connection=r, serializer=JSONSerializer)
    assert refusal(job, PREFIX) is None

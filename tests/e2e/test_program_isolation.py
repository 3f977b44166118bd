"""Hostile tests of what each program may do, on one real stack (redis-server, supervisord, the
sim, feed, worker, settle and api programs) started with a signing key and an API token in its
environment, and a stranger's secret beside them: a job injected into rq's keys runs nothing in
the settle program and is reported, and settlement goes on; no program's environment holds the
key, the token, a Redis password or the stranger's secret, yet the worker signs with that key
and the api wants that token; nothing under var/ is open to group or others; the key and token
holders cannot dump core."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account

from baton import settings as settings_mod
from baton.settings import REDIS_USERS
from deploy.sandbox import TRADING, Stack, wait_for
from state import acl

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


# Paper mode signs with any key it is given; this one is not the sim's well-known key.
KEY = "0x" + "5c" * 32
TOKEN = "e2e-token-" + "q" * 30
STRANGER = "another-tools-secret-7f3a9c"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    st = Stack(
        BATON_TICK_MS="1000",
        BATON_PRIVATE_KEY=KEY,
        BATON_API_TOKEN=TOKEN,
        OTHER_TOOL_TOKEN=STRANGER,
        **TRADING,
    )
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


def _environ(pid: int) -> dict[str, str]:
    # A non-dumpable process's /proc files belong to root: this suite runs as root, as the
    # brief of these tests says; elsewhere it is skipped below.
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


def _programs(st: Stack) -> dict[str, int]:
    return {p["name"]: p["pid"] for p in st.supervisor("getAllProcessInfo") if p["pid"]}


@pytest.mark.skipif(os.geteuid() != 0, reason="reads other processes' /proc/<pid>/environ")
def test_no_program_environment_holds_the_key_the_token_or_a_strangers_secret(stack: Stack):
    st = stack
    programs = _programs(st)
    assert {"redis", "sim", "feed", "settle", "worker-blue", "api"} <= set(programs)
    # The Redis users' passwords too: each program reads its own from its file.
    passwords = [acl.password_file(st.home, u).read_text().strip() for u in REDIS_USERS]
    secrets = (KEY, KEY.removeprefix("0x"), TOKEN, STRANGER, *passwords)
    for name, pid in {**programs, "supervisord": st.supervisord_pid()}.items():
        raw = Path(f"/proc/{pid}/environ").read_bytes()
        assert not [x for x in secrets if x.encode() in raw], f"{name} (pid {pid}) holds a secret"
        env = _environ(pid)
        if name != "redis":  # redis-server writes its process title over its environment
            assert env.get("BATON_HOME") == str(st.home), name  # a real environment, not an empty one
        assert not {"BATON_PRIVATE_KEY", "BATON_API_TOKEN", "OTHER_TOOL_TOKEN"} & set(env), name
    # The key and the token were moved into owner-only files, which their programs read.
    secrets_dir = st.home / "var" / "secrets"
    assert (secrets_dir / "private-key").read_text().strip() == KEY
    assert (secrets_dir / "api-token").read_text().strip() == TOKEN

    # The worker signs with that key: the venue's orders are made by its address.
    address = Account.from_key(KEY).address.lower()
    orders = wait_for(st.sim_orders, 120, "an order at the venue")
    assert {o["maker_address"].lower() for o in orders} == {address}
    # The api wants that token.
    s = settings_mod.load(st.env)
    with httpx.Client(base_url=f"http://{s.api_host}:{s.api_port}", timeout=30) as http:
        wait_for(lambda: http.get("/health").status_code == 200, 30, "the api's /health")
        assert http.get("/slots").status_code == 401
        assert http.get("/slots", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_nothing_under_var_is_open_to_group_or_others(stack: Stack):
    st = stack
    wait_for(lambda: int(st.redis.hget("baton:settle:stats", "settled") or 0) >= 1, 150, "a settlement")
    wait_for(lambda: (st.home / "var" / "status.json").exists(), 30, "status.json")
    var = st.home / "var"
    seen, open_, names, redis_files = 0, [], set(), 0
    for dirpath, dirnames, filenames in os.walk(var):
        names |= {*dirnames, *filenames}
        redis_files += len(filenames) if Path(dirpath).is_relative_to(var / "redis") else 0
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:  # a temporary file renamed away since the listing
                continue
            if stat.S_ISLNK(mode):  # a colour pointer: its mode means nothing, its target is checked
                continue
            seen += 1
            if mode & 0o077:
                open_.append(f"{path.relative_to(st.home)} {stat.filemode(mode)}")
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    # Logs, Redis's data, a release, status.json and the run files are all there and checked.
    assert {"worker-blue.log", "supervisord.log", "supervisord.pid", "status.json", "RELEASE.json"} <= names
    assert redis_files > 0
    assert seen > 50
    assert open_ == []


@pytest.mark.parametrize("program", ["worker-blue", "api"])
def test_the_key_and_token_holders_cannot_dump_core(stack: Stack, program: str):
    st = stack
    pid = _programs(st)[program]
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    (core,) = [line for line in limits if line.startswith("Max core file size")]
    assert core.split()[4:6] == ["0", "0"], core
    log = (st.home / "var" / "log" / f"{program}.log").read_text()
    assert "core dumps off (RLIMIT_CORE 0, not dumpable)" in log
    if program == "worker-blue":  # its heartbeat says what the kernel answers it (PR_GET_DUMPABLE)
        assert st.redis.hget("baton:worker:blue", "dumpable") == "0"

"""What the benchmarks that drive a real stack (`deploy/sandbox.py`) share: starting it, reading
its tick journal, timing an operation at a phase of a tick, its API with the bearer token, the
options every one of them takes, and keeping the logs of a run that went wrong."""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import httpx

from api import apitoken
from baton import settings as settings_mod
from baton.errors import OpFailed
from bench.machine import publish
from deploy.sandbox import SLOT_PARAMS, STALE_MAKER, Stack, wait_for
from kernel.clock import wall_ms
from state.keys import Keys

REPO = Path(__file__).resolve().parent.parent
KEYS = Keys("baton:")
SETTLE_TICKS = 2  # ticks the new holder runs before the next operation starts

# --- the stack -----------------------------------------------------------------------------------


def start_stack(tick_ms: int, note: str = "", **env: str) -> Stack:
    """A stack that trades within seconds (entries whenever the estimate reaches the ask, so
    slots trade meanwhile), started; `env` adds to or overrides its settings."""
    st = Stack(
        BATON_TICK_MS=str(tick_ms),
        **{
            "BATON_TIMEFRAMES": "15s,1m",
            "BATON_ASSETS": "btc,eth,sol,xrp",
            SLOT_PARAMS: "edge=0.0",
            **STALE_MAKER,  # the pre-#26 maker: its stale book makes every window trade
            **env,
        },
    )
    print(f"starting a stack under {st.home} (tick {tick_ms} ms{note})", flush=True)
    st.start()
    return st


def stop(st: Stack, keep_home: bool) -> None:
    """Stops the stack; its BATON_HOME goes unless kept."""
    st.stop()
    if not keep_home:
        shutil.rmtree(st.home, ignore_errors=True)


@contextmanager
def stopped_after(st: Stack, keep_home: bool) -> Iterator[Stack]:
    """Stops the stack when the run ends, however it ends."""
    try:
        yield st
    finally:
        stop(st, keep_home)


def save_logs(st: Stack, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for f in (st.home / "var" / "log").glob("*.log"):
        shutil.copy2(f, dest / f.name)
    print(f"logs copied to {dest}", flush=True)


def add_run_options(
    ap: argparse.ArgumentParser, name: str, seed_help: str = "seed of the phases the operations start at"
) -> None:
    """--tick-ms, --seed, --json-out (bench/results/<name>.json), --keep-logs, --keep-home."""
    ap.add_argument("--tick-ms", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1, help=seed_help)
    ap.add_argument("--json-out", type=Path, default=REPO / "bench" / "results" / f"{name}.json")
    ap.add_argument("--keep-logs", action="store_true", help="copy the stack's logs next to the JSON")
    ap.add_argument("--keep-home", action="store_true", help="leave the stack's BATON_HOME in place")


class Failures(dict[str, int]):
    """The operations that did not complete, counted per method; `errors` says what each met.
    A failed operation is reported and the run goes on."""

    def __init__(self) -> None:
        super().__init__()
        self.errors: list[str] = []

    def record(self, method: str, index: int, exc: BaseException) -> None:
        self[method] = self.get(method, 0) + 1
        self.errors.append(f"{method} #{index}: {exc}")
        print(f"{method} #{index}: FAILED {exc}", flush=True)


def finish(result: dict[str, Any], table: str, json_out: Path, machine: str | None = None) -> None:
    """Publish a run's table and JSON; exit non-zero if an operation failed."""
    publish(result, table, json_out, machine=machine)
    if result["errors"]:
        sys.exit(f"{len(result['errors'])} operation(s) failed; see {json_out}")


class Api:
    """The `api` program with the bearer token (never printed)."""

    def __init__(self, st: Stack, timeout_s: float) -> None:
        s = settings_mod.load(st.env)
        base = f"http://{s.api_host}:{s.api_port}"
        self.http = httpx.Client(base_url=base, timeout=timeout_s)
        wait_for(lambda: self.http.get("/health").json().get("ok"), 60, f"the api program at {base}")
        token = wait_for(lambda: apitoken.load(s, env=st.env, create=False), 30, "the API token file")
        self.http.headers["Authorization"] = f"Bearer {token.reveal()}"

    def post(self, path: str, body: dict[str, Any] | None = None) -> tuple[float, dict[str, Any]]:
        """(round trip ms, the answer) of a POST that must answer 200."""
        t0 = time.monotonic()
        resp = self.http.post(path, json=body or {})
        rtt = (time.monotonic() - t0) * 1000
        if resp.status_code != 200:
            raise OpFailed(f"POST {path} answered {resp.status_code}: {resp.text[:300]}")
        return rtt, resp.json()


# --- the tick journal ----------------------------------------------------------------------------


class Entry(NamedTuple):
    """The fields of a tick-journal entry the benchmarks read."""

    tick: int
    epoch: int
    started_ms: int
    color: str


def journal_fields(st: Stack, count: int = 200) -> list[dict[str, str]]:
    """The latest journal entries' fields, oldest first."""
    return [f for _, f in reversed(st.redis.xrevrange(KEYS.journal_ticks(), count=count))]


def journal(st: Stack, count: int = 200) -> list[Entry]:
    """The latest journal entries, oldest first."""
    return [
        Entry(int(f["tick"]), int(f["epoch"]), int(f["started_ms"]), f.get("color", ""))
        for f in journal_fields(st, count)
    ]


def last_entry(st: Stack) -> Entry:
    entries = journal(st, count=1)
    if not entries:
        raise OpFailed("the tick journal is empty")
    return entries[0]


def new_holder_entries(st: Stack, old_epoch: int) -> list[Entry] | None:
    """The latest entries once a holder after `old_epoch` has journaled a tick, else None."""
    entries = journal(st)
    return entries if any(e.epoch > old_epoch for e in entries) else None


def entry_fields(st: Stack, tick: int) -> dict[str, str]:
    """All the fields of tick `tick`'s entry, among the latest 50 ({} if not there)."""
    for _, f in st.redis.xrevrange(KEYS.journal_ticks(), count=50):
        if int(f["tick"]) == tick:
            return f
    return {}


def wait_ticks_by(st: Stack, epoch: int, tick: int, timeout_s: float) -> None:
    """Until the holder with `epoch` has journaled tick `tick` or a later one."""

    def done() -> bool:
        e = last_entry(st)
        return e.epoch == epoch and e.tick >= tick

    wait_for(done, timeout_s, f"epoch {epoch} to run tick {tick}")


def settle_first(st: Stack, timeout_s: float) -> None:
    """Until the current holder has run SETTLE_TICKS more ticks: a run's first operation
    starts on a stack that has been trading for a moment."""
    e = last_entry(st)
    wait_ticks_by(st, e.epoch, e.tick + SETTLE_TICKS, timeout_s)


def wait_phase(rng: random.Random, tick_ms: int) -> int:
    """Sleep until a random point within a tick; returns that point's offset from its boundary."""
    phase = rng.randrange(tick_ms)
    now = wall_ms()
    at = now - now % tick_ms + phase
    if at <= now:
        at += tick_ms
    time.sleep((at - now) / 1000)
    return phase

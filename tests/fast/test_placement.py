"""The holder hands the lease to a standby on another host when the Redis primary is on its own
host (worker/placement.py): asked once, only when it is safe to ask."""

from __future__ import annotations

import pytest

from baton.settings import load
from worker import placement
from worker.placement import Placement, is_local_address

NOW_MS = 1_795_000_000_000


class Sentinels:
    """What the worker's Sentinel-managed client carries: where the primary is."""

    def __init__(self, ip: str) -> None:
        self.ip = ip

    async def discover_master(self, name: str) -> tuple[str, int]:
        assert name == "baton"
        return self.ip, 7379


def settings(host: str = "h1"):
    return load({"BATON_HOME": "/tmp/baton-placement", "BATON_HOST": host, "BATON_TICK_MS": "5000"})


async def standby_ready(store, host: str = "h2", state: str = "ready", beat_ms: int = NOW_MS) -> None:
    await store.r.hset(
        store.k.worker("green"),
        mapping={"holder": f"green:{host}:42:ab", "state": state, "release": "r2", "heartbeat_ms": beat_ms},
    )


def test_this_hosts_own_address_is_local_and_another_is_not() -> None:
    assert is_local_address("127.0.0.1")
    assert not is_local_address("198.51.100.7")  # TEST-NET-2: no packet is sent by a UDP connect


async def test_primary_here_and_a_ready_standby_elsewhere_asks_for_a_handover(store) -> None:
    store.r.sentinel_manager = Sentinels("127.0.0.1")
    await standby_ready(store)
    p = Placement(settings(), store, "blue")
    request_id = await p.check("blue:h1:1:x", NOW_MS)
    assert request_id.startswith("placement-")
    req = await store.r.hgetall(store.k.handover())
    assert req["id"] == request_id and req["state"] == "requested" and req["kind"] == placement.KIND
    assert (req["to_holder"], req["to_color"], req["from_color"]) == ("green:h2:42:ab", "green", "blue")
    # Not again before CHECK_EVERY_MS, and not while that request is pending.
    assert await p.check("blue:h1:1:x", NOW_MS + 1) == ""
    assert await p.check("blue:h1:1:x", NOW_MS + placement.CHECK_EVERY_MS) == ""


@pytest.mark.parametrize(
    "case",
    [
        "primary elsewhere",
        "standby on this host",
        "standby not ready",
        "standby silent",
        "deploying",
        "no sentinels",
    ],
)
async def test_nothing_is_asked_when_it_is_not_safe_or_not_needed(store, case: str) -> None:
    store.r.sentinel_manager = Sentinels("198.51.100.7" if case == "primary elsewhere" else "127.0.0.1")
    await standby_ready(
        store,
        host="h1" if case == "standby on this host" else "h2",
        state="checking" if case == "standby not ready" else "ready",
        beat_ms=NOW_MS - 60_000 if case == "standby silent" else NOW_MS,
    )
    if case == "deploying":
        await store.r.set(store.k.deploy_lock(), "token")
    if case == "no sentinels":
        del store.r.sentinel_manager
    assert await Placement(settings(), store, "blue").check("blue:h1:1:x", NOW_MS) == ""
    assert not await store.r.exists(store.k.handover())

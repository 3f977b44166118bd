"""Which host runs which worker colour, as a cluster deploy sees it (deploy/cluster/deploys.py),
with each host's supervisord faked; the deploy itself runs in tests/e2e/test_cluster_deploy.py."""

from __future__ import annotations

import dataclasses
import xmlrpc.client
from pathlib import Path
from typing import Any

import pytest

from baton.settings import Settings, load
from deploy.cluster import deploys

TOPOLOGY = {"h1": "blue", "h2": "green"}


@dataclasses.dataclass(frozen=True)
class FakeHost:
    name: str
    settings: Settings


def hosts(tmp_path: Path) -> list[FakeHost]:
    return [FakeHost(n, load({"BATON_HOME": str(tmp_path / n)})) for n in ("h1", "h2", "h3")]


def fake_supervisors(monkeypatch: pytest.MonkeyPatch, states: dict[str, dict[str, str] | None]) -> None:
    """states: host -> {program: statename}, None for a host whose supervisord is down."""

    def call(socket: Path, method: str, *args: Any) -> Any:
        assert method == "getAllProcessInfo"
        host = socket.parents[2].name  # <home>/var/run/supervisor.sock, home = .../<host>
        progs = states[host]
        if progs is None:
            raise ConnectionRefusedError(f"{host} is down")
        return [{"name": n, "statename": s} for n, s in progs.items()]

    monkeypatch.setattr(deploys, "supervisor_call", call)


ALL_STOPPED = {"worker-blue": "STOPPED", "worker-green": "STOPPED"}


def test_a_colour_is_where_its_worker_runs_else_on_its_topology_host(tmp_path, monkeypatch):
    hs = hosts(tmp_path)
    fake_supervisors(
        monkeypatch,
        {
            "h1": {"worker-blue": "RUNNING", "worker-green": "STOPPED"},
            "h2": ALL_STOPPED,  # its standby is down for a moment: still green's host
            "h3": ALL_STOPPED,
        },
    )
    assert {c: h.name for c, h in deploys.colors_on(hs, TOPOLOGY).items()} == {"blue": "h1", "green": "h2"}

    # A colour started by hand elsewhere is found where it runs.
    fake_supervisors(
        monkeypatch,
        {"h1": ALL_STOPPED, "h2": ALL_STOPPED, "h3": {"worker-blue": "RUNNING", "worker-green": "STOPPED"}},
    )
    assert {c: h.name for c, h in deploys.colors_on(hs, TOPOLOGY).items()} == {"blue": "h3", "green": "h2"}


def test_a_host_whose_supervisord_is_down_runs_no_colour(tmp_path, monkeypatch):
    hs = hosts(tmp_path)
    fake_supervisors(
        monkeypatch,
        {"h1": {"worker-blue": "RUNNING", "worker-green": "STOPPED"}, "h2": None, "h3": ALL_STOPPED},
    )
    assert {c: h.name for c, h in deploys.colors_on(hs, TOPOLOGY).items()} == {"blue": "h1"}


def test_a_fault_from_a_supervisord_counts_as_down(tmp_path, monkeypatch):
    def call(socket: Path, method: str, *args: Any) -> Any:
        raise xmlrpc.client.Fault(2, "SHUTDOWN_STATE")

    monkeypatch.setattr(deploys, "supervisor_call", call)
    assert deploys.colors_on(hosts(tmp_path), TOPOLOGY) == {}

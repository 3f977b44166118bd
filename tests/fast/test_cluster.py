"""The cluster's pure parts: names and addresses, each host's environment and programs, the
secrets copied to each host, the Redis and Sentinel fragments, and how the status is read.
The whole cluster runs in tests/e2e/test_cluster.py."""

from __future__ import annotations

import stat
from pathlib import Path

import fakeredis
import msgspec
import pytest

from baton.errors import StackError
from baton.settings import load
from deploy.cluster import hosts, net, status
from deploy.cluster import redis as ha
from deploy.supervisord import supervisor_env
from state.keys import Keys

N = net.network("bcl", "10.78.1.0/24")


def test_every_name_fits_an_interface_and_every_node_has_its_address() -> None:
    longest = net.network("abcdefghij", "10.78.1.0/24")
    for node in net.NODES:
        assert len(longest.link(node)) <= net.IFNAME_MAX
        assert len(longest._peer(node)) <= net.IFNAME_MAX
    assert len(longest.bridge) <= net.IFNAME_MAX
    assert [N.addr(n) for n in net.NODES] == ["10.78.1.10", "10.78.1.11", "10.78.1.12", "10.78.1.13"]
    assert (N.gateway, N.prefixlen, N.netns("h2"), N.link("venue")) == ("10.78.1.1", 24, "bcl-h2", "bcl-v")


@pytest.mark.parametrize(
    "name,subnet",
    [("abcdefghijk", "10.0.0.0/24"), ("Bad", "10.0.0.0/24"), ("ok", "fd00::/64"), ("ok", "10.0.0.0/29")],
)
def test_a_name_or_subnet_the_cluster_cannot_use_is_refused(name: str, subnet: str) -> None:
    with pytest.raises(StackError):
        net.network(name, subnet)


def environ(**extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "BATON_TICK_MS": "1000",
        "BATON_REDIS_PORT": "6399",
        "BATON_REDIS_USER": "admin",
        "BATON_PRIVATE_KEY": "0x" + "1" * 64,
        "BATON_API_TOKEN": "t" * 40,
        "SOME_TOKEN": "secret",
        **extra,
    }


def test_a_host_gets_the_shells_settings_and_the_clusters_own(tmp_path: Path) -> None:
    env = hosts.node_env(N, tmp_path, "h2", environ())
    assert env["BATON_HOME"] == str(tmp_path / "hosts" / "h2")
    assert env["BATON_HOST"] == "h2"
    # Its own Sentinel first: always on its side of a partition.
    assert env["BATON_REDIS_SENTINELS"] == "10.78.1.12:27379,10.78.1.11:27379,10.78.1.13:27379"
    assert env["BATON_REDIS_MIN_REPLICAS"] == "1"
    assert env["BATON_CLOB_URL"] == "http://10.78.1.10:7302"
    assert env["BATON_BINANCE_WS_URL"] == "ws://10.78.1.10:7301"
    assert (env["BATON_API_HOST"], env["BATON_API_PORT"]) == ("10.78.1.12", "7390")
    assert env["BATON_TICK_MS"] == "1000"
    # No secret, no stranger, nothing that says how the single-host stack reaches its Redis.
    for name in (
        "BATON_PRIVATE_KEY",
        "BATON_API_TOKEN",
        "SOME_TOKEN",
        "BATON_REDIS_PORT",
        "BATON_REDIS_USER",
    ):
        assert name not in env
    assert "BATON_REDIS_URL" not in env  # every client follows the Sentinels
    s = load(env)
    assert s.host == "h2" and len(s.redis_sentinels) == 3 and not s.embedded_redis


def test_the_venue_runs_the_sim_on_its_own_address(tmp_path: Path) -> None:
    env = hosts.node_env(N, tmp_path, net.VENUE, environ(BATON_SIM_CLOB_PORT="7402"))
    assert (env["BATON_SIM_BIND"], env["BATON_SIM_CLOB_PORT"]) == ("10.78.1.10", "7402")
    assert "BATON_REDIS_SENTINELS" not in env


def autostarts(env: dict[str, str]) -> tuple[str, str, str, str]:
    return (
        env["BATON_WORKER_BLUE_AUTOSTART"],
        env["BATON_WORKER_GREEN_AUTOSTART"],
        env["BATON_API_AUTOSTART"],
        env["BATON_SIM_AUTOSTART"],
    )


def test_each_host_starts_its_own_programs_and_one_host_starts_as_before(tmp_path: Path) -> None:
    got = {
        h: autostarts(hosts.supervisord_env(hosts.make_host(N, tmp_path, h, environ()))) for h in net.HOSTS
    }
    assert got == {
        "h1": ("true", "false", "true", "false"),
        "h2": ("false", "true", "false", "false"),
        "h3": ("false", "false", "true", "false"),
    }
    held = hosts.supervisord_env(hosts.make_host(N, tmp_path, "h2", environ()), hold_standby=True)
    assert autostarts(held)[:2] == ("false", "false")
    assert autostarts(supervisor_env(load({"BATON_HOME": str(tmp_path)}), {})) == (
        "true",
        "false",
        "true",
        "true",
    )


def test_the_secrets_are_made_once_and_each_host_gets_an_owner_only_copy(tmp_path: Path) -> None:
    src = hosts.make_secrets(tmp_path, "baton:", {})
    key = (src / "private-key").read_text()
    assert hosts.make_secrets(tmp_path, "baton:", {}) == src
    assert (src / "private-key").read_text() == key  # made once, not at every start
    host = hosts.make_host(N, tmp_path, "h3", environ())
    hosts.copy_secrets(src, host)
    dst = host.home / "var" / "secrets"
    copied = sorted(p.relative_to(dst) for p in dst.rglob("*") if p.is_file())
    assert copied == sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    assert {
        "private-key",
        "api-token",
        "redis/admin",
        "redis/replica",
        "redis/sentinel",
        "redis/users.acl",
    } <= {str(p) for p in copied}
    for p in dst.rglob("*"):
        assert stat.S_IMODE(p.stat().st_mode) == (0o600 if p.is_file() else 0o700), p
        if p.is_file():
            assert p.read_bytes() == (src / p.relative_to(dst)).read_bytes()
    # A key or token given to `make cluster` wins over the generated ones.
    hosts.make_secrets(tmp_path, "baton:", {"BATON_PRIVATE_KEY": "0x" + "2" * 64})
    assert (src / "private-key").read_text().strip() == "0x" + "2" * 64


def test_redis_and_sentinel_run_from_fragments_with_no_secret_on_their_command_line(tmp_path: Path) -> None:
    src = hosts.make_secrets(tmp_path, "baton:", {})
    host = hosts.make_host(N, tmp_path, "h2", environ())
    hosts.copy_secrets(src, host)
    ha.render(host.settings, host.addr, "10.78.1.11")
    frags = host.settings.run_dir / "supervisor.d"
    redis_frag, sentinel_frag = (frags / "redis.conf").read_text(), (frags / "sentinel.conf").read_text()
    assert "[program:redis]" in redis_frag and "var/ha/redis.conf" in redis_frag
    assert "[program:sentinel]" in sentinel_frag and "--sentinel" in sentinel_frag
    conf = (host.home / "var" / "ha" / "redis.conf").read_text()
    assert "replicaof 10.78.1.11 7379" in conf and "bind 10.78.1.12" in conf
    for f in (src / "redis").iterdir():
        if f.name != "users.acl":
            assert f.read_text().strip() not in redis_frag + sentinel_frag
    ha.render(host.settings, host.addr, host.addr)  # the primary: no replicaof
    assert "\nreplicaof " not in (host.home / "var" / "ha" / "redis.conf").read_text()


def test_a_sentinels_own_file_is_kept_when_its_host_comes_back(tmp_path: Path) -> None:
    src = hosts.make_secrets(tmp_path, "baton:", {})
    host = hosts.make_host(N, tmp_path, "h2", environ())
    hosts.copy_secrets(src, host)
    ha.render(host.settings, host.addr, "10.78.1.11")
    assert ha.monitored(host.settings) == "10.78.1.11"
    # What the Sentinel learnt and rewrote (a failover to h3, the replicas it knows) stays.
    conf = host.home / "var" / "ha" / "sentinel.conf"
    learnt = conf.read_text().replace("monitor baton 10.78.1.11", "monitor baton 10.78.1.13")
    conf.write_text(learnt + "sentinel known-replica baton 10.78.1.12 7379\n")
    ha.render(host.settings, host.addr, "10.78.1.13")
    assert "known-replica baton 10.78.1.12" in conf.read_text()
    assert ha.monitored(host.settings) == "10.78.1.13"
    assert "replicaof 10.78.1.13 7379" in (host.home / "var" / "ha" / "redis.conf").read_text()


ADDRS = {"h1": "10.78.1.11", "h2": "10.78.1.12", "h3": "10.78.1.13"}


def test_replicas_are_read_from_the_primarys_info_with_their_lag() -> None:
    info = {
        "role": "master",
        "master_repl_offset": 1000,
        "slave0": {"ip": "10.78.1.13", "port": 7379, "state": "online", "offset": 990, "lag": 0},
        "slave1": {"ip": "10.78.1.12", "port": 7379, "state": "wait_bgsave", "offset": 0, "lag": 2},
    }
    assert status.replicas(info, ADDRS) == [
        status.ReplicaStatus("h3", "10.78.1.13", "online", 10, 0),
        status.ReplicaStatus("h2", "10.78.1.12", "wait_bgsave", 1000, 2000),
    ]


def test_the_primary_is_the_one_most_sentinels_name() -> None:
    views = [
        status.SentinelStatus("h1", ADDRS["h1"], False),
        status.SentinelStatus("h2", ADDRS["h2"], True, "h2"),
        status.SentinelStatus("h3", ADDRS["h3"], True, "h2"),
    ]
    assert status.primary_of(views) == "h2"
    assert status.primary_of(views[:1]) == ""


def test_a_holders_host_is_its_ids_else_its_colours_heartbeats() -> None:
    assert status.holder_host("green:h2:42:ab12", "green", lambda c: "?") == "h2"
    assert status.holder_host("blue:vm:42:ab12", "blue", lambda c: {"blue": "h1"}[c]) == "h1"


def test_the_lease_holder_and_the_standbys_are_read_from_redis() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    k = Keys("baton:")
    now = 1_000_000
    r.hset(
        k.lease(), mapping={"holder": "green:h2:42:ab", "color": "green", "epoch": 3, "expires_ms": now + 900}
    )
    r.hset(
        k.worker("green"),
        mapping={"holder": "green:h2:42:ab", "state": "active", "pid": 42, "heartbeat_ms": now},
    )
    r.hset(
        k.worker("blue"),
        mapping={"holder": "blue:h1:7:cd", "state": "ready", "pid": 7, "heartbeat_ms": now - 5000},
    )
    lease, standbys = status.workers(r, k, now)
    assert lease == status.LeaseStatus("h2", "green", 3, "green:h2:42:ab", now + 900)
    assert standbys == [status.StandbyStatus("h1", "blue", "ready", 7, 5000)]
    # An expired lease is nobody's: both workers are listed.
    lease, standbys = status.workers(r, k, now + 900)
    assert lease is None and [s.color for s in standbys] == ["blue", "green"]


def test_the_status_reads_for_a_person() -> None:
    st = status.ClusterStatus(
        name="bcl",
        net="10.78.1.0/24",
        hosts=[
            status.HostStatus("h1", ADDRS["h1"], True),
            status.HostStatus("h2", ADDRS["h2"], False, False),
        ],
        lease=status.LeaseStatus("h1", "blue", 7),
        redis=status.RedisStatus("h1", [], [status.SentinelStatus("h1", ADDRS["h1"], True, "h1")]),
        standbys=[status.StandbyStatus("h2", "green", "ready", 99, 9000)],
    )
    text = status.render(st)
    assert "h2   10.78.1.12      down, cut off" in text
    assert "lease    h1 worker-blue, epoch 7" in text
    assert "standby  h2 worker-green (ready, last heartbeat 9 s ago)" in text
    assert status.render(msgspec.structs.replace(st, running=False)) == (
        "cluster bcl (10.78.1.0/24) is not running: make cluster"
    )
    assert "s3cret" not in repr(status.SentinelAuth(27379, "baton", "admin", "s3cret"))

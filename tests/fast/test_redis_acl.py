"""Redis access without a server: the ACL rules of state/acl.py as rendered, the client
factory's credentials, the settings that say where Redis is, and `baton redis-cli`'s command
line. The same rules on a real redis-server: tests/e2e/test_redis_access.py."""

from __future__ import annotations

import inspect
import os
import re
from pathlib import Path

import pytest

from baton.errors import SecretFileError, SettingsError
from baton.secretfiles import write_secret
from baton.settings import REDIS_USERS, load
from state import acl, connection, rediscli
from state.keys import Keys

PREFIX = "baton:"


def every_key(k: Keys) -> dict[str, str]:
    """Each key builder of Keys, called with sample arguments."""
    out = {}
    for name, fn in inspect.getmembers(k, inspect.ismethod):
        if name.startswith("_"):
            continue
        params = inspect.signature(fn).parameters
        out[name] = fn(*(7 if p.annotation in (int, "int") else "x" for p in params.values()))
    return out


def test_every_key_falls_in_exactly_one_concern():
    keys = every_key(Keys(PREFIX))
    assert len(keys) >= 35
    for name, key in keys.items():
        assert len(acl.concern_of(key, PREFIX)) == 1, (name, key, acl.concern_of(key, PREFIX))


def test_the_patterns_follow_the_prefix():
    rules = acl.rules("feed", "other:")
    assert "~other:candles:*" in rules and not any("baton:" in r for r in rules)


def _user_line(text: str, user: str) -> list[str]:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"user {user} ")]
    return line.split()


def test_the_acl_file_turns_default_off_and_holds_only_password_hashes():
    passwords = {u: f"pw-{u}-secret" for u in REDIS_USERS}
    text = acl.render(PREFIX, passwords)
    assert text.splitlines()[0].startswith("user default off")
    assert all(line.startswith("user ") for line in text.splitlines())  # Redis allows nothing else
    for user, pw in passwords.items():
        assert pw not in text
        line = _user_line(text, user)
        assert line[2] == "on" and line[3] == "#" + acl.password_hash(pw)
        assert re.fullmatch(r"#[0-9a-f]{64}", line[3])


def test_only_admin_may_run_dangerous_commands_or_reach_every_key():
    text = acl.render(PREFIX, {u: "p" for u in REDIS_USERS})
    assert _user_line(text, "admin")[4:] == ["~*", "&*", "+@all"]
    for user in REDIS_USERS:
        if user == "admin":
            continue
        rules = _user_line(text, user)[4:]
        assert "~*" not in rules and "&*" not in rules and "+@all" not in rules
        # Everything dangerous is taken away after the categories are given; what comes back
        # after that is only INFO.
        after = rules[rules.index("-@admin") + 1 :]
        assert rules.index("-@dangerous") > rules.index("+@write")
        assert set(after) <= {"+info", "-function"}, (user, after)
        assert not any(r.startswith(("+@scripting", "+script|flush", "+function", "+config")) for r in rules)


def _writable(user: str) -> list[str]:
    return [r[1:] for r in acl.rules(user, PREFIX) if r.startswith("~")]


def test_the_feed_writes_only_market_data_rate_limits_and_the_error_journal():
    assert sorted(_writable("feed")) == sorted(
        ["baton:candles:*", "baton:feed:*", "baton:ratelimit:*", "baton:journal:errors", "baton:system:feed"]
    )
    assert not [r for r in acl.rules("feed", PREFIX) if r.startswith("&")]


def test_who_may_write_rq_and_the_ledger():
    for user in ("worker", "settle"):
        assert "rq:*" in _writable(user) and "baton:ledger:*" in _writable(user)
    for user in ("feed", "api", "cli"):
        assert "rq:*" not in _writable(user) and "baton:ledger:*" not in _writable(user)
        assert "baton:positions" not in _writable(user) and "baton:intents" not in _writable(user)
    assert "%R~rq:*" in acl.rules("api", PREFIX)


def test_only_the_api_reaches_the_dashboard_sessions():
    k = Keys(PREFIX)
    for user in REDIS_USERS:
        rules = acl.rules(user, PREFIX)
        reach = [r for r in rules if r.endswith((k.sessions(), "session:*"))] or (
            ["~*"] if "~*" in rules else []
        )
        assert bool(reach) == (user in ("api", "admin")), (user, reach)


def test_passwords_are_generated_once_into_owner_only_files(tmp_path: Path):
    path = acl.write_acl_file(tmp_path, PREFIX)
    first = {u: acl.password_file(tmp_path, u).read_text() for u in REDIS_USERS}
    acl.write_acl_file(tmp_path, PREFIX)
    assert {u: acl.password_file(tmp_path, u).read_text() for u in REDIS_USERS} == first
    assert len(set(first.values())) == len(REDIS_USERS)
    for p in [path, *(acl.password_file(tmp_path, u) for u in REDIS_USERS)]:
        assert p.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert not any(pw.strip() in path.read_text() for pw in first.values())


# --- the client factory -------------------------------------------------------------------------


def test_a_client_authenticates_as_its_program_with_the_password_from_its_file(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_USER": "feed"})
    creds = connection.credentials(s)
    assert creds.get_credentials() == ()  # no file: a bare redis-server, no AUTH at all
    write_secret(acl.password_file(tmp_path, "feed"), "feed-secret")
    assert creds.get_credentials() == ("feed", "feed-secret")
    assert "feed-secret" not in repr(creds)
    r = connection.client(s)
    assert r.connection_pool.connection_kwargs["credential_provider"].get_credentials() == (
        "feed",
        "feed-secret",
    )
    os.chmod(acl.password_file(tmp_path, "feed"), 0o644)
    with pytest.raises(SecretFileError, match="chmod 600"):
        creds.get_credentials()


def test_unix_socket_clients_pack_with_hiredis_like_tcp_ones(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path)})
    ar = connection.async_client(s)
    kw = ar.connection_pool.connection_kwargs
    assert ar.connection_pool.connection_class is connection.PackedUnixConnection
    assert kw["path"] == s.redis_socket and "socket_keepalive" not in kw
    unix = connection.PackedUnixConnection(path=s.redis_socket)
    tcp = connection.PackedConnection()
    for args in (("HSET", "k", "f", 1.5), ("EVALSHA", "ab", 1, "k", b"\xff", "é")):
        assert unix.pack_command(*args) == tcp.pack_command(*args)
    tcp_s = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_PORT": "7001"})
    assert connection.async_client(tcp_s).connection_pool.connection_class is connection.PackedConnection


# --- where Redis is -------------------------------------------------------------------------------


def test_tcp_only_when_asked_and_a_warning_off_loopback(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_PORT": "7001"})
    assert s.redis_url == "redis://127.0.0.1:7001/0" and s.embedded_redis and not s.redis_socket
    assert not s.redis_warning
    wide = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_BIND": "0.0.0.0"})
    assert wide.redis_url == "redis://127.0.0.1:7379/0" and wide.redis_exposed
    assert "0.0.0.0:7379" in wide.redis_warning
    with pytest.raises(SettingsError, match="BATON_REDIS_BIND"):
        load({"BATON_REDIS_BIND": "redis.example.com"})


def test_a_password_in_the_redis_url_is_refused_without_echoing_it():
    for url in ("redis://worker:hunter2@10.0.0.5:6379/0", "redis://10.0.0.5:6379/0?password=hunter2"):
        with pytest.raises(SettingsError, match="var/secrets/redis/<user>") as e:
            load({"BATON_REDIS_URL": url})
        assert "hunter2" not in str(e.value)


def test_an_unknown_redis_user_or_a_home_too_long_for_a_socket_is_refused():
    with pytest.raises(SettingsError, match="BATON_REDIS_USER"):
        load({"BATON_REDIS_USER": "root"})
    with pytest.raises(SettingsError, match="too long"):
        load({"BATON_HOME": "/tmp/" + "h" * 100})


def test_the_shown_url_never_holds_a_secret(tmp_path: Path):
    write_secret(acl.password_file(tmp_path, "cli"), "cli-secret")
    for env in ({}, {"BATON_REDIS_PORT": "7001"}, {"BATON_REDIS_URL": "rediss://10.0.0.5:6380/1"}):
        s = load({"BATON_HOME": str(tmp_path), **env})
        assert "cli-secret" not in s.redis_url_shown and "cli-secret" not in repr(s)


# --- baton redis-cli --------------------------------------------------------------------------------


def test_redis_cli_gets_the_password_in_its_environment_never_its_command_line(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_USER": "admin"})
    write_secret(acl.password_file(tmp_path, "admin"), "admin-secret")
    argv, env = rediscli.command(
        s, ["--json", "-r", "3", "HGETALL", "baton:control"], {"PATH": os.environ["PATH"]}
    )
    assert argv[0].endswith("redis-cli")
    assert argv[1:] == [
        *("-s", s.redis_socket, "-n", "0", "--user", "admin"),
        *("--json", "-r", "3", "HGETALL", "baton:control"),
    ]
    assert env["REDISCLI_AUTH"] == "admin-secret" and "admin-secret" not in " ".join(argv)


def test_redis_cli_on_tcp_and_without_a_password_file(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_URL": "rediss://10.0.0.5:6380/2"})
    argv, env = rediscli.command(s, ["PING"], {"PATH": os.environ["PATH"], "REDISCLI_AUTH": "stale"})
    assert argv[1:] == ["--tls", "-h", "10.0.0.5", "-p", "6380", "-n", "2", "PING"]
    assert "REDISCLI_AUTH" not in env


@pytest.mark.parametrize("args", [["-a", "pw", "PING"], ["-r", "2", "--user", "admin", "PING"], ["-h", "x"]])
def test_redis_cli_refuses_the_flags_it_sets_itself(tmp_path: Path, args: list[str]):
    s = load({"BATON_HOME": str(tmp_path)})
    with pytest.raises(SettingsError, match="chooses the server and the user"):
        rediscli.command(s, args, {})


def test_redis_cli_passes_a_value_that_looks_like_a_flag_after_the_command(tmp_path: Path):
    s = load({"BATON_HOME": str(tmp_path)})
    argv, _ = rediscli.command(
        s, ["--scan", "--pattern", "baton:*", "ECHO", "-a"], {"PATH": os.environ["PATH"]}
    )
    assert argv[-5:] == ["--scan", "--pattern", "baton:*", "ECHO", "-a"]


def test_baton_redis_acl_writes_the_users_for_a_redis_run_elsewhere(tmp_path: Path, monkeypatch, capsys):
    from baton import cli

    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    monkeypatch.setenv("BATON_REDIS_URL", "redis://10.0.0.5:6379/0")
    assert cli.main(["redis-acl"]) == 0
    text = acl.acl_file(tmp_path).read_text()
    assert [ln.split()[1] for ln in text.splitlines()] == ["default", *REDIS_USERS]
    out = capsys.readouterr().out
    assert str(acl.acl_file(tmp_path)) in out
    assert not any(acl.password_file(tmp_path, u).read_text().strip() in out + text for u in REDIS_USERS)


def test_status_warns_of_a_redis_other_hosts_can_reach(tmp_path: Path):
    import fakeredis

    from control.views import collect

    r = fakeredis.FakeRedis(decode_responses=True)
    wide = load({"BATON_HOME": str(tmp_path), "BATON_REDIS_BIND": "0.0.0.0"})
    assert [p for p in collect(wide, r)["problems"] if p.startswith("redis: ") and "0.0.0.0:7379" in p]
    assert not [p for p in collect(load({"BATON_HOME": str(tmp_path)}), r)["problems"] if "redis" in p]


def test_redis_cli_talks_to_this_hosts_sentinel_else_the_first_that_answers(tmp_path: Path):
    s = load(
        {
            "BATON_HOME": str(tmp_path),
            "BATON_REDIS_USER": "admin",
            "BATON_REDIS_SENTINELS": "10.0.0.11:27379,10.0.0.12:27379,10.0.0.13:27379",
        }
    )
    write_secret(acl.password_file(tmp_path, "admin"), "admin-secret")
    env = {"PATH": os.environ["PATH"]}
    args = ["--sentinel", "SENTINEL", "FAILOVER", "baton"]

    def cmd(reachable: set[str], local: str = "") -> list[str]:
        argv, out = rediscli.command(
            s, args, env, reachable=lambda h, _p: h in reachable, local=lambda h, _p: h == local
        )
        assert out["REDISCLI_AUTH"] == "admin-secret" and "admin-secret" not in " ".join(argv)
        return argv[1:]

    assert cmd({"10.0.0.11", "10.0.0.13"}, local="10.0.0.13") == [
        *("-h", "10.0.0.13", "-p", "27379", "--user", "admin", "SENTINEL", "FAILOVER", "baton")
    ]
    assert cmd({"10.0.0.12", "10.0.0.13"})[:2] == ["-h", "10.0.0.12"]  # none here: the first up
    assert cmd({"10.0.0.12"}, local="10.0.0.13")[:2] == ["-h", "10.0.0.12"]  # this host's is down
    assert cmd(set())[:2] == ["-h", "10.0.0.11"]  # none answers: redis-cli reports the refusal
    with pytest.raises(SettingsError, match="names no Sentinel"):
        rediscli.command(load({"BATON_HOME": str(tmp_path)}), args, env)


def test_an_address_of_this_machine_is_local():
    assert rediscli._local("127.0.0.1", 27379)
    assert not rediscli._local("192.0.2.1", 27379)  # TEST-NET-1: routed away, never ours


def test_the_cli_user_may_mark_a_planned_stop():
    # `baton stop` writes stats' stack_stopped_ms; refused, the next start counts the whole
    # planned downtime as missed ticks (and says so in status).
    from state.keys import Keys

    grant = acl.GRANTS["cli"]
    assert any(getattr(Keys(PREFIX), w[0])(*w[1:]) == Keys(PREFIX).stats() for w in grant.write_keys)

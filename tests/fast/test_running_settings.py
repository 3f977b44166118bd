"""`baton status` reports the settings the running programs published (state/system.py,
control/running.py), not the caller's shell's, and names those the shell has differently."""

from __future__ import annotations

import fakeredis
import pytest

from baton import settings as settings_mod
from baton.errors import BadRequest
from baton.secretfiles import ensure_secret, secrets_dir
from control import commands as c
from control import slots, views
from control.context import Context
from control.running import api_url
from control.views import collect
from state.acl import ensure_passwords
from state.keys import Keys
from state.system import (
    API_SETTINGS,
    FEED_SETTINGS,
    PUBLISHED,
    WORKER_SETTINGS,
    SystemRepo,
    published_fields,
)

K = Keys("baton:")


@pytest.fixture
def r():
    return fakeredis.FakeRedis(decode_responses=True)


def publish(r, program, names, now_ms=1_000, **env):
    stack = settings_mod.load({"BATON_HOME": "/tmp/stack", **env})
    extra = {}
    if program == "api":
        extra = {"url": api_url(stack.api_host, stack.api_port), "dashboard_url": "x/"}
    SystemRepo(r, K).publish_system(program, published_fields(stack, names, now_ms, **extra))


def shell(**env):
    return settings_mod.load({"BATON_HOME": "/tmp/shell", **env})


def test_status_reports_the_published_tick_and_timeframes_and_what_the_shell_has_differently(r):
    publish(r, "worker-blue", WORKER_SETTINGS, BATON_TICK_MS="1000", BATON_TIMEFRAMES="15s,1m")
    st = collect(shell(), r)
    assert st["ticks"]["tick_ms"] == 1000
    assert st["system"]["settings"]["timeframes"] == ["15s", "1m"]
    assert st["system"]["published_by"]["tick_ms"] == "worker-blue"
    assert st["system"]["differs_from_shell"]["tick_ms"] == {"system": 1000, "shell": 5000}
    assert "stake_usd" not in st["system"]["differs_from_shell"]  # the same in both
    # The slots the stack configures are its own, not the shell's 5m/15m ones.
    r.hset(K.slots(), "btc-15s", '{"id":"btc-15s","asset":"btc","timeframe":"15s"}')
    assert [x["configured"] for x in collect(shell(), r)["slots"]] == [True]


def test_with_nothing_published_the_shells_settings_stand(r):
    st = collect(shell(BATON_TICK_MS="2000", BATON_API_PORT="7555"), r)
    assert st["ticks"]["tick_ms"] == 2000
    assert st["system"]["settings"] == {} and st["system"]["differs_from_shell"] == {}
    assert st["endpoints"]["api"] == "http://127.0.0.1:7555"
    assert st["endpoints"]["dashboard"] == "http://127.0.0.1:7555/"


def test_endpoints_list_the_api_and_dashboard_the_api_program_published(r):
    publish(r, "api", API_SETTINGS, BATON_API_PORT="7444")
    publish(r, "feed", FEED_SETTINGS, BATON_SIM_BINANCE_PORT="7555")
    st = collect(shell(), r)
    assert st["endpoints"]["api"] == "http://127.0.0.1:7444"
    assert st["endpoints"]["dashboard"] == "x/"
    assert st["endpoints"]["binance_ws"] == "ws://127.0.0.1:7555"
    assert st["system"]["differs_from_shell"]["api_port"] == {"system": 7444, "shell": 7390}


def test_the_active_colour_wins_over_a_worker_started_later(r):
    publish(r, "worker-blue", WORKER_SETTINGS, now_ms=1_000, BATON_TICK_MS="1000")
    publish(r, "worker-green", WORKER_SETTINGS, now_ms=2_000, BATON_TICK_MS="3000")
    assert collect(shell(), r)["ticks"]["tick_ms"] == 3000  # no lease: the one started last
    r.hset(
        K.lease(),
        mapping={"holder": "blue:h:1", "color": "blue", "release": "r1", "epoch": 4, "expires_ms": 2**50},
    )
    st = collect(shell(), r)
    assert st["active"]["color"] == "blue"
    assert st["ticks"]["tick_ms"] == 1000


def test_an_unreadable_published_value_is_reported_and_left_out(r):
    publish(r, "worker-blue", WORKER_SETTINGS, BATON_TICK_MS="1000", BATON_TIMEFRAMES="15s")
    r.hset(K.system("worker-blue"), mapping={"tick_ms": "soon", "lease_ms": '"long"'})
    st = collect(shell(), r)
    assert st["ticks"]["tick_ms"] == 5000  # the shell's, since the stack's cannot be read
    assert st["system"]["settings"]["timeframes"] == ["15s"]
    assert any("system:worker-blue tick_ms='soon' unreadable" in p for p in st["problems"])
    assert any("system:worker-blue lease_ms" in p for p in st["problems"])


def test_a_restarted_program_replaces_what_it_published(r):
    publish(r, "worker-blue", WORKER_SETTINGS, BATON_TICK_MS="1000")
    r.hset(K.system("worker-blue"), "obsolete", "1")
    publish(r, "worker-blue", WORKER_SETTINGS, BATON_TICK_MS="2000")
    raw = r.hgetall(K.system("worker-blue"))
    assert "obsolete" not in raw and raw["tick_ms"] == "2000"


def test_nothing_secret_is_published(r, tmp_path):
    # A stack with its Redis users' passwords and an API token on disk, and an external Redis.
    passwords = ensure_passwords(tmp_path)
    token = ensure_secret(secrets_dir(tmp_path) / "api-token")
    env = {"BATON_HOME": str(tmp_path), "BATON_REDIS_URL": "redis://127.0.0.1:7379/0"}
    stack = settings_mod.load(env)
    for program, names in (("worker-blue", WORKER_SETTINGS), ("feed", FEED_SETTINGS), ("api", API_SETTINGS)):
        SystemRepo(r, K).publish_system(program, published_fields(stack, names, 1, url="http://x"))
    published = repr([r.hgetall(k) for k in r.keys("baton:system:*")])
    shown = repr(collect(settings_mod.load(env), r))
    for secret in [*passwords.values(), token]:
        assert secret not in published and secret not in shown


@pytest.mark.parametrize(
    ("host", "url"),
    [("127.0.0.1", "http://127.0.0.1:1"), ("0.0.0.0", "http://127.0.0.1:1"), ("::1", "http://[::1]:1"),
     ("::", "http://[::1]:1"), ("baton.local", "http://baton.local:1")],
)  # fmt: skip
def test_api_url(host, url):
    assert api_url(host, 1) == url


def test_a_stake_change_is_checked_against_the_running_workers_limit_not_the_shells(r):
    r.hset(K.slots(), "btc-15s", '{"id":"btc-15s","asset":"btc","timeframe":"15s"}')
    publish(r, "worker-blue", WORKER_SETTINGS, BATON_MAX_STAKE_USD="25", BATON_TIMEFRAMES="15s")
    ctx = Context(shell(BATON_MAX_STAKE_USD="100"), r, supervisor=lambda *a: None)
    who = c.Actor(source="cli", who="alice")
    with pytest.raises(BadRequest, match="BATON_MAX_STAKE_USD=25"):
        slots.patch(ctx, who, "btc-15s", c.SlotPatch(stake_usd=30.0))
    assert slots.patch(ctx, who, "btc-15s", c.SlotPatch(stake_usd=20.0)).slot.stake_usd == 20.0
    # And the slot views call the stack's 15s slot configured, which this shell's 5m/15m lack.
    assert [v.configured for v in views.slot_views(ctx)] == [True]


def test_the_api_publishes_its_doors_settings(r):
    publish(r, "api", API_SETTINGS, BATON_METRICS_AUTH="token", BATON_API_HOSTS="baton.example:443")
    st = collect(shell(), r)
    assert st["system"]["settings"]["metrics_auth"] == "token"
    assert st["system"]["settings"]["api_hosts"] == ["baton.example:443"]
    assert st["system"]["differs_from_shell"]["metrics_auth"] == {"system": "token", "shell": "loopback"}


def test_what_is_published_are_settings_and_never_where_a_secret_is():
    fields = set(settings_mod.Settings.__struct_fields__)
    assert fields >= PUBLISHED
    # The Redis URL may hold a password; the others name where secrets are read from.
    assert not PUBLISHED & {"redis_url", "credentials_file", "api_token_file", "home"}

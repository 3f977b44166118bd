"""The one way into Redis: every client has the same options, and every Lua file is
registered by its name, once per client."""

from __future__ import annotations

import gc
import weakref

import fakeredis
import pytest

from baton.settings import load
from state import connection
from state.deploys import DeploysRepo
from state.keys import Keys
from state.scripts import LUA_DIR, names, scripts_for, source

SETTINGS = load({"BATON_REDIS_URL": "redis://127.0.0.1:1/0"})


def _kwargs(r) -> dict:
    return r.connection_pool.connection_kwargs


@pytest.mark.parametrize("make", [connection.client, connection.async_client])
def test_every_client_reads_garbage_as_garbage_and_retries_a_lost_connection(make) -> None:
    kw = _kwargs(make(SETTINGS))
    assert kw["decode_responses"] is True
    assert kw["encoding_errors"] == "replace"
    assert kw["socket_timeout"] == connection.TIMEOUT_S
    assert kw["socket_connect_timeout"] == connection.CONNECT_TIMEOUT_S
    assert kw["socket_keepalive"] is True
    assert kw["health_check_interval"] == connection.HEALTH_CHECK_S
    retry = kw["retry"]
    assert retry.get_retries() == connection.RETRIES


@pytest.mark.parametrize("make", [connection.client, connection.async_client])
def test_a_use_chooses_only_its_timeout_and_bytes_or_text(make) -> None:
    kw = _kwargs(make(SETTINGS, timeout_s=connection.BLOCKING, decoded=False))
    assert kw["socket_timeout"] is None
    assert kw["decode_responses"] is False
    assert kw["encoding_errors"] == "replace"


def test_every_lua_file_is_a_script_by_its_name() -> None:
    files = {p.stem for p in LUA_DIR.glob("*.lua") if not p.stem.startswith("_")}
    assert set(names()) == files
    scripts = scripts_for(fakeredis.FakeRedis())
    for name in files:
        assert getattr(scripts, name).script == source(name)
    with pytest.raises(AttributeError):
        _ = scripts.no_such_script


def test_every_script_is_headed_by_its_keys_and_argv() -> None:
    for path in LUA_DIR.glob("*.lua"):
        if path.stem.startswith("_"):
            continue
        head = []
        for line in path.read_text().splitlines():
            if not line.startswith("--"):
                break
            head.append(line)
        assert any("KEYS" in line for line in head), path.name
        assert any("ARGV" in line for line in head), path.name


def test_the_ledger_fragment_goes_before_the_scripts_that_book_money_only() -> None:
    fragment = (LUA_DIR / "_ledger.lua").read_text()
    booking = {n for n in names() if fragment in source(n)}
    assert booking == {"settle_position", "ledger_deposit", "record_exit"}
    assert all(source(n).endswith((LUA_DIR / f"{n}.lua").read_text()) for n in booking)


def test_the_counts_fragment_goes_before_every_script_that_changes_intents_or_positions() -> None:
    fragment = (LUA_DIR / "_counts.lua").read_text()
    counting = {n for n in names() if fragment in source(n)}
    assert counting == {
        "intent_adopt",
        "intent_commit",
        "intent_update",
        "record_fill",
        "record_exit",
        "settle_position",
        "history_prune",
        "counts_recount",
    }


def test_a_fragment_brings_the_fragments_it_uses_before_it() -> None:
    """_ledger.lua's check uses _check.lua's functions: a script that books money gets both,
    in that order, though it calls none of _check.lua's functions itself."""
    check, ledger = ((LUA_DIR / f).read_text() for f in ("_check.lua", "_ledger.lua"))
    assert source("ledger_deposit").startswith(check + "\n" + ledger)
    assert check not in source("candles_read")  # reads only: nothing to check


def test_scripts_are_registered_once_per_client() -> None:
    r, other = fakeredis.FakeRedis(), fakeredis.FakeRedis()
    assert scripts_for(r) is scripts_for(r)
    assert scripts_for(r) is not scripts_for(other)


def test_the_deploy_lock_is_released_by_its_holder_only() -> None:
    deploys = DeploysRepo(fakeredis.FakeRedis(decode_responses=True), Keys("baton:"))
    assert deploys.take_lock("mine", 60_000)
    assert not deploys.take_lock("theirs", 60_000)
    # A retried SET NX whose first attempt landed (lost reply) finds its own token.
    assert deploys.take_lock("mine", 60_000)
    assert deploys.release_lock("theirs") == 0
    assert deploys.r.get("baton:deploy:lock") == "mine"
    assert deploys.release_lock("mine") == 1
    assert deploys.r.get("baton:deploy:lock") is None


def test_a_client_and_its_scripts_are_freed_together() -> None:
    r = connection.client(SETTINGS)
    assert scripts_for(r) is scripts_for(r)
    gone = weakref.ref(r)
    del r
    gc.collect()
    assert gone() is None, "the script registry kept a client alive"

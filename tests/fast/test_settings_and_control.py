import pytest

from baton.errors import SettingsError
from baton.settings import load, timeframe_seconds
from state.control import parse_control


def test_defaults_give_sixteen_slots_and_five_second_ticks():
    s = load({})
    assert s.tick_ms == 5000 and len(s.slot_ids()) == 16
    assert s.embedded_redis and s.redis_url == f"unix://{s.home}/var/run/redis/redis.sock?db=0"
    assert s.redis_user == "cli" and not s.redis_bind


def test_environment_overrides_apply():
    s = load(
        {
            "BATON_TICK_MS": "1000",
            "BATON_TIMEFRAMES": "15s,1m",
            "BATON_ASSETS": "btc,eth",
            "BATON_REDIS_URL": "redis://10.1.1.1:6000/2",
        }
    )
    assert s.tick_ms == 1000 and s.slot_ids() == ["btc-15s", "btc-1m", "eth-15s", "eth-1m"]
    assert not s.embedded_redis


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"BATON_TICK_MS": "fast"}, "BATON_TICK_MS"),
        ({"BATON_TIMEFRAMES": "15x"}, "BATON_TIMEFRAMES"),
        ({"BATON_STAKE_USD": "nan"}, "BATON_STAKE_USD"),
        ({"BATON_ASSETS": "b t c"}, "BATON_ASSETS"),
    ],
)
def test_a_bad_value_names_its_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        load(env)


def test_timeframes_parse_to_seconds():
    assert [timeframe_seconds(t) for t in ("15s", "5m", "1h")] == [15, 300, 3600]


def test_control_flags_fail_safe_on_garbage():
    assert not parse_control({}).halted
    f = parse_control({"halted": "0", "paused": "maybe"})
    assert not f.halted and f.paused and "maybe" in f.problems[0]
    assert parse_control({"halted": "1", "halt_reason": "x"}).halt_reason == "x"

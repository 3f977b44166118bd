"""Slots managed live: `baton slots add|remove|set` (the CLI in-process over fakeredis), the
rules a slot is checked against (control/slot_rules.py), the seeding that skips removed ids,
control.json's add_slot/remove_slot, and the tick's slot list following the slots hash."""

from __future__ import annotations

import json
import shutil

import pytest

from baton.settings import REPO_ROOT, load
from control import commands as c
from control import slot_rules
from control.ops import Ops
from kernel.clock import wall_ms
from kernel.tick import TickRunner
from kernel.windows import window_bounds
from state.structs import POSITION, SLOT, Position, Slot
from tests.fast.rig import enter_at_once, last_five_seconds
from tests.fast.test_cli import K, last_audit, run, slot
from tests.fast.test_cli import env as env
from tests.fast.test_cli import r as r
from tests.fast.test_cli import sup as sup
from worker.lifecycle import configured_slots

# A second strategy with parameters of its own, beside snipe, in a strategies directory of
# the test's: switching between the two shows which parameters go and which stay.
FADE = """
from types import MappingProxyType
from kernel.strategy_api import Pass
API = 2
DEFAULTS = MappingProxyType({"edge": 0.1, "band": 0.2})
PARAM_BOUNDS = MappingProxyType({"edge": (0.0, 1.0), "band": (0.0, 0.5)})
def check_params(p):
    return "band must not exceed edge x 4" if p["band"] > 4 * p["edge"] else ""
def evaluate(inp):
    return Pass(reason="fade: nothing to fade")
"""


@pytest.fixture(autouse=True)
def strategies(tmp_path, monkeypatch):
    root = tmp_path / "checkout"
    d = root / "worker" / "strategies"
    d.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "worker" / "strategies" / "snipe.py", d / "snipe.py")
    (d / "fade.py").write_text(FADE)
    (d / "broken.py").write_text("this is not python\n")
    (d / "_helpers.py").write_text("X = 1\n")
    monkeypatch.setattr(slot_rules, "ROOT", root)
    return d


def test_slots_add_creates_a_slot_with_its_strategy_stake_and_params(r, sup, capsys):
    code, out, _ = run(
        capsys,
        *("slots", "add", "btc-15m.fade", "--asset", "btc", "--timeframe", "15m", "--strategy", "fade"),
        *("--stake", "2.5", "--param", "band=0.3", "--json"),
    )
    assert code == 0, out
    res = json.loads(out)
    assert res["changed"] and res["slot"]["strategy"] == "fade" and res["slot"]["params"] == {"band": 0.3}
    assert slot(r, "btc-15m.fade") == Slot(
        id="btc-15m.fade", asset="btc", timeframe="15m", stake_usd=2.5, strategy="fade", params={"band": 0.3}
    )
    a = last_audit(r)
    assert a["action"] == "add_slot" and a["target"] == "btc-15m.fade" and a["result"] == "ok"
    # and `baton status --json` lists it with its strategy
    code, out, _ = run(capsys, "status", "--json")
    listed = {s["id"]: s for s in json.loads(out)["slots"]}
    assert listed["btc-15m.fade"]["strategy"] == "fade" and listed["btc-15m"]["strategy"] == "snipe"
    assert listed["btc-15m.fade"]["params"] == {"band": 0.3} and listed["btc-15m.fade"]["stake_usd"] == 2.5


def test_slots_add_takes_the_stacks_stake_when_none_is_given(r, sup, capsys, monkeypatch):
    monkeypatch.setenv("BATON_STAKE_USD", "3")
    code, out, err = run(
        capsys, "slots", "add", "eth-1h", "--asset", "eth", "--timeframe", "1h", "--strategy", "snipe"
    )
    assert code == 0, err
    assert "eth-1h: added" in out and slot(r, "eth-1h").stake_usd == 3.0 and slot(r, "eth-1h").params == {}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["BTC", "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe"], "bad slot id 'BTC'"),
        (["x" * 65, "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe"], "bad slot id"),
        (["a", "--asset", "b", "--timeframe", "15m", "--strategy", "snipe"], "bad asset 'b'"),
        (["a", "--asset", "btc!", "--timeframe", "15m", "--strategy", "snipe"], "bad asset"),
        (
            ["a", "--asset", "btc", "--timeframe", "7m", "--strategy", "snipe"],
            "bad timeframe '7m': one of 5m",
        ),
        (["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "nope"], "no strategy 'nope'"),
        (["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "_helpers"], "bad strategy name"),
        (["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "broken"], "cannot be loaded"),
        (["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe", "--stake", "0"], "positive"),
        (["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe", "--stake", "99"], "risk limit"),
        (
            ["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe", "--param", "x=1"],
            "no parameter 'x'",
        ),
        (
            ["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "fade", "--param", "band=0.9"],
            "outside",
        ),
        (
            ["a", "--asset", "btc", "--timeframe", "15m", "--strategy", "fade", "--param", "edge=0.01"],
            "band must not exceed edge x 4",
        ),
        (["btc-15m", "--asset", "btc", "--timeframe", "15m", "--strategy", "snipe"], "exists already"),
    ],
)
def test_slots_add_refuses_a_bad_slot_naming_what_is_wrong(r, sup, capsys, argv, message):
    before = r.hgetall(K.slots())
    code, _, err = run(capsys, "slots", "add", *argv)
    assert code == 1 and message in err, err
    assert r.hgetall(K.slots()) == before
    assert last_audit(r)["result"] == "refused"


def test_the_stacks_own_timeframes_are_allowed_beside_the_venues(r, sup, capsys, monkeypatch):
    monkeypatch.setenv("BATON_TIMEFRAMES", "15s")
    code, _, err = run(
        capsys, "slots", "add", "a", "--asset", "btc", "--timeframe", "15s", "--strategy", "snipe"
    )
    assert code == 0, err


def test_switching_strategy_drops_the_parameters_the_new_one_does_not_declare(r, sup, capsys):
    run(capsys, "slots", "set", "btc-15m", "--param", "edge=0.05", "--param", "entry_s=20")
    code, out, err = run(capsys, "slots", "set", "btc-15m", "--strategy", "fade", "--param", "band=0.1")
    assert code == 0, err
    assert "dropped parameters it does not declare: entry_s=20" in out
    # edge is fade's too: it stays (checked against fade's bounds)
    assert slot(r, "btc-15m").strategy == "fade" and slot(r, "btc-15m").params == {"edge": 0.05, "band": 0.1}
    code, out, _ = run(capsys, "slots", "set", "btc-15m", "--strategy", "snipe", "--disable", "--json")
    res = json.loads(out)
    assert res["notes"] == ["strategy 'fade' -> 'snipe': dropped parameters it does not declare: band=0.1"]
    assert slot(r, "btc-15m") == Slot(
        id="btc-15m", asset="btc", timeframe="15m", enabled=False, params={"edge": 0.05}
    )


def test_slots_remove_remembers_the_id_so_seeding_does_not_bring_it_back(r, sup, capsys):
    code, out, _ = run(capsys, "slots", "remove", "eth-15m")
    assert code == 0 and "eth-15m: removed" in out
    assert r.hkeys(K.slots()) == ["btc-15m"] and r.smembers(K.slots_removed()) == {"eth-15m"}
    assert last_audit(r)["action"] == "remove_slot"
    code, _, err = run(capsys, "slots", "remove", "eth-15m")
    assert code == 1 and "no slot 'eth-15m'" in err
    # adding it again is an operator's choice, and forgets the removal
    run(capsys, "slots", "add", "eth-15m", "--asset", "eth", "--timeframe", "15m", "--strategy", "snipe")
    assert r.smembers(K.slots_removed()) == set()


async def test_seeding_creates_missing_slots_keeps_edits_and_skips_removed_ids(store):
    k = store.k
    edited = Slot(id="btc-15s", asset="btc", timeframe="15s", stake_usd=1.0)
    await store.r.hset(k.slots(), "btc-15s", SLOT.encode(edited))
    await store.r.sadd(k.slots_removed(), "eth-15s")
    seeds = load({"BATON_ASSETS": "btc,eth,sol,xrp", "BATON_TIMEFRAMES": "15s"})
    created = await store.ensure_slots(configured_slots(seeds))
    assert created == 2
    assert sorted(await store.r.hkeys(k.slots())) == ["btc-15s", "sol-15s", "xrp-15s"]
    assert SLOT.decode(await store.r.hget(k.slots(), "btc-15s")).stake_usd == 1.0
    assert SLOT.decode(await store.r.hget(k.slots(), "sol-15s")).params == {}  # declared defaults apply


def test_slots_remove_is_refused_while_the_slot_holds_a_position_in_its_window(r, sup, capsys):
    start_s, end_s = window_bounds(_now_ms(), "15m")
    pos = Position(
        id=f"btc-15m:{start_s}",
        slot="btc-15m",
        asset="btc",
        window_start_s=start_s,
        window_end_s=end_s,
        side="up",
        token_id="1",
        condition_id="c",
        shares_micros=10_000_000,
        cost_micros=5_000_000,
        opened_ms=start_s * 1000,
        intent_id=f"btc-15m:{start_s}:entry",
    )
    r.hset(K.positions_open(), pos.id, POSITION.encode(pos).decode())
    code, _, err = run(capsys, "slots", "remove", "btc-15m")
    assert code == 1 and "holds an open position" in err and "--force" in err
    assert r.hexists(K.slots(), "btc-15m")
    code, out, err = run(capsys, "slots", "remove", "btc-15m", "--force")
    assert code == 0 and "it settles at the window's end" in out, err
    assert not r.hexists(K.slots(), "btc-15m")


def test_control_json_adds_and_removes_slots(r, sup, env):
    ops = Ops(load(), r, supervisor=sup)
    actor = c.Actor(source="file", who="alice")
    cmd = c.decode_command(
        b'{"action": "add_slot", "id": "sol-5m", "asset": "sol", "timeframe": "5m", "strategy": "fade",'
        b' "params": {"edge": 0.2}}'
    )
    res = ops.apply(actor, cmd)
    assert isinstance(res, c.SlotResult) and res.slot.strategy == "fade"
    assert slot(r, "sol-5m").params == {"edge": 0.2}
    ops.apply(actor, c.decode_command(b'{"action": "patch_slot", "slot": "sol-5m", "strategy": "snipe"}'))
    assert slot(r, "sol-5m").strategy == "snipe" and slot(r, "sol-5m").params == {"edge": 0.2}
    ops.apply(actor, c.decode_command(b'{"action": "remove_slot", "slot": "sol-5m"}'))
    assert not r.hexists(K.slots(), "sol-5m")


def _now_ms() -> int:
    return wall_ms()


# --- the worker's slot list follows the slots hash ------------------------------------------------


async def test_the_tick_follows_the_slots_hash_a_slot_added_runs_and_one_removed_stops(rig):
    asked: list[str] = []
    rig.resolver = lambda name: last_five_seconds(asked) if name == "quiet" else enter_at_once([])
    await rig.run_ticks(1)
    extra = Slot(id="btc-15s.quiet", asset="btc", timeframe="15s", strategy="quiet", stake_usd=1.0)
    await rig.store.r.hset(rig.store.k.slots(), extra.id, SLOT.encode(extra))
    outs = await rig.run_ticks(16)  # a whole window: its last 5 s come
    assert extra.id in {i for i, _, _ in rig.runner.configured}
    assert asked, "the added slot's strategy was never asked"
    assert all(not o.problems for o in outs), [o.problems for o in outs if o.problems]
    # removed: it stops at the next tick, and the other slots go on
    await rig.store.r.hdel(rig.store.k.slots(), extra.id)
    await rig.run_ticks(1)
    asked.clear()
    outs = await rig.run_ticks(16)
    assert asked == [] and extra.id not in {i for i, _, _ in rig.runner.configured}
    assert sum(o.record.evaluated for o in outs) > 0


async def test_a_slot_with_an_unparsable_timeframe_is_reported_and_the_others_run(rig):
    bad = Slot(id="btc-7x", asset="btc", timeframe="7x")
    await rig.store.r.hset(rig.store.k.slots(), bad.id, SLOT.encode(bad))
    outs = await rig.run_ticks(2)
    assert any("slot btc-7x is not run: bad timeframe '7x'" in p for o in outs for p in o.problems)
    assert len(rig.runner.configured) == 4


async def test_a_new_runner_reads_the_slot_list_before_its_first_tick(rig):
    """Not the settings' seeds: a slot removed is not swept or traded, one added is."""
    await rig.store.r.hdel(rig.store.k.slots(), "xrp-15s")
    extra = Slot(id="eth-15s.b", asset="eth", timeframe="15s")
    await rig.store.r.hset(rig.store.k.slots(), extra.id, SLOT.encode(extra))
    runner = TickRunner(rig.settings, rig.store, rig.venue, rig.clock, rig.runner.ident)
    assert not runner.refs.followed
    await runner.run(rig.clock.now_ms() // 1000 + 1)
    assert [i for i, _, _ in runner.configured] == ["btc-15s", "eth-15s", "eth-15s.b", "sol-15s"]


# --- the API's doors -----------------------------------------------------------------------------


async def test_the_api_adds_patches_and_removes_slots(api, strategies):
    body = {"id": "btc-5m.fade", "asset": "btc", "timeframe": "5m", "strategy": "fade", "stake_usd": 2}
    status, res, _ = await api.call("POST", "/slots", body)
    assert status == 200 and res["slot"]["strategy"] == "fade", res
    status, res, _ = await api.call("POST", "/slots", body)
    assert status == 409 and "exists already" in res["error"]
    status, res, _ = await api.call("POST", "/slots", {**body, "id": "x", "timeframe": "2m"})
    assert status == 400 and "bad timeframe '2m'" in res["error"]
    status, res, _ = await api.call(
        "PATCH", "/slots/btc-5m.fade", {"strategy": "snipe", "params": {"entry_s": 9}}
    )
    assert status == 200 and res["slot"]["params"] == {"entry_s": 9.0} and res["slot"]["strategy"] == "snipe"
    status, res, _ = await api.call("DELETE", "/slots/btc-5m.fade?force=false")
    assert status == 200 and res["removed"] == "btc-5m.fade"
    status, res, _ = await api.call("DELETE", "/slots/btc-5m.fade")
    assert status == 404
    assert [e["action"] for e in api.audit()[:4]] == ["remove_slot", "remove_slot", "patch_slot", "add_slot"]
    status, res, _ = await api.call("GET", "/strategies")
    by_name = {s["name"]: s for s in res["strategies"]}
    assert by_name["fade"]["defaults"] == {"edge": 0.1, "band": 0.2} and by_name["fade"]["bounds"][
        "band"
    ] == [0, 0.5]
    assert by_name["snipe"]["error"] == "" and "cannot be loaded" in by_name["broken"]["error"]
    assert "_helpers" not in by_name


async def test_readiness_passes_over_a_slot_whose_strategy_is_not_in_the_release_yet(rig):
    """`baton slots add --strategy new` before `baton reload`: the worker still gets ready."""
    extra = Slot(id="btc-15s.new", asset="btc", timeframe="15s", strategy="not_reloaded_yet")
    await rig.store.r.hset(rig.store.k.slots(), extra.id, SLOT.encode(extra))
    rig.resolver = None  # the worker's own resolver: worker.strategies.<name>
    assert await rig.runner.dry_run() == 5
    outs = await rig.run_ticks(15)
    assert any("not_reloaded_yet" in p for o in outs for p in o.problems)
    assert sum(o.record.orders for o in outs) > 0, "the other slots trade"


def test_a_removed_setting_is_named_in_one_warning_and_never_refused(monkeypatch, caplog):
    from baton import settings

    monkeypatch.setattr(settings, "_warned", set())
    with caplog.at_level("WARNING", logger="baton.settings"):
        for _ in range(2):
            s = settings.load({"BATON_SNIPE_EDGE": "0.2", "BATON_SNIPE_ENTRY_S": "oops"})
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 2, warned  # one per variable, once per process
    assert "BATON_SNIPE_EDGE is no longer read (ignored)" in warned[0] and "--param edge=X" in warned[0]
    assert not hasattr(s, "snipe_edge")


async def test_an_adoption_sweep_covers_a_slot_added_since_the_last_tick(rig):
    """A standby taking over after a long wait, or a primary change: the sweep runs after the
    tick's read of the slots hash, so it looks through today's slots, not those of before."""
    await rig.run_ticks(1)
    extra = Slot(id="sol-15s.b", asset="sol", timeframe="15s")
    await rig.store.r.hset(rig.store.k.slots(), extra.id, SLOT.encode(extra))
    await rig.clock.sleep_until_ms(rig.clock.now_ms() + 60_000)
    seen = []
    real = rig.runner.adopt

    async def adopt(now_ms):
        seen.append({r.id for r in rig.runner.refs.at(now_ms)})
        return await real(now_ms)

    rig.runner.adopt = adopt
    rig.runner.adopter.owe("a takeover")
    await rig.run_ticks(1)
    assert seen and extra.id in seen[0]


@pytest.mark.parametrize(
    "declared",
    [
        "DEFAULTS = 3\n",
        "DEFAULTS = {'a': 1.0}\nPARAM_BOUNDS = {'a': 5}\n",
        "DEFAULTS = {'a': 1.0}\nPARAM_BOUNDS = {'a': ('x', 'y')}\n",
    ],
)
def test_a_strategy_declaring_its_parameters_wrongly_is_a_clear_refusal(declared):
    import types

    from baton.errors import BadRequest
    from control.slot_rules import Declarations

    mod = types.ModuleType("broken")
    exec(declared, mod.__dict__)
    with pytest.raises(BadRequest, match="declares its parameters wrongly"):
        Declarations("broken", mod)

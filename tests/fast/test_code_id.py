"""A record names the code that made it by content (kernel/input_log.py Evaluation.code,
kernel/strategy_store.py), so replay runs a decision's own code after `baton reload` rewrote
its release's file in place, and after `releases.prune` deleted the release."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from textwrap import dedent

from control.replay import Code, replay
from deploy import releases
from deploy.reload import sync_strategies
from kernel import strategy_store
from kernel.input_log import Evaluation, decode_batch, evaluation
from kernel.notes import DecisionNotes
from kernel.strategy_api import Pass, SlotInput
from kernel.strategy_store import code_id
from tests.fast.test_input_log_store import _entries, _input
from tests.fast.test_replay import END_MS, START_MS, Known

STRATEGY = "edgy"


def version(tag: str, helper: bool = False) -> str:
    """A strategy whose every answer names `tag` (and, with `helper`, its release's sibling)."""
    imports = "from ._edge import EDGE\n" if helper else "EDGE = 'none'\n"
    return dedent(
        f"""
        from kernel.strategy_api import Pass
        {imports}

        def evaluate(inp):
            return Pass(reason=f"{tag} edge {{EDGE}}")
        """
    )


def source(tmp_path: Path, code: str, name: str = "src", helper: str = "") -> Path:
    """A source tree holding every release package (empty but worker/strategies)."""
    src = tmp_path / name
    for package in releases.PACKAGES:
        (src / package).mkdir(parents=True, exist_ok=True)
    d = src / "worker" / "strategies"
    d.mkdir()
    (d / f"{STRATEGY}.py").write_text(code)
    if helper:
        (d / "_edge.py").write_text(helper)
    return src


def records(release: str, code: str, answer: str, n: int = 3) -> list[Evaluation]:
    return [
        evaluation(
            t,
            "btc-5m",
            START_MS // 1000,
            START_MS + t * 5000,
            STRATEGY,
            release,
            _input(now_ms=START_MS + t * 5000),
            Pass(reason=answer),
            code=code,
        )
        for t in range(n)
    ]


def test_a_record_made_before_a_reload_replays_with_its_own_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    v1, v2 = version("v1"), version("v2")
    src = source(tmp_path, v1)
    rel = releases.stage(home, source=src)
    before = records(rel.id, code_id(v1.encode()), "v1 edge none")
    # `baton reload`: v2 is copied into the running release, in place; the release id stays.
    (src / "worker" / "strategies" / f"{STRATEGY}.py").write_text(v2)
    assert sync_strategies(rel.path, source=src) == [STRATEGY]
    installed = rel.path / "worker" / "strategies" / f"{STRATEGY}.py"
    assert installed.read_text() == v2
    after = records(rel.id, code_id(v2.encode()), "v2 edge none")

    rep = replay(before + after, Code(home), Known(), START_MS, END_MS)
    assert (rep.decisions, rep.equal, rep.differ, rep.notes) == (6, 6, 0, [])
    # Forced to the new code, the records made before the reload differ, and only they.
    forced = replay(before + after, Code(home, strategy_file=installed), Known(), START_MS, END_MS)
    assert (forced.equal, forced.differ) == (3, 3)
    assert {d.tick for d in forced.slots["btc-5m"].differences} == {0, 1, 2}
    assert all(d.replayed.reason == "v2 edge none" for d in forced.slots["btc-5m"].differences)
    # A record of before the code was recorded names none: its release's file (now v2) runs,
    # which is exactly the difference the code id removes.
    old = replay(records(rel.id, "", "v1 edge none"), Code(home), Known(), START_MS, END_MS)
    assert old.differ == 3


def test_a_kept_version_imports_its_releases_sibling(tmp_path: Path) -> None:
    """var/strategies/<code>.py has no siblings beside it: it is loaded under its own name in
    a throwaway package over its release's strategies directory."""
    home = tmp_path / "home"
    v1, v2 = version("v1", helper=True), version("v2", helper=True)
    src = source(tmp_path, v1, helper="EDGE = 0.07\n")
    rel = releases.stage(home, source=src)
    (src / "worker" / "strategies" / f"{STRATEGY}.py").write_text(v2)
    assert sync_strategies(rel.path, source=src) == [STRATEGY]  # checked with its sibling too
    recs = records(rel.id, code_id(v1.encode()), "v1 edge 0.07")
    rep = replay(recs, Code(home, checkout=tmp_path / "nowhere"), Known(), START_MS, END_MS)
    assert (rep.equal, rep.differ, rep.notes) == (3, 0, [])
    assert not any(k.startswith("_baton_pkg_") for k in sys.modules)  # nothing left behind


def test_a_pruned_releases_records_still_replay_with_their_code(tmp_path: Path) -> None:
    home = tmp_path / "home"
    v1 = version("v1")
    first = releases.stage(home, source=source(tmp_path, v1, "src0"))
    recs = records(first.id, code_id(v1.encode()), "v1 edge none")
    for i in range(1, 7):  # six more deploys: the first release is pruned
        releases.stage(home, source=source(tmp_path, version(f"w{i}"), f"src{i}"))
    assert first.id in releases.prune(home, keep=5)
    assert not first.path.exists()
    # The checkout has no such strategy: only the kept version can answer.
    rep = replay(recs, Code(home, checkout=tmp_path / "nowhere"), Known(), START_MS, END_MS)
    assert (rep.decisions, rep.equal, rep.differ) == (3, 3, 0)
    # Its kept version is missing too: replay says so, and falls back to the checkout.
    kept = strategy_store.code_path(home, code_id(v1.encode()))
    assert kept is not None
    kept.unlink()
    gone = replay(recs, Code(home, checkout=tmp_path / "nowhere"), Known(), START_MS, END_MS)
    assert gone.differ == 3 and any("is not in" in n and "var/strategies" in n for n in gone.notes)


def test_versions_are_kept_once_owner_only_and_a_bad_code_names_no_path(tmp_path: Path) -> None:
    code = strategy_store.keep(tmp_path, b"x = 1\n")
    assert code == code_id(b"x = 1\n") and len(code) == 16
    assert strategy_store.keep(tmp_path, b"x = 1\n") == code
    d = strategy_store.store_dir(tmp_path)
    assert [p.name for p in d.iterdir()] == [f"{code}.py"]
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(d / f"{code}.py").st_mode) == 0o600
    assert strategy_store.code_path(tmp_path, "../../etc/passwd") is None
    assert strategy_store.code_path(tmp_path, code.upper()) is None


async def test_each_ticks_records_name_the_code_running_when_it_ran(store) -> None:
    """The worker sets the map at load and reload (worker/lifecycle.py); a tick kept before a
    reload and flushed after it still names the code it ran."""
    notes = DecisionNotes(store, 500, "r1")

    class Ref:
        def __init__(self, sid: str) -> None:
            self.id, self.window_start_s = sid, 0

    def kept(tick: int) -> list:
        inp: SlotInput = _input(now_ms=START_MS + tick * 5000)
        return [
            [Ref("btc-5m"), "snipe", inp, Pass(reason="x"), "", ""],
            [Ref("eth-5m"), "other", inp, None, "", ""],
        ]

    notes.code = {"snipe": "aaaaaaaaaaaaaaaa"}
    notes.keep(1, START_MS + 5000, kept(1))
    notes.code = {"snipe": "bbbbbbbbbbbbbbbb"}  # reloaded before the flush
    notes.keep(2, START_MS + 10_000, kept(2))
    assert await notes.flush() == []
    got = {b.tick: decode_batch(b.data) for b, _ in await _entries(store)}
    assert [(e.strategy, e.code) for e in got[1]] == [("snipe", "aaaaaaaaaaaaaaaa"), ("other", "")]
    assert [(e.strategy, e.code) for e in got[2]] == [("snipe", "bbbbbbbbbbbbbbbb"), ("other", "")]


def test_the_reloader_names_and_keeps_the_code_running(tmp_path: Path, monkeypatch) -> None:
    from tests.fast.test_reload import Pkg, strategy

    name = "codeid_strats"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        pkg = Pkg(name, root)
        pkg.write("alpha", strategy("v1"))
        r = pkg.reloader()
        r.baseline()
        v1 = code_id((root / "alpha.py").read_bytes())
        assert r.code_ids() == {"alpha": v1}
        home = tmp_path / "home"
        assert r.keep_running(home) == []
        assert strategy_store.code_path(home, v1).read_bytes() == (root / "alpha.py").read_bytes()  # type: ignore[union-attr]
    finally:
        for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
            del sys.modules[key]


async def test_a_ready_worker_names_its_strategies_code_and_keeps_them(rig, tmp_path: Path) -> None:
    import msgspec

    from worker.lifecycle import Worker

    s = msgspec.structs.replace(rig.settings, home=str(tmp_path))
    w = Worker(s, rig.store, rig.venue, rig.clock, "blue")
    await w.ready()
    assert w.runner is not None
    code = w.runner.entries.notes.code
    assert code == w.reloader.code_ids() and "snipe" in code
    kept = strategy_store.code_path(tmp_path, code["snipe"])
    assert kept is not None and kept.read_bytes() == (w.reloader.directory / "snipe.py").read_bytes()

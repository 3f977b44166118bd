"""Hot reload of strategy modules (kernel/reload.py): validate off to the side, swap in place,
or refuse; and the fingerprint that tells it a strategy file changed. The dry evaluation it
gates on is tested in test_strategy_check.py."""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import os
import sys
import time
import uuid
from pathlib import Path
from textwrap import dedent
from types import ModuleType

import msgspec
import pytest

from kernel.reload import ReloadResult, StrategyReloader
from kernel.strategy_api import SlotInput
from kernel.strategy_check import sample_inputs

NOW = 1_700_000_123_456
SAMPLE = sample_inputs(NOW)[0]  # has asks: the test strategies return a Decision on it


def strategy(tag: str, needs_quotes: bool = True) -> str:
    """A valid strategy whose decisions carry `tag` as their reason (tags of equal length
    give files of equal size: the stale-bytecode trap of a same-second edit)."""
    src = dedent(
        f"""
        from kernel.strategy_api import Decision, SlotInput


        def evaluate(inp: SlotInput) -> Decision | None:
            if inp.up_ask is None:
                return None
            return Decision(side="up", limit_price=0.5, stake_usd=inp.stake_usd, p_up=0.6, reason="{tag}")
        """
    )
    if needs_quotes:
        src += "\n\ndef needs_quotes(inp: SlotInput) -> bool:\n    return True\n"
    return src


def returning(expr: str, needs: str = "True") -> str:
    """A strategy whose evaluate returns `expr` whenever asks are present."""
    return dedent(
        f"""
        from kernel.strategy_api import Decision, Exit, SlotInput


        def needs_quotes(inp):
            return {needs}


        def evaluate(inp):
            return None if inp.up_ask is None else {expr}
        """
    )


class Pkg:
    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

    def write(self, short: str, source: str) -> None:
        (self.root / f"{short}.py").write_text(source)

    def module(self, short: str) -> ModuleType:
        return importlib.import_module(f"{self.name}.{short}")

    def sha12(self, short: str) -> str:
        return hashlib.sha256((self.root / f"{short}.py").read_bytes()).hexdigest()[:12]

    def reloader(self, **kw) -> StrategyReloader:
        kw.setdefault("clock_ms", lambda: NOW)
        return StrategyReloader(self.name, **kw)


@pytest.fixture
def pkg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    name = f"tmpstrats_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    # Write .pyc files (PYTHONDONTWRITEBYTECODE may be set): a same-size edit in the same second
    # must not reload the stale bytecode of the previous version.
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    yield Pkg(name, root)
    for key in [k for k in sys.modules if k == name or k.startswith(f"{name}.")]:
        del sys.modules[key]
    sys.path_importer_cache.pop(str(tmp_path), None)


@pytest.fixture
def alpha(pkg: Pkg) -> ModuleType:
    """Module `alpha` at version v1, imported, and a package ready for a baseline."""
    pkg.write("alpha", strategy("v1"))
    return pkg.module("alpha")


def no_check_modules_left() -> bool:
    return not any("_baton_check_" in k for k in sys.modules)


async def test_nothing_changed_gives_none(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    fp = r.fingerprint()
    assert list(fp) == ["alpha"] and len(fp["alpha"]) == 64
    assert r.changed() == []
    assert await r.check() is None
    assert r.last is None
    assert r.running_hashes() == {"alpha": pkg.sha12("alpha")}


async def test_an_edit_is_validated_then_swapped_in_place(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    pkg.write("alpha", strategy("v2"))  # same size, same second as the imported v1
    assert r.changed() == ["alpha"]
    res = await r.check()
    assert res is not None and res.state == "ok" and res.modules == ("alpha",) and res.error == ""
    assert res.hashes == {"alpha": pkg.sha12("alpha")} and res.at_ms == NOW and not res.forced
    # The kernel's way of finding the strategy sees the new code, in the same module object.
    assert pkg.module("alpha") is alpha
    assert pkg.module("alpha").evaluate(SAMPLE).reason == "v2"
    assert r.last is res
    assert await r.check() is None
    assert no_check_modules_left()
    assert msgspec.json.decode(msgspec.json.encode(res), type=ReloadResult) == res


async def test_a_syntax_error_is_refused_once_and_the_old_code_keeps_running(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    old = pkg.sha12("alpha")
    pkg.write("alpha", "def evaluate(inp):\n    return (\n")
    res = await r.check()
    assert res is not None and res.state == "refused" and res.modules == ("alpha",)
    assert res.error.startswith("alpha: ") and "SyntaxError" in res.error and len(res.error) <= 1500
    assert res.hashes == {"alpha": old}
    assert alpha.evaluate(SAMPLE).reason == "v1"
    # The same broken content is not validated again on every tick...
    assert r.changed() == []
    assert await r.check() is None
    assert r.last is res
    # ...but a forced reload tries it again (and refuses it again).
    forced = await r.check(force=True)
    assert forced is not None and forced.state == "refused" and forced.forced
    assert "SyntaxError" in forced.error
    assert alpha.evaluate(SAMPLE).reason == "v1"
    # A later good edit goes through.
    pkg.write("alpha", strategy("v3"))
    res = await r.check()
    assert res is not None and res.state == "ok" and res.hashes == {"alpha": pkg.sha12("alpha")}
    assert alpha.evaluate(SAMPLE).reason == "v3"
    assert no_check_modules_left()


async def test_an_evaluate_that_raises_on_a_sample_is_refused(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    # Raises only where there is no order book: the samples must include such an input.
    pkg.write("alpha", returning("None").replace("None if inp.up_ask is None", "1 / 0 if inp.up_ask is None"))
    res = await r.check()
    assert res is not None and res.state == "refused"
    assert "ZeroDivisionError" in res.error and "sol-15m" in res.error and "evaluate raised" in res.error
    assert alpha.evaluate(SAMPLE).reason == "v1"


@pytest.mark.parametrize(
    ("source", "why"),
    [
        (returning("{'side': 'up'}"), "expected None or a kernel.strategy_api Buy, Exit or Pass"),
        (returning("Exit(limit_price=0.5, reason='x')"), "an Exit without a position to sell"),
        (
            returning(
                "Decision(side='up', limit_price=0.5, stake_usd=5.0, reason='x', order_type='GTD', "
                "expires_ms=inp.now_ms + 1000)"
            ),
            "less than 61000 ms after now",
        ),
        (
            returning("Decision(side='up', limit_price=0.5, stake_usd=5.0, reason='x', order_type='IOC')"),
            "order_type 'IOC' is not one of FOK, FAK, GTC, GTD",
        ),
        (returning("None") + "\nCANDLES = {'2m': 10}\n", "CANDLES: unknown interval '2m'"),
        (returning("None") + "\nCANDLES = {'1m': 61}\n", "CANDLES['1m'] = 61 bars is 3660 s of look-back"),
        (returning("None") + "\nAPI = 3\n", "API = 3: this kernel gives inputs of version 1 or 2"),
        (returning("None") + "\nEXITS = 'yes'\n", "EXITS = 'yes' is not True or False"),
        (
            returning("Decision(side='up', limit_price=1.5, stake_usd=5.0, p_up=0.6, reason='x')"),
            "limit_price 1.5 is not strictly between 0 and 1",
        ),
        (
            returning("Decision(side='up', limit_price='0.5', stake_usd=5.0, p_up=0.6, reason='x')"),
            "limit_price '0.5'",
        ),
        (
            returning("Decision(side='sideways', limit_price=0.5, stake_usd=5.0, p_up=0.6, reason='x')"),
            "side 'sideways'",
        ),
        (
            returning("Decision(side='up', limit_price=0.5, stake_usd=0.0, p_up=0.6, reason='x')"),
            "stake_usd 0.0 is not a positive number",
        ),
        (returning("None", needs="None"), "needs_quotes returned None"),
        (
            # Says the window never needs quotes, while needs_quotes wants them now: the hint
            # would hide every entry.
            returning("None") + "\n\ndef quotes_from_ms(start_ms, end_ms, params):\n    return end_ms + 1\n",
            "but needs_quotes wants quotes at",
        ),
        (
            returning("None") + "\n\ndef quotes_from_ms(start_ms, end_ms, params):\n    return end_ms / 2\n",
            "not an int (ms)",
        ),
        (returning("None") + "\n\nquotes_from_ms = 3\n", "quotes_from_ms is not callable"),
        ("evaluate = 42\n", "no callable evaluate"),
        ("import sys\nsys.exit(3)\n", "module code called exit(3)"),
    ],
)
async def test_unusable_strategies_are_refused(pkg: Pkg, alpha: ModuleType, source: str, why: str):
    r = pkg.reloader()
    r.baseline()
    pkg.write("alpha", source)
    res = await r.check()
    assert res is not None and res.state == "refused" and res.modules == ("alpha",)
    assert why in res.error
    assert alpha.evaluate(SAMPLE).reason == "v1"
    assert r.running_hashes()["alpha"] != pkg.sha12("alpha")
    assert no_check_modules_left()


async def test_bars_beyond_what_the_feed_keeps_are_refused(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader(max_lookback_s=600)  # BATON_CANDLE_RETENTION_S=600 (worker/lifecycle.py)
    r.baseline()
    pkg.write("alpha", returning("None") + "\nCANDLES = {'1m': 11}\n")
    res = await r.check()
    assert res is not None and res.state == "refused"
    assert "CANDLES['1m'] = 11 bars is 660 s of look-back, more than the 600 s" in res.error
    pkg.write("alpha", returning("None") + "\nCANDLES = {'1m': 10}\n")
    res = await r.check()
    assert res is not None and res.state == "ok", res.error


async def test_one_failing_module_refuses_the_whole_batch(pkg: Pkg, alpha: ModuleType):
    pkg.write("beta", strategy("v1"))
    beta = pkg.module("beta")
    r = pkg.reloader()
    r.baseline()
    pkg.write("alpha", strategy("v2"))
    pkg.write("beta", "def evaluate(inp)\n")
    res = await r.check()
    assert res is not None and res.state == "refused" and res.modules == ("beta",)
    assert alpha.evaluate(SAMPLE).reason == "v1"  # valid, but not swapped in alone
    # Next time the refused beta is left out and the valid alpha goes through on its own.
    res = await r.check()
    assert res is not None and res.state == "ok" and res.modules == ("alpha",)
    assert alpha.evaluate(SAMPLE).reason == "v2" and beta.evaluate(SAMPLE).reason == "v1"


async def test_a_forced_reload_without_change_re_executes_every_module(pkg: Pkg, alpha: ModuleType):
    pkg.write("beta", strategy("v1"))
    r = pkg.reloader()
    r.baseline()
    before = alpha.evaluate
    res = await r.check(force=True)
    assert res is not None and res.state == "ok" and res.forced and res.modules == ("alpha", "beta")
    assert alpha.evaluate is not before and alpha.evaluate(SAMPLE).reason == "v1"
    # beta was never imported: a forced reload imports it.
    assert pkg.module("beta").evaluate(SAMPLE).reason == "v1"
    assert await r.check() is None


async def test_a_check_waits_for_the_tick_holding_the_lock(pkg: Pkg, alpha: ModuleType):
    held: list[bool] = []

    def samples() -> list[SlotInput]:
        held.append(r.lock.locked())
        return sample_inputs(NOW)

    r = pkg.reloader(samples=samples)
    r.baseline()
    pkg.write("alpha", strategy("v2"))
    async with r.lock:  # a tick in progress
        task = asyncio.create_task(r.check())
        for _ in range(10):
            await asyncio.sleep(0)
        assert not task.done() and held == []
        assert alpha.evaluate(SAMPLE).reason == "v1"  # the tick finishes on the old code
    res = await task
    assert res is not None and res.state == "ok"
    assert held == [True]  # validation ran under the lock
    assert alpha.evaluate(SAMPLE).reason == "v2" and not r.lock.locked()


async def test_a_new_file_is_imported_and_a_deleted_one_keeps_running(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    pkg.write("gamma", strategy("g1"))
    assert r.changed() == ["gamma"]
    res = await r.check()
    assert res is not None and res.state == "ok" and res.modules == ("gamma",)
    assert f"{pkg.name}.gamma" in sys.modules and pkg.module("gamma").evaluate(SAMPLE).reason == "g1"
    (pkg.root / "alpha.py").unlink()
    assert r.changed() == []
    assert await r.check() is None
    assert pkg.module("alpha").evaluate(SAMPLE).reason == "v1"
    assert set(r.running_hashes()) == {"alpha", "gamma"}


async def test_names_dropped_from_the_source_leave_the_module(pkg: Pkg, alpha: ModuleType):
    r = pkg.reloader()
    r.baseline()
    pkg.write("alpha", strategy("v2", needs_quotes=False))
    res = await r.check()
    assert res is not None and res.state == "ok"
    # Plain importlib.reload would keep the old needs_quotes beside the new evaluate.
    assert not hasattr(alpha, "needs_quotes")


async def test_a_reload_that_fails_puts_the_old_module_back(
    pkg: Pkg, alpha: ModuleType, monkeypatch: pytest.MonkeyPatch
):
    def broken(module: ModuleType) -> ModuleType:
        module.__dict__["evaluate"] = None  # half-way through
        raise RuntimeError("boom")

    r = pkg.reloader()
    r.baseline()
    old = r.running_hashes()
    pkg.write("alpha", strategy("v2"))
    monkeypatch.setattr(importlib, "reload", broken)
    res = await r.check()
    assert res is not None and res.state == "refused" and "boom" in res.error and "reload failed" in res.error
    assert alpha.evaluate(SAMPLE).reason == "v1" and alpha.needs_quotes(SAMPLE) is True
    assert res.hashes == old
    assert await r.check() is None  # not retried every tick
    monkeypatch.undo()
    res = await r.check(force=True)
    assert res is not None and res.state == "ok" and alpha.evaluate(SAMPLE).reason == "v2"


async def test_a_file_changed_during_the_reload_is_not_left_running(
    pkg: Pkg, alpha: ModuleType, monkeypatch: pytest.MonkeyPatch
):
    real_reload = importlib.reload
    unvalidated = returning("1 / 0")

    def racing(module: ModuleType) -> ModuleType:
        pkg.write("alpha", unvalidated)  # a deploy writes the file again right now
        return real_reload(module)

    r = pkg.reloader()
    r.baseline()
    pkg.write("alpha", strategy("v2"))
    monkeypatch.setattr(importlib, "reload", racing)
    res = await r.check()
    assert res is not None and res.state == "refused" and "changed while" in res.error
    assert alpha.evaluate(SAMPLE).reason == "v1"
    monkeypatch.undo()
    # The new content is a change of its own: validated next, and refused on its merits.
    res = await r.check()
    assert res is not None and res.state == "refused" and "ZeroDivisionError" in res.error
    assert alpha.evaluate(SAMPLE).reason == "v1"


def test_the_fingerprint_covers_strategy_files_only(pkg: Pkg):
    pkg.write("alpha", strategy("v1"))
    pkg.write("_helpers", "X = 1\n")
    pkg.write("bad-name", strategy("v1"))
    (pkg.root / "notes.txt").write_text("not code")
    assert list(pkg.reloader().fingerprint()) == ["alpha"]


def test_the_fingerprint_reads_only_files_whose_stat_changed(pkg: Pkg, monkeypatch: pytest.MonkeyPatch):
    pkg.write("alpha", strategy("v1"))
    hour_ago = time.time() - 3600
    os.utime(pkg.root / "alpha.py", (hour_ago, hour_ago))
    reads: list[str] = []
    real_read = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self.name)
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    r = pkg.reloader()
    first = r.fingerprint()
    assert r.fingerprint() == first and reads == ["alpha.py"]  # the second call only stats
    pkg.write("alpha", strategy("v2"))  # same size; mtime now
    second = r.fingerprint()
    assert second != first and reads == ["alpha.py"] * 2
    # Written a moment ago: a same-size edit could still keep this mtime, so it is read again.
    assert r.fingerprint() == second and len(reads) == 3


async def test_the_real_package_is_watched():
    r = StrategyReloader()
    assert "snipe" in r.fingerprint()
    r.baseline()
    assert await r.check() is None

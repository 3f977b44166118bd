"""`baton reload`: a strategy-only change, hot-reloaded in place by the active worker.

The changed strategy files of the working tree are copied into the release the active
worker runs (strategies are the one writable part of a release), and a reload is requested
through the control hash. The worker validates the new code between two ticks and swaps it
in, or refuses it and keeps the old one; its verdict lands in `baton:reload`. Each copied
version is also kept by content under var/strategies/ (kernel/strategy_store.py): the
release id alone no longer says which code made a record.
"""

from __future__ import annotations

import filecmp
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from baton.errors import ReloadError
from baton.settings import REPO_ROOT, Settings
from kernel import strategy_store
from kernel.lease import lease_color
from kernel.strategy_check import dry_evaluate, sample_inputs
from kernel.strategy_load import load_in_package
from state import connection
from state.control import ControlRepo
from state.keys import Keys

STRATEGIES = Path("worker") / "strategies"


def check_module(path: Path) -> None:
    """Import a strategy file as a throwaway module and dry-evaluate it, here, before it is
    copied into a running release: a broken file must not sit where a restart would load it."""
    try:
        # In a throwaway package over its own directory: a relative import of a sibling works.
        module = load_in_package(path, package_dir=path.parent, module=path.stem)
        if not callable(getattr(module, "evaluate", None)):
            raise ReloadError(f"{path}: no evaluate(inp) function")
        dry_evaluate(module, sample_inputs())
    except ReloadError:
        raise
    except BaseException as e:  # SyntaxError, exit() in module code, a strategy's bug
        raise ReloadError(f"{path.name} refused here, nothing copied: {e!r}") from None


def sync_strategies(code_dir: Path, source: Path = REPO_ROOT) -> list[str]:
    """Copy strategy modules that differ from `source` into a release; returns their names.
    Every changed file is checked first; one that fails stops the copy of all of them."""
    src, dst = source / STRATEGIES, code_dir / STRATEGIES
    if not dst.is_dir():
        raise ReloadError(f"{dst} is not a strategies directory of a release")
    changed = [
        f
        for f in sorted(src.glob("*.py"))
        if not f.name.startswith("_")
        and not ((dst / f.name).exists() and filecmp.cmp(f, dst / f.name, shallow=False))
    ]
    for f in changed:
        check_module(f)
    # The home the release is in (var/releases/<id>): each installed version is kept there by
    # content too, for the records that will name it (kernel/strategy_store.py).
    home = code_dir.parent.parent.parent if code_dir.parent.name == "releases" else None
    copied = []
    for f in changed:
        data = f.read_bytes()  # once: the version kept is the version installed
        if home is not None:
            strategy_store.keep(home, data)
        target = dst / f.name
        # Write beside, then rename: the worker never reads a half-written module.
        tmp = target.with_name(f".{f.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o600)  # as the release's own strategies (deploy/releases.py)
        tmp.replace(target)
        copied.append(f.stem)
    return copied


def reload(
    s: Settings,
    *,
    sync: bool = True,
    source: Path = REPO_ROOT,
    timeout_s: float = 30.0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    k = Keys(s.prefix)
    r: Any = connection.client(s)
    try:
        return reload_on(r, k, sync, source, timeout_s, log)
    except redis.RedisError as e:
        raise ReloadError(f"cannot reach Redis at {s.redis_url_shown}: {e} (is the stack running?)") from e
    finally:
        r.close()


def reload_on(
    r: Any,
    k: Keys,
    sync: bool,
    source: Path,
    timeout_s: float,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """`reload` on a Redis client the caller holds (POST /reload's, through control/): asks
    the lease holder to reload and returns the reload record it writes."""
    color = lease_color(r, k)
    if not color:
        raise ReloadError("no worker holds the lease: nothing to reload")
    hb = r.hgetall(k.worker(color))
    if sync:
        code_dir = hb.get("code_dir", "")
        if not code_dir:
            raise ReloadError(f"worker-{color} does not report the directory it runs from")
        copied = sync_strategies(Path(code_dir), source)
        log(f"copied into {code_dir}: {', '.join(copied) if copied else 'nothing changed'}")
    before = r.hget(k.reload(), "at_ms") or "0"
    ControlRepo(r, k).request_reload()
    log(f"reload requested from worker-{color}; it reloads between two ticks")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        res = r.hgetall(k.reload())
        if res.get("at_ms", "0") != before:
            return res
        time.sleep(0.05)
    raise ReloadError(f"worker-{color} did not report a reload within {timeout_s:.0f} s")

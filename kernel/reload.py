"""Hot reload of strategy modules: new source is validated off to the side, then swapped in.

The kernel resolves a strategy through `importlib.import_module` on every call, so reloading
the module object in place is seen by the very next tick. The worker holds
`StrategyReloader.lock` while a tick runs and calls `check()` between ticks: a tick in progress
finishes on the old code, and the next one starts on the new code.

A changed file is first loaded as a fresh, throw-away module object (a temporary name, never
left in `sys.modules`), its declarations checked and dry-evaluated on sample inputs, by the
rules the kernel acts by (kernel/strategy_check.py: one place for them). Only when every changed module
passes are the running modules reloaded; otherwise nothing is touched and the refusal is
reported. A refused file content is remembered and not validated again until the file
changes once more (or a reload is forced).

Limits, on purpose: files whose name starts with `_` are helpers, not strategies: they are
not watched, and a strategy that imports one does not see its changes until the next worker
release. Module-level code runs twice per reload (validation, then the real reload), so it
must be free of side effects, as `kernel.strategy_api` asks anyway. A strategy that loops
forever blocks the worker: validation has no time limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import msgspec

from kernel import strategy_store
from kernel.clock import wall_ms, wall_ns
from kernel.strategy_api import MAX_LOOKBACK_S, SlotInput
from kernel.strategy_check import dry_evaluate, sample_inputs
from kernel.strategy_load import load_fresh
from kernel.strategy_store import CODE_HEX

HASH_PREFIX = 12
ERROR_MAX = 1500  # the whole error text of a refusal
TRACE_MAX = 900  # the traceback tail of one module
TRACE_LINES = 14
# A file hashed less than this after its mtime could still change without its stat changing
# (filesystem timestamps are coarse: a same-size edit in the same jiffy keeps mtime_ns), so
# such a hash is not trusted from the stat cache and the file is read again ("racy git").
RACY_NS = 2_000_000_000


class ReloadResult(msgspec.Struct, frozen=True, kw_only=True):
    state: Literal["ok", "refused"]
    modules: tuple[str, ...]  # ok: the modules swapped in; refused: the modules that failed
    error: str = ""  # refused: which module and why, with the tail of the traceback
    hashes: dict[str, str]  # short name -> sha256 prefix of the file content now running
    at_ms: int
    forced: bool = False


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the reloader -----------------------------------------------------------------------


def _describe(e: BaseException) -> str:
    """One summary line, then the last lines of the traceback (with its cause, if any)."""
    first = (str(e).splitlines() or [""])[0]
    lines = "".join(traceback.format_exception(e)).rstrip().splitlines()
    tail = "\n".join(lines[-TRACE_LINES:])[-TRACE_MAX:]
    return f"{type(e).__name__}: {first[:300]}\n{tail}"


def _drop_bytecode(path: Path) -> None:
    # A .pyc is trusted when the source's mtime (whole seconds) and size match: a same-size
    # edit within the second would reload the old bytecode. Drop it; the import rewrites it.
    with contextlib.suppress(OSError, NotImplementedError, ValueError):
        os.remove(importlib.util.cache_from_source(str(path)))


class StrategyReloader:
    def __init__(
        self,
        package: str = "worker.strategies",
        samples: Callable[[], list[SlotInput]] | None = None,
        clock_ms: Callable[[], int] = wall_ms,
        max_lookback_s: int = MAX_LOOKBACK_S,
    ) -> None:
        self.package = package
        self.clock_ms = clock_ms
        # The look-back the kernel can serve (kernel/strategy_check.py declaration_problems):
        # a module declaring CANDLES beyond it is refused, naming them.
        self.max_lookback_s = max_lookback_s
        self.samples: Callable[[], list[SlotInput]] = samples or (lambda: sample_inputs(self.clock_ms()))
        # Held by the worker while a tick runs, and by check() while it validates and swaps.
        self.lock = asyncio.Lock()
        self.last: ReloadResult | None = None
        self.running: dict[str, str] = {}  # short name -> sha256 of the content running
        self.refused: dict[str, str] = {}  # short name -> sha256 of a content refused
        # path -> ((inode, size, mtime_ns), sha256, when hashed in ns): the stat cache.
        self._stat: dict[Path, tuple[tuple[int, int, int], str, int]] = {}
        pkg = importlib.import_module(package)
        # A regular package has one directory; strategies live in worker/strategies/.
        self.directory = Path(next(iter(pkg.__path__)))

    # --- files ------------------------------------------------------------------------
    def _files(self) -> dict[str, Path]:
        """Strategy module files: *.py, minus __init__ and _helpers, minus unimportable names."""
        return {
            p.stem: p
            for p in sorted(self.directory.glob("*.py"))
            if not p.name.startswith("_") and p.stem.isidentifier()
        }

    def _hash(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._stat.get(path)
        if hit is not None and hit[0] == key and hit[2] - st.st_mtime_ns > RACY_NS:
            return hit[1]
        at = wall_ns()
        digest = _sha256(path.read_bytes())
        self._stat[path] = (key, digest, at)
        return digest

    def fingerprint(self) -> dict[str, str]:
        """Short name -> full sha256 of every strategy file. Cheap: a stat per file, and a
        read only for files whose stat changed (or that were written very recently)."""
        out: dict[str, str] = {}
        for short, path in self._files().items():
            with contextlib.suppress(FileNotFoundError):  # deleted since the listing
                out[short] = self._hash(path)
        return out

    def baseline(self) -> None:
        """Record the files as they are as the code running (once, after import, at start)."""
        self.running = self.fingerprint()
        self.refused = {}

    def running_hashes(self) -> dict[str, str]:
        return {s: h[:HASH_PREFIX] for s, h in sorted(self.running.items())}

    def code_ids(self) -> dict[str, str]:
        """Short name -> code id (kernel/strategy_store.py) of the content running: what the
        input log's records name as their code."""
        return {s: h[:CODE_HEX] for s, h in sorted(self.running.items())}

    def keep_running(self, home: Path) -> list[str]:
        """Each running file's content into var/strategies/ (kernel/strategy_store.py), so
        that the code a record names is there even for a file edited in the release by hand;
        stage and `baton reload` keep theirs too. A file that changed since it was loaded is
        skipped (the next check reloads it). Returns problems; raises nothing."""
        problems = []
        for short, digest in sorted(self.running.items()):
            try:
                data = (self.directory / f"{short}.py").read_bytes()
                if _sha256(data) == digest:
                    strategy_store.keep(home, data)
            except OSError as e:
                problems.append(f"strategy {short}: not kept in {strategy_store.store_dir(home)}: {e}")
        return problems

    def changed(self) -> list[str]:
        """Modules the next check() would try: content differs from the running one and is not
        a content already refused. A new file counts (it is validated and imported, so a slot
        can be switched to it); a deleted file does not (its module keeps running)."""
        return sorted(
            s for s, h in self.fingerprint().items() if h != self.running.get(s) and h != self.refused.get(s)
        )

    # --- check and swap ---------------------------------------------------------------
    async def check(self, force: bool = False) -> ReloadResult | None:
        """Swap changed modules in, all or none: None when there was nothing to do."""
        async with self.lock:
            names = sorted(self._files()) if force else self.changed()
            if not names and not force:
                return None
            return self._reload(names, force)

    def _result(
        self, state: Literal["ok", "refused"], modules: list[str], error: str, force: bool
    ) -> ReloadResult:
        if len(error) > ERROR_MAX:
            error = error[: ERROR_MAX - 1] + "…"
        res = ReloadResult(
            state=state,
            modules=tuple(modules),
            error=error,
            hashes=self.running_hashes(),
            at_ms=self.clock_ms(),
            forced=force,
        )
        self.last = res
        return res

    def _reload(self, names: list[str], force: bool) -> ReloadResult:
        try:
            inputs = list(self.samples())
        except Exception as e:  # not the modules' fault: nothing remembered, tried again
            return self._result("refused", names, f"sample inputs: {_describe(e)}", force)
        # 1. Validate every candidate on fresh module objects; the running ones are untouched.
        staged: dict[str, tuple[str, ModuleType]] = {}
        failed: list[str] = []
        errors: list[str] = []
        for short in names:
            path = self.directory / f"{short}.py"
            try:
                source = path.read_bytes()
            except FileNotFoundError:
                continue  # deleted meanwhile: the old module keeps running
            digest = _sha256(source)
            try:
                fresh = self._load_fresh(short, path, source)
                dry_evaluate(fresh, inputs, self.max_lookback_s)
            except Exception as e:
                self.refused[short] = digest
                failed.append(short)
                errors.append(f"{short}: {_describe(e)}")
                continue
            staged[short] = (digest, fresh)
        if failed:
            # All or none: the modules that passed stay pending and are tried on the next check.
            return self._result("refused", failed, "\n".join(errors), force)
        # 2. Swap in place. Anything unexpected puts every module of this batch back.
        snapshots: dict[str, dict[str, Any]] = {}
        imported: list[str] = []
        for short, (digest, fresh) in staged.items():
            try:
                self._swap(short, digest, fresh, snapshots, imported)
            except Exception as e:
                self._roll_back(snapshots, imported)
                self.refused[short] = digest
                return self._result("refused", [short], f"{short}: reload failed: {_describe(e)}", force)
        for short, (digest, _) in staged.items():
            self.running[short] = digest
            self.refused.pop(short, None)
        return self._result("ok", list(staged), "", force)

    def _load_fresh(self, short: str, path: Path, source: bytes) -> ModuleType:
        """Execute `source` (the bytes validated and hashed) as a new module object."""
        # Named inside the package so that relative imports of siblings work.
        name = f"{self.package}._baton_check_{short}_{uuid.uuid4().hex[:8]}"
        return load_fresh(path, name=name, source=source)

    def _swap(
        self,
        short: str,
        digest: str,
        fresh: ModuleType,
        snapshots: dict[str, dict[str, Any]],
        imported: list[str],
    ) -> None:
        full = f"{self.package}.{short}"
        path = self.directory / f"{short}.py"
        importlib.invalidate_caches()  # a new file must be seen by the finders
        _drop_bytecode(path)
        module = sys.modules.get(full)
        if module is None:
            imported.append(short)
            module = importlib.import_module(full)
        else:
            snapshots[short] = dict(module.__dict__)
            # Start from an empty namespace (keeping __name__, __spec__ & co): plain reload()
            # keeps names the new source no longer defines, e.g. a removed needs_quotes().
            for key in [k for k in module.__dict__ if not (k.startswith("__") and k.endswith("__"))]:
                del module.__dict__[key]
            importlib.reload(module)
        # What runs must be what was validated: the file may have changed since it was read.
        if _sha256(path.read_bytes()) != digest:
            raise RuntimeError("the file changed while it was being reloaded; it will be tried again")
        for fn in ("evaluate", "needs_quotes", "quotes_from_ms"):
            a, b = getattr(fresh, fn, None), getattr(module, fn, None)
            if getattr(a, "__code__", None) != getattr(b, "__code__", None):
                raise RuntimeError(f"the reloaded {fn} is not the one validated (stale bytecode?)")

    def _roll_back(self, snapshots: dict[str, dict[str, Any]], imported: list[str]) -> None:
        for short, saved in snapshots.items():
            module = sys.modules.get(f"{self.package}.{short}")
            if module is not None:
                module.__dict__.clear()
                module.__dict__.update(saved)
        for short in imported:  # modules new in this batch were not running: forget them
            sys.modules.pop(f"{self.package}.{short}", None)
            parent = sys.modules.get(self.package)
            if parent is not None and short in vars(parent):
                delattr(parent, short)

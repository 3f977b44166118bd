"""The one way a strategy file is loaded off to the side: as a fresh module object that never
stays in sys.modules, so that the live modules (worker.strategies.*) are never touched.

Used by hot reload's validation (kernel/reload.py), `baton reload`'s check before it copies
(deploy/reload.py), the slot rules' declarations (control/slot_rules.py) and replay
(control/replay.py), which must each see exactly the file's code and nothing cached.
"""

from __future__ import annotations

import importlib.util
import secrets
import sys
from pathlib import Path
from types import ModuleType

from baton.errors import StrategyCheckError


def load_fresh(path: Path, *, name: str = "", source: bytes | None = None) -> ModuleType:
    """Execute the strategy file `path` (or `source`, its bytes as read by the caller, who may
    have hashed them) as a new module object named `name` (default: a throwaway name; a name
    inside a package, e.g. worker.strategies._check_x, lets relative imports of siblings work).

    Compiled from the source, never from bytecode: a .pyc of the same size and second would
    be the old code, and a release's read-only directories cannot take a __pycache__.
    Raises what the module's code raises (SyntaxError, ImportError, ...), StrategyCheckError
    for a path that is not a Python file or module code that calls exit()."""
    name = name or f"_baton_strategy_{secrets.token_hex(4)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None:
        raise StrategyCheckError(f"{path}: not a Python module")
    if source is None:
        try:
            source = path.read_bytes()
        except OSError as e:
            raise StrategyCheckError(f"{path}: cannot be read: {e.strerror or e}") from None
    module = importlib.util.module_from_spec(spec)
    # dont_inherit: this file's `from __future__` flags must not leak into the strategy.
    code = compile(source, str(path), "exec", dont_inherit=True)
    # In sys.modules only while it executes: dataclasses and typing look classes' modules up.
    sys.modules[name] = module
    try:
        exec(code, module.__dict__)
    except SystemExit as e:  # an exit() at module level must not stop the caller
        raise StrategyCheckError(f"module code called exit({e.code!r})") from None
    finally:
        sys.modules.pop(name, None)
    return module


def load_in_package(path: Path, *, package_dir: Path, module: str, source: bytes | None = None) -> ModuleType:
    """`path` (or `source`) loaded as `load_fresh` does, as module `module` of a throwaway
    package whose path is `package_dir`: its relative imports (`from ._helpers import x`) get
    that directory's siblings, fresh, never the live worker.strategies' ones. Used for a
    strategy version kept by content (var/strategies/<code>.py: no siblings beside it) or
    a release's file, with the release's strategies directory (else the checkout's).

    The package (a plain module object with `__path__`) and the siblings it imported are in
    sys.modules only while the module executes, like the module itself: what it imported at
    module level it keeps; an import run later, inside evaluate, finds no package (a limit)."""
    pkg_name = f"_baton_pkg_{secrets.token_hex(4)}"
    pkg = ModuleType(pkg_name, f"throwaway package of {package_dir}")
    pkg.__path__ = [str(package_dir)]
    pkg.__package__ = pkg_name
    sys.modules[pkg_name] = pkg
    try:
        return load_fresh(path, name=f"{pkg_name}.{module}", source=source)
    finally:
        for name in [n for n in sys.modules if n == pkg_name or n.startswith(f"{pkg_name}.")]:
            sys.modules.pop(name, None)

"""Every strategy file version that was staged or reloaded, kept by content under
``$BATON_HOME/var/strategies/<code>.py``, so that a decision's own code can be found again.

A release id does not identify the code that decided: `baton reload` rewrites a release's
strategy files in place, and `releases.prune` deletes old releases while the input log keeps
their records for BATON_INPUT_LOG_DAYS. So each input log record names its code by content
(kernel/input_log.py Evaluation.code: `code_id` of the strategy file that evaluated, hashed
when the worker loaded or reloaded it, never on the tick's path) and replay loads that file
from here first (control/replay.py).

Written by `deploy.releases.stage`/`install` (every strategy of a release), `baton reload`
(deploy/reload.py, each file it installs) and the worker after it loads or reloads (whatever
runs, even a file edited in the release by hand). Never pruned: a version is a few kB, and
one is added per distinct content only. Owner-only, like the rest of var/.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path

# Hex digits of sha256 a code id keeps: 64 bits, no collision among a home's versions.
CODE_HEX = 16
CODE_ID = re.compile(r"[0-9a-f]{16}")
_DIR_MODE = 0o700
_FILE_MODE = 0o600


def code_id(data: bytes) -> str:
    """The id of a strategy file's content: its sha256, as hex, cut to CODE_HEX digits."""
    return hashlib.sha256(data).hexdigest()[:CODE_HEX]


def store_dir(home: Path) -> Path:
    return Path(home) / "var" / "strategies"


def code_path(home: Path, code: str) -> Path | None:
    """Where the version `code` is (or would be) kept; None when `code` is not a code id
    (a record's field is data: it never names a path of its own)."""
    if not CODE_ID.fullmatch(code):
        return None
    return store_dir(home) / f"{code}.py"


def keep(home: Path, data: bytes) -> str:
    """Keep `data` (a strategy file's content) under its code id, once; returns the id.
    Written beside and renamed: a reader never sees half a file."""
    code = code_id(data)
    target = store_dir(home) / f"{code}.py"
    if target.is_file():
        return code
    target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = target.with_name(f".{code}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return code


def keep_file(home: Path, path: Path) -> str:
    return keep(home, Path(path).read_bytes())


def keep_strategies(home: Path, strategies: Path) -> dict[str, str]:
    """Keep every strategy module of a strategies directory (not `_` helpers, which records
    do not name: replay takes them from the release, else the checkout): name -> code id."""
    return {
        p.stem: keep_file(home, p)
        for p in sorted(Path(strategies).glob("*.py"))
        if not p.name.startswith("_") and p.stem.isidentifier()
    }

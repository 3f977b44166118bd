"""`baton strategy new NAME`: a working strategy module and its test, from the template in
baton/cli/templates/ (docs/strategies.md), written into the checkout `baton reload` copies
strategies from.
"""

from __future__ import annotations

import argparse
import keyword
import re
from collections.abc import Callable
from pathlib import Path
from string import Template

import msgspec

from baton.cli.output import emit, fail
from baton.settings import REPO_ROOT, Settings

TEMPLATES = Path(__file__).parent / "templates"
MODULE_DIR = Path("worker") / "strategies"
TEST_DIR = Path("tests") / "fast" / "strategies"
# A module name the reloader watches: lower case, not starting with "_" (helpers).
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,39}")


class NewStrategy(msgspec.Struct, frozen=True):
    name: str
    module: str
    test: str


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    json_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    p = sub.add_parser("strategy", help="write a new strategy module from the template")
    ssub = p.add_subparsers(dest="strategy_cmd", required=True, metavar="{new}")
    q = ssub.add_parser(
        "new", help="write worker/strategies/NAME.py (enters and exits) and its test, both working"
    )
    q.add_argument("name", help="the module's name: lower case letters, digits and _, e.g. breakout")
    q.add_argument("--force", action="store_true", help="overwrite the module and test if they exist")
    q.add_argument(
        "--dir",
        type=Path,
        default=REPO_ROOT,
        help="the checkout to write into (default: the one baton runs from, which `baton reload` copies)",
    )
    json_flag(q)


def name_problem(name: str) -> str:
    """Why `name` cannot be a strategy's module name ("" when it can)."""
    if not NAME_RE.fullmatch(name):
        return (
            f"bad strategy name {name!r}: lower case letters, digits and _, starting with a letter, "
            "at most 40 characters"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"bad strategy name {name!r}: a Python keyword"
    return ""


def write_new(root: Path, name: str, force: bool = False) -> NewStrategy:
    """Write the module and its test for `name` under `root`; refuses (ValueError) a bad name,
    a directory that is not a Baton checkout, or existing files without `force`."""
    problem = name_problem(name)
    if problem:
        raise ValueError(problem)
    modules = root / MODULE_DIR
    if not modules.is_dir():
        raise ValueError(f"{modules} does not exist: --dir must be a Baton checkout")
    module, test = modules / f"{name}.py", root / TEST_DIR / f"test_{name}.py"
    existing = [str(p) for p in (module, test) if p.exists()]
    if existing and not force:
        raise ValueError(f"{' and '.join(existing)} exist already (--force overwrites)")
    test.parent.mkdir(parents=True, exist_ok=True)
    for template, target in (("strategy.py.tmpl", module), ("test_strategy.py.tmpl", test)):
        text = Template((TEMPLATES / template).read_text()).substitute(name=name)
        # Beside, then renamed: a worker that hashes the directory never reads half a module.
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return NewStrategy(name=name, module=str(module), test=str(test))


def cmd_strategy(s: Settings, args: argparse.Namespace) -> int:
    try:
        res = write_new(args.dir.resolve(), args.name, args.force)
    except (ValueError, OSError) as e:
        return fail(str(e))
    return emit(
        args,
        res,
        lambda: (
            f"wrote {res.module}\nwrote {res.test}\n\nnext:\n"
            f"  .venv/bin/pytest -q {res.test}\n"
            f"  .venv/bin/baton reload\n"
            f"  .venv/bin/baton slots add {res.name}-btc --asset btc --timeframe 5m "
            f"--strategy {res.name} --stake 1\n"
            f"  .venv/bin/baton decisions {res.name}-btc\n"
            "the guide: docs/strategies.md"
        ),
    )

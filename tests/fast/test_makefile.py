"""The Makefile's user variables (`make deploy REF=...`, `make halt REASON=...`) run through the
real `make` against a fake `baton` and `python`: each value arrives as one argument, byte for
byte, and nothing in it is run, by make or by the shell."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make is not installed")

# Everything a shell or make would act on: substitutions of both, quotes, a comment, globs, a
# leading dash (an option to argparse unless glued to its flag), a newline.
HOSTILE = (
    "-x $(touch {m}) `touch {m}` ; touch {m} && touch {m} | touch {m} "
    "' \" \\ $$HOME ${{PATH}} $HOME # % * ? ~ a  b\nsecond line"
)

RECORDER = """#!{python}
import json, os, sys
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.jsonl"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
"""


class FakeTree:
    """A directory make runs in: the Makefile's prerequisites present and up to date, and a
    venv whose `baton` and `python` only record their arguments."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.venv = root / "venv"
        self.marker = root / "marker"
        (self.venv / "bin").mkdir(parents=True)
        for name in ("pyproject.toml", "requirements.lock"):
            (root / name).write_text("")
        for name in ("baton", "python"):
            path = self.venv / "bin" / name
            path.write_text(RECORDER.format(python=sys.executable))
            path.chmod(0o755)
        stamp = self.venv / ".installed"
        stamp.write_text("")
        os.utime(stamp, (2**31 - 1, 2**31 - 1))  # newer than every prerequisite

    def make(self, target: str, **user_vars: str) -> list[list[str]]:
        calls = self.venv / "bin" / "calls.jsonl"
        calls.unlink(missing_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
        env["BATON_REDIS_URL"] = "redis://127.0.0.1:1"  # the redis-server target: nothing to install
        args = [f"{k}={v}" for k, v in user_vars.items()]
        out = subprocess.run(
            ["make", "-s", "-C", str(self.root), "-f", str(MAKEFILE), f"VENV={self.venv}", target, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        return [json.loads(line) for line in calls.read_text().splitlines()]


@pytest.fixture
def tree(tmp_path: Path) -> FakeTree:
    return FakeTree(tmp_path)


def hostile(tree: FakeTree) -> str:
    return HOSTILE.format(m=tree.marker)


@pytest.mark.parametrize(
    ("target", "var", "expected"),
    [
        ("deploy", "REF", ["deploy", "--ref={v}"]),
        ("halt", "REASON", ["halt", "--reason={v}"]),
        ("pause", "REASON", ["pause", "--reason={v}"]),
        ("bench-halt", "HALTS", ["-m", "bench.halt_latency", "--halts={v}"]),
        ("bench-scale", "SLOTS", ["-m", "bench.tick_scale", "--slots={v}"]),
        ("bench-scale", "RATE", ["-m", "bench.tick_scale", "--entry-rate={v}"]),
        ("bench-burst", "CYCLES", ["-m", "bench.entry_burst", "--cycles={v}"]),
        ("chaos", "DURATION", ["-m", "tests.chaos.harness", "--duration-s={v}"]),
        ("chaos", "SEED", ["-m", "tests.chaos.harness", "--duration-s=600", "--seed={v}"]),
    ],
)
def test_a_hostile_value_arrives_byte_for_byte_and_runs_nothing(tree, target, var, expected):
    value = hostile(tree)
    calls = tree.make(target, **{var: value})
    assert calls == [[a.replace("{v}", value) for a in expected]]
    assert not tree.marker.exists()


def test_quick_only_switches_the_quick_run_on(tree):
    assert tree.make("bench", QUICK=hostile(tree)) == [["-m", "bench.all", "--quick"]]
    assert tree.make("bench") == [["-m", "bench.all"]]
    assert not tree.marker.exists()


def test_unset_variables_add_no_argument(tree):
    assert tree.make("deploy") == [["deploy"]]
    assert tree.make("halt") == [["halt"]]
    assert tree.make("chaos") == [["-m", "tests.chaos.harness", "--duration-s=600"]]
    assert tree.make("bench-scale") == [["-m", "bench.tick_scale"]]


def test_a_value_from_the_environment_is_passed_the_same_way(tree, monkeypatch):
    monkeypatch.setenv("REASON", hostile(tree))
    assert tree.make("halt") == [["halt", f"--reason={hostile(tree)}"]]
    assert not tree.marker.exists()

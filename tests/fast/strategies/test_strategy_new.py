"""`baton strategy new NAME`: the module and test it writes work as written, in a checkout of
their own (a temporary directory laid out like this one), and it refuses what it should."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from baton import cli
from baton.cli.strategy import name_problem
from kernel.strategy_api import Buy, Exit, Pass
from kernel.strategy_check import dry_evaluate, sample_inputs

REPO = Path(__file__).resolve().parents[3]
# Outside this repository's pytest settings: the option pytest-asyncio warns about unset.
QUIET = ("-o", "asyncio_default_fixture_loop_scope=function")


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """An empty checkout: the two packages a strategy's test imports from, nothing else."""
    for name in list(os.environ):
        if name.startswith("BATON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("BATON_HOME", str(tmp_path / "home"))
    (tmp_path / "worker" / "strategies").mkdir(parents=True)
    (tmp_path / "worker" / "__init__.py").touch()
    (tmp_path / "worker" / "strategies" / "__init__.py").touch()
    return tmp_path


def new(checkout: Path, *args: str) -> int:
    return cli.main(["strategy", "new", *args, "--dir", str(checkout)])


def load(path: Path):
    spec = importlib.util.spec_from_file_location(f"_new_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module


def test_new_writes_a_module_whose_own_test_passes_as_written(checkout, capsys):
    assert new(checkout, "breakout", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    module = checkout / "worker" / "strategies" / "breakout.py"
    test = checkout / "tests" / "fast" / "strategies" / "test_breakout.py"
    assert out == {"name": "breakout", "module": str(module), "test": str(test)}
    # Its test in a pytest of its own, from the checkout: `worker` is the checkout's package
    # there (the current directory comes first on the path), the kernel is this one.
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *QUIET, str(test)],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout


def test_the_template_enters_and_exits_and_passes_the_reload_check(checkout):
    assert new(checkout, "tmpl") == 0
    mod = load(checkout / "worker" / "strategies" / "tmpl.py")
    assert (mod.API, mod.EXITS, dict(mod.CANDLES)) == (2, True, {"1m": 5})
    dry_evaluate(mod, sample_inputs())
    answers = [mod.evaluate(i) for i in sample_inputs()]
    assert any(isinstance(a, Buy) for a in answers)
    assert all(isinstance(a, Buy | Exit | Pass) for a in answers)


def test_the_files_written_are_lint_clean(checkout):
    assert new(checkout, "clean") == 0
    files = [
        checkout / "worker" / "strategies" / "clean.py",
        checkout / "tests/fast/strategies/test_clean.py",
    ]
    ruff = Path(sys.executable).parent / "ruff"
    for args in (["check"], ["format", "--check"]):
        run = subprocess.run(
            [str(ruff), *args, "--config", str(REPO / "pyproject.toml"), *map(str, files)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr


def test_an_existing_module_is_not_overwritten_without_force(checkout, capsys):
    module = checkout / "worker" / "strategies" / "mine.py"
    module.write_text("# my work\n")
    assert new(checkout, "mine") == 1
    err = capsys.readouterr().err
    assert str(module) in err and "--force" in err
    assert module.read_text() == "# my work\n"
    assert not (checkout / "tests" / "fast" / "strategies" / "test_mine.py").exists()
    assert new(checkout, "mine", "--force") == 0
    assert "def evaluate" in module.read_text()


def test_an_existing_test_alone_is_refused_too(checkout, capsys):
    test = checkout / "tests" / "fast" / "strategies" / "test_mine.py"
    test.parent.mkdir(parents=True)
    test.write_text("# mine\n")
    assert new(checkout, "mine") == 1
    assert str(test) in capsys.readouterr().err
    assert not (checkout / "worker" / "strategies" / "mine.py").exists()


@pytest.mark.parametrize(
    "bad", ["Breakout", "_helper", "9lives", "my-strategy", "a.b", "class", "x" * 41, ""]
)
def test_a_bad_name_is_refused_and_nothing_is_written(checkout, capsys, bad):
    assert new(checkout, bad) == 1
    assert "bad strategy name" in capsys.readouterr().err
    assert sorted(p.name for p in (checkout / "worker" / "strategies").iterdir()) == ["__init__.py"]


def test_names_the_reloader_watches_are_accepted():
    assert name_problem("mean_revert2") == ""
    assert "keyword" in name_problem("match")


def test_a_directory_that_is_not_a_checkout_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BATON_HOME", str(tmp_path))
    assert cli.main(["strategy", "new", "x", "--dir", str(tmp_path / "nowhere")]) == 1
    assert "must be a Baton checkout" in capsys.readouterr().err

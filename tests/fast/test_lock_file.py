"""requirements.lock pins, with hashes, every package pyproject.toml asks for (runtime and dev),
within its range: a dependency added or a range moved without `make lock` fails here, not
only at the next bootstrap's `pip check`."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\]+)")


def pins(lock: Path) -> dict[str, str]:
    text = lock.read_text()
    out = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = PIN.match(block)
        if m:
            assert "--hash=sha256:" in block, f"{lock.name}: {m.group(1)} has no hash"
            out[canonicalize_name(m.group(1))] = m.group(2)
    return out


def test_every_dependency_of_pyproject_is_pinned_within_its_range_with_hashes():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(x) for x in project["dependencies"] + project["optional-dependencies"]["dev"]]
    locked = pins(ROOT / "requirements.lock")
    for req in wanted:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={locked[name]}, outside {req.specifier}: run `make lock`"
        )
    # What installs Baton itself without build isolation.
    build = Requirement(tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"][0])
    assert build.specifier.contains(locked[canonicalize_name(build.name)])


def test_the_tools_lock_pins_import_linter_within_the_makefiles_range():
    makefile = (ROOT / "Makefile").read_text()
    spec = re.search(r"echo '(import-linter[^']*)' \| \$\(UV_COMPILE\)", makefile)
    assert spec, "the Makefile's lock target names import-linter's range"
    req = Requirement(spec.group(1))
    locked = pins(ROOT / "requirements-tools.lock")
    assert req.specifier.contains(locked["import-linter"])

"""Immutable releases (deploy/releases.py) and the worker launcher (deploy/launch.py)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from baton.errors import ReleaseError
from deploy import releases
from deploy.launch import COLORS as LAUNCH_COLORS
from deploy.launch import SHADOW as LAUNCH_SHADOW
from deploy.releases import PACKAGES, Release
from state.keys import COLORS

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "deploy" / "launch.py"

# The fake worker the launcher execs: reports where and how it runs, as one JSON line.
FAKE_WORKER_MAIN = """\
import json, os, sys
print(json.dumps({
    "cwd": os.getcwd(),
    "argv": sys.argv,
    "file": __file__,
    "pid": os.getpid(),
    "release": os.environ["BATON_RELEASE"],
    "code_dir": os.environ["BATON_CODE_DIR"],
    "pythonpath": os.environ["PYTHONPATH"],
    "home": os.environ["BATON_HOME"],
}))
"""


def make_source(root: Path, tick: str = "TICK = 1\n") -> Path:
    """A small tree holding every package, plus files that must not be copied."""
    for package in PACKAGES:
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text(f"# {package}\n")
    (root / "kernel" / "tick.py").write_text(tick)
    (root / "state" / "lua").mkdir()
    (root / "state" / "lua" / "commit.lua").write_text("return 1\n")
    (root / "worker" / "__main__.py").write_text(FAKE_WORKER_MAIN)
    (root / "worker" / "strategies").mkdir()
    (root / "worker" / "strategies" / "__init__.py").write_text("")
    (root / "worker" / "strategies" / "x.py").write_text("EDGE = 0.1\n")
    (root / "kernel" / "__pycache__").mkdir()
    (root / "kernel" / "__pycache__" / "tick.cpython-311.pyc").write_bytes(b"\0junk")
    (root / "kernel" / "stray.pyc").write_bytes(b"\0junk")
    (root / "kernel" / ".swp").write_text("editor junk")
    (root / "pyproject.toml").write_text("[project]\nname = 'fake'\n")
    return root


def staging_leftovers(home: Path) -> list[str]:
    root = releases.releases_dir(home)
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".")) if root.exists() else []


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_source(tmp_path / "src")


# --- staging -----------------------------------------------------------------------------


def test_stage_copies_packages_without_caches_and_sets_modes(home: Path, src: Path) -> None:
    r = releases.stage(home, source=src)

    assert r.path == releases.releases_dir(home) / r.id
    assert r.source == f"dir:{src.resolve()}"
    assert r.git_commit == ""  # a tmp dir is not a git work tree
    assert not r.reused
    assert (r.path / "kernel" / "tick.py").read_text() == "TICK = 1\n"
    assert (r.path / "state" / "lua" / "commit.lua").is_file()
    assert (r.path / "pyproject.toml").is_file()
    assert not (r.path / "kernel" / "__pycache__").exists()
    assert not (r.path / "kernel" / "stray.pyc").exists()
    assert not (r.path / "kernel" / ".swp").exists()
    assert mode(r.path / "kernel" / "tick.py") == 0o400
    assert mode(r.path / "RELEASE.json") == 0o400
    assert mode(r.path / "worker" / "strategies" / "x.py") == 0o600
    assert mode(r.path / "worker" / "strategies") & 0o200  # Python may write __pycache__ here
    assert mode(r.path / "kernel") & 0o200
    assert staging_leftovers(home) == []


def test_release_id_is_sortable_and_carries_the_content_hash(home: Path, src: Path) -> None:
    r = releases.stage(home, source=src)
    stamp, short_hash = r.id.split("-")
    assert len(stamp) == 15 and stamp[8] == "T" and (stamp[:8] + stamp[9:]).isdigit()
    assert short_hash == r.content_hash[:10]
    assert len(r.content_hash) == 64
    assert r.created_utc.endswith("Z") and r.created_utc.replace("-", "").replace(":", "")[:15] == stamp


def test_same_content_is_reused_and_changed_content_is_a_new_release(
    home: Path, src: Path, tmp_path: Path
) -> None:
    first = releases.stage(home, source=src)
    # Caches and dot-files do not count; neither does where the tree lives.
    (src / "worker" / "__pycache__").mkdir()
    (src / "worker" / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"new junk")
    (src / ".git-ish").write_text("x")
    again = releases.stage(home, source=src)
    elsewhere = releases.stage(home, source=make_source(tmp_path / "copy"))

    assert again.reused and elsewhere.reused
    assert again.id == elsewhere.id == first.id
    assert again.content_hash == first.content_hash
    assert again.path == first.path

    (src / "kernel" / "tick.py").write_text("TICK = 2\n")
    changed = releases.stage(home, source=src)
    assert not changed.reused
    assert changed.id != first.id and changed.content_hash != first.content_hash
    assert (changed.path / "kernel" / "tick.py").read_text() == "TICK = 2\n"
    assert [r.id for r in releases.list_releases(home)] == sorted([first.id, changed.id])


def test_a_release_edited_in_place_is_not_reused(home: Path, src: Path) -> None:
    first = releases.stage(home, source=src)
    (first.path / "worker" / "strategies" / "x.py").write_text("EDGE = 0.9\n")  # hot-reloaded edit
    second = releases.stage(home, source=src)
    assert not second.reused
    assert second.content_hash == first.content_hash and second.id != first.id
    assert (second.path / "worker" / "strategies" / "x.py").read_text() == "EDGE = 0.1\n"


def test_manifest_round_trip(home: Path, src: Path) -> None:
    r = releases.stage(home, source=src)
    assert releases.read_manifest(home, r.id) == r
    data = json.loads((r.path / "RELEASE.json").read_text())
    assert data["id"] == r.id
    assert data["content_hash"] == r.content_hash
    assert data["source"] == r.source
    assert data["packages"] == list(PACKAGES)
    assert releases.list_releases(home) == [r]


def test_corrupt_or_missing_manifest_is_named_and_skipped_by_listing(home: Path, src: Path) -> None:
    good = releases.stage(home, source=src)
    (src / "kernel" / "tick.py").write_text("TICK = 3\n")
    bad = releases.stage(home, source=src)
    manifest = bad.path / "RELEASE.json"
    os.chmod(manifest, 0o644)
    manifest.write_text("{not json")

    with pytest.raises(ReleaseError, match=str(manifest)):
        releases.read_manifest(home, bad.id)
    with pytest.raises(ReleaseError, match="no manifest"):
        releases.read_manifest(home, "20260101T000000-0123456789")
    with pytest.raises(ReleaseError, match="invalid release id"):
        releases.read_manifest(home, "../etc")
    assert releases.list_releases(home) == [good]


def test_source_missing_a_package_is_an_error_naming_it(home: Path, src: Path) -> None:
    shutil.rmtree(src / "kernel")
    with pytest.raises(ReleaseError, match=r"has no package 'kernel'") as info:
        releases.stage(home, source=src)
    assert str(src) in str(info.value)
    assert staging_leftovers(home) == []
    assert releases.list_releases(home) == []


def test_source_and_ref_together_are_refused(home: Path, src: Path) -> None:
    with pytest.raises(ReleaseError, match="not both"):
        releases.stage(home, source=src, ref="HEAD")


def test_a_failed_stage_leaves_nothing_half_made(
    home: Path, src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_rename(a: object, b: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(releases.os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk on fire"):
        releases.stage(home, source=src)
    assert staging_leftovers(home) == []
    assert list(releases.releases_dir(home).iterdir()) == []


def test_stage_the_real_working_tree(home: Path) -> None:
    r = releases.stage(home)
    assert r.source == f"worktree:{REPO}"
    tick = r.path / "kernel" / "tick.py"
    assert tick.read_bytes() == (REPO / "kernel" / "tick.py").read_bytes()
    assert mode(tick) == 0o400
    assert mode(r.path / "worker" / "strategies" / "snipe.py") == 0o600
    assert (r.path / "state" / "lua").is_dir() and any((r.path / "state" / "lua").glob("*.lua"))
    assert not list(r.path.rglob("__pycache__"))
    assert not list(r.path.rglob("*.pyc"))
    if shutil.which("git") and (REPO / ".git").exists():
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
        assert r.git_commit.removesuffix("-dirty") == head.stdout.strip()
    assert releases.stage(home).reused


# --- git refs ----------------------------------------------------------------------------

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(repo: Path, *args: str) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = make_source(tmp_path / "gitrepo")
    shutil.rmtree(repo / "sim")  # a package that does not exist at the ref
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "first")
    return repo


@needs_git
def test_stage_a_git_ref_takes_the_committed_code(home: Path, git_repo: Path) -> None:
    commit = git(git_repo, "rev-parse", "HEAD")
    (git_repo / "kernel" / "tick.py").write_text("TICK = 'uncommitted'\n")

    r = releases.stage(home, ref="HEAD", repo=git_repo)
    assert r.source == f"ref:HEAD@{commit}"
    assert r.git_commit == commit
    assert (r.path / "kernel" / "tick.py").read_text() == "TICK = 1\n"
    assert not (r.path / "sim").exists()
    assert not (r.path / "kernel" / "__pycache__").exists()  # committed by `add -A`, never copied
    assert mode(r.path / "kernel" / "tick.py") == 0o400
    assert mode(r.path / "worker" / "strategies" / "x.py") == 0o600
    manifest = json.loads((r.path / "RELEASE.json").read_text())
    assert "sim" not in manifest["packages"] and "worker" in manifest["packages"]
    assert releases.stage(home, ref=commit, repo=git_repo).reused


@needs_git
def test_stage_a_git_worktree_records_a_dirty_commit(home: Path, git_repo: Path) -> None:
    (git_repo / "sim").mkdir()
    (git_repo / "sim" / "__init__.py").write_text("")
    commit = git(git_repo, "rev-parse", "HEAD")
    r = releases.stage(home, repo=git_repo)
    assert r.git_commit == f"{commit}-dirty"
    assert r.source == f"worktree:{git_repo.resolve()}"


@needs_git
def test_a_bad_ref_is_an_error_naming_it(home: Path, git_repo: Path) -> None:
    with pytest.raises(ReleaseError, match="nosuchref"):
        releases.stage(home, ref="nosuchref", repo=git_repo)
    assert staging_leftovers(home) == []
    assert releases.list_releases(home) == []


# --- colour pointers and pruning ---------------------------------------------------------


def stage_n(home: Path, src: Path, n: int) -> list[Release]:
    for i in range(n):
        (src / "kernel" / "tick.py").write_text(f"TICK = {i}\n")
        releases.stage(home, source=src)
    staged = releases.list_releases(home)
    assert len(staged) == n
    return staged  # oldest first (ids within one second sort by hash)


def test_point_and_pointed_replace_the_pointer_atomically(home: Path, src: Path) -> None:
    r1, r2 = stage_n(home, src, 2)
    assert releases.pointed(home, "blue") is None

    releases.point(home, "blue", r1.id)
    link = releases.releases_dir(home) / "colors" / "blue"
    assert link.is_symlink() and os.readlink(link) == f"../{r1.id}"
    assert releases.pointed(home, "blue") == r1.id
    assert releases.pointed(home, "green") is None

    releases.point(home, "blue", r2.id)
    releases.point(home, "green", r1.id)
    assert releases.pointed(home, "blue") == r2.id
    assert releases.pointed(home, "green") == r1.id
    assert link.resolve() == r2.path.resolve()
    assert sorted(p.name for p in link.parent.iterdir()) == ["blue", "green"]  # no .new-* left

    with pytest.raises(ReleaseError, match="unknown colour 'red'"):
        releases.point(home, "red", r1.id)
    with pytest.raises(ReleaseError, match="no manifest"):
        releases.point(home, "blue", "20260101T000000-0123456789")
    assert releases.pointed(home, "blue") == r2.id


def test_prune_keeps_the_newest_and_every_pointed_release(home: Path, src: Path) -> None:
    r1, r2, r3, r4, r5 = stage_n(home, src, 5)
    releases.point(home, "blue", r1.id)
    releases.point(home, "green", r3.id)

    removed = releases.prune(home, keep=2)
    assert removed == [r2.id]
    assert [r.id for r in releases.list_releases(home)] == [r1.id, r3.id, r4.id, r5.id]
    assert not r2.path.exists()

    releases.point(home, "blue", r5.id)
    assert releases.prune(home, keep=0) == [r1.id, r4.id]
    assert [r.id for r in releases.list_releases(home)] == [r3.id, r5.id]
    assert releases.prune(home, keep=0) == []


# --- the launcher ------------------------------------------------------------------------


def launch(home: Path | None, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("BATON_HOME", "BATON_RELEASE")}
    env["PYTHONPATH"] = "/nonexistent/already-there"
    if home is not None:
        env["BATON_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, str(LAUNCH), *args],
        env=env,
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    with proc:
        out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_launcher_execs_the_worker_of_the_pointed_release(home: Path, src: Path) -> None:
    r = releases.stage(home, source=src)
    releases.point(home, "green", r.id)
    path = os.path.realpath(r.path)

    proc = launch(home, "green", "--dry-run", "x")
    pid = proc.pid
    code, out, err = run(proc)

    assert code == 0, err
    first, second = out.splitlines()
    assert first == f"launch: worker-green release {r.id} from {path}"
    seen = json.loads(second)
    assert seen["pid"] == pid  # exec'd in place: supervisor's pid is the worker's
    assert seen["cwd"] == path
    assert seen["file"] == os.path.join(path, "worker", "__main__.py")  # not the repo's worker
    assert seen["argv"][1:] == ["--color", "green", "--dry-run", "x"]
    assert seen["release"] == r.id
    assert seen["code_dir"] == path
    assert seen["pythonpath"] == f"{path}{os.pathsep}/nonexistent/already-there"
    assert seen["home"] == str(home)


def test_launcher_without_a_pointer_exits_4(home: Path) -> None:
    code, out, err = run(launch(home, "blue"))
    assert code == 4
    assert out == ""
    assert "launch: colour blue points at no release (run 'make deploy' or 'make run' to stage one)" in err


def test_launcher_with_a_dangling_pointer_exits_4(home: Path, src: Path) -> None:
    r = releases.stage(home, source=src)
    releases.point(home, "blue", r.id)
    shutil.rmtree(r.path)
    code, _out, err = run(launch(home, "blue"))
    assert code == 4
    assert "colour blue points at no release" in err


def test_launcher_needs_baton_home_and_a_colour(home: Path) -> None:
    code, _out, err = run(launch(None, "blue"))
    assert code == 4 and "BATON_HOME is not set" in err
    code, _out, err = run(launch(home, "red"))
    assert code == 2 and "usage" in err


def test_the_launcher_knows_the_same_colours_as_the_keys():
    assert LAUNCH_COLORS == COLORS
    assert LAUNCH_SHADOW == releases.SHADOW


def test_install_copies_a_release_into_another_home_under_the_same_id(
    home: Path, src: Path, tmp_path: Path
) -> None:
    rel = releases.stage(home, source=src)
    other_home = tmp_path / "other-home"
    there = releases.install(home, rel.id, other_home)
    assert there.id == rel.id and there.content_hash == rel.content_hash and not there.reused
    assert there.path == releases.releases_dir(other_home) / rel.id
    assert releases.read_manifest(other_home, rel.id) == dataclasses.replace(there, reused=False)
    assert sorted(p.relative_to(there.path) for p in there.path.rglob("*")) == sorted(
        p.relative_to(rel.path) for p in rel.path.rglob("*")
    )
    for p in rel.path.rglob("*"):
        q = there.path / p.relative_to(rel.path)
        assert stat.S_IMODE(q.stat().st_mode) == stat.S_IMODE(p.stat().st_mode)
    releases.point(other_home, "green", rel.id)  # a complete release: a colour can run it
    assert releases.install(home, rel.id, other_home).reused
    assert [p.name for p in releases.releases_dir(other_home).iterdir() if p.name.startswith(".")] == []


def test_install_refuses_a_release_of_the_same_id_with_other_code(
    home: Path, src: Path, tmp_path: Path
) -> None:
    rel = releases.stage(home, source=src)
    other_home = tmp_path / "other-home"
    there = releases.install(home, rel.id, other_home)
    (there.path / "worker" / "strategies" / "x.py").write_text("EDGE = 0.2\n")  # hot reload may
    with pytest.raises(ReleaseError, match="other code"):
        releases.install(home, rel.id, other_home)

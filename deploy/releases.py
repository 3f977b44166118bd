"""Immutable releases: the code a worker colour runs, staged under ``$BATON_HOME/var/releases``.

Layout::

    var/releases/
        20260509T073525-3fa9c0d2e1/     one release: the packages + pyproject.toml + RELEASE.json
        .staging-k2j4h1/                a release being staged (renamed into place when complete)
        colors/blue -> ../20260509T073525-3fa9c0d2e1
        colors/green -> ../...
        colors/shadow -> ../...         the release a shadow deploy evaluates (no worker)

A release is identified by ``<UTC yyyymmddTHHMMSS>-<content hash[:10]>``; staging the same content
again returns the existing release (``reused=True``). Files are read-only except
``worker/strategies/*.py``, which may be hot-reloaded in place; all of it is owner-only. Colour
pointers are relative symlinks replaced atomically. Standard library only: ``deploy/launch.py``
and ``make deploy`` use it.

Every strategy file a release holds is also kept by content under ``var/strategies/``
(kernel/strategy_store.py, standard library only too), which ``prune`` never touches: replay
finds a record's code there after its release was pruned or its strategies reloaded in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from baton.errors import ReleaseError
from kernel import strategy_store
from kernel.clock import wall_utc
from state.keys import COLORS

PACKAGES = ("baton", "control", "deploy", "feed", "kernel", "sim", "state", "venues", "worker")
EXTRA_FILES = ("pyproject.toml",)  # copied when present; informational (the venv has the deps)
MANIFEST = "RELEASE.json"
COLORS_DIR = "colors"
# A pointer beside the colours': the release a shadow deploy evaluates (deploy/shadow.py). It
# never holds the lease; deploy/launch.py runs its shadow evaluator, not a worker.
SHADOW = "shadow"
POINTERS = (*COLORS, SHADOW)
STAGING_PREFIX = ".staging-"
REPO_ROOT = Path(__file__).resolve().parent.parent

_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}-[0-9a-f]{10}$")
_SKIP_SUFFIXES = (".pyc", ".pyo")
# Owner-only, like everything under var/: the code a worker runs is nobody else's to read.
_READ_ONLY = 0o400
_WRITABLE_FILE = 0o600
_DIR_MODE = 0o700


@dataclasses.dataclass(frozen=True)
class Release:
    id: str
    path: Path
    content_hash: str
    created_utc: str
    source: str  # worktree:<path> | dir:<path> | ref:<ref>@<commit>
    git_commit: str  # "" when unknown; "<sha>-dirty" when the worktree's packages had changes
    reused: bool = False  # True when stage() found an identical release and returned it


def releases_dir(home: Path) -> Path:
    return Path(home) / "var" / "releases"


# --- selecting and hashing files ---------------------------------------------------------


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__" or name.endswith(_SKIP_SUFFIXES)


def _release_files(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Relative POSIX paths of the files a release holds (from a source tree or a release), sorted.

    Skips ``__pycache__``, ``*.pyc``/``*.pyo`` and dot-files/dot-dirs; symlinked directories are not
    followed (``os.walk`` default), symlinked files are copied as their content.
    """
    files: list[str] = [name for name in EXTRA_FILES if (root / name).is_file()]
    for package in packages:
        for dirpath, dirnames, filenames in os.walk(root / package):
            dirnames[:] = [d for d in dirnames if not _skipped(d)]
            for name in filenames:
                full = Path(dirpath) / name
                if not _skipped(name) and full.is_file():
                    files.append(full.relative_to(root).as_posix())
    return sorted(files)


def _hash_update(h: hashlib._Hash, rel: str, data: bytes) -> None:
    # Length-prefixed so that no two different (path, bytes) sequences hash alike.
    name = rel.encode()
    h.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
    h.update(data)


def _tree_hash(root: Path, packages: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for rel in _release_files(root, packages):
        _hash_update(h, rel, (root / rel).read_bytes())
    return h.hexdigest()


def _file_mode(rel: str) -> int:
    parts = rel.split("/")
    if len(parts) == 3 and parts[:2] == ["worker", "strategies"] and parts[2].endswith(".py"):
        return _WRITABLE_FILE  # strategies may be hot-reloaded in place
    return _READ_ONLY


def _copy_tree(src: Path, dst: Path, packages: tuple[str, ...]) -> str:
    """Copy the release files of ``src`` into ``dst`` (read-only); return their content hash."""
    h = hashlib.sha256()
    for package in packages:
        (dst / package).mkdir(mode=_DIR_MODE)  # an empty package still makes a directory
    for rel in _release_files(src, packages):
        data = (src / rel).read_bytes()
        _hash_update(h, rel, data)
        target = dst / rel
        target.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
        target.write_bytes(data)
        os.chmod(target, _file_mode(rel))
    return h.hexdigest()


def _keep_strategies(home: Path, release: Path) -> None:
    """The release's strategy files kept by content under var/strategies/ too
    (kernel/strategy_store.py): the input log's records name them by content, and outlive
    a prune of the release and a reload that rewrites its files in place."""
    try:
        strategy_store.keep_strategies(home, release / "worker" / "strategies")
    except OSError as e:
        where = strategy_store.store_dir(home)
        raise ReleaseError(f"cannot keep release {release.name}'s strategies in {where}: {e}") from e


def _remove_tree(path: Path) -> None:
    """rmtree that also works when someone made directories read-only."""
    if not path.exists():
        return
    for dirpath, _dirnames, _filenames in os.walk(path):
        os.chmod(dirpath, os.stat(dirpath).st_mode | stat.S_IRWXU)
    shutil.rmtree(path)


# --- git ---------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run git in ``repo``; raises FileNotFoundError when git is not installed."""
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=False)


def _worktree_commit(path: Path) -> str:
    """HEAD of the git work tree holding ``path`` (+ "-dirty" if its packages changed), or ""."""
    try:
        head = _git(path, "rev-parse", "--verify", "HEAD")
        if head.returncode != 0:
            return ""
        status = _git(path, "status", "--porcelain", "--", *PACKAGES)
    except OSError:
        return ""
    commit = head.stdout.decode().strip()
    dirty = status.returncode != 0 or bool(status.stdout.strip())
    return commit + ("-dirty" if dirty else "")


def _extract_ref(repo: Path, ref: str, into: Path) -> tuple[str, tuple[str, ...]]:
    """Extract the packages of ``ref`` into ``into``; return (commit, packages present at the ref)."""

    def fail(what: str, proc: subprocess.CompletedProcess[bytes]) -> ReleaseError:
        err = proc.stderr.decode(errors="replace").strip() or f"exit {proc.returncode}"
        return ReleaseError(f"{what} of {ref!r} in {repo} failed: {err}")

    try:
        rev = _git(repo, "rev-parse", "--verify", "--end-of-options", f"{ref}^{{commit}}")
        if rev.returncode != 0:
            raise fail("git rev-parse", rev)
        commit = rev.stdout.decode().strip()
        listing = _git(repo, "ls-tree", "--name-only", commit, "--", *PACKAGES, *EXTRA_FILES)
        if listing.returncode != 0:
            raise fail("git ls-tree", listing)
        present = set(listing.stdout.decode().split())
        packages = tuple(p for p in PACKAGES if p in present)
        if "worker" not in packages:
            raise ReleaseError(f"ref {ref!r} ({commit}) in {repo} has no package 'worker'")
        names = [*packages, *(f for f in EXTRA_FILES if f in present)]
        archive = _git(repo, "archive", "--format=tar", commit, *names)
        if archive.returncode != 0:
            raise fail("git archive", archive)
    except FileNotFoundError as exc:
        raise ReleaseError(f"cannot stage ref {ref!r}: git is not installed ({exc})") from exc
    with tarfile.open(fileobj=io.BytesIO(archive.stdout), mode="r:") as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links/paths leaving `into`
            tar.extractall(into, filter="data")
        else:  # pragma: no cover - old 3.11 patch releases
            tar.extractall(into)  # our own repository's archive
    return commit, packages


# --- manifests and listing ---------------------------------------------------------------


def read_manifest(home: Path, release_id: str) -> Release:
    """The release ``release_id`` as described by its RELEASE.json (ReleaseError if missing/corrupt)."""
    if not _ID_RE.match(release_id):
        raise ReleaseError(f"invalid release id {release_id!r}")
    path = releases_dir(home) / release_id
    manifest = path / MANIFEST
    try:
        data = json.loads(manifest.read_text())
        release = Release(
            id=str(data["id"]),
            path=path,
            content_hash=str(data["content_hash"]),
            created_utc=str(data["created_utc"]),
            source=str(data["source"]),
            git_commit=str(data["git_commit"]),
        )
    except FileNotFoundError as exc:
        raise ReleaseError(f"release {release_id!r} has no manifest {manifest}") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReleaseError(f"corrupt manifest {manifest}: {exc!r}") from exc
    if release.id != release_id:
        raise ReleaseError(f"corrupt manifest {manifest}: id {release.id!r} != directory {release_id!r}")
    return release


def _release_dirs(home: Path) -> Iterator[str]:
    root = releases_dir(home)
    if not root.is_dir():
        return
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False) and _ID_RE.match(entry.name):
            yield entry.name  # skips .staging-*, colors/ and anything else


def list_releases(home: Path) -> list[Release]:
    """Every release with a valid manifest, oldest first (ids sort by creation time)."""
    releases = []
    for name in _release_dirs(home):
        try:
            releases.append(read_manifest(home, name))
        except ReleaseError:
            continue
    return sorted(releases, key=lambda r: r.id)


def _find_identical(home: Path, content_hash: str, packages: tuple[str, ...]) -> Release | None:
    """An existing release with this content hash whose files still match it (strategies are
    writable, so a release may have been edited in place since it was staged)."""
    for release in reversed(list_releases(home)):
        if release.content_hash == content_hash and _tree_hash(release.path, packages) == content_hash:
            return dataclasses.replace(release, reused=True)
    return None


# --- staging -----------------------------------------------------------------------------


def stage(
    home: Path,
    *,
    source: Path | None = None,
    ref: str | None = None,
    repo: Path = REPO_ROOT,
) -> Release:
    """Stage code as an immutable release and return it.

    Default: the working tree of ``repo`` (uncommitted edits included); ``source``: another
    directory holding all PACKAGES; ``ref``: a git ref of ``repo`` (only the packages that exist
    there). Returns an existing release with ``reused=True`` when the content is identical.
    """
    if source is not None and ref is not None:
        raise ReleaseError("stage() takes a source directory or a git ref, not both")
    root = releases_dir(home)
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    repo = Path(repo).resolve()

    with tempfile.TemporaryDirectory(prefix="baton-ref-") as extracted:
        if ref is not None:
            commit, packages = _extract_ref(repo, ref, Path(extracted))
            src, source_desc, git_commit = Path(extracted), f"ref:{ref}@{commit}", commit
        else:
            src = Path(source if source is not None else repo).resolve()
            if not src.is_dir():
                raise ReleaseError(f"source {src} is not a directory")
            for package in PACKAGES:
                if not (src / package).is_dir():
                    raise ReleaseError(f"source {src} has no package {package!r}")
            packages = PACKAGES
            source_desc = f"{'dir' if source is not None else 'worktree'}:{src}"
            git_commit = _worktree_commit(src)

        existing = _find_identical(home, _tree_hash(src, packages), packages)
        if existing is not None:
            _keep_strategies(home, existing.path)
            return existing

        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
        try:
            os.chmod(staging, _DIR_MODE)
            content_hash = _copy_tree(src, staging, packages)
            for _attempt in range(3):
                now = wall_utc()
                release_id = f"{now:%Y%m%dT%H%M%S}-{content_hash[:10]}"
                created_utc = now.strftime("%Y-%m-%dT%H:%M:%SZ")
                manifest = {
                    "id": release_id,
                    "content_hash": content_hash,
                    "created_utc": created_utc,
                    "source": source_desc,
                    "git_commit": git_commit,
                    "packages": list(packages),
                }
                (staging / MANIFEST).unlink(missing_ok=True)  # read-only from a previous attempt
                (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
                os.chmod(staging / MANIFEST, _READ_ONLY)
                final = root / release_id
                try:
                    os.rename(staging, final)
                    break
                except OSError:
                    if not final.exists():
                        raise
                # The id is taken (same content, same second). Reuse that release when its files
                # still match; if its strategies were edited in place, take the next second's id.
                existing = _find_identical(home, content_hash, packages)
                if existing is not None:
                    _remove_tree(staging)
                    _keep_strategies(home, existing.path)
                    return existing
                time.sleep(1.01 - now.microsecond / 1e6)
            else:
                raise ReleaseError(f"release id {release_id} stays taken by a release with other content")
        except BaseException:
            _remove_tree(staging)
            raise
    _keep_strategies(home, final)
    return Release(release_id, final, content_hash, created_utc, source_desc, git_commit)


def install(src_home: Path, release_id: str, dst_home: Path) -> Release:
    """The release ``release_id`` of ``src_home`` in ``dst_home`` too, under the same id (another
    host's home, whose colour then runs the very release this one does); kept when there already."""
    rel = read_manifest(src_home, release_id)
    packages = tuple(p for p in PACKAGES if (rel.path / p).is_dir())
    root = releases_dir(dst_home)
    if (root / release_id).exists():
        there = read_manifest(dst_home, release_id)
        if _tree_hash(there.path, packages) != rel.content_hash:
            raise ReleaseError(f"release {release_id} in {root} holds other code than in {src_home}")
        _keep_strategies(dst_home, there.path)
        return dataclasses.replace(there, reused=True)
    root.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))
    try:
        os.chmod(staging, _DIR_MODE)
        if _copy_tree(rel.path, staging, packages) != rel.content_hash:
            raise ReleaseError(f"release {release_id} in {src_home} was changed since it was staged")
        shutil.copyfile(rel.path / MANIFEST, staging / MANIFEST)
        os.chmod(staging / MANIFEST, _READ_ONLY)
        os.rename(staging, root / release_id)
    except BaseException:
        _remove_tree(staging)
        raise
    _keep_strategies(dst_home, root / release_id)
    return dataclasses.replace(rel, path=root / release_id)


# --- colour pointers ---------------------------------------------------------------------


def _color_link(home: Path, color: str) -> Path:
    if color not in POINTERS:
        raise ReleaseError(f"unknown colour {color!r} (expected one of {', '.join(POINTERS)})")
    return releases_dir(home) / COLORS_DIR / color


def point(home: Path, color: str, release_id: str) -> None:
    """Atomically point ``color`` at the release ``release_id`` (a relative symlink)."""
    link = _color_link(home, color)
    read_manifest(home, release_id)  # the release must exist and be complete
    link.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    tmp = link.with_name(f"{color}.new-{secrets.token_hex(6)}")
    os.symlink(f"../{release_id}", tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pointed(home: Path, color: str) -> str | None:
    """The id of the release ``color`` points at, or None (no pointer, or a dangling one)."""
    link = _color_link(home, color)
    try:
        target = os.readlink(link)
    except OSError:  # no pointer, or not a symlink
        return None
    name = Path(target).name
    return name if _ID_RE.match(name) and (link.parent / target).is_dir() else None


def prune(home: Path, keep: int = 5) -> list[str]:
    """Delete the releases older than the newest ``keep``, except those a colour points at.

    Returns the removed ids, oldest first.
    """
    if keep < 0:
        raise ValueError(f"keep must be >= 0, not {keep}")
    protected = {pointed(home, color) for color in POINTERS}
    releases = list_releases(home)
    old = releases[: max(0, len(releases) - keep)]
    removed = []
    for release in old:
        if release.id not in protected:
            _remove_tree(release.path)
            removed.append(release.id)
    return removed

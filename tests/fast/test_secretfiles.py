import os
from pathlib import Path

import pytest

from baton.errors import SecretFileError
from baton.secretfiles import ensure_secret, private_dir, read_secret, secrets_dir, write_secret


def test_ensure_secret_creates_owner_only_file_once(tmp_path: Path) -> None:
    path = secrets_dir(tmp_path) / "redis-worker"
    first = ensure_secret(path)
    assert len(first) >= 32
    assert ensure_secret(path) == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_read_secret_refuses_a_file_others_can_read(tmp_path: Path) -> None:
    path = tmp_path / "s"
    write_secret(path, "hunter2-hunter2")
    os.chmod(path, 0o644)
    with pytest.raises(SecretFileError, match="chmod 600") as e:
        read_secret(path)
    assert "hunter2" not in str(e.value)


def test_read_secret_refuses_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SecretFileError, match="missing"):
        read_secret(tmp_path / "nope")
    path = tmp_path / "empty"
    write_secret(path, "")
    with pytest.raises(SecretFileError, match="empty"):
        read_secret(path)


def test_private_dir_tightens_a_loose_folder(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir(mode=0o755)
    os.chmod(d, 0o755)
    private_dir(d)
    assert d.stat().st_mode & 0o777 == 0o700


def test_write_secret_replaces_atomically(tmp_path: Path) -> None:
    path = tmp_path / "x" / "s"
    write_secret(path, "one-one-one-one")
    write_secret(path, "two-two-two-two")
    assert read_secret(path) == "two-two-two-two"
    assert [p.name for p in path.parent.iterdir()] == ["s"]


def test_the_parents_it_makes_are_owner_only_too(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = secrets_dir(tmp_path) / "redis" / "worker"
        ensure_secret(path)
    finally:
        os.umask(old)
    for folder in (tmp_path / "var", secrets_dir(tmp_path), secrets_dir(tmp_path) / "redis"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder

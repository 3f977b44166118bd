"""Owner-only secret files: where every secret Baton keeps on disk is written and read.

Secrets (the Redis users' passwords, the API token, a signing key moved out of the
environment) live in files under `$BATON_HOME/var/secrets/`: a folder only its owner may enter
(0700) holding files only their owner may read (0600). A file or folder that another user could
read, or that belongs to another user, is refused with an error naming the path and the fix,
the way ssh refuses a private key others can read: a secret someone else could have read is
not one. Values are never logged; errors name the file, never its content.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from baton.errors import SecretFileError

DIR_MODE = 0o700
FILE_MODE = 0o600


def secrets_dir(home: Path) -> Path:
    """The secrets folder of the stack whose BATON_HOME is `home`."""
    return home / "var" / "secrets"


def private_dir(path: Path) -> Path:
    """`path` as a folder only its owner may enter: created 0700, tightened to 0700 if it is
    ours and looser, refused if it belongs to another user."""
    # mkdir's mode applies to the last folder only: the parents it makes (var/secrets for
    # var/secrets/redis) would get the umask's 0755, so each missing one is made here.
    for folder in [*reversed(path.parents), path]:
        if not folder.exists():
            folder.mkdir(mode=DIR_MODE, exist_ok=True)
            os.chmod(folder, DIR_MODE)
    st = path.stat()
    if st.st_uid != os.getuid():
        raise SecretFileError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & 0o077:
        os.chmod(path, DIR_MODE)
    return path


def check_owner_only(path: Path) -> None:
    """Refuse `path` when it belongs to another user or others could read it."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretFileError(f"secret file {path} is missing") from None
    if st.st_uid != os.getuid():
        raise SecretFileError(f"{path} belongs to uid {st.st_uid}, not to this user ({os.getuid()})")
    if st.st_mode & 0o077:
        raise SecretFileError(
            f"{path} has mode {st.st_mode & 0o777:o}: others can read it; chmod 600 {path} "
            "(secrets are read only from files readable by their owner alone)"
        )


def read_secret(path: Path) -> str:
    """The secret in `path`, stripped; refused when others could read it or it is empty."""
    check_owner_only(path)
    value = path.read_text().strip()
    if not value:
        raise SecretFileError(f"secret file {path} is empty")
    return value


def write_secret(path: Path, value: str) -> None:
    """Write `value` to `path` (mode 0600, in a 0700 folder), replacing it atomically."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.write(fd, value.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_secret(path: Path, nbytes: int = 32) -> str:
    """The secret in `path`, generated (random, URL-safe) on first use.

    O_EXCL: two programs starting at once agree on one value instead of overwriting each
    other's; the loser reads the winner's file.
    """
    if path.exists():
        return read_secret(path)
    private_dir(path.parent)
    value = secrets.token_urlsafe(nbytes)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return read_secret(path)
    try:
        os.write(fd, value.encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return value

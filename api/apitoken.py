"""The control API's bearer token: from BATON_API_TOKEN (which `baton run` moves out of the
programs' environment into `$BATON_HOME/var/secrets/api-token`), or generated once into a file
only its owner can read (`$BATON_HOME/var/api-token`, or BATON_API_TOKEN_FILE).

The token is compared in constant time and never logged, stored in Redis or printed by
anything but `baton token`; the audit stream records its *id* (the first 12 hex digits of its
SHA-256), which names the token without revealing it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from baton.errors import SecretFileError, TokenError
from baton.secretfiles import check_owner_only, read_secret, secrets_dir
from baton.settings import API_TOKEN_FILE, Settings

MIN_LENGTH = 16


class ApiToken:
    """A bearer token. Its repr shows the id only, so that a traceback never leaks it."""

    __slots__ = ("_value", "id", "source")

    def __init__(self, value: str, source: str) -> None:
        if len(value) < MIN_LENGTH:
            raise TokenError(f"the API token from {source} is shorter than {MIN_LENGTH} characters")
        self._value = value.encode()
        self.id = token_id(value)
        self.source = source

    def matches(self, presented: str | bytes | None) -> bool:
        if presented is None:
            return False
        raw = presented.encode() if isinstance(presented, str) else presented
        return hmac.compare_digest(raw, self._value)

    def reveal(self) -> str:
        """The value itself: for a client's Authorization header, never for a log line."""
        return self._value.decode()

    def __repr__(self) -> str:
        return f"ApiToken(id={self.id!r}, source={self.source!r})"


def token_id(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def _read_file(path: Path) -> str:
    try:
        check_owner_only(path)
    except SecretFileError as e:
        raise TokenError(str(e)) from None
    return path.read_text().strip()


def load(s: Settings, env: Mapping[str, str] | None = None, create: bool = True) -> ApiToken:
    """The token in force: BATON_API_TOKEN, else the token file, created (mode 600, with a
    fresh random token) when missing and `create` is set."""
    env = os.environ if env is None else env
    value = env.get("BATON_API_TOKEN", "").strip()
    if value:
        return ApiToken(value, "BATON_API_TOKEN")
    # The token `baton run` found in its environment, moved out of it for the api program
    # (deploy/supervisord.py): it stands for BATON_API_TOKEN.
    moved = secrets_dir(Path(s.home)) / API_TOKEN_FILE
    if moved.exists():
        try:
            return ApiToken(read_secret(moved), str(moved))
        except SecretFileError as e:
            raise TokenError(str(e)) from None
    path = s.token_file
    if path.exists():
        return ApiToken(_read_file(path), str(path))
    if not create:
        raise TokenError(f"no API token: set BATON_API_TOKEN or start the api program once to create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = secrets.token_urlsafe(32)
    # O_EXCL: two programs starting at once do not overwrite each other's token.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return ApiToken(_read_file(path), str(path))
    with os.fdopen(fd, "w") as f:
        f.write(fresh + "\n")
    return ApiToken(fresh, str(path))

"""Dashboard sessions: one per sign-in, kept in Redis under the SHA-256 of its id, with a TTL.

The id (the cookie's value) is a bearer credential, so Redis holds only its digest: whoever
reads Redis cannot sign in with what they read. Each session records the id of the API token
it was opened with; the api program refuses (and deletes) a session of another token, which
is how rotating the token signs everyone out. An index (sorted set digest -> expiry) lets
"sign out everywhere" delete them all. Asyncio only: the api program is the one user.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import msgspec
from redis.exceptions import WatchError

from state.keys import Keys

# secrets.token_urlsafe(32): 43 characters of the URL-safe base64 alphabet.
ID_BYTES = 32
ID_LENGTH = 43
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class Session(msgspec.Struct, frozen=True, kw_only=True):
    token_id: str
    created_ms: int
    expires_ms: int
    # The client address that signed in (for the audit trail and `redis-cli`; not a secret).
    remote: str = ""


_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder(Session)


def new_id() -> str:
    return secrets.token_urlsafe(ID_BYTES)


def well_formed(session_id: str) -> bool:
    """Whether `session_id` could be one we issued: anything else is refused without a lookup."""
    return len(session_id) == ID_LENGTH and set(session_id) <= _ID_CHARS


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class SessionRepo:
    def __init__(self, redis: Any, keys: Keys) -> None:
        self.r: Any = redis
        self.k = keys

    async def create(self, session_id: str, session: Session, now_ms: int) -> None:
        """Store a new session for `expires_ms - now_ms`, and drop expired ones from the index."""
        d = digest(session_id)
        ttl_ms = max(1, session.expires_ms - now_ms)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.k.session(d), _ENC.encode(session), px=ttl_ms)
            pipe.zremrangebyscore(self.k.sessions(), "-inf", now_ms)
            pipe.zadd(self.k.sessions(), {d: session.expires_ms})
            # Every session lives as long (a fixed lifetime): the newest is the last to go.
            pipe.pexpire(self.k.sessions(), ttl_ms)
            await pipe.execute()

    async def get(self, session_id: str) -> Session | None:
        """The session, or None when there is none (expired, signed out) or it cannot be read
        (a session that cannot be read opens nothing)."""
        raw = await self.r.get(self.k.session(digest(session_id)))
        if raw is None:
            return None
        try:
            return _DEC.decode(raw)
        except msgspec.DecodeError:
            return None

    async def exists(self, session_id: str) -> bool:
        return bool(await self.r.exists(self.k.session(digest(session_id))))

    async def delete(self, session_id: str) -> bool:
        d = digest(session_id)
        async with self.r.pipeline(transaction=True) as pipe:
            pipe.delete(self.k.session(d))
            pipe.zrem(self.k.sessions(), d)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def delete_all(self) -> int:
        """Delete every session; returns how many were open. A sign-in racing this either lands
        before (and is deleted) or after (and stays): WATCH on the index retries the rest."""
        index = self.k.sessions()
        async with self.r.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(index)
                    digests = await pipe.zrange(index, 0, -1)
                    pipe.multi()
                    for d in digests:
                        pipe.delete(self.k.session(d))
                    pipe.delete(index)
                    res = await pipe.execute()
                    return sum(int(x) for x in res[:-1])
                except WatchError:
                    continue

    async def count(self, now_ms: int) -> int:
        """Sessions not yet expired."""
        return int(await self.r.zcount(self.k.sessions(), f"({now_ms}", "+inf"))

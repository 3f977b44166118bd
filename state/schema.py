"""The schema stamp, and version skew between blue and green: may code of schema version V
run on this data?

Redis records the schema version of the newest code that wrote it, and the oldest version
whose code can still read that (declared by the writer as SCHEMA_READABLE_BY). A worker
refuses readiness, with a message saying which side is too old, unless both hold:
- it can read the data: the data's version is not older than what it reads from;
- the data is readable by it: a newer writer declared code of version V able to read it.
"""

from __future__ import annotations

from baton.errors import SchemaMismatch
from state.repo import Repo
from state.structs import SCHEMA_READABLE_BY, SCHEMA_READS_FROM, SCHEMA_VERSION


def incompatibility(found: int, readable_by: int, mine: int, reads_from: int) -> str | None:
    """None when code of version `mine` may run on data of version `found`, else why not."""
    if found > mine and readable_by > mine:
        return (
            f"Redis holds schema version {found}, written by newer code that old code of version "
            f"{readable_by} or later can read; this release writes version {mine}: deploy a release "
            f"of schema {readable_by} or later"
        )
    if found < reads_from:
        return (
            f"Redis holds schema version {found}; this release reads versions {reads_from}..{mine} "
            f"only: migrate the data or deploy a release that reads version {found}"
        )
    return None


class SchemaRepo(Repo):
    async def ensure_schema(
        self,
        version: int = SCHEMA_VERSION,
        reads_from: int = SCHEMA_READS_FROM,
        readable_by: int = SCHEMA_READABLE_BY,
    ) -> int:
        """Stamp an empty store with our schema version, or check that we may run on the one it
        has (see incompatibility above); raises SchemaMismatch saying why not."""
        k_version, k_readable = self.k.schema_version(), self.k.schema_readable_by()
        if await self.r.set(k_version, version, nx=True):
            await self.r.set(k_readable, readable_by)
        raw, raw_readable = await self.r.mget([k_version, k_readable])
        try:
            found = int(raw)
            found_readable = int(raw_readable) if raw_readable is not None else found
        except (TypeError, ValueError):
            raise SchemaMismatch(
                f"{k_version} / {k_readable} hold {raw!r} / {raw_readable!r}, not version numbers"
            ) from None
        why = incompatibility(found, found_readable, version, reads_from)
        if why:
            raise SchemaMismatch(why)
        return found

    async def adopt_schema(self, version: int = SCHEMA_VERSION, readable_by: int = SCHEMA_READABLE_BY) -> int:
        """Called by a new lease holder: a newer writer records its version (schema_adopt.lua)."""
        res = await self._call(
            self.scripts.schema_adopt,
            keys=[self.k.schema_version(), self.k.schema_readable_by()],
            args=[version, readable_by],
        )
        return int(res)

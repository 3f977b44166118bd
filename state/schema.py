"""Version skew between blue and green: may code of schema version V run on this data?

Redis records the schema version of the newest code that wrote it, and the oldest version
whose code can still read that (declared by the writer as SCHEMA_READABLE_BY). A worker
refuses readiness, with a message saying which side is too old, unless both hold:
- it can read the data: the data's version is not older than what it reads from;
- the data is readable by it: a newer writer declared code of version V able to read it.
"""

from __future__ import annotations


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

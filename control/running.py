"""The running system's settings, as its programs published them (state/system.py), beside
those of the caller's shell: `baton status` shows the stack's, and names each that the shell
would have differently. A program that never published leaves the shell's value standing."""

from __future__ import annotations

from typing import Any

import msgspec
import redis

from baton.settings import Settings
from kernel.clock import wall_ms
from kernel.lease import decode_lease
from state.keys import Keys
from state.system import PROGRAMS, PUBLISHED, decode_published


class Running(msgspec.Struct, frozen=True, kw_only=True):
    # The caller's settings with every published value in place of its own.
    settings: Settings
    # Name -> value, as the stack has it; name -> program that published it.
    values: dict[str, Any]
    sources: dict[str, str]
    # Name -> {"system": value, "shell": value}: where the caller's shell differs.
    differs: dict[str, dict[str, Any]]
    # Program -> {"pid", "started_ms"} of what each published.
    programs: dict[str, dict[str, Any]]
    api_url: str
    dashboard_url: str


def api_url(host: str, port: int) -> str:
    """The URL a browser on this host uses for an api listening on host:port."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def queue_published(k: Keys, pipe: Any) -> None:
    """Queue the reads of what each program published, on the caller's pipeline (one round
    trip with whatever else it reads); `published_from` turns their replies into a dict."""
    for program in PROGRAMS:
        pipe.hgetall(k.system(program))


def published_from(replies: list[Any]) -> dict[str, dict[str, str]]:
    return {p: raw for p, raw in zip(PROGRAMS, replies, strict=True) if raw}


def running(
    s: Settings, published: dict[str, dict[str, str]], active_color: str | None, problems: list[str]
) -> Running:
    """Merge what the programs published over the caller's settings: the feed's, the api's,
    then the worker's (the active colour's; with none active, the one started last)."""
    decoded = {p: decode_published(p, raw, problems) for p, raw in published.items()}
    workers = [p for p in ("worker-blue", "worker-green") if p in decoded]
    if active_color and f"worker-{active_color}" in decoded:
        worker = f"worker-{active_color}"
    else:
        worker = max(workers, key=lambda p: decoded[p].get("started_ms") or 0, default="")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for program in ("feed", "api", worker):
        for name, value in decoded.get(program, {}).items():
            if name in PUBLISHED:
                values[name], sources[name] = value, program
    shell = msgspec.json.decode(msgspec.json.encode(s))  # as JSON has them: tuples as lists
    merged = msgspec.convert({**shell, **values}, Settings)  # each value was checked
    api = decoded.get("api", {})
    url = str(api.get("url") or api_url(merged.api_host, merged.api_port))
    return Running(
        settings=merged,
        values=values,
        sources=sources,
        differs={n: {"system": v, "shell": shell[n]} for n, v in values.items() if v != shell[n]},
        programs={
            p: {"pid": d.get("pid"), "started_ms": d.get("started_ms")} for p, d in sorted(decoded.items())
        },
        api_url=url,
        dashboard_url=str(api.get("dashboard_url") or f"{url}/"),
    )


def stack_settings(s: Settings, r: redis.Redis) -> Settings:
    """The caller's settings with the running system's in place (one round trip): what a
    door checks a change against, and what a view shows, rather than the caller's shell."""
    k = Keys(s.prefix)
    pipe = r.pipeline(transaction=False)
    pipe.hgetall(k.lease())
    queue_published(k, pipe)
    lease_raw, *raws = pipe.execute()
    lease = decode_lease(lease_raw)
    active = lease.color if lease is not None and lease.live(wall_ms()) else None
    published = published_from(raws)
    return running(s, published, active, []).settings

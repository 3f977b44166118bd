"""The Host allowlist: the API answers only requests addressed to it by a name it knows.

A web page the operator opens can make the browser send requests to 127.0.0.1:<port> by
rebinding its own name to that address (DNS rebinding); the browser then believes the API is
the page's own origin, and the same-origin rules let the page read its answers. Such requests
still carry the page's name in `Host`, so every request whose Host is not on the list gets 421
Misdirected Request, before any route (the dashboard, /metrics, the event stream, 404s) sees
it. The list: the bind address (BATON_API_HOST), localhost, 127.0.0.1 and [::1], each with
the port the request came in on, plus BATON_API_HOSTS (`name` for any port, or `name:port`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from api.context import ctx_of
from baton.errors import MisdirectedRequest
from baton.settings import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
DEFAULT_PORTS = (80, 443)


def host_name(host: str) -> str:
    """An address as it appears in a Host header: IPv6 in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]"
    except ValueError:
        pass
    return host.lower()


def _bind_names(s: Settings) -> list[str]:
    names = list(LOOPBACK_NAMES)
    try:
        unspecified = ipaddress.ip_address(s.api_host).is_unspecified
    except ValueError:
        unspecified = False
    # 0.0.0.0 or :: is "every address", not a name anyone types: those go in BATON_API_HOSTS.
    if s.api_host and not unspecified:
        names.append(host_name(s.api_host))
    return names


def split_host(host: str) -> tuple[str, int | None]:
    """('name', port) of a Host header value; the port is None when there is none (or junk)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        name += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = host.partition(":")
    name = name.rstrip(".")
    if not port:
        return name, None
    return (name, int(port)) if port.isdigit() else (name, -1)


def allowed(s: Settings, host: str | None, port: int) -> bool:
    """Whether a request with this Host header, arriving on local `port`, is for us."""
    if not host:
        return False
    name, their_port = split_host(host)
    if their_port == -1:
        return False
    for entry in s.api_hosts:
        e_name, e_port = split_host(entry)
        if name == e_name and (
            e_port is None or e_port == their_port or (their_port is None and e_port in DEFAULT_PORTS)
        ):
            return True
    if name not in _bind_names(s):
        return False
    # A browser leaves the port out only when it is the scheme's default.
    if their_port is None:
        return port in DEFAULT_PORTS
    return their_port in (port, s.api_port)


def local_port(request: web.BaseRequest, default: int) -> int:
    sock: Any = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if isinstance(sock, tuple) and len(sock) >= 2 and isinstance(sock[1], int):
        return sock[1]
    return default


@web.middleware
async def hosts(request: web.Request, handler: Any) -> web.StreamResponse:
    s = ctx_of(request).s
    host = request.headers.get("Host")
    if not allowed(s, host, local_port(request, s.api_port)):
        what = f"this server does not answer to Host {host[:100]!r}" if host else "no Host header"
        raise MisdirectedRequest(
            f"{what}: it answers to its bind address, localhost, 127.0.0.1 and [::1] with its port, "
            "and to the names in BATON_API_HOSTS"
        )
    return await handler(request)

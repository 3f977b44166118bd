"""Latency and error injection for the sim's HTTP venues, per endpoint, as aiohttp middleware.

Why: the runtime must survive a slow, flaky venue (timeouts, 5xx, dropped connections, an
order that was placed but whose answer was lost). These faults make that testable against a
real socket, without mocks, and a chaos harness can change them on a running sim.

Configuration (JSON; the same format at start-up in `BATON_SIM_FAULTS` and at runtime in
`POST /_sim/faults`): either a list of rules or an object

    {"seed": 7, "rules": [RULE, ...]}

where each RULE is an object with these keys (all optional except "path"):

    "path"        glob on the request path (fnmatch: "/order", "/data/order/*", "*")
    "method"      "GET", "POST", "DELETE", ... or "*" (default "*")
    "app"         "clob" or "binance": restrict the rule to one of the sim's servers (default both)
    "latency_ms"  a number, or [lo, hi] for a uniform draw: added delay (default 0)
    "error_rate"  probability in [0, 1] of answering with an injected error (default 0)
    "status"      HTTP status of an injected error (default 500)
    "body"        JSON body of an injected error (default: the venue's error shape)
    "drop_rate"   probability in [0, 1] of closing the connection without any answer (default 0)
    "phase"       "before" (default): the fault replaces the request, which never reaches the
                  venue; "after": the venue handles the request (an order IS placed) and then
                  the answer is delayed, replaced by the error, or lost: the case that makes
                  exactly-once orders necessary
    "times"       apply the rule to the next N matching requests only, then retire it

The first rule whose method, path (and app) match a request decides its fault; one seeded draw
per request decides drop (u < drop_rate) or error (u < drop_rate + error_rate). The sim's
admin endpoints (`/_sim/...`, e.g. `GET`/`POST`/`DELETE /_sim/faults`) are never faulted, so
a test can always clear what it injected.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from baton.errors import SettingsError

ADMIN_PREFIX = "/_sim/"  # the sim's own admin endpoints: never faulted
ADMIN_PATH = ADMIN_PREFIX + "faults"
_KEYS = frozenset(
    {"path", "method", "app", "latency_ms", "error_rate", "status", "body", "drop_rate", "phase", "times"}
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Rule:
    path: str
    method: str = "*"
    app: str = ""
    latency_lo_ms: float = 0.0
    latency_hi_ms: float = 0.0
    error_rate: float = 0.0
    status: int = 500
    body: Any = None
    drop_rate: float = 0.0
    phase: str = "before"
    times: int | None = None
    # Counters, reported by GET /_sim/faults.
    matched: int = 0
    errors: int = 0
    drops: int = 0

    def matches(self, app: str, method: str, path: str) -> bool:
        return (
            (not self.app or self.app == app)
            and self.method in ("*", method)
            and fnmatch.fnmatchcase(path, self.path)
        )

    def to_json(self) -> dict[str, Any]:
        latency: Any = self.latency_lo_ms
        if self.latency_hi_ms != self.latency_lo_ms:
            latency = [self.latency_lo_ms, self.latency_hi_ms]
        return {
            "path": self.path,
            "method": self.method,
            "app": self.app,
            "latency_ms": latency,
            "error_rate": self.error_rate,
            "status": self.status,
            "body": self.body,
            "drop_rate": self.drop_rate,
            "phase": self.phase,
            "times": self.times,
            "matched": self.matched,
            "errors": self.errors,
            "drops": self.drops,
        }


def _prob(raw: dict[str, Any], key: str) -> float:
    v = raw.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{key} must be a number between 0 and 1, not {v!r}")
    return float(v)


def parse_rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise ValueError(f"a rule must be an object, not {raw!r}")
    unknown = set(raw) - _KEYS
    if unknown:
        raise ValueError(f"unknown rule key(s) {sorted(unknown)}; known: {sorted(_KEYS)}")
    path = raw.get("path")
    if not isinstance(path, str) or not path:
        raise ValueError('a rule needs a non-empty "path" (a glob such as "/order" or "*")')
    method = str(raw.get("method", "*")).upper()
    app = str(raw.get("app", "") or "")
    if app not in ("", "clob", "binance"):
        raise ValueError(f'app must be "clob" or "binance", not {app!r}')
    lat = raw.get("latency_ms", 0)
    if isinstance(lat, int | float) and not isinstance(lat, bool):
        lo = hi = float(lat)
    elif (
        isinstance(lat, list)
        and len(lat) == 2
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in lat)
    ):
        lo, hi = float(lat[0]), float(lat[1])
    else:
        raise ValueError(f"latency_ms must be a number or [lo, hi], not {lat!r}")
    if lo < 0 or hi < lo:
        raise ValueError(f"latency_ms must satisfy 0 <= lo <= hi, not {lat!r}")
    status = raw.get("status", 500)
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"status must be an HTTP error status (400-599), not {status!r}")
    phase = raw.get("phase", "before")
    if phase not in ("before", "after"):
        raise ValueError(f'phase must be "before" or "after", not {phase!r}')
    times = raw.get("times")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be a positive integer or null, not {times!r}")
    error_rate, drop_rate = _prob(raw, "error_rate"), _prob(raw, "drop_rate")
    if error_rate + drop_rate > 1.0:
        raise ValueError("error_rate + drop_rate must not exceed 1")
    return Rule(
        path=path,
        method=method,
        app=app,
        latency_lo_ms=lo,
        latency_hi_ms=hi,
        error_rate=error_rate,
        status=status,
        body=raw.get("body"),
        drop_rate=drop_rate,
        phase=phase,
        times=times,
    )


def parse_config(raw: Any) -> tuple[int | None, list[Rule]]:
    """(seed, rules) from the JSON value; ValueError names what is wrong."""
    if isinstance(raw, list):
        raw = {"rules": raw}
    if not isinstance(raw, dict) or set(raw) - {"seed", "rules"}:
        raise ValueError('expected a list of rules or {"seed": N, "rules": [...]}')
    seed = raw.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"seed must be an integer, not {seed!r}")
    rules = raw.get("rules", [])
    if not isinstance(rules, list):
        raise ValueError("rules must be a list")
    return seed, [parse_rule(r) for r in rules]


class Faults:
    """The fault rules of one sim server (app = "clob" or "binance"), and its middleware."""

    def __init__(
        self,
        app: str,
        default_body: Callable[[web.Request, int], Any],
        seed: int = 0,
    ) -> None:
        self.app = app
        self.default_body = default_body
        self.seed = seed
        self.rules: list[Rule] = []
        self._rng = random.Random(seed)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], app: str, default_body: Callable[[web.Request, int], Any], seed: int
    ) -> Faults:
        f = cls(app, default_body, seed)
        raw = env.get("BATON_SIM_FAULTS", "").strip()
        if raw:
            try:
                f.configure(json.loads(raw))
            except ValueError as e:  # json.JSONDecodeError is a ValueError
                raise SettingsError(f"BATON_SIM_FAULTS: {e}") from None
        return f

    def configure(self, raw: Any) -> None:
        seed, rules = parse_config(raw)
        # One configuration serves both servers; each keeps the rules that can apply to it.
        self.rules = [r for r in rules if r.app in ("", self.app)]
        if seed is not None:
            self.seed = seed
        # Re-seeded on every configuration, so that a run with the same rules and the same
        # sequence of requests injects the same faults.
        self._rng = random.Random(self.seed)

    def clear(self) -> None:
        self.rules = []

    def to_json(self) -> dict[str, Any]:
        return {"app": self.app, "seed": self.seed, "rules": [r.to_json() for r in self.rules]}

    def _pick(self, request: web.Request) -> Rule | None:
        for rule in self.rules:
            if rule.matches(self.app, request.method, request.path):
                rule.matched += 1
                if rule.times is not None:
                    rule.times -= 1
                    if rule.times <= 0:
                        self.rules.remove(rule)
                return rule
        return None

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(ADMIN_PREFIX) or not self.rules:
            return await handler(request)
        rule = self._pick(request)
        if rule is None:
            return await handler(request)
        delay_ms = self._rng.uniform(rule.latency_lo_ms, rule.latency_hi_ms)
        u = self._rng.random()
        response: web.StreamResponse | None = None
        if rule.phase == "after":
            response = await handler(request)
        if delay_ms > 0:
            await asyncio.sleep(delay_ms / 1000)
        if u < rule.drop_rate:
            rule.drops += 1
            if request.transport is not None:
                request.transport.abort()
            # Never written: the connection is gone, so the client sees no answer at all.
            return web.Response(status=204)
        if u < rule.drop_rate + rule.error_rate:
            rule.errors += 1
            body = rule.body if rule.body is not None else self.default_body(request, rule.status)
            return web.json_response(body, status=rule.status)
        return response if response is not None else await handler(request)


FAULTS = web.AppKey("faults", Faults)


async def _get(request: web.Request) -> web.Response:
    return web.json_response(request.app[FAULTS].to_json())


async def _post(request: web.Request) -> web.Response:
    faults = request.app[FAULTS]
    try:
        faults.configure(json.loads(await request.read()))
    except ValueError as e:
        return web.json_response({"error": f"bad fault configuration: {e}"}, status=400)
    return web.json_response(faults.to_json())


async def _delete(request: web.Request) -> web.Response:
    request.app[FAULTS].clear()
    return web.json_response(request.app[FAULTS].to_json())


def install(app: web.Application, faults: Faults) -> None:
    """Serve the admin endpoints; the middleware itself goes in the app's middleware list."""
    app[FAULTS] = faults
    app.router.add_get(ADMIN_PATH, _get)
    app.router.add_post(ADMIN_PATH, _post)
    app.router.add_delete(ADMIN_PATH, _delete)

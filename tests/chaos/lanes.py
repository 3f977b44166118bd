"""What a chaos fault is: its lane, its kind (what it costs and tests) and the outcome its
injector reports; plus the timing helpers every injector shares (tests/chaos/faults.py holds
the catalogue and the schedule)."""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAIN = "main"
BACKGROUND = "background"


@dataclass
class Outcome:
    details: dict[str, Any] = field(default_factory=dict)
    recovered: bool = True  # the system showed it was back within the fault's max_effect_s
    problems: list[str] = field(default_factory=list)  # broken invariants found while injecting
    notes: list[str] = field(default_factory=list)  # worth reporting, not a broken invariant
    # When the fault itself began, if the injector first waited for a moment (a tick boundary,
    # the tick that posts entries): the effect window, which missed ticks are attributed to,
    # opens here and not at the wait.
    injected_ms: int | None = None


@dataclass(frozen=True)
class FaultKind:
    name: str
    lane: str
    costs_ticks: bool  # may a tick be missed while its effect lasts?
    expected_missed: str  # what one injection should cost, for people
    max_effect_s: float  # recovery must be seen within this (else: a broken invariant)
    grace_s: float  # missed ticks may still be attributed this long after its end
    tests: str
    inject: Callable[[Any, random.Random], Outcome]
    weight: float = 1.0  # how often it is drawn after the first pass, relative to its lane


# --- helpers -----------------------------------------------------------------------------------


def sleep_until_ms(ctx: Any, at_ms: float) -> None:
    delay = (at_ms - ctx.now_ms()) / 1000
    if delay > 0:
        time.sleep(delay)


def at_tick_offset(ctx: Any, rnd: random.Random) -> float:
    """Half the time just inside a tick (its first tens of ms: reading, committing, posting),
    else anywhere in the period; returns the offset after the boundary, in ms."""
    t = ctx.tick_ms
    now = ctx.now_ms()
    boundary = (now // t + 1) * t
    offset = rnd.uniform(0, 40) if rnd.random() < 0.5 else rnd.uniform(0, t)
    sleep_until_ms(ctx, boundary + offset)
    return offset


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict):
                return obj
    return None


def tail(text: str, n: int = 600) -> str:
    return text.strip()[-n:]

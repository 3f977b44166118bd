"""Tick arithmetic: tick k starts at wall-clock boundary k*T. Pure functions of time."""

from __future__ import annotations


def tick_index(now_ms: int, tick_ms: int) -> int:
    """The tick whose interval [k*T, (k+1)*T) contains now."""
    return now_ms // tick_ms


def boundary_ms(tick: int, tick_ms: int) -> int:
    return tick * tick_ms


def next_tick(now_ms: int, tick_ms: int) -> int:
    """The first tick whose boundary is at or after now (now itself when exactly on one)."""
    return -(-now_ms // tick_ms)


def plan_next(last_tick: int, now_ms: int, tick_ms: int) -> tuple[int, int]:
    """After running `last_tick`, the next tick to run and how many boundaries were skipped.

    A tick that overran its interval makes the loop skip the boundaries that passed while it
    ran; each is a missed tick.
    """
    nxt = max(last_tick + 1, next_tick(now_ms, tick_ms))
    return nxt, nxt - last_tick - 1

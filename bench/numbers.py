"""Order statistics the benchmarks share, and how their tables print a number."""

from __future__ import annotations

import math
import statistics
from typing import Any


def rank(values: list[float], q: float) -> float:
    """Nearest rank on the sorted samples (p99 of fewer than 100 samples is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def p99(values: list[float]) -> float:
    """Nearest rank: with fewer than 100 samples, the maximum."""
    return rank(values, 0.99)


def stats(values: list[float]) -> dict[str, Any]:
    """n, median, min, p99 and max of the samples ({"n": 0} if none)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": statistics.median(values),
        "min": min(values),
        "p99": rank(values, 0.99),
        "max": max(values),
    }


def cell(v: float | None) -> str:
    """A table cell: "-" for none, whole with thousands separators from 100 up, else one decimal."""
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.1f}"

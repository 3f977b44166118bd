"""Order statistics the benchmarks share."""

from __future__ import annotations

import math


def rank(values: list[float], q: float) -> float:
    """Nearest rank on the sorted samples (p99 of fewer than 100 samples is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def p99(values: list[float]) -> float:
    """Nearest rank: with fewer than 100 samples, the maximum."""
    return rank(values, 0.99)

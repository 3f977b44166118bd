"""Order statistics the benchmarks share."""

from __future__ import annotations

import math


def rank(values: list[float], q: float) -> float:
    """Nearest rank on the sorted samples (p99 of fewer than 100 samples is the maximum)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

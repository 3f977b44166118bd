"""Exponential backoff with jitter, for the feed's reconnects and its retried hole fills."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Exponential backoff with jitter: delay n is uniform in [d/2, d], d = initial * 2**n."""

    def __init__(self, initial_s: float, max_s: float, rng: Callable[[], float] = random.random):
        self.initial_s = initial_s
        self.max_s = max_s
        self.rng = rng
        self.attempt = 0

    def next_s(self) -> float:
        d = min(self.max_s, self.initial_s * 2 ** min(self.attempt, 30))
        self.attempt += 1
        return d / 2 + self.rng() * d / 2

    def reset(self) -> None:
        self.attempt = 0

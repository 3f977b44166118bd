"""What the kernel keeps of an exception a strategy raised: its repr, taken once and safely.

A strategy's exception is strategy code too: its __repr__ may raise (which would abort the tick
for every slot) or do what evaluate may not (walk the stack in a backtest). The kernel takes
the text once, where the strategy's code is allowed to run, and passes a plain exception on:
the decision log, the input log and the problems all read that.
"""

from __future__ import annotations

REPR_MAX = 500


def safe_repr(obj: object, limit: int = REPR_MAX) -> str:
    """repr(obj), cut to `limit`; when repr raises, a text naming the type and what it raised."""
    try:
        text = repr(obj)
        if type(text) is not str:
            raise TypeError("__repr__ returned a non-string")
    except Exception as e:
        text = f"<{type(obj).__name__} whose repr raised {type(e).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Raised(Exception):
    """A strategy's exception as the kernel keeps it: its repr is the original's, as text."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def __str__(self) -> str:
        return self.text


def plain(e: BaseException) -> Raised:
    """`e` as a Raised (its repr taken now, safely); a Raised is passed through."""
    return e if type(e) is Raised else Raised(safe_repr(e))

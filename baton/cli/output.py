"""How a `baton` command answers: a result as JSON (`--json`) or as text, a refusal on stderr."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import msgspec


def fail(message: str) -> int:
    print(f"baton: {message}", file=sys.stderr)
    return 1


def emit(args: argparse.Namespace, result: msgspec.Struct, human: Callable[[], str]) -> int:
    print(msgspec.json.encode(result).decode() if args.json else human())
    return 0

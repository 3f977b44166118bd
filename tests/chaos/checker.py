"""The chaos run's invariant checker: pure functions of what Redis, the sim's order list and
the harness's fault log hold at the end of a run (report.py's RunData), judged by the tick
invariants (tick_checks.py) and the money's (order_checks.py) into a Report. Nothing here
talks to a process, so each check is unit-tested on synthetic data (test_checker.py).

Times are wall-clock milliseconds on the one host the stack runs on.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from tests.chaos.ledger_checks import check_ledger
from tests.chaos.order_checks import check_orders, check_positions
from tests.chaos.report import Report, Row, RunData, fault_table, table
from tests.chaos.tick_checks import check_faults, check_ticks


def check(d: RunData) -> Report:
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    for name, fn in (
        ("ticks", check_ticks),
        ("orders", check_orders),
        ("positions", check_positions),
        ("ledger", check_ledger),
        ("faults", check_faults),
    ):
        r, f = fn(d)
        rows += r
        figures[name] = f
    return Report(rows, figures)


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.chaos.checker <chaos-data.json>`: judge a saved run again (the
    harness writes its raw snapshot to $BATON_HOME/chaos-data.json)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.chaos.checker <chaos-data.json>", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        rep = check(RunData(**json.load(f)))
    print(table(rep))
    print()
    print(fault_table(rep))
    return 1 if rep.broken else 0


if __name__ == "__main__":
    raise SystemExit(main())

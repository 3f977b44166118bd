"""What a chaos run gives the invariant checker (RunData: what Redis, the sim's order list and
the harness's fault log hold at the end of the run) and what the checker gives back: a Report
of rows, each a figure or an invariant with its evidence, as a text table or as the Markdown
tables of docs/reliability.md.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class RunData:
    tick_ms: int
    first_tick: int  # the first tick of the measured run (chaos started at its boundary)
    end_ms: int  # when the snapshot was taken
    settle_grace_ms: int  # a position whose window ended longer ago must be settled
    journal: list[dict[str, str]]
    venue_orders: list[dict[str, Any]]
    intents: list[dict[str, Any]]
    open_intents: list[dict[str, Any]]
    positions: list[dict[str, Any]]
    open_positions: list[dict[str, Any]]
    ledger: list[dict[str, str]]
    ledger_totals: dict[str, str]
    faults: list[dict[str, Any]]


@dataclass
class Row:
    section: str
    name: str
    value: Any
    expected: str = ""  # "" = a figure, not an invariant
    ok: bool | None = None  # None: a figure
    evidence: list[str] = field(default_factory=list)


@dataclass
class Report:
    rows: list[Row]
    figures: dict[str, Any]

    @property
    def broken(self) -> list[Row]:
        return [r for r in self.rows if r.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": not self.broken,
            "broken": [r.name for r in self.broken],
            "rows": [asdict(r) for r in self.rows],
            "figures": self.figures,
        }


def _inv(section: str, name: str, value: Any, want: Any, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, f"= {want}", value == want, (evidence or [])[:20])


def _at_most(section: str, name: str, value: int, limit: int, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, f"<= {limit}", value <= limit, (evidence or [])[:20])


def _fig(section: str, name: str, value: Any, evidence: list[str] | None = None) -> Row:
    return Row(section, name, value, "", None, (evidence or [])[:20])


def _i(v: Any, default: int = 0) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


def table(rep: Report, evidence: int = 5) -> str:
    """The report as text: one line per figure or invariant, evidence under broken ones."""
    w = max(len(r.name) for r in rep.rows) + 2
    lines = []
    section = ""
    for r in rep.rows:
        if r.section != section:
            section = r.section
            lines.append(f"{section.upper()}")
        mark = "" if r.ok is None else ("ok" if r.ok else "BROKEN")
        lines.append(f"  {r.name:<{w}}{r.value!s:>14}  {r.expected:<6} {mark}")
        shown = r.evidence
        if r.ok is False or (r.ok is None and r.evidence and r.name == "missed"):
            limit = len(shown) if r.name == "missed" else evidence
            for ev in shown[:limit]:
                lines.append(f"      {ev}")
            if len(shown) > limit:
                lines.append(f"      ... {len(shown) - limit} more")
    return "\n".join(lines)


def fault_table(rep: Report) -> str:
    """One line per fault kind: how often, recovered, ticks it cost, its longest effect."""
    kinds = rep.figures.get("faults", {}).get("by_kind", {})
    head = f"  {'fault':<16}{'injected':>9}{'recovered':>10}{'ticks missed':>13}{'worst':>6}{'longest s':>10}"
    lines = [head]
    for name, k in sorted(kinds.items()):
        lines.append(
            f"  {name:<16}{k['injected']:>9}{k['recovered']:>10}{k['missed']:>13}{k['worst_missed']:>6}"
            f"{k['max_effect_ms'] / 1000:>10.1f}"
        )
    return "\n".join(lines)


def markdown(rep: Report) -> str:
    """The report as the Markdown tables of docs/reliability.md: invariants and figures, then
    one line per fault kind."""
    out = ["| section | what | value | must be | |", "|---|---|---|---|---|"]
    for r in rep.rows:
        mark = "" if r.ok is None else ("ok" if r.ok else "**BROKEN**")
        out.append(f"| {r.section} | {r.name} | {r.value} | {r.expected.lstrip('= ')} | {mark} |")
    out += [
        "",
        "| fault | injected | recovered | ticks missed | worst one | longest effect s |",
        "|---|---|---|---|---|---|",
    ]
    for name, k in sorted(rep.figures.get("faults", {}).get("by_kind", {}).items()):
        out.append(
            f"| `{name}` | {k['injected']} | {k['recovered']} | {k['missed']} | {k['worst_missed']} "
            f"| {k['max_effect_ms'] / 1000:.1f} |"
        )
    return "\n".join(out)

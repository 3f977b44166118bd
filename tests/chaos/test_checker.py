"""The chaos checker as a whole on synthetic runs (tests/chaos/synthetic.py): a clean run holds
every invariant; the report round-trips to JSON and prints as text and Markdown tables; a
saved run is judged again offline. The invariants' own tests are test_tick_checks.py and
test_order_checks.py: each broken invariant the harness exists to catch is caught (a checker
that cannot fail proves nothing)."""

from __future__ import annotations

import copy

from tests.chaos import checker, report
from tests.chaos.synthetic import FIRST, LAST, T, _entry, _fault, clean


def test_a_clean_run_holds_every_invariant():
    rep = checker.check(clean())
    assert rep.broken == [], [(r.name, r.evidence) for r in rep.broken]
    figs = rep.figures
    assert figs["ticks"]["expected"] == figs["ticks"]["done"] == LAST - FIRST + 1
    assert figs["orders"]["posted"] == 3 and figs["positions"]["settled"] == 3
    assert figs["ledger"]["identity_diff_micros"] == 0
    assert "every" not in checker.table(rep)  # the table prints rows, not a verdict
    assert "BROKEN" not in checker.table(rep)


def test_a_report_round_trips_to_json():
    import json

    d = copy.deepcopy(clean())
    d.journal.insert(5, _entry(FIRST + 4))
    out = checker.check(d).to_json()
    assert out["ok"] is False and out["broken"] == ["duplicated"]
    json.dumps(out)


def test_the_fault_table_has_a_line_per_kind():
    d = clean()
    b = (FIRST + 30) * T
    d.journal = [e for e in d.journal if e["tick"] != str(FIRST + 30)]
    d.faults = [_fault("kill-worker", 1, b - 400, b + 1500), _fault("kill-feed", 2, b + 9000, b + 10_000)]
    text = checker.fault_table(checker.check(d))
    lines = {ln.split()[0]: ln.split()[1:] for ln in text.splitlines()[1:]}
    assert lines["kill-worker"] == ["1", "1", "1", "1", "1.9"]
    assert lines["kill-feed"] == ["1", "1", "0", "0", "1.0"]


def test_a_saved_run_is_judged_again_offline(tmp_path, capsys):
    import dataclasses
    import json

    d = clean()
    path = tmp_path / "chaos-data.json"
    path.write_text(json.dumps(dataclasses.asdict(d)))
    assert checker.main([str(path)]) == 0
    d.journal.insert(3, _entry(FIRST + 2))
    path.write_text(json.dumps(dataclasses.asdict(d)))
    assert checker.main([str(path)]) == 1
    assert "BROKEN" in capsys.readouterr().out


def test_the_markdown_tables_mark_broken_rows():
    d = clean()
    d.journal.insert(3, _entry(FIRST + 2))
    md = report.markdown(checker.check(d))
    assert "| ticks | duplicated | 1 | 0 | **BROKEN** |" in md
    assert "| ledger | cash + open cost - (initial + PnL), micros | 0 | 0 | ok |" in md

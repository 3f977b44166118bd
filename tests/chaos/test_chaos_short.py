"""The chaos harness, short: about a minute of faults on a real stack with a fixed seed whose
schedule injects every fault kind of the default catalogue at least once (each lane's first
pass holds every kind, and it runs to its end whatever the duration), then the drain and
every invariant of tests/chaos/checker.py. Both strategies trade through it: snipe, and
momentum with its exits (the harness's default). `make chaos` is the long run (10 minutes)."""

from __future__ import annotations

import json

import pytest

from tests.chaos import faults, harness

pytestmark = [pytest.mark.e2e, pytest.mark.serial, pytest.mark.timeout(420)]

SEED = 20261121


def test_a_minute_of_every_fault_breaks_no_invariant(tmp_path):
    out = tmp_path / "chaos.json"
    args = harness.parse_args(
        [
            "--duration-s",
            "45",
            "--seed",
            str(SEED),
            "--gap-s",
            "1,2",
            "--bg-gap-s",
            "2,4",
            "--quiet-s",
            "8",
            "--json-out",
            str(out),
        ]
    )
    rc = harness.run(args)
    res = json.loads(out.read_text())
    broken = res.get("report", {}).get("broken", res.get("error"))
    assert res.get("acl_denials") == [], res.get("acl_denials")  # every program had the rights it used
    assert rc == 0, f"chaos seed {SEED}: broken {broken}; stack logs under {res.get('home')}"
    assert res["kinds_injected"] == sorted(faults.DEFAULT_KINDS), res["kinds_not_injected"]
    figs = res["report"]["figures"]
    # The run traded: orders went out, filled, and settled through the faults; exits were
    # committed and sold positions (booked as sales in the ledger, each once).
    assert figs["orders"]["posted"] >= 1 and figs["positions"]["settled"] >= 1, figs
    assert figs["orders"]["exits"] >= 1 and figs["positions"]["sales"] >= 1, figs
    assert res["exits_strategy"] == "momentum", res["exits_strategy"]
    assert figs["ticks"]["duplicated"] == [] and figs["ticks"]["unattributed"] == []

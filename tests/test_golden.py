"""Logs recorded from real runs still fold into what they folded into when recorded.

A change of a fold or of an event schema that breaks the reading of an old log fails here;
an intended change records the golden log again (`python -m scripts.record_golden`) and says so
in its commit, with an upcaster for the old events.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.golden import summarize

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_a_golden_log_folds_into_its_recorded_state(name):
    recorded = json.loads((GOLDEN / name / "summary.json").read_text(encoding="utf-8"))
    assert json.loads(json.dumps(summarize(GOLDEN / name / "log"))) == recorded


@pytest.mark.parametrize("name", sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()))
def test_a_golden_log_folds_into_its_recorded_state_through_a_snapshot_every_10th_event(name):
    recorded = json.loads((GOLDEN / name / "summary.json").read_text(encoding="utf-8"))
    summary = summarize(GOLDEN / name / "log", snapshot_every=10)
    assert json.loads(json.dumps(summary)) == recorded

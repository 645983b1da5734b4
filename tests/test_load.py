"""Load: many executions queued at once through the scheduler, checked from the log alone.

The full size (1,000) is `scripts/load` and `scripts/bench load`; here 60 runs through a real
`porch up`, and the priority check itself is pinned down on small hand-made logs.
"""

from __future__ import annotations

import pytest

from scripts.load_check import check, check_priority
from scripts.load_run import LoadSystem


@pytest.fixture
def load_system(tmp_path):
    system = LoadSystem(tmp_path / "load", max_concurrent=3)
    try:
        system.start()
        yield system
    finally:
        system.stop()


def test_sixty_runs_queued_at_once_all_complete_three_at_a_time_by_priority(load_system):
    # given a system whose scheduler admits at most 3 at once, and ten schedules of priority 0..9
    # when 60 manual fires of random schedules are published back to back
    wanted = load_system.trigger(60, seed=3)
    ended = load_system.wait_terminal(set(wanted), timeout_s=60)
    load_system.stop()
    # then the log says: every one completed, never more than 3 admitted, priority order held
    report = check(load_system.data_dir, wanted, max_concurrent=3)
    assert ended == 60
    assert report.violations == []
    assert report.completed == 60
    assert report.peak_admitted == 3
    assert report.peak_started <= 3
    assert load_system.sampler is not None
    peaks = load_system.sampler.peaks_mib
    assert {"up", "hub", "orchestrator", "worker-1", "worker-1.runner", "scheduler"} <= set(peaks)
    assert report.log_bytes > 0


# queued: eid -> (seq of its ExecutionQueued, priority); admissions: (seq, eid) in log order
PRIORITY_CASES = [
    pytest.param(
        {"lo": (10, 0), "hi": (11, 5)}, [(12, "hi"), (20, "lo")], {"hi": 19, "lo": 30}, 1,
        [], 0, id="higher-first",
    ),
    pytest.param(
        # "hi" was queued (seq 11) before "a" ended (seq 19): the scheduler had folded it when a
        # slot came free, and still admitted "lo"
        {"a": (5, 0), "lo": (10, 0), "hi": (11, 5)}, [(6, "a"), (20, "lo"), (25, "hi")],
        {"a": 19, "lo": 24, "hi": 30}, 1, ["seq 20: admitted lo"], 0, id="inversion",
    ),
    pytest.param(
        # "hi" was queued (seq 11) after "lo" (seq 10) and the admission of "lo" (seq 12) was
        # decided knowing seq 10 at least: hi's queueing may still have been on its way back
        {"lo": (10, 0), "hi": (11, 5)}, [(12, "lo"), (20, "hi")], {"lo": 19, "hi": 30}, 1,
        [], 1, id="raced",
    ),
    pytest.param(
        {"first": (10, 3), "second": (11, 3), "x": (5, 0)}, [(6, "x"), (20, "second"), (25, "first")],
        {"x": 15, "second": 24, "first": 30}, 1, ["seq 20: admitted second"], 0, id="fifo",
    ),
    pytest.param(
        # two slots: "c" took the slot "a" freed at seq 8, so the scheduler knew of "h" (seq 6)
        {"a": (1, 0), "b": (2, 0), "c": (3, 0), "h": (6, 9)}, [(4, "a"), (5, "b"), (10, "c"), (12, "h")],
        {"a": 8, "b": 11, "c": 15, "h": 16}, 2, ["seq 10: admitted c"], 0, id="two-slots",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("queued", "admissions", "ended", "limit", "expect", "raced"), PRIORITY_CASES
)
def test_priority_is_judged_by_what_the_scheduler_had_folded(
    queued, admissions, ended, limit, expect, raced
):
    violations, racing = check_priority(queued, admissions, ended, limit)
    assert [v.split(" (")[0] for v in violations] == expect
    assert racing == raced

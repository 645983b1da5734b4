"""`scripts/bench load`: 1,000 executions queued at once through the scheduler (`scripts/load`).

A whole system (`porch up`: 2 workers, the scheduler with ``--max-concurrent 3``, the monitor)
runs N manual fires of ten schedules of priority 0..9, one cheap stage on 200 rows each. It
prints completed executions per second (first fire to last end, from the log's timestamps), the
time until all N were queued, the log's bytes and events per execution, and the peak resident
size of every process. `--quick` runs 50. The run fails, as `scripts/load` does, on an
incomplete run, more than 3 at once, a priority inversion or a process over 500 MiB.
"""

from __future__ import annotations

from scripts.benchmarks.common import line
from scripts.load_run import figures, run_load, summary


def run(quick: bool) -> None:
    outcome = run_load(50 if quick else 1000, seconds=300 if quick else 1800)
    for name, value, unit in figures(outcome):
        line(name, value, unit)
    if not outcome.ok:
        problems = outcome.report.violations[:3] + [
            f"{p} peaked at {v:.0f} MiB" for p, v in outcome.over_limit.items()
        ]
        raise RuntimeError(f"bench load: {summary(outcome)}; {'; '.join(problems)}")

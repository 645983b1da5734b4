"""The scheduler as a process in a real porch system: fires through the orchestrator, restarts."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actors.api.system import System
from actors.scheduler.specs import normalize
from bus.events import ScheduleAdded, ScheduleRemoved
from tests.conftest import run_porch
from tests.slowstages import STAGES
from tests.watching import Watched


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "tiny.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), path)
    return path


class Scheduled(Watched):
    def __init__(self, tmp_path: Path, schedules_file: Path | None = None) -> None:
        super().__init__(System(data_dir=tmp_path / "porch", workers=1, stages=STAGES,
                                log=subprocess.DEVNULL, scheduler=True, schedules_file=schedules_file))  # fmt: skip

    def add(self, **config) -> dict:
        checked = normalize(config, now=time.time())
        self.client.append(ScheduleAdded(schedule_id=checked["schedule_id"], config=checked))
        return checked


def kill_scheduler(system: System) -> None:
    (child,) = [c for c in system.children if c.name == "scheduler"]
    assert child.proc is not None
    os.kill(child.proc.pid, signal.SIGKILL)
    child.proc.wait(10)


@pytest.fixture
def scheduled(tmp_path):
    running = Scheduled(tmp_path)
    yield running
    running.stop()


def test_an_interval_of_one_second_runs_three_executions_through_the_orchestrator(scheduled, tiny):
    scheduled.add(schedule_id="every-second", schedule_type="interval", schedule_expression="1s",
                  execution_config={"input_data": str(tiny), "stages": ["noop"]})  # fmt: skip
    done = lambda seen: len([e for e in seen if e["type"] == "ExecutionCompleted"]) >= 3  # noqa: E731
    scheduled.wait(done)
    scheduled.client.append(ScheduleRemoved(schedule_id="every-second"))
    fired = scheduled.of("ScheduleFired", schedule_id="every-second")
    completed = {e["execution_id"] for e in scheduled.of("ExecutionCompleted")}
    assert {e["execution_id"] for e in fired[:3]} <= completed
    slots = [e["fire_time"] for e in fired]
    assert all(round(b - a, 6) == 1.0 for a, b in itertools.pairwise(slots))
    requested = scheduled.of("ExecutionRequested")
    assert all(r["schedule_id"] == "every-second" for r in requested)


def test_a_killed_scheduler_restarts_without_a_double_or_a_lost_fire(scheduled, tiny):
    scheduled.add(schedule_id="tick", schedule_type="interval", schedule_expression="1s",
                  misfire_grace_seconds=30, execution_config={"input_data": str(tiny), "stages": ["noop"]})  # fmt: skip
    scheduled.wait(lambda seen: len([e for e in seen if e["type"] == "ScheduleFired"]) >= 2)
    kill_scheduler(scheduled.system)
    before = len(scheduled.of("ScheduleFired"))
    scheduled.listen(2.5)  # slots pass while it is down
    assert scheduled.system.check() == [f"scheduler (exit {-signal.SIGKILL})"]
    scheduled.wait(
        lambda seen: len([e for e in seen if e["type"] == "ScheduleFired"]) >= before + 5
    )
    scheduled.client.append(ScheduleRemoved(schedule_id="tick"))
    fired = scheduled.of("ScheduleFired", schedule_id="tick")
    slots = [e["fire_time"] for e in fired]
    keys = [e["key"] for e in fired]
    assert len(keys) == len(set(keys))  # no slot fired twice
    assert sorted(slots) == [slots[0] + i for i in range(len(slots))]  # none lost in the gap
    assert scheduled.of("ScheduleMissed") == []


def test_schedule_commands_refuse_bad_input_and_list_next_fires(scheduled, tiny):
    data = ["--data-dir", str(scheduled.data_dir)]
    bad = run_porch(
        "schedule", "add", "nightly", "--cron", "0 25 * * *", "--input", str(tiny), *data
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "porch: cron expression '0 25 * * *' is not valid"
    ok = run_porch("schedule", "add", "nightly", "--cron", "0 2 * * *", "--tz", "Europe/Berlin",
                   "--input", str(tiny), "--stages", "noop", *data)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    cycle = run_porch("schedule", "add", "after", "--after", "after", "--input", str(tiny), *data)
    assert cycle.stderr.strip() == "porch: dependency cycle: after -> after"
    listing = run_porch("schedule", "list", *data)
    assert "nightly" in listing.stdout
    assert "T02:00:00+01:00" in listing.stdout
    paused = run_porch("schedule", "pause", "nightly", *data)
    assert paused.stdout.startswith("paused schedule nightly")
    eid = run_porch("schedule", "trigger", "nightly", *data).stdout.strip()
    scheduled.wait(
        lambda seen: any(
            e["type"] == "ExecutionCompleted" and e["execution_id"] == eid for e in seen
        )
    )
    (queued,) = scheduled.of("ExecutionQueued", execution_id=eid)
    replay = run_porch("replay", "--queue", "--at", str(queued["seq"]), *data)
    assert replay.stdout.splitlines()[1:3] == [
        "queued: 1",
        f"  {eid}  schedule=nightly priority=0 attempt=1",
    ]
    shown = run_porch("schedule", "show", "nightly", *data)
    assert '"state": "paused"' in shown.stdout
    assert eid in shown.stdout


def test_a_schedules_file_loaded_at_start_fires_and_is_not_added_twice(tmp_path, tiny):
    path = tmp_path / "schedules.toml"
    path.write_text(
        f"""[[schedule]]
schedule_id = "from-file"
schedule_type = "interval"
schedule_expression = "1s"
execution_config = {{ input_data = "{tiny}", stages = ["noop"] }}
""",
        encoding="utf-8",
    )
    running = Scheduled(tmp_path, schedules_file=path)
    try:
        running.wait(lambda seen: any(e["type"] == "ExecutionCompleted" for e in seen))
        kill_scheduler(running.system)
        assert running.system.check() == [f"scheduler (exit {-signal.SIGKILL})"]
        # the restarted scheduler reads the file again: nothing changed, so nothing is added
        running.wait(lambda seen: len([e for e in seen if e["type"] == "ExecutionCompleted"]) >= 3)
        assert len(running.of("ScheduleAdded")) == 1
        assert running.of("ScheduleUpdated") == []
    finally:
        running.stop()


SEED_SCHEDULING = """
from actors import MLPipelineOrchestrator, PipelineStage, ExecutionMode

orchestrator = MLPipelineOrchestrator(
    execution_mode=ExecutionMode.SEQUENTIAL,
    max_workers=2,
    checkpoint_dir="data/checkpoints",
    metrics_dir="data/metrics"
)

from actors import (
    PipelineScheduler, ScheduleConfig, ScheduleType, RetryStrategy
)

# Initialize scheduler
scheduler = PipelineScheduler(
    orchestrator=orchestrator,
    max_concurrent_executions=3
)

# Create schedule
schedule = ScheduleConfig(
    schedule_id="daily_pipeline",
    name="Daily ML Pipeline",
    description="Daily execution of ML pipeline",
    schedule_type=ScheduleType.CRON,
    schedule_expression="0 2 * * *",  # Daily at 2 AM
    enabled=True,
    execution_timeout_minutes=60,
    retry_strategy=RetryStrategy.EXPONENTIAL_BACKOFF,
    max_retries=3,
    retry_delay_minutes=10,
    priority=5,
    execution_config={
        'input_data': 'data/input.parquet',
        'stages': [PipelineStage.DATA_CLEANING, PipelineStage.FEATURE_ENGINEERING],
        'save_checkpoints': True
    }
)

# Add and start schedule
scheduler.add_schedule(schedule)
scheduler.start_scheduler()

# Trigger manual execution
execution_id = scheduler.trigger_manual_execution("daily_pipeline")
"""

CHECKS = """
done = orchestrator.wait_execution(execution_id, timeout=120)
status = scheduler.get_schedule_status("daily_pipeline")
print(done.status, done.total_records_processed, status["next_fire_time"][11:], status["last_execution"]["status"])
print(len(scheduler.get_recent_executions(5)), scheduler.get_execution_queue_status()["max_concurrent_executions"])
"""


def test_the_seed_scheduling_example_runs_with_only_its_import_changed(tmp_path):
    from stages.sample import write_sample

    (tmp_path / "data").mkdir()
    write_sample(tmp_path / "data" / "input.parquet", 500, seed=3)
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(SEED_SCHEDULING + CHECKS), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.splitlines()[-2:]
    assert first == "completed 500 02:00:00+00:00 completed"
    assert second == "1 3"

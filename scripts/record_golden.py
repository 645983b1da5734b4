"""Record a golden log: run a real system through every feature, keep its log and its summary.

    .venv/bin/python -m scripts.record_golden tests/golden/full

Runs all three modes, a resume, a failing stage, a stage that says retry is futile, a cancel,
interval and timed-out schedules with a retry, alert rules that fire, an acknowledgement and a
custom metric; then stops the system, copies its log to DEST/log and writes DEST/summary.json
(what `tests.golden.summarize` makes of it). Record again only when a change of the log is
meant; the golden test then guards the new reading.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.system import System
from actors.monitor.alerting import check_rule
from actors.scheduler.specs import normalize
from bus.client import Client
from bus.events import (
    AlertAcknowledged,
    AlertRuleAdded,
    CancelRequested,
    ExecutionRequested,
    MetricRecorded,
    ScheduleAdded,
    ScheduleRemoved,
)
from stages.sample import SCHEMA, generate
from tests.golden import summarize
from tests.slowstages import STAGES

TERMINAL = {"ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled", "ExecutionTimedOut"}
DEFAULT = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]


def main(dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="porch-golden-") as tmp:
        root = Path(tmp)
        sample = root / "input.parquet"
        frame = pd.concat(list(generate(1500, seed=21)), ignore_index=True)
        pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), sample,
                       row_group_size=500)  # fmt: skip
        system = System(data_dir=root / "porch", workers=2, stages=STAGES, log=subprocess.DEVNULL,
                        scheduler=True, monitor=True, monitor_args=["--sampling-interval", "0.5"])  # fmt: skip
        system.start()
        try:
            with Client.local(system.data_dir) as client, client.subscribe(1) as sub:
                seen: list[dict] = []

                def wait(until: Callable[[list[dict]], bool], timeout: float = 90.0) -> None:
                    deadline = time.monotonic() + timeout
                    while time.monotonic() < deadline:
                        seen.extend(r.fields() for r in sub.receive(200))
                        if until(seen):
                            return
                    raise SystemExit(f"golden: timed out; saw {[e['type'] for e in seen][-20:]}")

                def ended(eid: str) -> bool:
                    return any(e["type"] in TERMINAL and e.get("execution_id") == eid for e in seen)

                def request(eid: str, stages: list[str], **fields) -> None:
                    client.append(
                        ExecutionRequested(
                            execution_id=eid, stages=stages, input_data=str(sample), **fields
                        )
                    )

                client.append(AlertRuleAdded(**check_rule({"rule_id": "boom", "metric_name": "execution_error",
                              "condition": "contains", "threshold": "boom", "severity": "high"}).to_map()))  # fmt: skip
                client.append(AlertRuleAdded(**check_rule({"rule_id": "never", "metric_name": "stage_duration_seconds",
                              "condition": "greater_than", "threshold": 1000, "severity": "low"}).to_map()))  # fmt: skip
                for eid, mode in (("seq", "sequential"), ("par", "parallel"), ("hyb", "hybrid")):
                    request(eid, DEFAULT, mode=mode, partitions=3 if mode != "sequential" else 0)
                    wait(lambda s, e=eid: ended(e))
                request("resumed", DEFAULT, resume_from="seq")
                request("boom", ["boom"], max_attempts=2)
                request("fatal", ["fatal"], max_attempts=3)
                request("cancelled", ["slow"], config={"slow": {"seconds": 30}})
                wait(
                    lambda s: any(
                        e["type"] == "StageStarted" and e["execution_id"] == "cancelled" for e in s
                    )
                )
                client.append(CancelRequested(execution_id="cancelled", reason="golden"))
                for eid in ("resumed", "boom", "fatal", "cancelled"):
                    wait(lambda s, e=eid: ended(e))
                wait(lambda s: any(e["type"] == "AlertFired" for e in s))
                alert = next(e for e in seen if e["type"] == "AlertFired")
                client.append(AlertAcknowledged(alert_id=alert["alert_id"]))
                client.append(
                    MetricRecorded(name="rows_loaded", value=1500.0, labels={"source": "golden"})
                )
                tick = normalize({"schedule_id": "tick", "schedule_type": "interval", "schedule_expression": "1s",
                                  "execution_config": {"input_data": str(sample), "stages": ["noop"]}})  # fmt: skip
                client.append(ScheduleAdded(schedule_id="tick", config=tick))
                wait(lambda s: len([e for e in s if e["type"] == "ExecutionCompleted"
                                    and e["execution_id"].startswith("tick-")]) >= 2)  # fmt: skip
                client.append(ScheduleRemoved(schedule_id="tick"))
                late = normalize({"schedule_id": "late", "schedule_type": "interval", "schedule_expression": "1h",
                                  "execution_timeout_minutes": 0.02, "retry_strategy": "fixed_delay",
                                  "max_retries": 1, "retry_delay_minutes": 0.01,
                                  "execution_config": {"input_data": str(sample), "stages": ["slow"],
                                                       "config": {"slow": {"seconds": 30}}}})  # fmt: skip
                client.append(ScheduleAdded(schedule_id="late", config=late))
                eid = f"late-{int(time.time() * 1000)}"
                from actors.api.schedules import trigger

                eid = trigger(client, "late", None)
                wait(lambda s: ended(eid))
                wait(lambda s: ended(f"{eid}.r2"))
                # let every started tick finish before stopping
                wait(
                    lambda s: all(
                        ended(e["execution_id"]) for e in s if e["type"] == "ExecutionRequested"
                    )
                )
        finally:
            system.stop()
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copytree(
            system.data_dir / "log", dest / "log", ignore=shutil.ignore_patterns("LOCK")
        )
        summary = summarize(dest / "log")
        (dest / "summary.json").write_text(
            json.dumps(summary, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )
        print(
            f"golden: {summary['last_seq']} events, {len(summary['executions'])} executions -> {dest}"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/golden/full"))

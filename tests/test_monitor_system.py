"""The monitor as a process in a real porch system: alerts, notifications, HTTP and exports."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.api.system import System
from actors.monitor.info import monitor_address
from bus.events import ExecutionRequested
from tests.conftest import run_porch
from tests.slowstages import STAGES
from tests.watching import Watched


class Webhook:
    """A loopback HTTP receiver that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.arrived = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.arrived.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                return

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Monitored(Watched):
    def __init__(self, tmp_path: Path, webhook: str) -> None:
        self.tiny = tmp_path / "tiny.parquet"
        pq.write_table(pa.table({"x": [1, 2, 3]}), self.tiny)
        super().__init__(System(
            data_dir=tmp_path / "porch", workers=1, stages=STAGES, log=subprocess.DEVNULL,
            monitor=True, monitor_args=["--sampling-interval", "0.5", "--webhook", webhook],
        ))  # fmt: skip

    def fail(self) -> str:
        """An execution of a stage that raises; returns once it has failed."""
        eid = f"boom-{time.monotonic_ns()}"
        self.client.append(
            ExecutionRequested(execution_id=eid, stages=["boom"], input_data=str(self.tiny))
        )
        self.wait(
            lambda s: any(e["type"] == "ExecutionFailed" and e["execution_id"] == eid for e in s)
        )
        return eid

    def run(self, seconds: float) -> str:
        eid = f"slow-{time.monotonic_ns()}"
        self.client.append(ExecutionRequested(execution_id=eid, stages=["slow"], input_data=str(self.tiny),
                                              config={"slow": {"seconds": seconds}}))  # fmt: skip
        return eid


@pytest.fixture
def monitored(tmp_path):
    hook = Webhook()
    running = Monitored(tmp_path, hook.url)
    running.hook = hook
    yield running
    running.stop()
    hook.close()


def data(monitored) -> list[str]:
    return ["--data-dir", str(monitored.data_dir)]


def test_a_stage_duration_rule_fires_notifies_holds_its_cooldown_and_resolves(monitored):
    added = run_porch("alerts", "add-rule", "slow-stage", "--metric", "stage_duration_seconds",
                      "--condition", "greater_than", "--threshold", "0.5", "--severity", "high",
                      "--scope", "stage=slow", "--cooldown-minutes", "5", *data(monitored))  # fmt: skip
    assert added.returncode == 0, added.stderr
    eid = monitored.run(1.0)
    seen = monitored.wait(lambda s: any(e["type"] == "AlertFired" for e in s))
    (done,) = [
        e
        for e in seen
        if e["type"] == "StageCompleted" and e["execution_id"] == eid and e["phase"] == "run"
    ]  # the run task: its output's collect task may be done too
    (fired,) = monitored.of("AlertFired")
    assert fired["seq"] > done["seq"]
    assert fired["ts"] - done["ts"] < 0.5 + 0.5  # within one sampling interval (and then some)
    assert (fired["rule_id"], fired["labels"]) == ("slow-stage", {"stage": "slow"})
    assert monitored.hook.arrived.wait(10)
    assert monitored.hook.bodies[0]["alert_id"] == fired["alert_id"]
    fast = monitored.run(0.0)
    monitored.wait(lambda s: any(e["type"] == "AlertResolved" for e in s))
    again = monitored.run(1.0)
    monitored.wait(
        lambda s: any(e["type"] == "ExecutionCompleted" and e["execution_id"] == again for e in s)
    )
    monitored.wait(
        lambda s: len([e for e in s if e["type"] == "WorkerHeartbeat"]) > 3
    )  # a while later
    assert len(monitored.of("AlertFired")) == 1  # the cooldown holds
    assert fast


def test_the_readme_failures_rule_fires_again_for_each_new_failure(monitored):
    from actors import AlertRule, PipelineMonitor

    # given the README's rule on failures, and the rule it had before on the failure counter
    monitor = PipelineMonitor(sampling_interval_seconds=0.5, endpoint=monitored.data_dir)
    try:
        monitor.add_alert_rule(AlertRule(rule_id="failures", metric_name="new_failures",
                                         condition="greater_than", threshold=0, severity="high",
                                         cooldown_minutes=0))  # fmt: skip
        monitor.add_alert_rule(AlertRule(rule_id="total", metric_name="executions_failed_total",
                                         condition="greater_than", threshold=0, severity="high",
                                         cooldown_minutes=0))  # fmt: skip
        fired = lambda rule: [e for e in monitored.of("AlertFired") if e["rule_id"] == rule]  # noqa: E731
        resolved = lambda: {e["alert_id"] for e in monitored.of("AlertResolved")}  # noqa: E731
        # when an execution fails
        monitored.fail()
        # then the rule fires, and resolves at a sampling tick with no new failure
        monitored.wait(
            lambda s: fired("failures") and fired("failures")[0]["alert_id"] in resolved()
        )
        # and when another execution fails, it fires again
        monitored.fail()
        monitored.wait(lambda s: len(fired("failures")) == 2)
        (first, second) = fired("failures")
        assert first["alert_id"] != second["alert_id"]
        assert (first["value"], second["value"]) == (1.0, 1.0)
        # while the rule on the counter, which only grows, fired once and never resolved
        (total,) = fired("total")
        assert total["alert_id"] not in resolved()
    finally:
        monitor.close()


def test_porch_metrics_counts_a_stages_runs_as_porch_stats_does(monitored, tmp_path):
    from stages.sample import SCHEMA, generate

    # given data_cleaning run twice whole and once split (map, reduce, apply and report tasks)
    history = tmp_path / "history.parquet"
    frame = pa.Table.from_pandas(next(generate(2000, seed=6)), schema=SCHEMA, preserve_index=False)
    pq.write_table(frame, history, row_group_size=1000)
    for mode in ("sequential", "parallel", "sequential"):
        eid = f"{mode}-{time.monotonic_ns()}"
        monitored.client.append(ExecutionRequested(execution_id=eid, stages=["data_cleaning"],
                                                   input_data=str(history), mode=mode, partitions=2))  # fmt: skip
        monitored.wait(lambda s, eid=eid: any(e["type"] == "ExecutionCompleted" and e["execution_id"] == eid for e in s))  # fmt: skip
    # when both are asked
    stats = json.loads(run_porch("stats", "--json", *data(monitored)).stdout)["data_cleaning"]
    deadline = time.monotonic() + 10
    while True:  # the monitor folds the last events a moment after they are in the log
        metrics = json.loads(run_porch("metrics", "--json", *data(monitored)).stdout)
        runs = metrics["stages"].get("data_cleaning", {}).get("duration_seconds", {})
        if runs.get("count") == 3 or time.monotonic() > deadline:
            break
    # then they count the same three runs, with the same median
    assert stats["runs"] == runs["count"] == 3
    assert stats["p50_s"] == round(runs["p50"], 3)
    # and the parallel run's tasks are under their own name, by phase
    phases = metrics["stages"]["data_cleaning"]["task_duration_seconds"]
    assert {p: phases[p]["count"] for p in phases} == {
        "run": 2,
        "map": 2,
        "reduce": 1,
        "apply": 2,
        "report": 1,
    }


def test_alerts_are_acknowledged_and_resolved_by_cli_and_api_and_exported(monitored, tmp_path):
    from actors import AlertRule, PipelineMonitor

    monitor = PipelineMonitor(sampling_interval_seconds=0.5, endpoint=monitored.data_dir)
    try:
        monitor.add_alert_rule(AlertRule(rule_id="any-run", metric_name="stage_duration_seconds",
                                         condition="greater_than", threshold=-1, severity="low",
                                         cooldown_minutes=60))  # fmt: skip
        monitored.run(0.0)
        monitored.wait(lambda s: any(e["type"] == "AlertFired" for e in s))
        (alert,) = monitor.get_alerts(resolved=False)
        acked = run_porch("alerts", "ack", alert["alert_id"], *data(monitored))
        assert acked.returncode == 0, acked.stderr
        monitor.resolve_alert(alert["alert_id"])
        (after,) = monitor.get_alerts()
        assert after["acknowledged"]
        assert after["resolved"]
        assert after["reason"] == "resolved by hand"
        again = run_porch("alerts", "resolve", alert["alert_id"], *data(monitored))
        assert again.stderr.strip() == f"porch: alert {alert['alert_id']} is already resolved"
        current = monitor.get_current_metrics()
        assert current["stages"]["slow"]["duration_seconds"]["count"] == 1
        assert current["resources"]["cpu_percent"] is not None
        path = monitor.export_metrics(tmp_path / "out.json", "json")
        document = json.loads(path.read_text())
        assert document["alerts"][0]["alert_id"] == alert["alert_id"]
        assert "stage_duration_seconds" in document["history"]
        csv_path = monitor.export_metrics(tmp_path / "out.csv", "csv")
        rows = list(csv.DictReader(csv_path.open()))
        assert set(rows[0]) == {"timestamp", "metric", "labels", "value"}
        assert any(
            r["metric"] == "stage_duration_seconds" and json.loads(r["labels"]) == {"stage": "slow"}
            for r in rows
        )
        cli_export = run_porch(
            "metrics", "--export", str(tmp_path / "cli.csv"), "--format", "csv", *data(monitored)
        )
        assert cli_export.returncode == 0, cli_export.stderr
    finally:
        monitor.close()


def test_prometheus_and_the_json_api_answer_on_loopback(monitored):
    eid = monitored.run(0.0)
    monitored.wait(
        lambda s: any(e["type"] == "ExecutionCompleted" and e["execution_id"] == eid for e in s)
    )
    monitored.wait(
        lambda s: any(e["type"] == "MetricSampled" and e["name"] == "workers_alive" for e in s)
    )
    address = monitor_address(monitored.data_dir)
    assert address is not None
    assert address.startswith("http://127.0.0.1:")
    text = urllib.request.urlopen(f"{address}/metrics", timeout=5).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    executions = {s.labels["status"]: s.value for s in families["porch_executions"].samples
                  if s.name == "porch_executions_total"}  # fmt: skip
    assert executions["completed"] >= 1
    assert any(
        s.labels.get("stage") == "slow" for s in families["porch_stage_duration_seconds"].samples
    )
    assert "porch_worker_up" in families
    api = json.loads(urllib.request.urlopen(f"{address}/api/metrics", timeout=5).read())
    assert api["executions"]["by_status"]["completed"] >= 1
    assert (
        json.loads(urllib.request.urlopen(f"{address}/api/executions", timeout=5).read())[
            "executions"
        ][eid]
        == "completed"
    )
    assert "alerts" in json.loads(urllib.request.urlopen(f"{address}/api/alerts", timeout=5).read())


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--condition", "above", "--threshold", "1"], "porch: condition 'above' is not one of"),
        (["--condition", "greater_than", "--threshold", "high"],
         "porch: threshold of a greater_than rule must be a number, not 'high'"),
        (["--metric", "stage_durations", "--condition", "less_than", "--threshold", "1"],
         "porch: unknown metric 'stage_durations'"),
    ],
)  # fmt: skip
def test_invalid_rules_are_refused_by_the_cli(monitored, flags, message):
    args = ["alerts", "add-rule", "bad"]
    if "--metric" not in flags:
        args += ["--metric", "stage_duration_seconds"]
    refused = run_porch(*args, *flags, *data(monitored))
    assert refused.returncode == 2
    assert refused.stderr.startswith(message)
    assert len(refused.stderr.strip().splitlines()) == 1


SEED_MONITORING = """
from actors import MLPipelineOrchestrator, PipelineStage, ExecutionMode

orchestrator = MLPipelineOrchestrator(
    execution_mode=ExecutionMode.SEQUENTIAL,
    max_workers=2,
    checkpoint_dir="data/checkpoints",
    metrics_dir="data/metrics"
)
execution = orchestrator.execute_pipeline(
    input_data="data/input.parquet",
    stages=[PipelineStage.DATA_CLEANING, PipelineStage.DATA_VALIDATION],
    save_checkpoints=True
)

from actors import (
    PipelineMonitor, AlertRule
)

# Initialize monitor
monitor = PipelineMonitor(
    metrics_retention_hours=24,
    sampling_interval_seconds=10,
    enable_alerting=True
)

# Add custom alert
alert = AlertRule(
    rule_id="high_memory",
    metric_name="memory_percent",
    condition="greater_than",
    threshold=80.0,
    severity="high",
    cooldown_minutes=5,
    enabled=True,
    description="High memory usage alert"
)
monitor.add_alert_rule(alert)

# Start monitoring
monitor.start_monitoring(execution)

# Get current metrics
metrics = monitor.get_current_metrics()
print(f"CPU Usage: {metrics['resources']['cpu_percent']}%")
print(f"Memory Usage: {metrics['resources']['memory_percent']}%")
print(len(monitor.get_alerts()), sorted(metrics["stages"]), metrics["executions"]["by_status"])
"""


def test_the_seed_monitoring_example_runs_with_only_its_import_changed(tmp_path):
    from stages.sample import write_sample

    (tmp_path / "data").mkdir()
    write_sample(tmp_path / "data" / "input.parquet", 300, seed=4)
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(SEED_MONITORING), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=180, env=env, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("CPU Usage: ")
    assert lines[1].startswith("Memory Usage: ")
    assert lines[2] == "0 ['data_cleaning', 'data_validation'] {'completed': 1}"

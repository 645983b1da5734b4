"""Metrics and alerts as pure folds and decisions, driven with an injected clock."""

from __future__ import annotations

import re
from dataclasses import fields
from enum import Enum
from typing import Any

import pytest

from actors.monitor.alerting import AlertEngine, AlertRuleError, check_rule
from bus.events import (
    AlertAcknowledged,
    AlertRuleAdded,
    Event,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionRequested,
    ExecutionStarted,
    MetricRecorded,
    StageCompleted,
    StageDispatched,
    StageFailed,
    StageStarted,
    WorkerHeartbeat,
)
from bus.schema import SCHEMAS, to_map
from store.projections import metrics as folds
from store.projections.alerts import RULE_FIELDS, AlertsState, RuleSpec, evolve
from tests.memhub import MemoryHub

T0 = 1_800_000_000.0


class Loop:
    """Metrics fold + alert engine over the in-memory hub: decisions are folded back."""

    def __init__(self, retention_s: float = 3600.0) -> None:
        self.metrics = folds.MetricsState(retention_s=retention_s)
        self.engine = AlertEngine()
        self.hub = MemoryHub()
        self.now = T0

    @property
    def log(self) -> list[dict[str, Any]]:
        return [r.fields for r in self.hub.records]

    def emit(self, event: Event) -> list[Event]:
        record = self.hub.append(event, self.now)
        if record is None:
            return []  # a duplicate id
        folds.evolve(record.seq, record.fields, self.metrics)
        self.engine.apply(record.seq, record.fields)
        decided = []
        for series in list(self.metrics.changed):
            decided.extend(self.engine.observe(series, self.now))
        for event in decided:
            self.emit(event)
        return decided

    def tick(self) -> list[Event]:
        decided = self.engine.tick(self.metrics, self.now)
        for event in decided:
            self.emit(event)
        return decided

    def of(self, kind: str) -> list[dict[str, Any]]:
        return self.hub.of(kind)


def rule(**fields) -> AlertRuleAdded:
    base = {"rule_id": "slow", "metric_name": "stage_duration_seconds", "condition": "greater_than",
            "threshold": 60, "severity": "high", "cooldown_minutes": 5}  # fmt: skip
    return AlertRuleAdded(**check_rule({**base, **fields}).to_map())


def completed(loop: Loop, stage: str, seconds: float, rows: int = 1000) -> list[Event]:
    """A one-step execution of ``stage`` whose task was dispatched ``seconds`` ago completes
    now: a run of ``seconds``. What the monitor decided on it."""
    eid = f"e{loop.hub.head}"
    step = {"id": stage, "stage": stage, "phases": ["run"], "parts": 1}
    loop.emit(ExecutionStarted(execution_id=eid, mode="sequential", plan={"steps": [step]}))
    now, loop.now = loop.now, loop.now - seconds
    loop.emit(StageDispatched(execution_id=eid, stage=stage, step=stage, task_id=f"{eid}/t",
                              partition=0, partitions=1, attempt=1, lease_ms=1000, inputs=[]))  # fmt: skip
    loop.now = now
    return loop.emit(StageCompleted(execution_id=eid, stage=stage, step=stage, worker="w1", artifact="a",
                                    rows_in=rows, rows_out=rows, bytes=1, sha256="", duration_s=seconds / 2,
                                    task_id=f"{eid}/t"))  # fmt: skip


def test_a_stage_duration_rule_fires_holds_its_cooldown_and_resolves_when_clear():
    loop = Loop()
    loop.emit(rule(scope={"stage": "data_cleaning"}))
    completed(loop, "data_cleaning", 30)
    assert loop.of("AlertFired") == []
    completed(loop, "feature_engineering", 300)  # out of scope
    assert loop.of("AlertFired") == []
    loop.now += 1
    (fired,) = completed(loop, "data_cleaning", 90)
    assert fired.TYPE == "AlertFired"
    assert (fired.value, fired.labels, fired.severity) == (90.0, {"stage": "data_cleaning"}, "high")
    loop.now += 1
    completed(loop, "data_cleaning", 95)  # still active: no second alert
    loop.now += 1
    (resolved,) = completed(loop, "data_cleaning", 20)
    assert resolved.TYPE == "AlertResolved"
    assert resolved.alert_id == fired.alert_id
    loop.now += 60
    assert completed(loop, "data_cleaning", 99) == []  # within the 5-minute cooldown
    loop.now += 300
    (again,) = completed(loop, "data_cleaning", 99)
    assert again.alert_id != fired.alert_id


def test_a_pending_rule_fires_only_after_the_condition_held_and_a_flap_notifies_once():
    loop = Loop()
    loop.emit(rule(rule_id="hot", metric_name="cpu_percent", threshold=90, pending_s=30,
                   scope={"worker": "w1"}))  # fmt: skip

    def beat(cpu: float) -> None:
        loop.emit(
            WorkerHeartbeat(worker="w1", host="h", cpu_percent=cpu, memory_percent=10, rss_bytes=1)
        )

    beat(95)
    loop.now += 10
    beat(50)  # false within the pending time: the timer starts again
    loop.now += 10
    beat(97)
    loop.now += 20
    beat(97)
    assert loop.tick() == []  # 20 s since it became true again
    loop.now += 15
    beat(98)
    assert len(loop.of("AlertFired")) == 1
    loop.now += 10
    loop.tick()
    assert len(loop.of("AlertFired")) == 1


def test_an_acknowledged_alert_stays_quiet_until_it_resolves():
    loop = Loop()
    loop.emit(rule(cooldown_minutes=0))
    (fired,) = completed(loop, "s", 100)
    loop.emit(AlertAcknowledged(alert_id=fired.alert_id))
    loop.now += 1
    assert completed(loop, "s", 200) == []
    assert loop.engine.state.alerts[fired.alert_id].acknowledged
    loop.now += 1
    completed(loop, "s", 1)
    assert loop.engine.state.alerts[fired.alert_id].resolved


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"condition": "above"}, "condition 'above' is not one of"),
        ({"threshold": "lots"}, "threshold of a greater_than rule must be a number, not 'lots'"),
        ({"metric_name": "stage_durations"}, "unknown metric 'stage_durations'"),
        ({"severity": "apocalyptic"}, "severity 'apocalyptic' is not one of"),
        ({"scope": {"galaxy": "x"}}, "scope must be a table of"),
    ],
)
def test_invalid_rules_are_refused_in_one_line(change, message):
    base = {"rule_id": "r", "metric_name": "stage_duration_seconds", "condition": "greater_than",
            "threshold": 1, "severity": "high"}  # fmt: skip
    with pytest.raises(AlertRuleError, match=message) as err:
        check_rule({**base, **change}, known_metrics={"my_metric"})
    assert "\n" not in str(err.value)
    check_rule({**base, "metric_name": "my_metric"}, known_metrics={"my_metric"})


def test_custom_metrics_from_programs_and_stage_reports_are_series_like_the_builtins():
    loop = Loop()
    loop.emit(
        rule(rule_id="nulls", metric_name="null_ratio", threshold=0.1, scope={"stage": "clean"})
    )
    loop.emit(MetricRecorded(name="queue_lag", value=3.5, labels={"topic": "orders"}))
    report = {"metrics": {"null_ratio": 0.25, "label": "not a number"}}
    event = StageCompleted(execution_id="e", stage="clean", worker="w", artifact="a", rows_in=1,
                           rows_out=1, bytes=1, sha256="", duration_s=1.0, report=report)  # fmt: skip
    loop.emit(event)
    assert loop.metrics.get("queue_lag", (("topic", "orders"),)).last == 3.5
    assert loop.metrics.get("null_ratio", (("stage", "clean"),)).last == 0.25
    assert loop.metrics.get("label", (("stage", "clean"),)) is None
    assert [a["rule_id"] for a in loop.of("AlertFired")] == ["nulls"]


def test_execution_counts_rates_waits_and_a_contains_rule_on_errors():
    loop = Loop()
    loop.emit(rule(rule_id="oom", metric_name="execution_error", condition="contains",
                   threshold="MemoryError"))  # fmt: skip
    for eid, ok in (("a", True), ("b", False), ("c", True)):
        loop.emit(ExecutionRequested(execution_id=eid, stages=["s"], input_data="/x"))
        loop.emit(ExecutionStarted(execution_id=eid, mode="sequential"))
        loop.emit(StageDispatched(execution_id=eid, stage="s", task_id=f"{eid}/t", partition=0,
                                  partitions=1, attempt=1, lease_ms=1000, inputs=[]))  # fmt: skip
        loop.now += 0.25
        loop.emit(StageStarted(execution_id=eid, stage="s", worker="w", task_id=f"{eid}/t"))
        loop.now += 1
        if ok:
            loop.emit(ExecutionCompleted(execution_id=eid, records_processed=10, duration_s=1.25))
        else:
            loop.emit(
                ExecutionFailed(execution_id=eid, error="MemoryError: out of memory", stage="s")
            )
    m = loop.metrics
    assert m.status_counts == {"completed": 2, "failed": 1, "requested": 0, "running": 0}
    assert m.get("success_rate").last == pytest.approx(2 / 3)
    assert m.get("stage_queue_wait_seconds", (("stage", "s"),)).last == pytest.approx(0.25)
    assert [a["rule_id"] for a in loop.of("AlertFired")] == ["oom"]


def test_history_is_kept_for_the_retention_time_only():
    loop = Loop(retention_s=100)
    for i in range(300):
        loop.now = T0 + i
        loop.emit(MetricRecorded(name="x", value=float(i)))
    samples = loop.metrics.get("x").samples
    assert (samples[0][0], samples[-1][0]) == (T0 + 199, T0 + 299)
    assert loop.metrics.get("x").count == 300


def test_a_run_beyond_the_p95_of_the_runs_before_it_is_flagged_as_a_regression():
    from actors.read.monitoring import trend

    steady = [10.0 + (i % 3) * 0.1 for i in range(20)]
    assert trend(steady)["regression"] is False
    assert abs(trend(steady)["slope_per_run"]) < 0.01
    flagged = trend([*steady, 14.0])
    assert flagged["regression"] is True
    assert flagged["previous_p95"] == pytest.approx(10.2)
    assert trend([1.0, 2.0, 3.0, 4.0])["slope_per_run"] == pytest.approx(1.0)
    assert trend([5.0])["regression"] is False


# --- found in review ---------------------------------------------------------------------------


def test_a_rule_published_with_garbage_is_skipped_and_the_others_still_fire():
    loop = Loop()
    loop.emit(AlertRuleAdded(rule_id="bad", metric_name="stage_duration_seconds", condition="greater_than",
                             threshold="abc", severity="high"))  # fmt: skip
    loop.emit(AlertRuleAdded(rule_id="odd", metric_name="stage_duration_seconds", condition="above",
                             threshold=1.0, severity="high"))  # fmt: skip
    loop.emit(rule(rule_id="good", threshold=1))
    completed(loop, "s", 5)
    loop.tick()
    assert [a["rule_id"] for a in loop.of("AlertFired")] == ["good"]
    assert set(loop.engine.invalid) == {"bad", "odd"}


def test_a_rule_published_in_capitals_is_obeyed_as_the_door_reads_it():
    # given a rule some program published without the door: its words in capitals, its metric
    # padded with spaces
    loop = Loop()
    loop.emit(AlertRuleAdded(rule_id="loud", metric_name=" stage_duration_seconds ",
                             condition="GREATER_THAN", threshold=60.0, severity="HIGH"))  # fmt: skip
    # when a sample breaks it
    completed(loop, "s", 90)
    # then it fires as the rule the door would have made of it
    (fired,) = loop.of("AlertFired")
    assert (fired["rule_id"], fired["severity"], fired["metric_name"]) == (
        "loud", "high", "stage_duration_seconds",
    )  # fmt: skip
    assert loop.engine.invalid == {}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"rule_id": "-x"}, "rule_id '-x' must be 1-60 letters, digits, '_', '.' or '-'"),
        ({"metric_name": "  "}, "metric_name is required"),
        ({"condition": None}, "condition '' is not one of greater_than, less_than, equals, contains"),
        ({"threshold": float("inf")}, "threshold of a greater_than rule must be a finite number, not inf"),
        ({"condition": "equals", "threshold": True}, "threshold of an equals rule must be a number or text"),
        ({"condition": "contains", "threshold": ""}, "threshold of a contains rule must be some text"),
        ({"severity": "dire"}, "severity 'dire' is not one of info, low, medium, high, critical"),
        ({"cooldown_minutes": "soon"}, "cooldown_minutes must be a number, not 'soon'"),
        ({"pending_s": -1}, "cooldown_minutes and pending_s must not be negative"),
        ({"scope": {"planet": "x"}}, "scope must be a table of stage, schedule, worker, host"),
    ],
)  # fmt: skip
def test_a_rule_spec_refuses_a_bad_field_with_a_value_error_naming_it(change, message):
    base = {"rule_id": "r", "metric_name": "m", "condition": "greater_than", "threshold": 1}
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        RuleSpec.of({**base, **change})


def test_a_rule_spec_normalises_what_it_is_given_and_fills_the_declared_defaults():
    class Condition(Enum):
        EQUALS = "equals"

    spec = RuleSpec.of({"rule_id": "r", "metric_name": " m ", "condition": Condition.EQUALS,
                        "threshold": "5", "severity": "HIGH", "pending_seconds": 2,
                        "scope": {"stage": 1}, "surplus": "ignored"})  # fmt: skip
    assert spec == RuleSpec(rule_id="r", metric_name="m", condition="equals", threshold=5.0,
                            severity="high", pending_s=2.0, scope={"stage": "1"})  # fmt: skip
    assert spec.to_map() == {
        "rule_id": "r", "metric_name": "m", "condition": "equals", "threshold": 5.0,
        "severity": "high", "cooldown_minutes": 5.0, "enabled": True, "description": "",
        "pending_s": 2.0, "scope": {"stage": "1"},
    }  # fmt: skip
    assert RuleSpec.of({"rule_id": "r", "metric_name": "m", "condition": "contains",
                        "threshold": 7}).threshold == "7"  # fmt: skip


def test_the_event_the_fold_and_the_seed_api_share_the_rule_declaration():
    from actors import AlertRule

    # the event: the declaration's fields in its order, with its defaults; severity required
    event_fields = [f for f in fields(AlertRuleAdded) if f.name not in ("id", "ts", "src")]
    assert tuple(f.name for f in event_fields) == tuple(f.name for f in fields(RuleSpec))
    assert SCHEMAS["AlertRuleAdded"].required - {"type", "v", "id", "ts", "src"} == {
        "rule_id", "metric_name", "condition", "threshold", "severity",
    }  # fmt: skip
    declared = RuleSpec("r", "m", "less_than", 1.0)
    event = AlertRuleAdded(**declared.to_map())
    assert {n: getattr(event, n) for n in RULE_FIELDS} == declared.to_map()
    assert [f.default for f in event_fields[5:-1]] == [f.default for f in fields(RuleSpec)[5:-1]]
    # the seed's AlertRule: the declaration, positional in the seed's order
    seed = AlertRule("r", "m", "less_than", 1.0)
    assert isinstance(seed, RuleSpec)
    assert seed.to_map() == declared.to_map()
    # the fold: a Rule is the declaration as logged, plus its bookkeeping
    state = AlertsState()
    evolve(1, {**to_map(event), "ts": T0}, state)
    assert isinstance(state.rules["r"], RuleSpec)
    assert state.rules["r"].to_map() == declared.to_map()
    assert (state.rules["r"].added_ts, state.rules["r"].version) == (T0, 0)


def test_removing_or_disabling_a_rule_resolves_its_active_alerts():
    from bus.events import AlertRuleRemoved

    loop = Loop()
    loop.emit(rule(rule_id="a", threshold=1))
    loop.emit(rule(rule_id="b", threshold=1, scope={"stage": "s"}))
    completed(loop, "s", 5)
    assert len(loop.of("AlertFired")) == 2
    loop.emit(AlertRuleRemoved(rule_id="a"))
    loop.emit(rule(rule_id="b", threshold=1, scope={"stage": "s"}, enabled=False))
    loop.tick()
    resolved = loop.of("AlertResolved")
    assert len(resolved) == 2
    assert {r["reason"] for r in resolved} == {"its rule was removed or disabled"}
    assert loop.engine.state.active == {}


def test_an_old_sample_never_fires_again_and_a_hand_resolved_alert_waits_for_a_clear():
    from bus.events import AlertResolved

    loop = Loop()
    loop.emit(rule(cooldown_minutes=1))
    (fired,) = completed(loop, "s", 100)
    loop.emit(AlertResolved(alert_id=fired.alert_id, reason="resolved by hand"))
    loop.now += 3600
    assert loop.tick() == []  # no new sample: nothing to judge
    assert completed(loop, "s", 100) == []  # still the same trouble: held until it clears
    completed(loop, "s", 1)
    (again,) = completed(loop, "s", 100)
    assert again.TYPE == "AlertFired"


def test_idle_series_are_trimmed_and_dropped_and_non_finite_values_are_not_samples():
    loop = Loop(retention_s=3600)
    loop.emit(MetricRecorded(name="idle", value=1.0))
    loop.emit(MetricRecorded(name="nan", value=float("nan")))
    loop.emit(MetricRecorded(name="inf", value=float("inf")))
    assert loop.metrics.get("nan") is None
    assert loop.metrics.dropped_samples == 2
    for hour in range(1, 30):
        loop.now = T0 + hour * 600
        loop.emit(MetricRecorded(name="busy", value=float(hour)))
    assert loop.metrics.get("idle") is None
    assert loop.metrics.get("busy").samples[0][0] >= loop.now - 3600


def test_equals_with_text_wants_a_whole_label_value():
    loop = Loop()
    loop.emit(rule(rule_id="exact", metric_name="queue_lag", condition="equals", threshold="data"))
    loop.emit(MetricRecorded(name="queue_lag", value=1.0, labels={"stage": "data_cleaning"}))
    assert loop.of("AlertFired") == []
    loop.emit(MetricRecorded(name="queue_lag", value=1.0, labels={"stage": "data"}))
    assert len(loop.of("AlertFired")) == 1


def test_prometheus_output_parses_whatever_the_custom_labels_and_names():
    from prometheus_client.parser import text_string_to_metric_families

    from actors.monitor.prometheus import render

    loop = Loop()
    for name, labels in (("a-b", {"": "v"}), ("a.b", {"__name__": "x"}), ("9lives", {"ok": "1"}),
                         ("rows", {"stage": 'quote"and\\slash'})):  # fmt: skip
        loop.emit(MetricRecorded(name=name, value=1.0, labels=labels))
    completed(loop, "s", 2)
    text = render(loop.metrics, loop.engine.state, loop.now).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"porch_custom_a_b", "porch_custom__9lives", "porch_custom_rows"} <= names


def test_a_split_step_is_one_run_timed_as_porch_stats_times_it():
    from actors.read.executions import stage_statistics
    from store.projections import executions as execution_folds

    # given a global-stats step split in two parts: map, reduce, apply and report tasks, one
    # map failing once (and its late result ignored), and an output collect task
    loop = Loop()
    step = {"id": "clean", "stage": "data_cleaning", "source": "source", "after": [],
            "phases": ["map", "reduce", "apply", "report"], "parts": 2, "config": {},
            "kind": "global_stats", "columns": None}  # fmt: skip
    plan = {"execution_id": "e", "mode": "parallel", "input": {}, "fingerprints": {},
            "steps": [step], "outputs": ["clean"], "dir": "/x", "parts": [[0, 1], [1, 2]]}  # fmt: skip
    loop.emit(ExecutionRequested(execution_id="e", stages=["data_cleaning"], input_data="/in"))
    loop.emit(ExecutionStarted(execution_id="e", mode="parallel", plan=plan))
    task = {"execution_id": "e", "stage": "data_cleaning", "step": "clean"}

    def dispatch(phase, part, attempt=1):
        loop.emit(StageDispatched(**task, phase=phase, partition=part, attempt=attempt,
                                  task_id=f"{phase}{part}/{attempt}", partitions=2))  # fmt: skip

    def complete(phase, part, attempt=1, rows=0):
        loop.emit(StageCompleted(**task, phase=phase, partition=part, attempt=attempt, worker="w",
                                 task_id=f"{phase}{part}/{attempt}", artifact="a", rows_in=rows,
                                 rows_out=rows, bytes=1, sha256="", duration_s=0.5))  # fmt: skip

    dispatch("map", 0)
    dispatch("map", 1)
    loop.now += 1
    complete("map", 0, rows=600)
    loop.emit(StageFailed(**task, phase="map", partition=1, attempt=1, worker="w",
                          task_id="map1/1", error="lost", retryable=True))  # fmt: skip
    loop.now += 1
    dispatch("map", 1, attempt=2)
    complete("map", 1, attempt=1, rows=400)  # the failed attempt's late result
    loop.now += 1
    complete("map", 1, attempt=2, rows=400)
    for phase, parts in (("reduce", 1), ("apply", 2)):
        for part in range(parts):
            dispatch(phase, part)
        loop.now += 1
        for part in range(parts):
            complete(phase, part, rows=500)
    dispatch("report", 0)
    loop.now += 1.5
    complete("report", 0)
    dispatch("collect", 0)
    loop.now += 1
    complete("collect", 0, rows=1000)
    loop.emit(ExecutionCompleted(execution_id="e", records_processed=1000, duration_s=6.5))
    # then the monitor counts one run of the stage, from the first dispatch to the report's end,
    # over the rows its maps read, as `porch stats` does from the same log
    run = loop.metrics.get("stage_duration_seconds", (("stage", "data_cleaning"),))
    assert (run.count, run.last) == (1, 6.5)
    rate = loop.metrics.get("records_per_second", (("stage", "data_cleaning"),))
    assert rate.last == pytest.approx(1000 / 6.5)
    state = execution_folds.fold((r.seq, r.fields) for r in loop.hub.records)
    stats = stage_statistics(state.executions.values())["data_cleaning"]
    assert (stats["runs"], stats["p50_s"], stats["records"]) == (1, round(run.last, 3), 1000)
    # and each task's own time is under its own name, by phase (not the failed attempt's)
    tasks = {
        dict(s.labels)["phase"]: s.count
        for s in loop.metrics.by_name["stage_task_duration_seconds"]
    }
    assert tasks == {"map": 3, "reduce": 1, "apply": 2, "report": 1}
    assert loop.metrics.steps == {}


def test_new_failures_counts_every_failure_after_going_live_and_none_of_the_history():
    def fail(loop: Loop, eid: str) -> None:
        loop.emit(ExecutionRequested(execution_id=eid, stages=["s"], input_data="/x"))
        loop.emit(ExecutionFailed(execution_id=eid, error="boom", stage="s"))

    # given a fresh monitor that folded a failure of the history, then went live
    loop = Loop()
    fail(loop, "old")
    folds.count_failures_from_here(loop.metrics)
    # when a failure comes before its first sampling tick
    fail(loop, "new")
    # then that tick counts it (and not the history), and the next tick counts none
    assert folds.take_new_failures(loop.metrics) == 1
    assert folds.take_new_failures(loop.metrics) == 0
    # and a restored count (a snapshot) is kept as it goes live: downtime failures count
    fail(loop, "while-down")
    folds.count_failures_from_here(loop.metrics)
    assert folds.take_new_failures(loop.metrics) == 1


def test_a_short_task_s_start_told_by_its_completion_counts_as_its_start():
    # given a task dispatched, whose worker sent no StageStarted (it ended within the delay)
    loop = Loop()
    step = {"id": "s", "stage": "s", "phases": ["run"], "parts": 1}
    loop.emit(ExecutionRequested(execution_id="e", stages=["s"], input_data="/x"))
    loop.emit(ExecutionStarted(execution_id="e", mode="sequential", plan={"steps": [step]}))
    loop.emit(StageDispatched(execution_id="e", stage="s", step="s", task_id="e/t", partition=0,
                              partitions=1, attempt=1, lease_ms=1000, inputs=[]))  # fmt: skip
    sent = loop.now
    loop.now += 0.5
    # when its completion says when it started
    loop.emit(StageCompleted(execution_id="e", stage="s", step="s", worker="w1", artifact="a",
                             rows_in=1, rows_out=1, bytes=1, sha256="", duration_s=0.01,
                             task_id="e/t", started_ts=sent + 0.125))  # fmt: skip
    # then the queue wait is measured from it, as from a StageStarted
    assert loop.metrics.get("stage_queue_wait_seconds", (("stage", "s"),)).last == pytest.approx(
        0.125
    )

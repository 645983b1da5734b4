"""Retention, pure: which artifacts of finished executions the policy removes (tables and a
hypothesis property), how the execution fold records ``ArtifactsRemoved``, and the notes a
resumed execution's plan carries when what it would reuse was removed."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.api.settings import retention_policy
from actors.errors import UsageError
from actors.orchestrator.planning import resume_notes
from store import artifacts
from store.artifacts import ArtifactError
from store.projections import executions as folds
from store.projections import plan as plans
from store.retention import (
    DAY_S,
    NO_CHECKPOINTS,
    RetentionConfigError,
    RetentionPolicy,
    decide,
    protected,
    removed_paths,
)

NOW = 1_000 * DAY_S
ROOT = "/ck"


def make_plan(eid: str, stages: tuple[str, ...]) -> plans.Plan:
    steps, source = [], plans.SOURCE
    for name in stages:
        steps.append({"id": name, "stage": name, "config": {}, "after": [], "source": source})
        source = name
    return plans.make_plan(
        execution_id=eid, mode="sequential", steps=steps,
        kinds=dict.fromkeys(stages, "row_local"), columns={},
        input_info={"path": "/in.parquet", "bytes": 1, "mtime_ns": 1, "rows": 10},
        parts=[[0, 1]], directory=f"{ROOT}/{eid}", outputs=[stages[-1]],
    )  # fmt: skip


class Log:
    """A log of executions built event by event and folded as it grows."""

    def __init__(self) -> None:
        self.state = folds.ExecutionsState()
        self.seq = 0
        self.events: list[tuple[int, dict]] = []

    def add(self, kind: str, ts: float = 0.0, **fields) -> None:
        self.seq += 1
        event = {"type": kind, "ts": ts, "id": f"e{self.seq}", **fields}
        self.events.append((self.seq, event))
        folds.evolve(self.seq, event, self.state)

    def run(
        self,
        eid: str,
        *,
        finished_days_ago: float | None = 30.0,
        status: str = "completed",
        stages: tuple[str, ...] = ("a", "b"),
        pipeline: str = "",
        ran: int | None = None,
        **request,
    ) -> str:
        """An execution that ran its first `ran` steps (all by default) and ended `status`
        `finished_days_ago` (None: still running, or ``status`` requested/paused)."""
        end = NOW - (finished_days_ago or 0.0) * DAY_S
        self.add("ExecutionRequested", end - 60, execution_id=eid, stages=list(stages),
                 input_data="/in.parquet", pipeline=pipeline, **request)  # fmt: skip
        if status == "requested":
            return eid
        plan = make_plan(eid, stages)
        self.add(
            "ExecutionStarted", end - 50, execution_id=eid, mode="sequential", plan=plan.to_map()
        )
        keys = list(plans.tasks(plan))
        for key in keys[: len(keys) if ran is None else ran]:
            step, phase, part = key
            common = {"execution_id": eid, "step": step, "phase": phase, "partition": part,
                      "attempt": 1, "stage": step, "task_id": f"{eid}/{step}"}  # fmt: skip
            self.add("StageDispatched", end - 40, **common)
            self.add("StageCompleted", end - 30, **common, worker="w", sha256="x",
                     artifact=plans.path(plan, key), rows_in=10, rows_out=10, bytes=100,
                     duration_s=1.0)  # fmt: skip
        if status == "paused":
            self.add("PauseRequested", end - 20, execution_id=eid)
            self.add("ExecutionPaused", end - 10, execution_id=eid)
        elif finished_days_ago is not None and status != "running":
            kind = {"completed": "ExecutionCompleted", "failed": "ExecutionFailed",
                    "cancelled": "ExecutionCancelled", "timed_out": "ExecutionTimedOut"}[status]  # fmt: skip
            self.add(kind, end, execution_id=eid)
        return eid

    def removed(self, eid: str, steps: list[str], *, finals: bool = False, ts: float = NOW,
                reason: str = "retention", size: int = 1000) -> None:  # fmt: skip
        self.add("ArtifactsRemoved", ts, execution_id=eid, steps=steps, bytes=size,
                 reason=reason, finals=finals)  # fmt: skip


def removes(log: Log, **policy) -> dict[str, tuple[tuple[str, ...], bool]]:
    return {
        r.execution_id: (r.steps, r.finals)
        for r in decide(log.state, RetentionPolicy(**policy), NOW)
    }


# --- the policy, as tables -----------------------------------------------------------------


def test_by_default_the_newest_three_of_a_pipeline_keep_everything_and_outputs_stay():
    # given five runs of one pipeline, a month old, oldest first
    log = Log()
    for i in range(5):
        log.run(f"r{i}", finished_days_ago=30 - i)
    # then the two oldest lose their intermediates, not their outputs
    assert removes(log) == {"r0": (("a", "b"), False), "r1": (("a", "b"), False)}
    (first, _) = decide(log.state, RetentionPolicy(), NOW)
    assert first.paths == (f"{ROOT}/r0/a", f"{ROOT}/r0/b")
    assert first.root == f"{ROOT}/r0"
    assert first.reason == "retention"
    assert first.age_s(NOW) == pytest.approx(30 * DAY_S)


@pytest.mark.parametrize(
    ("policy", "ages", "removed"),
    [
        # everything younger than keep_days stays, beyond the newest keep_last
        ({"keep_last": 1}, [10, 6, 5, 1], {"r0"}),
        ({"keep_last": 1, "keep_days": 0}, [10, 6, 5, 1], {"r0", "r1", "r2"}),
        ({"keep_last": 0, "keep_days": 0}, [10, 6], {"r0", "r1"}),
        ({"keep_last": 5, "keep_days": 0}, [10, 6, 5, 1], set()),
        ({"keep_last": 0, "keep_days": 5.5}, [10, 6, 5, 1], {"r0", "r1"}),
    ],
)
def test_keep_last_and_keep_days_both_keep(policy, ages, removed):
    log = Log()
    for i, age in enumerate(ages):
        log.run(f"r{i}", finished_days_ago=age)
    assert set(removes(log, **policy)) == removed


def test_remove_outputs_takes_the_output_directory_too():
    log = Log()
    log.run("old", finished_days_ago=30)
    log.run("new", finished_days_ago=0)
    (removal,) = decide(log.state, RetentionPolicy(keep_last=1, remove_outputs=True), NOW)
    assert (removal.execution_id, removal.steps, removal.finals) == ("old", ("a", "b"), True)
    assert removal.paths[-1] == f"{ROOT}/old/output"


def test_pipelines_are_counted_apart_by_name_else_by_stage_list():
    log = Log()
    for i in range(2):
        log.run(f"named{i}", finished_days_ago=30 - i, pipeline="nightly")
        log.run(f"ab{i}", finished_days_ago=30 - i)
        log.run(f"abc{i}", finished_days_ago=30 - i, stages=("a", "b", "c"))
    assert set(removes(log, keep_last=1)) == {"named0", "ab0", "abc0"}


@pytest.mark.parametrize("status", ["requested", "running", "paused"])
def test_nothing_of_an_active_execution_goes_whatever_the_policy(status):
    log = Log()
    log.run("active", finished_days_ago=None if status == "running" else 90, status=status)
    log.run("done", finished_days_ago=90)
    assert removes(log, keep_last=0, keep_days=0, remove_outputs=True) == {
        "done": (("a", "b"), True)
    }


@pytest.mark.parametrize("status", ["completed", "failed", "cancelled", "timed_out"])
def test_every_finished_status_is_collected(status):
    log = Log()
    log.run("x", status=status)
    assert set(removes(log, keep_last=0)) == {"x"}


def test_what_a_pending_resume_needs_stays():
    # given an old execution that an active one resumes from, and one a finished one resumed
    log = Log()
    log.run("needed", finished_days_ago=90)
    log.run("was-needed", finished_days_ago=90)
    log.run("resuming", finished_days_ago=None, status="running", resume_from="needed")
    log.run("resumed", finished_days_ago=80, resume_from="was-needed")
    assert protected(log.state) == {"resuming", "needed"}
    assert set(removes(log, keep_last=0, keep_days=0)) == {"was-needed", "resumed"}


def test_steps_never_dispatched_and_executions_never_planned_are_not_listed():
    log = Log()
    log.run("cut", status="cancelled", ran=1)  # only the first step ran
    log.run("refused", status="requested")
    log.add("ExecutionFailed", NOW - 90 * DAY_S, execution_id="refused", error="refused: x")
    assert removes(log, keep_last=0, remove_outputs=True) == {"cut": (("a",), False)}


def test_what_was_removed_is_not_removed_again_and_the_rest_still_is():
    log = Log()
    log.run("x")
    log.removed("x", ["a", "b"])
    assert removes(log, keep_last=0) == {}
    assert removes(log, keep_last=0, remove_outputs=True) == {"x": ((), True)}
    log.removed("x", [], finals=True)
    assert removes(log, keep_last=0, remove_outputs=True) == {}


def test_save_checkpoints_false_loses_its_intermediates_even_when_kept():
    log = Log()
    log.run("no-ckpt", finished_days_ago=0, save_checkpoints=False)
    log.run("failed", finished_days_ago=0, status="failed", save_checkpoints=False)
    (removal,) = decide(log.state, RetentionPolicy(), NOW)
    assert (removal.execution_id, removal.steps, removal.finals) == ("no-ckpt", ("a", "b"), False)
    assert removal.reason == NO_CHECKPOINTS


def test_removals_come_oldest_request_first():
    log = Log()
    for i in range(4):
        log.run(f"p{i}", pipeline="p", finished_days_ago=40 - i)
        log.run(f"q{i}", pipeline="q", finished_days_ago=40 - i)
    assert [r.execution_id for r in decide(log.state, RetentionPolicy(keep_last=1), NOW)] == [
        "p0", "q0", "p1", "q1", "p2", "q2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"keep_last": -1}, "keep_last must be >= 0"),
        ({"keep_days": -0.5}, "keep_days must be >= 0"),
        ({"interval_s": 0}, "interval_s must be > 0"),
    ],
)
def test_a_policy_out_of_range_is_refused_in_one_line(fields, message):
    with pytest.raises(RetentionConfigError, match=message):
        RetentionPolicy(**fields)


def test_the_retention_table_and_environment_build_the_policy(tmp_path):
    config = tmp_path / "porch.toml"
    config.write_text("[retention]\nkeep_last = 1\nkeep_days = 0\ninterval_s = 0.5\n")
    policy = retention_policy(str(config), {"PORCH_RETENTION_REMOVE_OUTPUTS": "yes"})
    assert policy == RetentionPolicy(keep_last=1, keep_days=0.0, interval_s=0.5,
                                     remove_outputs=True)  # fmt: skip
    assert retention_policy(None, {}) == RetentionPolicy()
    config.write_text("[retention]\nkeep_last = -2\n")
    with pytest.raises(UsageError, match=r"retention\.keep_last = -2: expected an integer >= 0"):
        retention_policy(str(config), {})
    config.write_text("[retention]\nkeep = 2\n")
    with pytest.raises(UsageError, match=r"retention\.keep is not a setting"):
        retention_policy(str(config), {})
    with pytest.raises(UsageError, match="PORCH_RETENTION_ENABLED"):
        retention_policy(None, {"PORCH_RETENTION_ENABLED": "maybe"})


# --- the property --------------------------------------------------------------------------

STATUSES = ["completed", "failed", "cancelled", "timed_out", "running", "paused", "requested"]
run_spec = st.tuples(
    st.sampled_from(["p", "q", "r"]),
    st.sampled_from(STATUSES),
    st.floats(0, 40),  # days ago it finished
    st.integers(0, 20),  # resume_from: an index into the runs before it, if any
    st.booleans(),  # removed already
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    runs=st.lists(run_spec, max_size=14),
    keep_last=st.integers(0, 4),
    keep_days=st.sampled_from([0.0, 1.0, 7.0, 30.0]),
    outputs=st.booleans(),
)
def test_never_an_active_execution_or_a_pending_resume_and_always_the_newest_k(
    runs, keep_last, keep_days, outputs
):
    # given a log of executions of three pipelines, some resuming from earlier ones
    log = Log()
    for i, (pipeline, status, days, resume, removed) in enumerate(runs):
        resume_from = f"x{resume}" if resume < i else None
        active = status in folds.ACTIVE
        log.run(f"x{i}", pipeline=pipeline, status=status, resume_from=resume_from,
                finished_days_ago=None if status == "running" else days)  # fmt: skip
        if removed and not active:
            log.removed(f"x{i}", ["a"])
    # when the policy decides
    policy = RetentionPolicy(keep_last=keep_last, keep_days=keep_days, remove_outputs=outputs)
    removals = decide(log.state, policy, NOW)
    gone = {r.execution_id for r in removals}
    # then nothing of an active execution, or of one an active execution resumes from, goes
    executions = log.state.executions
    for ex in executions.values():
        if ex.status in folds.ACTIVE:
            assert ex.execution_id not in gone
            assert ex.request.get("resume_from") not in gone
    # and the newest K finished of each pipeline, and all young ones, keep everything
    for name in "pqr":
        finished = sorted(
            (e for e in executions.values()
             if e.status in folds.FINISHED and e.request["pipeline"] == name),
            key=lambda e: (e.finished_ts, e.requested_seq), reverse=True,
        )  # fmt: skip
        kept = {e.execution_id for e in finished[:keep_last]}
        kept |= {e.execution_id for e in finished if NOW - e.finished_ts < keep_days * DAY_S}
        assert not kept & gone
    # and what is removed is of a finished execution, never twice, outputs only if asked
    for r in removals:
        ex = executions[r.execution_id]
        assert ex.status in folds.FINISHED
        assert not set(r.steps) & set(ex.removed_steps)
        assert r.finals <= outputs
        assert r.steps or r.finals
        assert all(p.startswith(f"{ex.plan.dir}/") for p in r.paths)


# --- the fold ------------------------------------------------------------------------------


def test_the_fold_records_removals_of_finished_executions_only_and_of_known_steps():
    log = Log()
    log.run("done")
    log.run("live", finished_days_ago=None, status="running")
    # when removals arrive: known and unknown steps, an active execution, a repeat
    log.removed("done", ["a", "../../etc", "nope"], ts=NOW, size=700)
    log.removed("live", ["a"])
    log.removed("done", ["a"], ts=NOW + 5, size=700)
    log.removed("done", [], finals=True, ts=NOW + 9, reason="porch gc", size=300)
    # then only the finished execution's known steps are marked, once, bytes counted once
    done = log.state.executions["done"]
    assert done.removed_steps == {"a": (NOW, "retention")}
    assert (done.outputs_removed_ts, done.outputs_removed_reason) == (NOW + 9, "porch gc")
    assert done.removed_bytes == 1000
    assert log.state.executions["live"].removed_steps == {}
    assert removed_paths(done) == [f"{ROOT}/done/a", f"{ROOT}/done/output"]
    summary = done.step_summary()
    assert (summary["a"]["removed"], summary["b"]["removed"]) == (True, False)
    assert summary["a"]["status"] == "completed"  # history stays: it ran and completed


def test_the_fold_with_removals_resumes_from_a_snapshot_at_every_point():
    log = Log()
    for i in range(3):
        log.run(f"r{i}")
        log.removed(f"r{i}", ["a", "b"], finals=i == 1)
    whole = folds.CODEC.dump(log.state)
    for cut in range(len(log.events) + 1):
        state = folds.fold(log.events[:cut])
        body = msgpack.unpackb(
            msgpack.packb(folds.CODEC.dump(state), use_bin_type=True), strict_map_key=False
        )
        resumed = folds.fold(log.events[cut:], folds.CODEC.load(body))
        assert folds.CODEC.dump(resumed) == whole, cut


# --- the notes of a resume -----------------------------------------------------------------


def test_a_resume_of_a_collected_execution_says_which_steps_it_recomputes():
    log = Log()
    log.run("first")
    earlier = log.state.executions["first"]
    same = make_plan("second", ("a", "b"))
    assert resume_notes(same, earlier) == []
    log.removed("first", ["a"], ts=86_400.0 * 365)
    notes = resume_notes(same, earlier)
    assert notes == [
        "artifacts of first step a were removed by retention on 1971-01-01 00:00 UTC; recomputing"
    ]
    log.removed("first", ["b"], finals=True, ts=86_400.0 * 366, reason="porch gc")
    assert resume_notes(same, earlier)[1:] == [
        "artifacts of first step b were removed by porch gc on 1971-01-02 00:00 UTC; recomputing",
        "final outputs of first were removed by porch gc on 1971-01-02 00:00 UTC; recomputing",
    ]
    # a plan that would reuse nothing of it (other stages) gets no note
    assert resume_notes(make_plan("other", ("c",)), earlier) == []


# --- deleting ------------------------------------------------------------------------------


def test_removing_paths_is_idempotent_measured_and_stays_inside_the_execution(tmp_path):
    root = tmp_path / "ck" / "ex1"
    (root / "a").mkdir(parents=True)
    (root / "a" / "run-0000.arrow").write_bytes(b"x" * 1000)
    (root / "output").mkdir()
    (root / "output" / "a.parquet").write_bytes(b"y" * 24)
    paths = [str(root / "a"), str(root / "output")]
    assert artifacts.disk_bytes(paths) == 1024
    with pytest.raises(ArtifactError, match="not inside"):
        artifacts.remove_paths([str(root / ".." / "ex2")], inside=root)
    with pytest.raises(ArtifactError, match="not inside"):
        artifacts.remove_paths([str(root)], inside=root)
    assert artifacts.remove_paths(paths[:1], inside=root) == paths[:1]
    assert artifacts.remove_paths(paths, inside=root) == paths[1:]
    assert artifacts.remove_paths(paths, inside=root) == []
    assert not root.exists()  # left empty, so removed too
    assert artifacts.disk_bytes(paths) == 0

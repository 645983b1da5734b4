"""Retention in a running system: `porch gc` lists and removes artifacts of finished executions
(each removal an ``ArtifactsRemoved`` in the log before a file goes), `porch status` shows what is
gone, a resume of a collected execution recomputes what is missing and reuses what is left, the
orchestrator applies the policy by itself, and redoes logged deletions cut short by a crash."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

from bus.events import ArtifactsRemoved, ExecutionRequested
from store import artifacts
from tests.conftest import run_porch
from tests.slowstages import STAGES
from tests.stagedata import write_sample
from tests.watching import Logged

PIPELINE = ["data_cleaning", "feature_engineering", "noop"]
WRITERS = PIPELINE[:2]  # noop hands its input back: its artifact is feature_engineering's


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    return write_sample(tmp_path_factory.mktemp("input") / "history.parquet", 3000, 5, 1000)


class Retained(Logged):
    """A system with one worker and a `[retention]` table in its config file."""

    def __init__(self, tmp_path: Path, retention: str) -> None:
        super().__init__(tmp_path, f"[retention]\n{retention}\n", workers=1, stages=STAGES)

    def run(self, input_path: Path, eid: str, **fields) -> dict:
        self.client.append(
            ExecutionRequested(
                execution_id=eid, stages=PIPELINE, input_data=str(input_path), **fields
            )
        )
        self.wait(lambda seen: self.of("ExecutionCompleted", execution_id=eid), timeout=60)
        return self.status(eid)

    def status(self, eid: str) -> dict:
        result = self.porch("status", eid, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def porch(self, *args: str):
        return run_porch(*args, "--config", str(self.config), data_dir=self.data_dir)


@pytest.fixture
def started(tmp_path):
    systems: list[Retained] = []

    def start(retention: str) -> Retained:
        system = Retained(tmp_path, retention)
        systems.append(system)
        return system

    yield start
    for system in systems:
        system.stop()


def step_dirs(view: dict) -> list[Path]:
    """The directories of the steps that write artifacts."""
    root = Path(view["outputs"]["noop"]["path"]).parent.parent
    return [root / step for step in WRITERS]


def test_gc_lists_then_removes_status_shows_it_and_a_resume_recomputes_the_same_output(
    started, sample
):
    # given a system whose automatic pass is off, and four runs of one pipeline
    porch = started("enabled = false")
    views = [porch.run(sample, f"run-{i}") for i in range(4)]
    assert all(d.is_dir() for v in views for d in step_dirs(v))
    # when `porch gc` is asked what keeping only the newest run would remove
    dry = porch.porch("gc", "--keep-last", "1", "--keep-days", "0")
    # then it lists the three older runs with their sizes, the total, and removes nothing
    assert dry.returncode == 0, dry.stderr
    listed = [line.split()[0] for line in dry.stdout.splitlines()[1:4]]
    assert listed == ["run-0", "run-1", "run-2"], dry.stdout
    assert "total:" in dry.stdout
    assert "dry run: nothing removed" in dry.stdout
    plan = json.loads(porch.porch("gc", "--keep-last", "1", "--keep-days", "0", "--json").stdout)
    sizes = {r["execution_id"]: r["bytes"] for r in plan["removals"]}
    assert sizes == {
        v["execution_id"]: artifacts.disk_bytes([str(d) for d in step_dirs(v)]) for v in views[:3]
    }
    assert all(size > 0 for size in sizes.values())
    assert plan["total_bytes"] == sum(sizes.values())
    assert all(d.is_dir() for v in views for d in step_dirs(v))
    assert not porch.of("ArtifactsRemoved")
    # when it is told to remove them
    done = porch.porch("gc", "--keep-last", "1", "--keep-days", "0", "--yes")
    assert done.returncode == 0, done.stderr
    # then each removal is in the log, the intermediates are gone, outputs and the newest stay
    porch.wait(lambda seen: len(porch.of("ArtifactsRemoved")) == 3)
    for event, view in zip(porch.of("ArtifactsRemoved"), views, strict=False):
        assert event["execution_id"] == view["execution_id"]
        assert event["reason"] == "porch gc"
        assert event["bytes"] == sizes[view["execution_id"]]
        assert event["steps"] == PIPELINE
        assert not event["finals"]
        assert not any(d.exists() for d in step_dirs(view))
        assert Path(view["outputs"]["noop"]["path"]).exists()
    assert all(d.is_dir() for d in step_dirs(views[3]))
    again = porch.porch("gc", "--keep-last", "1", "--keep-days", "0")
    assert again.stdout.startswith("nothing to remove"), again.stdout
    # and `porch status` says what is gone
    status = porch.status("run-0")
    assert status["removed"]["steps"] == PIPELINE
    assert status["removed"]["outputs"] is False
    assert all(s["removed"] for s in status["steps"].values())
    text = porch.porch("status", "run-0").stdout
    assert "removed: 3 steps' artifacts" in text, text
    assert "by porch gc on" in text, text
    # when an execution resumes from a collected one
    resumed = porch.run(sample, "resumed", resume_from="run-0")
    # then it recomputes the removed steps, says so, reuses what is left (the output), and
    # gives the first run's output
    assert resumed["status"] == "completed"
    assert not any(s["reused"] for s in resumed["steps"].values())
    assert len(resumed["notes"]) == 3
    assert resumed["notes"][0].startswith("artifacts of run-0 step data_cleaning were removed by")
    assert resumed["notes"][0].endswith("; recomputing")
    assert (
        "note: artifacts of run-0 step noop were removed" in porch.porch("status", "resumed").stdout
    )
    collect = porch.of("StageCompleted", execution_id="resumed", phase="collect")
    assert collect[-1]["reused"] is True
    pd.testing.assert_frame_equal(
        pd.read_parquet(resumed["outputs"]["noop"]["path"]),
        pd.read_parquet(views[0]["outputs"]["noop"]["path"]),
    )
    assert "recomputing" in porch.text()
    # and the outputs go when asked
    outputs = porch.porch("gc", "--keep-last", "2", "--keep-days", "0", "--outputs", "--yes")
    assert outputs.returncode == 0, outputs.stderr
    assert not Path(views[0]["outputs"]["noop"]["path"]).exists()
    assert porch.status("run-0")["removed"]["outputs"] is True
    assert "removed" in porch.porch("status", "run-0").stdout.splitlines()[-1]


def test_gc_refuses_in_one_line_without_a_hub_or_with_a_bad_flag(tmp_path):
    result = run_porch("gc", data_dir=tmp_path / "none")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"porch: gc: no hub runs for data dir {tmp_path / 'none'}; start `porch up` or "
        "`porch hub` (each removal is logged as an event first)"
    ]
    bad = run_porch("gc", "--keep-last", "-1", data_dir=tmp_path / "none")
    assert bad.returncode == 2
    assert (
        bad.stderr.strip()
        == "porch: argument --keep-last: must be >= 0, got -1 (see `porch gc --help`)"
    )
    config = tmp_path / "porch.toml"
    config.write_text("[retention]\nkeep_days = 'week'\n")
    wrong = run_porch("gc", "--config", str(config), data_dir=tmp_path / "none")
    assert wrong.returncode == 2
    assert 'retention.keep_days = "week": expected a number >= 0' in wrong.stderr


def test_the_orchestrator_applies_the_policy_by_itself_and_redoes_cut_short_deletions(
    started, sample
):
    # given a system that keeps only the newest run, looking every half second
    porch = started("interval_s = 0.5\nkeep_last = 1\nkeep_days = 0")
    first = porch.run(sample, "auto-0")
    second = porch.run(sample, "auto-1", save_checkpoints=False)
    # then the older run's intermediates go by retention, and the newest loses its own
    # at once, as it asked not to keep checkpoints; outputs stay
    porch.wait(lambda seen: len(porch.of("ArtifactsRemoved")) == 2)
    reasons = {e["execution_id"]: e["reason"] for e in porch.of("ArtifactsRemoved")}
    assert reasons == {"auto-0": "retention", "auto-1": "save_checkpoints=False"}
    deadline = time.monotonic() + 10
    while any(d.exists() for v in (first, second) for d in step_dirs(v)):
        assert time.monotonic() < deadline, "the files were not removed"
        porch.listen(0.1)
    assert Path(second["outputs"]["noop"]["path"]).exists()
    third = porch.run(sample, "auto-2")
    # given a removal logged while the orchestrator is down, its files still there (a crash
    # between the event and the deletion)
    orchestrator = next(c for c in porch.system.children if c.name == "orchestrator")
    assert orchestrator.proc is not None
    orchestrator.proc.terminate()
    orchestrator.proc.wait(10)
    porch.client.append(
        ArtifactsRemoved(execution_id="auto-2", steps=PIPELINE, bytes=1, reason="test", finals=True)
    )
    assert all(d.exists() for d in step_dirs(third))
    # when the orchestrator starts again
    deadline = time.monotonic() + 20
    while not porch.system.check():
        assert time.monotonic() < deadline, "the orchestrator was not restarted"
        porch.listen(0.1)
    # then it deletes what the log says is gone, and says so (its line is written just after
    # the files go: it is waited for too)
    deadline = time.monotonic() + 20
    while (
        any(d.exists() for d in step_dirs(third))
        or Path(third["outputs"]["noop"]["path"]).exists()
        or "removed artifacts of auto-2" not in porch.text()
    ):
        assert time.monotonic() < deadline, porch.text()[-2000:]
        porch.listen(0.1)

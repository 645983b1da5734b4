"""Task logs and failure reports in a running system: what a task writes goes to a bounded log
beside its artifacts, `porch logs` shows it per task (and follows it), retention removes it, a
failed validation keeps its report, and `porch up` says when executions start and end."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from actors.api.system import System
from bus.events import ExecutionRequested
from store.tasklogs import MAX_LOG_BYTES
from tests.conftest import PORCH, run_porch
from tests.slowstages import STAGES
from tests.stagedata import write_sample
from tests.watching import Watched

NO_BYTES = {"name": "no_bytes", "rule": "range", "column": "BYTES_SCANNED", "max": 0}


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> Path:
    """2,000 rows of query history in 2 row groups."""
    return write_sample(tmp_path_factory.mktemp("input") / "history.parquet", 2000, 3, 1000)


class Porch(Watched):
    def __init__(self, tmp_path: Path) -> None:
        super().__init__(System(data_dir=tmp_path / "porch", workers=2, stages=STAGES,
                                log=subprocess.DEVNULL))  # fmt: skip

    def run(self, input_path: Path, eid: str, stages: list[str], **fields) -> dict:
        self.client.append(ExecutionRequested(execution_id=eid, stages=stages,
                                              input_data=str(input_path), **fields))  # fmt: skip
        self.wait(lambda seen: self.of("ExecutionCompleted", execution_id=eid)
                  or self.of("ExecutionFailed", execution_id=eid), timeout=60)  # fmt: skip
        return self.status(eid)

    def status(self, eid: str) -> dict:
        result = self.porch("status", eid, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def porch(self, *args: str):
        return run_porch(*args, data_dir=self.data_dir, timeout=60)


@pytest.fixture
def porch(tmp_path):
    running = Porch(tmp_path)
    yield running
    running.stop()


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
def test_a_failed_validation_keeps_its_report_in_status_the_api_and_the_logs(porch, sample, mode):
    # given a validation rule that every row with bytes fails
    eid = f"invalid-{mode}"
    config = {"data_validation": {"rules": [NO_BYTES], "examples": 2}}
    # when it runs (split in parallel: the report task fails)
    view = porch.run(sample, eid, ["data_validation"], mode=mode, partitions=2, config=config)
    # then the execution failed, and status --json keeps each rule's failing count and examples
    assert view["status"] == "failed"
    report = view["steps"]["data_validation"]["report"]
    (rule,) = report["rules"]
    assert rule["rule"] == "no_bytes"
    assert rule["failing"] > 0
    assert len(rule["examples"]) == 2
    assert set(rule["examples"][0]["values"]) == {"BYTES_SCANNED"}
    assert report["errors"] == 1
    # and status for people shows the failing rule and an example row
    text = porch.porch("status", eid).stdout
    assert f"rule no_bytes (error): {rule['failing']} failing" in text, text
    assert f"e.g. row {rule['examples'][0]['row']}: BYTES_SCANNED=" in text, text
    # and so does the Python API
    from actors import MLPipelineOrchestrator

    api = MLPipelineOrchestrator(endpoint=porch.data_dir, metrics_dir=porch.data_dir / "m")
    try:
        assert api.get_execution_status(eid)["steps"]["data_validation"]["report"] == report
        assert api.wait_execution(eid).stage_results["data_validation"].report == report
    finally:
        api.close()
    # and the failing task's log says why, with the report
    logs = porch.porch("logs", eid)
    assert logs.returncode == 0, logs.stderr
    phase = "run/0" if mode == "sequential" else "report/0"
    assert f"[data_validation {phase} a1] porch: the task failed: data_validation: rule failed: " \
           f"no_bytes ({rule['failing']} failing)" in logs.stdout, logs.stdout  # fmt: skip
    assert f"[data_validation {phase} a1] porch:   rule no_bytes (error)" in logs.stdout


def test_what_a_task_writes_goes_to_its_own_bounded_log_and_porch_logs_shows_it(porch, sample):
    # given a row-local stage that writes every way a task can, run on two parts, after a step
    # that writes nothing, and a second run that writes more than a log keeps
    steps = [{"id": "quiet", "stage": "slow_part", "config": {"seconds": 0}},
             {"id": "talk", "stage": "chatty", "after": ["quiet"]}]  # fmt: skip
    view = porch.run(sample, "talky", [], steps=steps, mode="parallel", partitions=2)
    assert view["status"] == "completed"
    root = Path(view["outputs"]["talk"]["path"]).parent.parent
    # then each task has its log beside the step's artifacts; the quiet step wrote nothing
    logs = root / "talk" / "logs"
    assert sorted(p.name for p in logs.iterdir()) == ["run-0000-a1.log", "run-0001-a1.log"]
    first = (logs / "run-0000-a1.log").read_text()
    for line in ("chatty: 1000 rows in", "a warning through logging", "to sys.stderr",
                 "to fd 2", "chatty: done"):  # fmt: skip
        assert line in first, first
    assert not (root / "quiet").exists()
    # and `porch logs` prints every line prefixed with its task
    shown = porch.porch("logs", "talky")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "[talk run/0 a1] chatty: 1000 rows in" in lines
    assert "[talk run/1 a1] chatty: done" in lines
    assert all(line.startswith(("[talk run/0 a1] ", "[talk run/1 a1] ")) for line in lines)
    assert porch.porch("logs", "talky", "talk").stdout == shown.stdout
    quiet = porch.porch("logs", "talky", "quiet")
    assert (quiet.returncode, quiet.stdout) == (0, "")
    assert "no task of step quiet of execution talky wrote anything" in quiet.stderr
    # and an unknown step or execution is one line
    wrong = porch.porch("logs", "talky", "nope")
    assert wrong.returncode == 2
    assert (
        wrong.stderr.strip() == "porch: execution 'talky' has no step 'nope' (steps: quiet, talk)"
    )
    missing = porch.porch("logs", "nobody")
    assert missing.returncode == 2
    assert missing.stderr.strip() == "porch: no execution 'nobody' in the log"
    # when a task writes more than a log keeps
    big = porch.run(sample, "big", ["chatty"], config={"chatty": {"bytes": 2 * MAX_LOG_BYTES}})
    log = (
        Path(big["outputs"]["chatty"]["path"]).parent.parent / "chatty" / "logs" / "run-0000-a1.log"
    )
    # then the log is cut at its limit with a mark, and says how much was dropped
    data = log.read_bytes()
    assert MAX_LOG_BYTES < len(data) < MAX_LOG_BYTES + 300
    assert f"[truncated: this task's log reached {MAX_LOG_BYTES} bytes".encode() in data
    assert data.rstrip().endswith(b"bytes dropped]")


def test_porch_logs_follow_prints_lines_as_they_come_until_the_execution_ends(
    porch, sample, tmp_path
):
    # given a task that writes a line, then waits for a file before it ends
    go = tmp_path / "go"
    porch.client.append(ExecutionRequested(execution_id="live", stages=["chatty"], input_data=str(sample),
                                           config={"chatty": {"wait_for": str(go)}}))  # fmt: skip
    # when `porch logs --follow` runs
    follow = subprocess.Popen([*PORCH, "logs", "live", "--follow", "--data-dir", str(porch.data_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        # then it prints the task's first line while the task still runs
        assert follow.stdout.readline() == "[chatty run/0 a1] chatty: 2000 rows in\n"
        assert not porch.of("ExecutionCompleted", execution_id="live")
        # and once the task goes on and the execution ends, the rest, then it exits
        go.touch()
        out, err = follow.communicate(timeout=60)
    finally:
        follow.kill()
    assert follow.returncode == 0, err
    assert out.splitlines()[-1] == "[chatty run/0 a1] chatty: done"
    assert err.strip() == "porch: execution live completed"


def test_retention_removes_the_logs_with_the_artifacts(porch, sample):
    # given a finished execution whose task wrote its log
    view = porch.run(sample, "gone", ["chatty"])
    logs = Path(view["outputs"]["chatty"]["path"]).parent.parent / "chatty" / "logs"
    assert (logs / "run-0000-a1.log").exists()
    # when `porch gc` removes its artifacts
    done = porch.porch("gc", "--keep-last", "0", "--keep-days", "0", "--yes")
    assert done.returncode == 0, done.stderr
    porch.wait(lambda seen: porch.of("ArtifactsRemoved", execution_id="gone"))
    # then its logs go with them (the orchestrator deletes once the event is durable), and
    # `porch logs` says where they went
    deadline = time.monotonic() + 20
    while logs.exists():
        assert time.monotonic() < deadline, "the logs were not removed"
        porch.listen(0.1)
    shown = porch.porch("logs", "gone")
    assert shown.stdout == ""
    assert "the logs of chatty were removed with the artifacts (porch gc)" in shown.stderr


def test_porch_up_says_when_an_execution_starts_and_ends(tmp_path, sample):
    data_dir = tmp_path / "up"
    out_path, err_path = tmp_path / "up.stdout", tmp_path / "up.stderr"
    with out_path.open("w") as out, err_path.open("w") as err:
        up = subprocess.Popen([*PORCH, "up", "--workers", "1", "--stage", "boom=tests.slowstages:boom",
                               "--data-dir", str(data_dir)],
                              stdout=out, stderr=err, start_new_session=True)  # fmt: skip
    try:
        _wait_for(out_path, "Ctrl-C stops", up)
        # when one execution completes and one fails
        ok = run_porch("run", str(sample), "--stages", "data_cleaning", "--id", "up-ok", "--wait",
                       data_dir=data_dir, timeout=60)  # fmt: skip
        bad = run_porch("run", str(sample), "--stages", "boom", "--id", "up-bad", "--wait",
                        data_dir=data_dir, timeout=60)  # fmt: skip
        assert (ok.returncode, bad.returncode) == (0, 1), ok.stderr + bad.stderr
        # then `porch up` printed a line for each start and end, on stderr
        text = _wait_for(err_path, "execution up-bad failed", up)
        assert "porch up: execution up-ok started (sequential, 1 steps)" in text
        assert "porch up: execution up-ok completed: 2000 records in " in text
        assert "porch up: execution up-bad started (sequential, 1 steps)" in text
        assert ("porch up: execution up-bad failed: stage 'boom' failed: ValueError: boom: "
                "this stage always fails") in text  # fmt: skip
        assert "execution" not in out_path.read_text()
        # and the dashboard's address once, said by `porch up`, not again by the dashboard
        said = out_path.read_text() + text
        assert said.count("porch up: dashboard http://127.0.0.1:") == 1, said
        assert "porch dashboard: " not in said
    finally:
        up.send_signal(signal.SIGINT)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
            up.wait(10)


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 30) -> str:
    """The file's text once it holds ``text`` (a process's output, as it writes it)."""
    deadline = time.monotonic() + timeout
    while True:
        found = path.read_text(errors="replace")
        if text in found:
            return found
        assert proc.poll() is None, found
        assert time.monotonic() < deadline, found
        time.sleep(0.05)

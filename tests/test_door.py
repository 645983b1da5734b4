"""Checked at the door: a command refuses a bad request with one line and exit 2 before anything
is queued, and `porch run --wait` says at once when nothing would run it. Run as a user runs
porch, against the cheapest real system that shows it."""

from __future__ import annotations

import queue
import subprocess
import threading
import time

import pytest

from actors.api.orchestrator import MLPipelineOrchestrator
from actors.api.system import System, stop_process
from actors.errors import UsageError
from bus.client import Client
from stages.names import BUILTIN_NAMES
from stages.sample import write_sample
from store.projections import workers as workers_fold
from tests.conftest import PORCH, run_porch
from tests.slowstages import STAGES
from tests.test_cli import assert_one_line_error


def requested(data_dir, execution_id: str | None = None) -> list[dict]:
    """The ExecutionRequested events in the log (of one execution)."""
    with Client.local(data_dir) as client:
        found = [r.fields() for r in client.read(1, types=["ExecutionRequested"])]
    return [f for f in found if execution_id is None or f["execution_id"] == execution_id]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "in.parquet"
    write_sample(path, 300, seed=3)
    return path


# --- numbers: refused as they are parsed, naming the flag, the value and what is allowed -----


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["run", "x.parquet", "--partitions", "-3"],
         "argument --partitions: must be 0..8192 (0: one per worker), got -3"),
        (["run", "x.parquet", "--max-attempts", "0"], "argument --max-attempts: must be 1..100, got 0"),
        (["history", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
        (["gc", "--keep-days", "nan"], "argument --keep-days: must be >= 0, got nan"),
        (["replay", "--from", "-5"], "argument --from: must be >= 0, got -5"),
        (["schedule", "add", "s", "--interval", "1h", "--input", "x.parquet", "--timeout-minutes", "0"],
         "argument --timeout-minutes: must be > 0 and <= 525600 (leave it out for none), got 0"),
        (["schedule", "add", "s", "--interval", "1h", "--input", "x.parquet", "--priority", "2000000"],
         "argument --priority: must be -1000000..1000000, got 2000000"),
        (["orchestrator", "--hybrid-min-rows", "0"], "argument --hybrid-min-rows: must be >= 1, got 0"),
        (["monitor", "--sampling-interval", "0"], "argument --sampling-interval: must be 0.05..3600, got 0"),
        (["sample", "out.parquet", "--seed", "-1"], "argument --seed: must be >= 0, got -1"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)  # fmt: skip
def test_a_bad_number_is_refused_naming_the_flag_the_value_and_what_is_allowed(
    tmp_path, args, line
):
    result = run_porch(*args, data_dir=tmp_path / "d")
    assert_one_line_error(result, line)
    assert not (tmp_path / "d").exists()  # refused before reaching anything


# --- the input: read before anything is queued ------------------------------------------------


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("nope.parquet", "does not exist"),
        ("folder", "is a directory: porch runs a pipeline over one parquet file"),
        ("text.parquet", "is not a parquet file (Parquet magic bytes not found"),
    ],
)
def test_run_refuses_an_input_it_cannot_read_and_queues_nothing(hub, tmp_path, name, says):
    # given a hub, and an input that is missing, a directory, or not parquet
    (tmp_path / "folder").mkdir()
    (tmp_path / "text.parquet").write_text("this is not parquet\n")
    # when it is run (without --wait: today's `porch run` queued it and exited 0)
    result = run_porch("run", str(tmp_path / name), data_dir=hub.data_dir)
    # then one line names the input and what is wrong, and nothing is in the log
    assert_one_line_error(result, f"input {tmp_path / name} {says}")
    assert requested(hub.data_dir) == []


# --- pause, resume, cancel of what the log does not hold ---------------------------------------


@pytest.mark.parametrize("action", ["pause", "resume", "cancel"])
def test_control_of_an_unknown_execution_is_refused(hub, action):
    result = run_porch(action, "nonexistent-id", data_dir=hub.data_dir)
    assert_one_line_error(result, f"{action}: no execution 'nonexistent-id' in the log")
    with Client.local(hub.data_dir) as client:
        assert client.head() == 0  # no request was appended


# --- a system that will not run it -------------------------------------------------------------


def test_run_wait_without_an_orchestrator_says_so_and_queues_nothing(hub, sample):
    # given a hub and nothing else
    # when a user runs and waits
    result = run_porch("run", str(sample), "--wait", data_dir=hub.data_dir, timeout=60)
    # then it says in one line that no orchestrator runs, instead of waiting forever
    assert_one_line_error(result, "no orchestrator runs for data dir")
    assert "porch up" in result.stderr
    assert requested(hub.data_dir) == []


class Lines:
    """A child's stderr, line by line, read in a thread so a test can wait with a deadline."""

    def __init__(self, stream) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {self.seen}")

    def rest(self) -> list[str]:
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        return self.seen


def test_run_wait_with_no_worker_says_so_once_and_goes_on_when_one_comes(tmp_path, sample):
    # given a hub and an orchestrator, and no worker
    system = System(data_dir=tmp_path / "porch", workers=0, log=subprocess.DEVNULL)
    system.start()
    waiting = worker = None
    try:
        d = system.data_dir
        waiting = subprocess.Popen(
            [*PORCH, "run", str(sample), "--stages", "data_cleaning", "--wait", "--data-dir", str(d)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        stderr = Lines(waiting.stderr)
        # when it has waited a few seconds, it says that no worker is alive
        line = stderr.wait_for("no worker is alive")
        assert line.startswith("porch: ")
        assert waiting.poll() is None  # and keeps waiting: a worker may be starting
        # and when a worker comes, the execution runs and the wait ends with it
        worker = subprocess.Popen(
            [*PORCH, "worker", "--data-dir", str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        out, _ = waiting.communicate(timeout=60)
        assert waiting.returncode == 0, stderr.rest()
        assert "data_cleaning: completed" in out
        assert sum("no worker is alive" in x for x in stderr.rest()) == 1  # said once
    finally:
        for proc in (waiting, worker):
            if proc is not None:
                stop_process(proc)
        system.stop()


# --- stages: built in, or announced by a live worker ---------------------------------------------


def test_the_builtin_names_are_the_registry_builtins():
    from stages.registry import BUILTINS

    assert [s.name for s in BUILTINS] == list(BUILTIN_NAMES)


@pytest.mark.parametrize(
    ("events", "present"),
    [
        ([("WorkerStarted", "a", ["x"])], {"a": ["x"]}),
        ([("WorkerStarted", "a", ["x"]), ("WorkerStopped", "a", None)], {}),
        ([("WorkerStarted", "a", ["x"]), ("WorkerLost", "a", None), ("WorkerReturned", "a", None)],
         {"a": ["x"]}),
        ([("WorkerStarted", "a", ["x"]), ("WorkerStarted", "a", ["y"])], {"a": ["y"]}),
        ([("WorkerStarted", "a", ["x"]), ("WorkerStarted", "b", []), ("WorkerLost", "a", None)],
         {"b": []}),
    ],
)  # fmt: skip
def test_the_workers_fold_keeps_who_is_present_and_what_each_announced(events, present):
    state = workers_fold.WorkersState()
    for seq, (kind, worker, stages) in enumerate(events, 1):
        fields = {"type": kind, "worker": worker, "ts": float(seq), "last_seen_ts": 0.0}
        if stages is not None:
            fields["stages"] = stages
        workers_fold.evolve(seq, fields, state)
    assert {n: w.stages for n, w in state.present().items()} == present
    back = workers_fold.CODEC.load(workers_fold.CODEC.dump(state))
    assert back == state


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    """A hub, an orchestrator and one worker that runs the test stages (`tests.slowstages`)."""
    system = System(
        data_dir=tmp_path_factory.mktemp("door") / "porch",
        workers=1,
        stages=STAGES,
        log=subprocess.DEVNULL,
    )
    system.start()
    try:
        yield system.data_dir
    finally:
        system.stop()


def test_a_worker_announces_the_stages_it_can_run(running, sample):
    # the worker has started once a run of a stage only it runs has completed
    done = run_porch("run", str(sample), "--stages", "noop", "--wait", data_dir=running, timeout=60)
    assert done.returncode == 0, done.stderr
    with Client.local(running) as client:
        (started,) = [r.fields() for r in client.read(1, types=["WorkerStarted"])]
    assert started["v"] == 2
    assert set(started["stages"]) == {*BUILTIN_NAMES, *(s.split("=")[0] for s in STAGES)}


def test_run_refuses_a_stage_no_live_worker_runs(running, sample):
    result = run_porch("run", str(sample), "--stages", "data_cleaning,nosuch", "--id", "typo",
                       data_dir=running)  # fmt: skip
    assert_one_line_error(
        result, "stage 'nosuch' is not registered: built-ins are " + ", ".join(BUILTIN_NAMES)
    )
    assert (
        "the live workers also run boom, chatty, fatal, inching, narrow, noop, slow, slow_part"
        in result.stderr
    )
    assert "under [stages] in porch.toml and run porch reload-stages" in result.stderr
    assert requested(running, "typo") == []


def test_schedule_add_refuses_a_stage_no_live_worker_runs(running, sample):
    result = run_porch("schedule", "add", "nightly", "--cron", "0 2 * * *", "--input", str(sample),
                       "--stages", "nosuch", data_dir=running)  # fmt: skip
    assert_one_line_error(result, "stage 'nosuch' is not registered")
    listed = run_porch("schedule", "list", "--json", data_dir=running)
    assert "nightly" not in listed.stdout


def test_schedule_add_of_an_input_not_there_yet_warns_and_adds(running, tmp_path):
    later = tmp_path / "tomorrow.parquet"
    result = run_porch("schedule", "add", "later", "--interval", "1h", "--input", str(later),
                       "--stages", "noop", data_dir=running)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("added schedule later")
    (warning,) = result.stderr.strip().splitlines()
    assert warning == (
        f"porch: warning: schedule later: input {later} does not exist yet;"
        " a fire fails unless it does by then"
    )


def test_the_python_api_refuses_a_bad_request_before_queuing(running, sample, tmp_path):
    with MLPipelineOrchestrator(data_dir=running, metrics_dir=tmp_path / "m") as api:
        assert api.system is None  # it uses the running system
        with pytest.raises(UsageError, match="does not exist"):
            api.execute_pipeline(tmp_path / "nope.parquet", execution_id="api-1")
        with pytest.raises(UsageError, match="stage 'nosuch' is not registered"):
            api.execute_pipeline(sample, stages=["nosuch"], execution_id="api-2")
        with pytest.raises(UsageError, match=r"partitions must be a whole number 0\.\.8192"):
            api.execute_pipeline(sample, partitions=-1, execution_id="api-3")
        # a stage a live worker announced is accepted
        assert api.execute_pipeline(sample, stages=["noop"], timeout=60).status == "completed"
    assert [e for e in ("api-1", "api-2", "api-3") if requested(running, e)] == []


# --- pause, resume and cancel follow the execution's state ---------------------------------------


def test_control_refuses_what_does_not_apply_to_the_execution_as_it_stands(
    running, sample, tmp_path
):
    pipeline = tmp_path / "slow.toml"
    pipeline.write_text('[pipeline]\nstages = ["slow"]\n\n[config.slow]\nseconds = 120\n\n'
                        '[stages]\nslow = "tests.slowstages:slow"\n')  # fmt: skip
    with Client.local(running) as client, client.subscribe(1, types=[
        "StageStarted", "ExecutionPaused", "ExecutionResumed", "ExecutionCancelled"
    ]) as sub:  # fmt: skip

        def wait_for(kind: str) -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for record in sub.receive(200):
                    fields = record.fields()
                    if fields["type"] == kind and fields.get("execution_id") == "ctl":
                        return
            raise AssertionError(f"no {kind} for the execution")

        def porch(*args: str) -> subprocess.CompletedProcess[str]:
            return run_porch(*args, data_dir=running)

        started = porch("run", str(sample), "--pipeline", str(pipeline), "--id", "ctl")
        assert started.returncode == 0, started.stderr
        wait_for("StageStarted")
        # a running execution: resume is refused, pause is not
        assert_one_line_error(
            porch("resume", "ctl"), "resume: execution ctl is running, not paused"
        )
        assert porch("pause", "ctl").returncode == 0
        wait_for("ExecutionPaused")
        # a paused one: pause again is refused, resume is not
        assert_one_line_error(porch("pause", "ctl"), "pause: execution ctl is already paused")
        assert porch("resume", "ctl").returncode == 0
        wait_for("ExecutionResumed")
        assert porch("cancel", "ctl").returncode == 0
        wait_for("ExecutionCancelled")
        # an execution that has ended: nothing applies
        for action in ("pause", "resume", "cancel"):
            assert_one_line_error(
                porch(action, "ctl"), f"{action}: execution ctl has already ended (cancelled)"
            )
        # and its id is taken: a new run under it would be dropped as a repeat
        assert_one_line_error(
            porch("run", str(sample), "--id", "ctl"),
            "run: execution 'ctl' exists already (cancelled): choose another --id,"
            " or --resume-from ctl to reuse its completed work",
        )
        assert_one_line_error(
            porch("run", str(sample), "--resume-from", "nope"),
            "run: --resume-from 'nope': no such execution in the log",
        )
        assert len(requested(running, "ctl")) == 1

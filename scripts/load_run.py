"""`scripts/load`: queue many executions at once through the scheduler, then check the log.

    scripts/load [--executions 1000] [--max-concurrent 3] [--rss-limit-mib 500] [--seconds 1200]

Starts a whole system with `porch up` (hub, orchestrator, 2 workers, the scheduler with
``--max-concurrent``, the monitor) on a temp data dir, adds ten paused schedules ``load-p0`` ..
``load-p9`` (priority 0..9, one cheap stage on a small parquet file), and triggers N manual runs
at once, each of a schedule drawn at random: the ``ScheduleFired`` that `porch schedule trigger`
appends, published back to back. While they run, a sampler reads the resident size of every
process of the system (each actor, the workers' runner processes, `porch up` itself) every
0.2 s. When every run has ended, or the time is up, it stops the system and checks the log alone:

- every one of the N executions completed, each admitted once;
- at most ``--max-concurrent`` were admitted and not yet ended at any seq (so at most that many
  ran at once);
- priority order held (`scripts.load_check.check_priority` says precisely what that means);
- and it reports the log's bytes per execution and the peak resident size of each process.

One summary line, then `bench load.<name> <value> <unit>` lines; exit 1 on a violation or when
a process's peak resident size passes ``--rss-limit-mib``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.schedules import add_schedules
from actors.scheduler.specs import normalize
from bus.client import Client
from bus.errors import BusError
from bus.events import ScheduleFired
from bus.schema import encode
from scripts.load_check import TERMINAL, Report, check
from stages.sample import SCHEMA, generate

PRIORITIES: Final = 10
RSS_LIMIT_MIB: Final = 500.0  # a runner with pandas and the stages loaded is about 150 MiB
SAMPLE_S: Final = 0.2


def sample_table(path: Path, rows: int) -> None:
    frame = pd.concat(list(generate(rows, seed=7)), ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False), path)


# --- the running system ---------------------------------------------------------------------------


class RssSampler(threading.Thread):
    """Every `SAMPLE_S`, the resident size of each process under `porch up`, by actor name.

    A direct child is named by its `porch` verb (``worker-1`` by its ``--name``); a process
    under an actor by the actor and its module (``worker-1.runner``); `porch up` is ``up``.
    A restarted actor keeps its name, so its peak covers every incarnation."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.peaks_mib: dict[str, float] = {}
        self._seen: dict[int, tuple[psutil.Process, str]] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(SAMPLE_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def sample(self) -> None:
        procs = [self.root]
        with contextlib.suppress(psutil.Error):
            procs += self.root.children(recursive=True)
        for proc in procs:
            try:
                name = self._label(proc)
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            if name is None:
                continue
            self.peaks_mib[name] = max(rss, self.peaks_mib.get(name, 0.0))

    def processes(self) -> list[psutil.Process]:
        return [proc for proc, _ in self._seen.values()]

    def _label(self, proc: psutil.Process) -> str | None:
        """Its name; None for a child not yet past its exec (it still shows its parent's
        command line), to be named at a later look."""
        known = self._seen.get(proc.pid)
        if known is not None and known[0] == proc:  # same pid and start time
            return known[1]
        if proc.pid == self.root.pid:
            name = "up"
        else:
            parent = proc.ppid()
            if proc.cmdline() == psutil.Process(parent).cmdline():
                return None
            if parent == self.root.pid:
                name = _actor_name(proc.cmdline())
            else:
                owner = self._seen.get(parent)
                name = f"{owner[1] if owner else parent}.{_module_name(proc.cmdline())}"
        self._seen[proc.pid] = (proc, name)
        return name


def _actor_name(cmdline: list[str]) -> str:
    verb = cmdline[cmdline.index("actors.cli") + 1] if "actors.cli" in cmdline else "other"
    if "--name" in cmdline:
        return cmdline[cmdline.index("--name") + 1]
    return verb


def _module_name(cmdline: list[str]) -> str:
    if "-m" in cmdline:
        return cmdline[cmdline.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(cmdline[0]).name if cmdline else "child"


@dataclass
class LoadSystem:
    """`porch up` on a temp data dir, ten paused schedules of priority 0..9, an RSS sampler.

    `stop` ends it whatever happened: SIGTERM to `porch up` (which stops its actors, the hub
    last), then SIGKILL to every process the sampler saw that is still alive."""

    root: Path
    max_concurrent: int = 3
    workers: int = 2
    rows: int = 200
    stages: tuple[str, ...] = ("data_cleaning",)
    proc: subprocess.Popen[bytes] | None = None
    sampler: RssSampler | None = None
    client: Client | None = None
    schedules: dict[str, int] = field(default_factory=dict)  # schedule id -> priority

    @property
    def data_dir(self) -> Path:
        return self.root / "porch"

    def start(self, timeout_s: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        input_path = self.root / "input.parquet"
        sample_table(input_path, self.rows)
        # files, not pipes: a `porch up` whose stdout reader is gone cannot stop its actors
        with (self.root / "up.out").open("wb") as out, (self.root / "up.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "actors.cli", "up", "--data-dir", str(self.data_dir),
                 "--workers", str(self.workers), "--max-concurrent", str(self.max_concurrent)],
                stdout=out, stderr=log, start_new_session=True,
            )  # fmt: skip
        self.sampler = RssSampler(self.proc.pid)
        self.sampler.start()
        self._wait_up(timeout_s)
        self.client = Client.local(self.data_dir, timeout_ms=10_000, retry_ms=1_000)
        configs = []
        for priority in range(PRIORITIES):
            sid = f"load-p{priority}"
            configs.append(normalize({
                "schedule_id": sid, "schedule_type": "interval", "schedule_expression": "1d",
                "enabled": False, "priority": priority,
                "execution_config": {"input_data": str(input_path), "stages": list(self.stages)},
            }, now=time.time()))  # fmt: skip
            self.schedules[sid] = priority
        add_schedules(self.client, configs, replace=False)

    def _wait_up(self, timeout_s: float) -> None:
        """`porch up` prints its line once the hub answers and every actor is started."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        out = self.root / "up.out"
        while not out.read_text(errors="replace").startswith("porch up:"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"load: porch up did not start: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.root / "up.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def trigger(self, count: int, seed: int) -> dict[str, int]:
        """Fire ``count`` manual runs back to back, each of a random schedule: the event `porch
        schedule trigger` appends, published without waiting for each acknowledgement. Returns
        execution id -> priority."""
        assert self.client is not None
        rng = random.Random(seed)
        ids = sorted(self.schedules)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        wanted: dict[str, int] = {}
        for i in range(count):
            sid = rng.choice(ids)
            eid = f"{sid}-manual-{stamp}-{i:05d}"
            wanted[eid] = self.schedules[sid]
            self.client.publish(encode(ScheduleFired(
                schedule_id=sid, fire_time=time.time(), key=f"{sid}@manual-{eid}",
                execution_id=eid, manual=True,
            )))  # fmt: skip
        return wanted

    def wait_terminal(self, wanted: set[str], timeout_s: float, progress: bool = False) -> int:
        """Follow the log until every wanted execution has ended; returns how many did."""
        assert self.client is not None
        ended: set[str] = set()
        deadline = time.monotonic() + timeout_s
        shown = time.monotonic()
        with self.client.subscribe(1, types=list(TERMINAL)) as sub:
            while len(ended) < len(wanted) and time.monotonic() < deadline:
                try:
                    records = sub.receive(500)
                except BusError:
                    continue
                for record in records:
                    eid = record.fields().get("execution_id")
                    if eid in wanted:
                        ended.add(eid)
                if self.proc is not None and self.proc.poll() is not None:
                    raise RuntimeError(f"load: porch up exited: {self.log_tail()}")
                if progress and time.monotonic() - shown >= 10:
                    shown = time.monotonic()
                    print(f"load: {len(ended)}/{len(wanted)} ended", file=sys.stderr, flush=True)
        return len(ended)

    def stop(self, timeout_s: float = 40.0) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
        if self.sampler is not None:
            with contextlib.suppress(Exception):  # a failed look must not keep the system up
                self.sampler.sample()  # one last look before anything stops
            self.sampler.stop()
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for child in self.sampler.processes() if self.sampler is not None else ():
            with contextlib.suppress(psutil.Error):  # only what this system started and left
                if child.is_running():  # the same process: pid and start time
                    child.kill()


# --- the command ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    report: Report
    peaks_mib: dict[str, float]
    rss_limit_mib: float
    published_s: float

    @property
    def over_limit(self) -> dict[str, float]:
        return {k: v for k, v in self.peaks_mib.items() if v > self.rss_limit_mib}

    @property
    def ok(self) -> bool:
        return not self.report.violations and not self.over_limit


def run_load(
    executions: int,
    *,
    max_concurrent: int = 3,
    seconds: float = 1200.0,
    seed: int = 1,
    rss_limit_mib: float = RSS_LIMIT_MIB,
    keep: str | None = None,
    progress: bool = False,
) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="porch-load-") as tmp:
        system = LoadSystem(Path(tmp), max_concurrent=max_concurrent)
        try:
            system.start()
            start = time.monotonic()
            wanted = system.trigger(executions, seed)
            published = time.monotonic() - start
            system.wait_terminal(set(wanted), seconds, progress=progress)
        finally:
            system.stop()
        report = check(system.data_dir, wanted, max_concurrent)
        if keep:
            shutil.copytree(tmp, keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
    assert system.sampler is not None
    return Outcome(report, dict(system.sampler.peaks_mib), rss_limit_mib, published)


def bench_name(process: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", process.lower()).strip("_")


def figures(outcome: Outcome) -> list[tuple[str, float, str]]:
    """The run's figures as `bench load.<name> <value> <unit>` triples."""
    r = outcome.report
    rate = r.completed / r.seconds if r.seconds else 0.0
    out = [
        ("load.executions_per_s", rate, "executions/s"),
        ("load.queue_all_s", r.queue_s, "s"),
        ("load.log_bytes_per_execution", r.log_bytes / max(1, r.executions), "bytes"),
        ("load.events_per_execution", r.events / max(1, r.executions), "events"),
    ]
    for process, peak in sorted(outcome.peaks_mib.items()):
        out.append((f"load.peak_rss_{bench_name(process)}", peak, "MiB"))
    return out


def summary(outcome: Outcome) -> str:
    r = outcome.report
    peak = max(outcome.peaks_mib.items(), key=lambda kv: kv[1], default=("none", 0.0))
    return (
        f"load: executions={r.executions} completed={r.completed} seconds={r.seconds:.1f} "
        f"peak_admitted={r.peak_admitted} peak_started={r.peak_started} raced={r.raced} "
        f"log_bytes={r.log_bytes} ({r.log_bytes / max(1, r.executions):.0f}/execution) "
        f"peak_rss={peak[1]:.0f}MiB ({peak[0]}) violations={len(r.violations) + len(outcome.over_limit)}"
    )


def main() -> int:
    from scripts.benchmarks.common import line

    parser = argparse.ArgumentParser(prog="scripts/load", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--executions", type=int, default=1000, help="queued at once (default 1000)"
    )
    parser.add_argument(
        "--max-concurrent", type=int, default=3, help="the scheduler's bound (default 3)"
    )
    parser.add_argument("--rss-limit-mib", type=float, default=RSS_LIMIT_MIB,
                        help=f"fail when any process's peak resident size passes this (default {RSS_LIMIT_MIB:g})")  # fmt: skip
    parser.add_argument("--seconds", type=float, default=1200, help="time bound (default 1200)")
    parser.add_argument("--seed", type=int, default=1, help="picks each run's schedule")
    parser.add_argument("--keep", metavar="DIR", help="keep the temp folder here afterwards")
    args = parser.parse_args()
    if args.executions < 1 or args.max_concurrent < 1 or args.seconds <= 0:
        parser.error("--executions >= 1, --max-concurrent >= 1 and --seconds > 0")
    outcome = run_load(args.executions, max_concurrent=args.max_concurrent, seconds=args.seconds,
                       seed=args.seed, rss_limit_mib=args.rss_limit_mib, keep=args.keep,
                       progress=True)  # fmt: skip
    for text in outcome.report.violations[:20]:
        print(f"load: violation: {text}")
    for process, peak in sorted(outcome.over_limit.items()):
        print(
            f"load: violation: {process} peaked at {peak:.0f} MiB, over {args.rss_limit_mib:g} MiB"
        )
    print(summary(outcome), flush=True)
    for name, value, unit in figures(outcome):
        line(name, value, unit)
    return 0 if outcome.ok else 1


if __name__ == "__main__":
    os.environ.pop("PORCH_DATA_DIR", None)
    sys.exit(main())

"""`scripts/bench orchestrator`: what running a stage through porch costs, and the modes on real data.

(a) per-stage overhead: a chain of no-op stages, ms between consecutive completions as a client
    sees them, beside a bare loop of the same design (PUSH a task to a bare worker, its durable
    completion seen over SUB, through the same hub);
    and the floor of a durable chain step (`ackidle.py`): an acknowledged append after the hub
    idled for a task's time, with the default fsync, beside the same with none;
(b) throughput: independent no-op tasks on 2 workers, tasks/s, beside the bare loop with 2
    bare workers;
    and, when the optional `bench` extra is installed, porch's (a) and (b) beside Ray's and
    Dask's on the same shapes (`peers.py`), each peer in its own process; (a), (b) and the
    peers run in three rounds, one after another in each, so each figure is the median of
    three runs taken at the same minutes of the shared machine;
(c) the default pipeline on 2,000,000 generated rows in each mode (checkpoints on), beside the
    same stage functions called directly in one process (read the parquet, run, write the
    output parquet), in three rounds of direct, sequential, parallel and hybrid.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.system import System
from actors.read.executions import fold_log
from bus.client import Client
from bus.events import ExecutionRequested
from scripts.benchmarks import ackidle, peers
from scripts.benchmarks.common import line, median, percentile, workers_ready
from scripts.benchmarks.stages import sample
from stages.pipeline import build
from stages.pipeline import run as run_pipeline

NOOP = "noop=scripts.benchmarks.noopstage:noop"
TERMINAL = ("completed", "failed", "cancelled")


def _system(root: Path, workers: int = 2) -> System:
    system = System(data_dir=root / "porch", workers=workers, stages=[NOOP], log=subprocess.DEVNULL)
    system.start()
    return system


def _wait(client: Client, eid: str, timeout: float = 600) -> object:
    deadline = time.monotonic() + timeout
    with client.subscribe(
        1, types=["ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled"]
    ) as sub:
        while time.monotonic() < deadline:
            for record in sub.receive(500):
                if record.fields().get("execution_id") == eid:
                    ex = fold_log(client).executions[eid]
                    if ex.status != "completed":
                        raise RuntimeError(f"bench execution {eid} {ex.status}: {ex.error}")
                    return ex
    raise RuntimeError(f"bench execution {eid} did not finish in {timeout} s")


def chain_overhead(root: Path, stages: int, reps: int) -> list[list[float]]:
    """The gaps (ms) between consecutive completions of a chain of no-op stages, one list per
    chain: ``reps`` chains, one after another, on one system."""
    root.mkdir(parents=True, exist_ok=True)
    tiny = root / "tiny.parquet"
    pq.write_table(pa.table({"x": [1]}), tiny)
    system = _system(root)
    runs = []
    try:
        with Client.local(system.data_dir) as client:
            workers_ready(client, 2)
            steps = [
                {"id": f"s{i}", "stage": "noop", **({"after": [f"s{i - 1}"]} if i else {})}
                for i in range(stages)
            ]
            for rep in range(reps):
                eid = f"chain-{rep}"
                client.append(
                    ExecutionRequested(
                        execution_id=eid, stages=[], steps=steps, input_data=str(tiny)
                    )
                )
                _wait(client, eid)
                done = [
                    r.fields()["ts"]
                    for r in client.read(1, types=["StageCompleted"], execution_id=eid)
                    if r.fields()["phase"] == "run"
                ]
                gaps = [(b - a) * 1000 for a, b in itertools.pairwise(done)]
                runs.append(gaps[5:])  # the first stages warm up the runners
    finally:
        system.stop()
    return runs


def throughput(root: Path, tasks: int, reps: int) -> list[float]:
    """Tasks/s of ``tasks`` independent no-op tasks on 2 workers, ``reps`` executions, one
    after another, on one system."""
    root.mkdir(parents=True, exist_ok=True)
    many = root / "many.parquet"
    pq.write_table(pa.table({"x": list(range(tasks))}), many, row_group_size=1)
    system = _system(root)
    rates = []
    try:
        with Client.local(system.data_dir) as client:
            workers_ready(client, 2)
            for rep in range(reps):
                eid = f"many-{rep}"
                client.append(
                    ExecutionRequested(
                        execution_id=eid,
                        stages=["noop"],
                        input_data=str(many),
                        mode="parallel",
                        partitions=tasks,
                    )
                )
                ex = _wait(client, eid)
                runs = [t for k, t in ex.tasks.items() if k[1] == "run"]
                start = min(t.dispatched_ts for t in runs)
                end = max(t.finished_ts for t in runs)
                rates.append(len(runs) / (end - start))
    finally:
        system.stop()
    return rates


def gap_ms(runs: list[list[float]], q: float) -> float:
    """The median over the chains of each chain's ``q`` percentile gap."""
    return median([percentile(gaps, q) for gaps in runs])


def bare(root: Path, kind: str, count: int) -> list[float]:
    root.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.benchmarks.bareloop", kind, str(root / f"bare-{kind}"), str(count)],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return [float(v) for v in proc.stdout.split()]


def modes(root: Path, rows: int, reps: int) -> None:
    """Each rep: the direct calls, then each mode once, so the ratios compare runs taken at
    the same minutes of a shared machine (the system idles while the direct calls run)."""
    root.mkdir(parents=True, exist_ok=True)
    path = sample(rows)
    direct: list[float] = []
    system = _system(root)
    results: dict[str, list[float]] = {m: [] for m in ("sequential", "parallel", "hybrid")}
    try:
        with Client.local(system.data_dir) as client:
            workers_ready(client, 2)
            for rep in range(reps):
                start = time.perf_counter()
                frames, _ = run_pipeline(build(), pd.read_parquet(path))
                frames["data_validation"].to_parquet(root / "direct.parquet")
                direct.append(time.perf_counter() - start)
                del frames
                for mode in results:
                    eid = f"{mode}-{rep}"
                    start = time.perf_counter()
                    client.append(ExecutionRequested(
                        execution_id=eid, stages=["data_cleaning", "feature_engineering", "data_aggregation",
                                                  "data_validation"], input_data=str(path), mode=mode))  # fmt: skip
                    _wait(client, eid)
                    results[mode].append(time.perf_counter() - start)
    finally:
        system.stop()
    base = median(direct)
    for mode, times in results.items():
        line(f"orchestrator.pipeline_{mode}", median(times), "s", base)


def run(quick: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        root = Path(tmp)
        stages = 60 if quick else 500
        tasks = 500 if quick else 5000
        # rounds of porch, the bare loop and each peer in turn: the median of three runs each,
        # taken at the same minutes of a shared machine
        found = peers.available()
        chains: list[list[float]] = []
        rates: list[float] = []
        bare_gaps: list[float] = []
        bare_rates: list[float] = []
        rounds: dict[str, list[peers.PeerFigures]] = {p: [] for p in found}
        acks: list[tuple[float, float]] = []
        for n in range(1 if quick else 3):
            acks.append(ackidle.p50_pair(root / f"k{n}", 100 if quick else 400))
            chains += chain_overhead(root / f"a{n}", stages, 1)
            bare_gaps += bare(root / f"r{n}", "chain", stages)
            rates += throughput(root / f"b{n}", tasks, 1)
            bare_rates += bare(root / f"r{n}", "throughput", tasks)
            for peer in found:
                rounds[peer].append(peers.measure(peer, root / f"{peer}{n}", stages, tasks, 1))
        p50, p99 = gap_ms(chains, 50), gap_ms(chains, 99)
        line("orchestrator.stage_overhead_p50", p50, "ms", percentile(bare_gaps, 50))
        line("orchestrator.stage_overhead_p99", p99, "ms", percentile(bare_gaps, 99))
        # the floor of a durable chain step: a synced append after the hub idled a task's time,
        # beside the same append unsynced
        synced, unsynced = (median(list(pair)) for pair in zip(*acks, strict=True))
        line("orchestrator.durable_ack_after_idle_p50", synced, "ms", unsynced)
        rate = median(rates)
        line("orchestrator.noop_tasks", rate, "tasks/s", median(bare_rates))
        figures = [peers.merged(r) for r in rounds.values()]
        peers.compare(figures, {50: p50, 99: p99}, rate)
        modes(root / "c", 50_000 if quick else 2_000_000, 1 if quick else 3)

"""Ray and Dask on porch's no-op chain and fan-out, each in its own process, for the same run.

`scripts/bench orchestrator` measures in rounds, porch and then each installed peer in turn, so
that a slow minute of a shared machine weighs on all of them, not on whichever ran then: in
each round a peer runs in a child process of its own session (`python -m
scripts.benchmarks.peers PEER ...`), so its start-up, threads and helper processes never
overlap porch's measurements, and whatever it leaves behind is killed with the session. Both peers get 2 local worker processes, as porch does:

(a) a chain of no-op tasks, each taking the previous one's result (Ray `f.remote(prev)`, Dask
    `client.submit(f, prev)`), all submitted at once as porch's chain is one execution; the
    driver waits on each link in turn and records when it sees it done. The gaps between
    consecutive completions, first 5 skipped, are the figure, as for porch;
(b) independent no-op tasks, one per input item, from the first submit until all are done,
    in tasks/s.

A warm-up of both shapes runs first in each process; each shape then runs `reps` times, and
the parent takes the median of each figure over all the rounds' repetitions (`compare`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.benchmarks.common import ROOT, line, median, percentile

PEERS = {"ray": "ray", "dask": "distributed"}  # peer -> the module that must import
INSTALL = ".venv/bin/python -m pip install -e '.[bench]'"
WARMUP_TASKS = 50
SKIP_GAPS = 5  # the first links warm up the workers, as in porch's chain


def noop(value: int) -> int:
    """The task both peers run: hand the value back."""
    return value


@dataclass(frozen=True, slots=True)
class PeerFigures:
    """One peer's figures: per-repetition chain gaps (ms) and fan-out rates (tasks/s)."""

    peer: str
    gaps_ms: list[list[float]]
    rates: list[float]

    def gap_ms(self, q: float) -> float:
        return median([percentile(gaps, q) for gaps in self.gaps_ms])

    @property
    def rate(self) -> float:
        return median(self.rates)


def installed() -> tuple[list[str], list[str]]:
    """The peers whose modules can be imported, and the others; nothing is imported here."""
    found = [p for p, module in PEERS.items() if importlib.util.find_spec(module) is not None]
    return found, [p for p in PEERS if p not in found]


def measure(peer: str, root: Path, links: int, tasks: int, reps: int) -> PeerFigures:
    """Run one peer in a child process of its own session and read its figures."""
    root.mkdir(parents=True, exist_ok=True)
    out = root / "figures.json"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0"}
    args = [sys.executable, "-m", "scripts.benchmarks.peers", peer, str(root), str(links)]
    proc = subprocess.Popen(
        [*args, str(tasks), str(reps)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, err = proc.communicate(timeout=600)
    finally:
        _end_session(proc)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"bench peer {peer} exited {proc.returncode}: {err.strip()[-800:]}")
    data = json.loads(out.read_text())
    return PeerFigures(peer, data["gaps_ms"], data["rates"])


def _end_session(proc: subprocess.Popen[str]) -> None:
    """Kill the child and whatever it started that is still in its session, and wait for it.

    Ray's workers take process groups of their own, so the session, not the group, holds all.
    """
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
    deadline = time.monotonic() + 10
    while pids := _session_pids(proc.pid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench peer processes {pids} of session {proc.pid} did not stop")
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)  # killed processes need a moment to leave the process table


def _session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid``, from /proc (the peers run on Linux, as porch does)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def available() -> list[str]:
    """The installed peers; says on stderr which are not, and how to install them."""
    found, missing = installed()
    if missing:
        print(
            f"bench: peers {', '.join(missing)} skipped (not installed); install with: {INSTALL}",
            file=sys.stderr,
            flush=True,
        )
    return found


def merged(rounds: Sequence[PeerFigures]) -> PeerFigures:
    """One peer's figures over several rounds, each its own process."""
    return PeerFigures(
        rounds[0].peer,
        [gaps for r in rounds for gaps in r.gaps_ms],
        [rate for r in rounds for rate in r.rates],
    )


def compare(figures: Sequence[PeerFigures], porch_ms: dict[int, float], rate: float) -> None:
    """Print porch's figures (its p50 and p99 gaps in ms, its tasks/s: each the median of its
    runs, as the peers' are) against the peers'."""
    for fig in figures:
        for q in (50, 99):
            line(
                f"orchestrator.stage_overhead_p{q}_vs_{fig.peer}", porch_ms[q], "ms", fig.gap_ms(q)
            )
        line(f"orchestrator.noop_tasks_vs_{fig.peer}", rate, "tasks/s", fig.rate)
    if figures:
        line("orchestrator.noop_tasks_vs_best_peer", rate, "tasks/s", max(f.rate for f in figures))


def _gaps(times_s: Sequence[float]) -> list[float]:
    return [(b - a) * 1000 for a, b in itertools.pairwise(times_s)][SKIP_GAPS:]


def _run_ray(root: Path, links: int, tasks: int, reps: int) -> dict[str, Any]:
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=100 * 1024 * 1024,
        _temp_dir=str(root / "ray"),
    )
    try:
        task = ray.remote(noop)

        def chain(n: int) -> list[float]:
            refs = [task.remote(0)]
            for _ in range(n - 1):
                refs.append(task.remote(refs[-1]))
            done = []
            for ref in refs:
                ray.wait([ref], fetch_local=False)
                done.append(time.monotonic())
            return done

        def fan_out(n: int) -> float:
            start = time.monotonic()
            ray.get([task.remote(i) for i in range(n)])
            return n / (time.monotonic() - start)

        return _shapes(chain, fan_out, links, tasks, reps)
    finally:
        ray.shutdown()


def _run_dask(root: Path, links: int, tasks: int, reps: int) -> dict[str, Any]:
    from distributed import Client, LocalCluster, wait

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            local_directory=str(root / "dask"),
        ) as cluster,
        Client(cluster) as client,
    ):

        def chain(n: int) -> list[float]:
            futures = [client.submit(noop, 0, pure=False)]
            for _ in range(n - 1):
                futures.append(client.submit(noop, futures[-1], pure=False))
            done = []
            for future in futures:
                wait(future)
                done.append(time.monotonic())
            return done

        def fan_out(n: int) -> float:
            start = time.monotonic()
            wait([client.submit(noop, i, pure=False) for i in range(n)])
            return n / (time.monotonic() - start)

        return _shapes(chain, fan_out, links, tasks, reps)


def _shapes(
    chain: Callable[[int], list[float]],
    fan_out: Callable[[int], float],
    links: int,
    tasks: int,
    reps: int,
) -> dict[str, Any]:
    chain(WARMUP_TASKS)
    fan_out(WARMUP_TASKS)
    return {
        "gaps_ms": [_gaps(chain(links)) for _ in range(reps)],
        "rates": [fan_out(tasks) for _ in range(reps)],
    }


def main() -> None:
    peer, root = sys.argv[1], Path(sys.argv[2])
    links, tasks, reps = (int(v) for v in sys.argv[3:6])
    runner = {"ray": _run_ray, "dask": _run_dask}[peer]
    figures = runner(root, links, tasks, reps)
    (root / "figures.json").write_text(json.dumps(figures))


if __name__ == "__main__":
    main()

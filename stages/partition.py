"""Run a stage over a table split into ordered partitions, by its partition contract.

The same pieces run in one process here (for tests, and for a worker that holds every
partition) and across workers in PARALLEL mode, where each map, the reduce and each apply is a
task and the partials and stats travel as files written by `stages.codec`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from stages import progress
from stages.errors import StageConfigError
from stages.spec import Partitioning, Report, Stage, sum_reports


def split(df: pd.DataFrame, parts: int) -> list[pd.DataFrame]:
    """Split `df` into `parts` contiguous partitions of near-equal size (some may be empty)."""
    if not _is_int(parts) or parts < 1:
        raise StageConfigError(f"partitions must be >= 1, got {parts}")
    bounds = np.linspace(0, len(df), parts + 1).round().astype(int)
    return split_at(df, bounds[1:-1].tolist())


def split_at(df: pd.DataFrame, cuts: Sequence[int]) -> list[pd.DataFrame]:
    """Split `df` at the given row positions, which must be ascending and within the table."""
    if isinstance(cuts, str) or not all(_is_int(c) for c in cuts):
        raise StageConfigError(f"partition cuts must be whole row positions, got {cuts!r}"[:300])
    edges = [0, *cuts, len(df)]
    if any(b < a for a, b in itertools.pairwise(edges)) or edges[-2] > len(df):
        raise StageConfigError(f"partition cuts must ascend within 0..{len(df)}, got {list(cuts)}")
    return [df.iloc[a:b].reset_index(drop=True) for a, b in itertools.pairwise(edges)]


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def concat(parts: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate partitions in order, with a fresh row index."""
    if len(parts) == 1:
        return parts[0].reset_index(drop=True)
    return pd.concat(list(parts), ignore_index=True)


def run_partitioned(
    stage: Stage, parts: Sequence[pd.DataFrame], config: Mapping[str, Any] | None = None
) -> tuple[list[pd.DataFrame], Report]:
    """Run `stage` over `parts` (in table order); the result equals the whole-table call."""
    if not parts:
        raise StageConfigError(f"{stage.name}: no partitions to run")
    cfg = stage.config(config)
    if stage.partitioning is Partitioning.ROW_LOCAL:
        results = [stage.func(part, cfg) for part in parts]
        return [df for df, _ in results], sum_reports([r for _, r in results])
    if stage.partitioning is Partitioning.GLOBAL_STATS:
        return _run_global_stats(stage, parts, cfg)
    whole = concat([_project(stage, cfg, part) for part in parts])
    df, report = stage.func(whole, cfg)
    return [df], report


def _project(stage: Stage, cfg: Any, part: pd.DataFrame) -> pd.DataFrame:
    if stage.columns is None:
        return part
    return part[stage.columns(cfg, list(part.columns))]


def _run_global_stats(
    stage: Stage, parts: Sequence[pd.DataFrame], cfg: Any
) -> tuple[list[pd.DataFrame], Report]:
    assert stage.map is not None
    assert stage.reduce is not None
    assert stage.apply is not None
    count = len(parts)
    mapped = []
    with progress.part(0.0, 0.5, "map"):
        for index, part in enumerate(parts):
            with progress.part(index / count, (index + 1) / count, _which(index, count)):
                mapped.append(stage.map(part, cfg))
    with progress.part(0.5, 0.55, "reduce"):
        stats = stage.reduce([partial for _, partial in mapped], cfg)
    outputs: list[pd.DataFrame] = []
    reports: list[Report] = []
    with progress.part(0.55, 0.95, "apply"):
        for index, (prepared, _) in enumerate(mapped):
            with progress.part(index / count, (index + 1) / count, _which(index, count)):
                df, report = stage.apply(prepared, cfg, stats, index)
            outputs.append(df)
            reports.append(report)
    with progress.part(0.95, 1.0, "report"):
        report = stage.report(stats, reports, cfg) if stage.report else sum_reports(reports)
    progress.report(1.0, "done")
    return outputs, report


def _which(index: int, count: int) -> str:
    """A part's name in progress messages (none when the table is one part)."""
    return f"part {index + 1}/{count}" if count > 1 else ""


def joined(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Partials' arrays end to end, in partition order; one partition's array is not copied."""
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate(list(arrays))


def run_whole_by_parts(stage: Stage, df: pd.DataFrame, cfg: Any) -> tuple[pd.DataFrame, Report]:
    """The whole-table call of a global-stats stage: map, reduce and apply over one partition."""
    outputs, report = _run_global_stats(stage, [df], cfg)
    return outputs[0], report

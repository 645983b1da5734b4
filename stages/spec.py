"""What a stage is: a named pure function with its partition contract and map/reduce pieces.

A stage turns ``(DataFrame, config)`` into ``(DataFrame, report)`` with no I/O. Its
`Partitioning` says how it may run over a table split into ordered, contiguous partitions:

- ``ROW_LOCAL``: each output row depends on its input row only. Run it on each partition and
  concatenate.
- ``GLOBAL_STATS``: it needs facts about the whole table (medians, IQR bounds, duplicate keys,
  category sets, the time order of a group). `map` prepares one partition and returns a small
  *partial*; `reduce` merges the partials, in partition order, into *stats*; `apply` finishes
  each partition with the stats. The whole-table call is exactly map, reduce and apply over a
  single partition, so any split gives the same rows, values and report.
- ``GLOBAL``: it needs every row at once (aggregation). The partitions are concatenated, keeping
  only the `columns` it reads, and it runs once.

Partials and stats hold only plain values and numeric numpy arrays, so `stages.codec` can write
them to a file for another process: no pickle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pandas as pd

from stages.errors import StageConfigError

Report = dict[str, Any]
StageFunc = Callable[[pd.DataFrame, Any], tuple[pd.DataFrame, Report]]


class Partitioning(StrEnum):
    ROW_LOCAL = "row_local"
    GLOBAL_STATS = "global_stats"
    GLOBAL = "global"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """A registered stage. Call it like its function: ``stage(df, config) -> (df, report)``."""

    name: str
    func: StageFunc
    partitioning: Partitioning = Partitioning.GLOBAL
    parse: Callable[[Mapping[str, Any] | None], Any] | None = None
    map: Callable[[pd.DataFrame, Any], tuple[pd.DataFrame, dict[str, Any]]] | None = None
    reduce: Callable[[Sequence[dict[str, Any]], Any], dict[str, Any]] | None = None
    apply: (
        Callable[[pd.DataFrame, Any, dict[str, Any], int], tuple[pd.DataFrame, Report]] | None
    ) = None
    report: Callable[[dict[str, Any], Sequence[Report], Any], Report] | None = None
    columns: Callable[[Any, Sequence[str]], list[str]] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.partitioning is Partitioning.GLOBAL_STATS and None in (
            self.map,
            self.reduce,
            self.apply,
        ):
            raise TypeError(f"stage {self.name!r}: global_stats needs map, reduce and apply")

    def config(self, values: Mapping[str, Any] | None) -> Any:
        """The parsed config: unknown keys and wrong types raise `StageConfigError`."""
        if self.parse is None:
            if values is not None and not isinstance(values, Mapping):
                raise StageConfigError(
                    f"stage {self.name!r}: config must be a table of settings, "
                    f"got {type(values).__name__}"
                )
            return dict(values or {})
        return self.parse(values)

    def __call__(
        self, df: pd.DataFrame, config: Mapping[str, Any] | None = None
    ) -> tuple[pd.DataFrame, Report]:
        return self.func(df, self.config(config))


def sum_reports(parts: Sequence[Report]) -> Report:
    """Merge per-partition reports: numbers add, lists concatenate, tables merge by key."""
    merged: Report = {}
    for part in parts:
        merged = _merge(merged, part)
    return merged


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for key, value in b.items():
            out[key] = _merge(out[key], value) if key in out else value
        return out
    if isinstance(a, bool) or isinstance(b, bool):
        return a or b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a + b
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return a

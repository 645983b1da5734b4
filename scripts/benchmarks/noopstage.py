"""A stage that does nothing, for measuring the orchestrator's own cost per task."""

from __future__ import annotations

import pandas as pd

from stages.registry import stage


@stage("noop", partitioning="row_local")
def noop(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Hand the rows back untouched."""
    return df, {}

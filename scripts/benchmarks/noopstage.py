"""A stage that does nothing, for measuring the orchestrator's own cost per task."""

from __future__ import annotations

import pandas as pd


def noop(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    return df, {}

"""Stages for `scripts/chaos`: one that fails transiently now and then, and a pass-through."""

from __future__ import annotations

import random

import pandas as pd


def flaky(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Fail one time in four with an I/O error (retried as a new attempt), else hand rows back."""
    if random.random() < 0.25:
        raise OSError("chaos: a transient I/O error")
    return df, {}


def noop(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    return df, {}

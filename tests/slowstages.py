"""Stages for system tests: slow, raising, and a row-local one. Workers load them by name."""

from __future__ import annotations

import time

import pandas as pd

from stages.errors import NonRetryableError
from stages.registry import stage


def slow(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Sleep ``seconds`` (a stage that takes a while), then pass the rows through."""
    time.sleep(float(config.get("seconds", 1.0)))
    return df, {"slept": float(config.get("seconds", 1.0))}


@stage("slow_part", partitioning="row_local")
def slow_part(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """`slow`, run per partition in parallel mode."""
    time.sleep(float(config.get("seconds", 1.0)))
    return df, {}


def boom(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    raise ValueError("boom: this stage always fails")


def fatal(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    raise NonRetryableError("fatal: the source table is gone for good")


def noop(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    return df, {}


STAGES = (
    "slow=tests.slowstages:slow",
    "slow_part=tests.slowstages:slow_part",
    "boom=tests.slowstages:boom",
    "noop=tests.slowstages:noop",
    "fatal=tests.slowstages:fatal",
)

"""Stages for system tests: slow, raising, and a row-local one. Workers load them by name."""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from stages import progress
from stages.errors import NonRetryableError
from stages.registry import stage
from stages.spec import Partitioning, Stage


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


@stage("chatty", partitioning="row_local")
def chatty(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Writes to its log every way a task can (print, logging, sys.stderr, fd 2), then ``bytes``
    more; with ``wait_for``, waits for that file to exist after its first line (30 s at most)."""
    print(f"chatty: {len(df)} rows in", flush=True)
    logging.getLogger("tests.chatty").warning("a warning through logging")
    sys.stderr.write("to sys.stderr\n")
    os.write(2, b"to fd 2\n")
    if config.get("wait_for"):
        deadline = time.monotonic() + 30
        while not Path(config["wait_for"]).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if config.get("bytes"):
        sys.stdout.write("x" * int(config["bytes"]) + "\n")
    print("chatty: done")
    return df, {}


def inching(df: pd.DataFrame, config: dict) -> tuple[pd.DataFrame, dict]:
    """Says it is half way, again and again, until the file ``wait_for`` (default: the one
    ``$INCHING_WAIT_FOR`` names) exists (30 s at most)."""
    wait_for = Path(config.get("wait_for") or os.environ["INCHING_WAIT_FOR"])
    deadline = time.monotonic() + 30
    while not wait_for.exists() and time.monotonic() < deadline:
        progress.report(0.5, "half way, waiting")
        time.sleep(0.02)
    return df, {}


def _two_columns(config: object, available: list[str]) -> list[str]:
    return [c for c in available if c in ("QUERY_ID", "WAREHOUSE_NAME")]


def _count_seen(df: pd.DataFrame, config: object) -> tuple[pd.DataFrame, dict]:
    return df.head(1), {"columns_seen": sorted(df.columns)}


# a whole-table stage that says it reads two columns, and reports the columns it was given
narrow = Stage(
    name="narrow", func=_count_seen, partitioning=Partitioning.GLOBAL, columns=_two_columns
)


STAGES = (
    "slow=tests.slowstages:slow",
    "slow_part=tests.slowstages:slow_part",
    "boom=tests.slowstages:boom",
    "noop=tests.slowstages:noop",
    "fatal=tests.slowstages:fatal",
    "chatty=tests.slowstages:chatty",
    "inching=tests.slowstages:inching",
    "narrow=tests.slowstages:narrow",
)

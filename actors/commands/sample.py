"""`porch sample`: write realistic, dirty query-history data to a parquet file."""

from __future__ import annotations

import argparse
from datetime import datetime

from actors.commands.numbers import whole
from actors.errors import UsageError
from stages.errors import StageError

DEFAULT_DAYS = 28  # stages.sample.DEFAULT_DAYS; pandas is imported only when a sample is made


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("sample", help="write sample Snowflake query history to a parquet file")
    cmd.add_argument("output", metavar="OUT.parquet", help="where to write it")
    cmd.add_argument(
        "--rows", type=whole(0), default=100_000, help="how many rows (default 100000)"
    )
    cmd.add_argument("--seed", type=whole(0), default=0, help="the same seed gives the same data")
    cmd.add_argument("--start", metavar="ISO", help="first day, e.g. 2026-10-01T00:00:00+00:00")
    cmd.add_argument("--days", type=whole(1), default=DEFAULT_DAYS, help="days the data spans")
    cmd.set_defaults(func=cmd_sample)


def cmd_sample(args: argparse.Namespace) -> int:
    if args.rows < 0:
        raise UsageError(f"sample: --rows must be >= 0, got {args.rows}")
    options = {"seed": args.seed, "days": args.days}
    if args.start:
        try:
            start = datetime.fromisoformat(args.start)
        except ValueError:
            raise UsageError(
                f"sample: --start {args.start!r} is not an ISO 8601 datetime"
            ) from None
        if start.tzinfo is None:
            raise UsageError(f"sample: --start {args.start!r} needs a UTC offset, e.g. +00:00")
        options["start"] = start
    from stages.sample import write_sample  # here, so other commands start without pandas

    try:
        path = write_sample(args.output, args.rows, **options)
    except StageError as exc:
        raise UsageError(str(exc)) from exc
    print(f"wrote {args.rows} rows to {path}")
    return 0

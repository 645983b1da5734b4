"""`scripts/bench [GROUP ...] [--quick]`: run benchmark groups, one line per figure."""

from __future__ import annotations

import argparse
import importlib

GROUPS = {
    "hub": "scripts.benchmarks.hub",
    "stages": "scripts.benchmarks.stages",
    "orchestrator": "scripts.benchmarks.orchestrator",
    "scheduler": "scripts.benchmarks.scheduler",
    "monitor": "scripts.benchmarks.monitor",
    "load": "scripts.benchmarks.load",
    "multihost": "scripts.benchmarks.multihost",
    "history": "scripts.benchmarks.history",
    "dashboard": "scripts.benchmarks.dashboard",
    "artifacts": "scripts.benchmarks.artifacts",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench")
    parser.add_argument(
        "groups",
        nargs="*",
        metavar="GROUP",
        help=f"groups to run: {', '.join(GROUPS)} (default all)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run in seconds, not figures to quote"
    )
    args = parser.parse_args()
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group {unknown[0]!r}; groups: {', '.join(GROUPS)}")
    for group in args.groups or list(GROUPS):
        importlib.import_module(GROUPS[group]).run(args.quick)


if __name__ == "__main__":
    main()

"""The demo behind `scripts/demo`: sample data, a whole porch system, the default pipeline, stop.

Every step runs the `porch` command a user would type, and prints it first, spelled so that it
works when pasted into a fresh shell (the checkout's ``.venv/bin/porch`` by its full path, until
``source .venv/bin/activate`` puts ``porch`` on the command line). The outputs stay in
``demo-output/`` so they can be opened afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bus.client import Client
from bus.errors import BusError

PORCH = [sys.executable, "-m", "actors.cli"]
ROOT = Path(__file__).resolve().parents[1]


def shown_porch() -> str:
    """``porch`` as a fresh shell finds it: the console script beside this Python, by its full
    path (a fresh shell has no virtualenv on PATH)."""
    script = Path(sys.executable).parent / "porch"
    return shlex.quote(str(script)) if script.exists() else "python3 -m actors.cli"


def command(*args: str, data_dir: Path | None = None) -> str:
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    return " ".join([shown_porch(), *map(shlex.quote, [*args, *extra])])


def porch(*args: str, data_dir: Path | None = None, check: bool = True, note: str = "") -> int:
    shown = command(*args, data_dir=data_dir)
    print(f"\n$ {shown}{'   # ' + note if note else ''}", flush=True)
    extra = ["--data-dir", str(data_dir)] if data_dir else []
    result = subprocess.run([*PORCH, *args, *extra], check=False)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit {result.returncode}")
    return result.returncode


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo")
    parser.add_argument("--rows", type=int, default=200_000, help="sample rows (default 200000)")
    parser.add_argument("--mode", default="parallel", choices=["sequential", "parallel", "hybrid"])
    parser.add_argument("--out", type=Path, default=ROOT / "demo-output",
                        help="where the sample, the data dir and the outputs go (default demo-output/)")  # fmt: skip
    args = parser.parse_args()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    data_dir = out / ".porch"
    sample = out / "query_history.parquet"
    print(f"porch demo: everything goes under {out}")
    porch(
        "sample",
        str(sample),
        "--rows",
        str(args.rows),
        "--seed",
        "7",
        note="dirty Snowflake query history",
    )

    print(f"\n$ {command('up', '--workers', '2', data_dir=data_dir)} &", flush=True)
    up = subprocess.Popen([*PORCH, "up", "--workers", "2", "--data-dir", str(data_dir)])
    try:
        deadline = time.monotonic() + 30
        with Client.local(data_dir, timeout_ms=250, retry_ms=250) as client:
            while True:  # each ask waits on the hub's socket
                if up.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("demo: the system did not start")
                with contextlib.suppress(BusError):
                    client.head()
                    break
        porch("run", str(sample), "--mode", args.mode, "--id", "demo-1", "--wait", data_dir=data_dir,
              note="the default four-stage pipeline")  # fmt: skip
        porch("stats", data_dir=data_dir, note="per-stage statistics")
        porch(
            "metrics", data_dir=data_dir, note="the monitor's view: rates, percentiles, resources"
        )
        porch("schedule", "add", "hourly", "--cron", "0 * * * *", "--input", str(sample),
              data_dir=data_dir, note="a schedule: the scheduler fires it every hour")  # fmt: skip
        porch("schedule", "list", data_dir=data_dir, note="schedules and their next fire times")
        porch("replay", "--execution", "demo-1", "--type", "ExecutionCompleted", data_dir=data_dir,
              note="the log holds everything")  # fmt: skip
    finally:
        print(
            "\n# stopping the system (SIGTERM: workers, orchestrator, scheduler, monitor, then the hub)",
            flush=True,
        )
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(30)
        except subprocess.TimeoutExpired:
            up.kill()
    print(f"\nporch demo: done. Outputs: {out}/.porch/checkpoints/demo-1/output/")
    print("Look again any time (each line works pasted into a new shell):")
    for args in (("status", "demo-1"), ("history",), ("replay", "--execution", "demo-1")):
        print(f"  {command(*args, data_dir=data_dir)}")
    print(f"Start it again:  {command('up', data_dir=data_dir)}")
    activate = Path(sys.executable).parent / "activate"
    if activate.exists():
        print(f"To type just `porch`:  source {shlex.quote(str(activate))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

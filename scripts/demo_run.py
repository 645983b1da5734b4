"""The demo behind `scripts/demo`: a hub on a temp data dir, events in, events out, stop.

Every step runs the `porch` command a user would type, and prints it first.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bus.client import Client, hub_running
from bus.events import ExecutionRequested, MetricRecorded, StageProgress

PORCH = [sys.executable, "-m", "actors.cli"]


def porch(*args: str, data_dir: Path, check: bool = True, note: str = "") -> str:
    shown = " ".join(["porch", *map(shlex.quote, args)])
    print(f"\n$ {shown}{'   # ' + note if note else ''}", flush=True)
    result = subprocess.run(
        [*PORCH, *args, "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    out = (result.stdout + result.stderr).rstrip()
    if out:
        print(out, flush=True)
    if check and result.returncode != 0:
        raise SystemExit(f"demo: `{shown}` failed with exit {result.returncode}")
    return result.stdout


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="porch-demo-") as tmp:
        data_dir = Path(tmp) / "data"
        print(f"porch demo: data dir {data_dir}")
        print(f"\n$ porch hub --data-dir {data_dir} &", flush=True)
        hub = subprocess.Popen([*PORCH, "hub", "--data-dir", str(data_dir)])
        try:
            deadline = time.monotonic() + 20
            while not hub_running(data_dir):
                if hub.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("demo: the hub did not start")
                time.sleep(0.05)

            porch(
                "publish", "MetricRecorded", "name=rows_loaded", "value=125000", data_dir=data_dir
            )
            porch(
                "publish",
                "--json",
                '{"type": "ExecutionRequested", "execution_id": "demo-1",'
                ' "stages": ["data_cleaning", "feature_engineering"], "input_data": "data/input.parquet"}',
                data_dir=data_dir,
            )
            porch(
                "publish", "MetricRecorded", "name=x", "value=not-a-number",
                data_dir=data_dir, check=False, note="refused at the door: exit 2",
            )  # fmt: skip

            print("\n# the same from a Python program: bus.client.Client")
            with Client.local(data_dir) as client:
                sub = client.subscribe(1)
                seq = client.append(
                    StageProgress(
                        execution_id="demo-1", stage="data_cleaning", worker="demo", fraction=0.5
                    )
                )
                print(f"appended StageProgress durably at seq {seq}")
                for i in range(3):
                    client.publish(MetricRecorded(name="queue_depth", value=float(i)))
                client.append(
                    ExecutionRequested(
                        execution_id="demo-2", stages=["data_validation"], input_data="x.parquet"
                    )
                )
                got = []
                while len(got) < 7:
                    got.extend(sub.receive(timeout_ms=5000) or [])
                print(
                    "a subscriber from seq 1 saw, in order:",
                    ", ".join(f"{r.seq}:{r.type}" for r in got),
                )
                sub.close()

            porch("replay", data_dir=data_dir)
            porch("replay", "--json", "--type", "ExecutionRequested", data_dir=data_dir)
            porch("replay", "--summary", data_dir=data_dir)
            porch("log", "verify", data_dir=data_dir)
        finally:
            print("\n# stopping the hub (SIGTERM: flush, fsync, close)", flush=True)
            hub.send_signal(signal.SIGTERM)
            hub.wait(15)
        porch("replay", "--from", "4", "--to", "5", data_dir=data_dir)
        print("\nporch demo: done (the hub was stopped; replay read the log files directly)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

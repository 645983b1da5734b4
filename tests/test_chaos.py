"""A short chaos run: actors SIGKILLed at random under a workload, then the log is checked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_short_chaos_run_finds_no_violation():
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.chaos_run", "--executions", "6", "--kills", "4",
         "--seconds", "90", "--seed", "7"],
        cwd=ROOT, capture_output=True, text=True, timeout=150, check=False,
    )  # fmt: skip
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr
    assert proc.returncode == 0, f"{summary}\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}"
    assert summary.startswith("chaos: kills=4 ")
    assert summary.endswith(" violations=0")

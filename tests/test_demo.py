"""`scripts/demo` as a user runs it: every command it prints works when pasted into a new shell."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_command_the_demo_prints_works_pasted_into_a_fresh_shell(tmp_path):
    # given the demo, run to its end on a small sample
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.demo_run", "--rows", "2000", "--out", str(tmp_path / "d")],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    shown = [line[2:].split("   # ")[0] for line in lines if line.startswith("$ ")]
    closing = lines[lines.index("Look again any time (each line works pasted into a new shell):") :]
    hints = [line.strip() for line in closing if line.startswith("  ")]
    assert len(shown) >= 6
    assert len(hints) == 3
    # then every command names a porch a new shell can run (no virtualenv on its PATH)
    for command in shown:
        assert Path(shlex.split(command)[0]).is_file(), command
    # and the closing hints, pasted into a fresh shell, show the demo's execution
    fresh = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": os.environ.get("LANG", "C")}
    outputs = []
    for hint in hints:
        run = subprocess.run(["bash", "-c", hint], cwd=tmp_path, env=fresh, capture_output=True,
                             text=True, timeout=60, check=False)  # fmt: skip
        assert run.returncode == 0, f"{hint}\n{run.stdout[-1000:]}\n{run.stderr[-1000:]}"
        outputs.append(run.stdout)
    assert "demo-1" in outputs[0]
    assert "completed" in outputs[0]

"""The README's quick start, run as a new user runs it: its commands, as written, in a shell
with porch on the command line and nothing else set up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actors.shared.loop import running

ROOT = Path(__file__).resolve().parents[1]


def quick_start_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Quick start\n") :]
    section = section[: section.index("\n## ", 1)]
    return re.findall(r"^```\n(.*?)^```", section, re.S | re.M)


def test_the_quick_start_is_on_the_first_screen():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.index("## Quick start") <= text.index("\n## ", text.index("scripts/test")) + 1
    assert len(text[: text.index("## Quick start")].splitlines()) < 25


@pytest.fixture
def shell_env(tmp_path):
    """A fresh shell's environment, after `source .venv/bin/activate`: porch on PATH."""
    bin_dir = Path(sys.executable).parent
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VIRTUAL_ENV": str(bin_dir.parent),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }


def test_the_quick_start_runs_as_written(tmp_path, shell_env):
    activate, up, session = quick_start_blocks()
    assert activate.startswith("source .venv/bin/activate")
    assert up.strip() == "porch up --workers 2"
    # given `porch up` in one terminal, in a fresh folder
    proc = subprocess.Popen(["bash", "-c", up], cwd=tmp_path, env=shell_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not running(tmp_path / ".porch", "orchestrator"):
            assert time.monotonic() < deadline, "porch up did not start"
            with pytest.raises(
                subprocess.TimeoutExpired
            ):  # it must still run: the wait is the pause
                proc.wait(0.1)
        # when the session's commands run, one by one, in another
        outputs = {}
        for line in session.strip().splitlines():
            command = line.split("  #")[0].strip()
            result = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=shell_env,
                                    capture_output=True, text=True, timeout=180, check=False)  # fmt: skip
            assert result.returncode == 0, (
                f"{command}\n{result.stdout[-1500:]}\n{result.stderr[-1500:]}"
            )
            outputs[command.split()[1]] = result.stdout
        # then the execution completed, and each look at it shows it
        assert "first" in outputs["status"]
        assert "completed" in outputs["status"]
        assert "first" in outputs["history"]
        assert "stopped" in outputs["down"]
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

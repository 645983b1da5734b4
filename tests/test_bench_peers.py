"""The peers benchmark leaves no process behind: what its child started dies with its session."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from scripts.benchmarks.peers import _end_session, _session_pids

# a child that starts a long-lived grandchild in a process group of its own, as Ray's workers
# are, prints the grandchild's pid and exits without stopping it
LEAVES_ONE_BEHIND = """
import subprocess, sys
stray = subprocess.Popen(
    [sys.executable, "-c", "import time; time.sleep(600)"],
    process_group=0, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(stray.pid, flush=True)
"""


def test_end_session_kills_what_the_child_left_in_other_process_groups():
    # given a peer-like child, in its own session, that exited leaving a grandchild running
    proc = subprocess.Popen(
        [sys.executable, "-c", LEAVES_ONE_BEHIND],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out, _ = proc.communicate(timeout=30)
    stray = int(out)
    try:
        assert _session_pids(proc.pid) == [stray]
        assert os.getpgid(stray) != proc.pid
        # when the benchmark ends the child's session
        _end_session(proc)
        # then nothing of the session is left running
        assert _session_pids(proc.pid) == []
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stray, signal.SIGKILL)

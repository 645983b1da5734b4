"""A child process's tie to the process that started it: when that one dies, by any signal
(SIGKILL too), the child gets a signal (SIGTERM: an actor stops as on Ctrl-C) within moments.

The parent starts the child with `tie()`'s arguments; the child calls `hold()` first thing.
On Linux the kernel sends the signal (``prctl(PR_SET_PDEATHSIG)``). The kernel ties it to the
parent's *thread*, so a child started from any thread but the main one, or on a system without
prctl, watches a pipe instead: only the parent holds its write end, so its end of file means
the parent is gone. Either way the child then checks that its parent is still the one that
started it, for a parent that died before the tie was made.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Final

ENV: Final = "PORCH_LIFELINE"  # "<parent pid>:<fd of the pipe's read end>:<kernel|pipe>"
PR_SET_PDEATHSIG: Final = 1

_lock = threading.Lock()
_pipe: tuple[int, int] | None = None  # (read end, write end), for this process's children
_hooked = False  # the fork hook is registered (once: a hook stays for good)


def tie() -> dict[str, Any]:
    """`subprocess.Popen` arguments (``pass_fds``, ``env``) that tie a child to this process."""
    read = _read_end()
    how = "kernel" if threading.current_thread() is threading.main_thread() else "pipe"
    return {
        "pass_fds": (read,),
        "env": {**os.environ, ENV: f"{os.getpid()}:{read}:{how}"},
    }


def _read_end() -> int:
    global _pipe, _hooked
    with _lock:
        if _pipe is None:
            _pipe = os.pipe()  # not inheritable: a child gets the read end through pass_fds
            if not _hooked:
                os.register_at_fork(after_in_child=_forget)
                _hooked = True
        return _pipe[0]


def _forget() -> None:
    """In a forked copy of this process: its children's lifeline is not the copy's to hold
    (and the lock may have been taken by a thread that the copy does not have)."""
    global _pipe, _lock
    _lock = threading.Lock()
    if _pipe is not None:
        for fd in _pipe:
            with contextlib.suppress(OSError):
                os.close(fd)
    _pipe = None


def hold(environ: MutableMapping[str, str], *, signum: int = signal.SIGTERM) -> None:
    """In the child: take ``signum`` when the process that started it is gone. Does nothing
    for a process not started with `tie()`. Takes the variable out of ``environ``, so this
    process's own children are not tied to its parent."""
    value = environ.pop(ENV, "")
    try:
        parent_text, fd_text, how = value.split(":")
        parent, fd = int(parent_text), int(fd_text)
        os.set_inheritable(fd, False)
    except (ValueError, OSError):  # not started by `tie()`, or the pipe did not come
        return
    if how == "kernel" and _kernel_tie(signum):
        os.close(fd)
    else:
        threading.Thread(target=_watch, args=(fd, signum), name="lifeline", daemon=True).start()
    if os.getppid() != parent:  # it died before the tie was made: no signal will come
        os.kill(os.getpid(), signum)


def _kernel_tie(signum: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch(fd: int, signum: int) -> None:
    """Nobody writes to the pipe: a read returns only at its end, when the parent is gone."""
    with contextlib.suppress(OSError):
        while os.read(fd, 64):
            continue
    os.kill(os.getpid(), signum)

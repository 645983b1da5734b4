"""What a request must pass before anything is queued: an input porch can read, numbers in
range, stages the running system can run, an execution the control applies to, and, for a
client that waits, an orchestrator to run it. Each refusal is one `UsageError` line; the CLI and
the Python API ask the same questions here.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from actors.errors import UsageError
from stages.names import BUILTIN_NAMES

if TYPE_CHECKING:  # the folds and sockets load with the check that needs them
    from actors.read.model import Reader
    from bus.client import Client

PARTITIONS_MAX: Final = 8192  # the orchestrator's bound: a plan must fit in one event
MAX_ATTEMPTS_MAX: Final = 100
ORCHESTRATOR_WAIT_S: Final = 3.0  # how long a waiting client gives an orchestrator to come up
LOCK_POLL_S: Final = 0.1


def check_input(path: str | Path) -> str:
    """The input as the absolute path the request carries, once its parquet footer is read;
    a missing, unreadable or non-parquet input is refused. Only for an input on this host."""
    import pyarrow as pa  # the footer only: a few reads at the end of the file
    import pyarrow.parquet as pq

    if str(path).startswith("s3://"):
        return str(path)  # an object: the orchestrator reads its footer with its own keys

    file = Path(path).expanduser().resolve()
    shown = str(path)
    try:
        if file.is_dir():
            raise UsageError(
                f"input {shown} is a directory: porch runs a pipeline over one parquet file"
            )
        if not file.exists():
            raise UsageError(f"input {shown} does not exist")
        if not file.is_file():
            raise UsageError(f"input {shown} is not a regular file: give a parquet file")
        with file.open("rb") as handle:
            pq.read_metadata(handle)
    except PermissionError as exc:
        raise UsageError(f"input {shown} cannot be read: {exc.strerror}") from None
    except (pa.ArrowException, OSError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"input {shown} is not a parquet file ({reason})") from None
    return str(file)


def check_whole(name: str, value: Any, low: int, high: int, note: str = "") -> int:
    """A whole-number setting of a request in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        extra = f" ({note})" if note else ""
        raise UsageError(f"{name} must be a whole number {low}..{high}{extra}, got {value!r}")
    return value


def check_request_numbers(partitions: Any, max_attempts: Any) -> None:
    check_whole("partitions", partitions, 0, PARTITIONS_MAX, "0: one per worker")
    check_whole("max_attempts", max_attempts, 1, MAX_ATTEMPTS_MAX)


# --- stages --------------------------------------------------------------------------------------


def unregistered_stage(name: str, runnable: Sequence[str]) -> str:
    """The one line that refuses a stage nobody can run, and says how to make it runnable."""
    custom = [s for s in runnable if s not in BUILTIN_NAMES]
    also = f"; the live workers also run {', '.join(custom)}" if custom else ""
    return (
        f"stage {name!r} is not registered: built-ins are {', '.join(BUILTIN_NAMES)}{also};"
        f' add `{name} = "module:function"` under [stages] in porch.toml and run'
        f" porch reload-stages (or start porch up with --stage {name}=module:function)"
    )


def stages_of(execution: Mapping[str, Any]) -> list[str]:
    """The stage names a request (or a schedule's execution_config) runs."""
    steps = execution.get("steps") or []
    if steps:
        return [str(step.get("stage", "")) for step in steps if isinstance(step, Mapping)]
    return [str(s) for s in execution.get("stages") or []]


def check_stages(client: Client, names: Iterable[str], *, known: Collection[str] = ()) -> None:
    """Refuse a stage that is neither built in, nor in ``known`` (stages the caller gave its own
    system), nor announced by a live worker."""
    from actors.read.workers import missing_stages

    needed = [n for n in dict.fromkeys(names) if n not in BUILTIN_NAMES and n not in known]
    if not needed:
        return
    missing, runnable = missing_stages(client, needed)
    if missing:
        raise UsageError(unregistered_stage(missing[0], runnable))


# --- control of an execution ---------------------------------------------------------------------


def _execution(reader: Reader, execution_id: str) -> Any:
    """The execution as the log holds it, or None."""
    from actors.read.executions import fold_log
    from actors.read.model import execution_from_log

    state = fold_log(reader, wanted=lambda s: [execution_id])
    ex = state.executions.get(execution_id)
    if ex is None and state.evicted:  # finished long ago: its history is in the log still
        ex = execution_from_log(reader, execution_id)
    return ex


def check_ids(reader: Reader, execution_id: str | None, resume_from: str | None) -> None:
    """Refuse a chosen id the log holds already (the hub would drop the request as a repeat,
    and a wait would show the old execution) and resuming from an execution it does not."""
    if execution_id:
        ex = _execution(reader, execution_id)
        if ex is not None:
            raise UsageError(
                f"run: execution {execution_id!r} exists already ({ex.status}): choose another"
                f" --id, or --resume-from {execution_id} to reuse its completed work"
            )
    if resume_from and _execution(reader, resume_from) is None:
        raise UsageError(f"run: --resume-from {resume_from!r}: no such execution in the log")


def check_control(reader: Reader, action: str, execution_id: str) -> None:
    """Refuse pausing, resuming or cancelling an execution the log does not hold, one that has
    ended, pausing a paused one and resuming one that is not paused (nor about to be)."""
    from store.projections.executions import FINISHED

    ex = _execution(reader, execution_id)
    if ex is None:
        raise UsageError(f"{action}: no execution {execution_id!r} in the log")
    if ex.status in FINISHED:
        raise UsageError(
            f"{action}: execution {execution_id} has already ended ({ex.status});"
            " only a requested, running or paused one can be paused, resumed or cancelled"
        )
    if action == "pause" and ex.status == "paused":
        raise UsageError(f"pause: execution {execution_id} is already paused")
    if action == "resume" and ex.status != "paused" and not ex.pause_requested:
        raise UsageError(f"resume: execution {execution_id} is {ex.status}, not paused")


# --- a system that will run it -------------------------------------------------------------------


def orchestrator_running(data_dir: Path, within_s: float = ORCHESTRATOR_WAIT_S) -> bool:
    """True once an orchestrator holds the data dir's lock, giving one that is starting
    ``within_s`` to take it. A lock file tells no one when it is taken: this polls."""
    from actors.shared.loop import running

    deadline = time.monotonic() + within_s
    while not running(data_dir, "orchestrator"):
        if time.monotonic() >= deadline:
            return False
        time.sleep(LOCK_POLL_S)
    return True

"""What a dashboard button does: one event appended through the hub, after the same checks as
the CLI's (`actors.api.door`, `actors.api.alerts`, `actors.api.schedules`). Nothing here runs
code or names a stage: a button names an execution, a schedule or an alert, and an action
from a fixed list."""

from __future__ import annotations

from typing import Any, Final

from actors.api import alerts as alert_ops
from actors.api import schedules as schedule_ops
from actors.api.door import check_control
from actors.errors import ActorError, UsageError
from bus.client import Client
from bus.events import (
    CancelRequested,
    PauseRequested,
    ResumeRequested,
    SchedulePaused,
    ScheduleResumed,
)

EXECUTION_ACTIONS: Final = {
    "pause": PauseRequested,
    "resume": ResumeRequested,
    "cancel": CancelRequested,
}
SCHEDULE_ACTIONS: Final = ("pause", "resume", "trigger")
ALERT_ACTIONS: Final = ("ack", "resolve")
DONE: Final = {"pause": "paused", "resume": "resumed"}


def _one_of(action: str, allowed: tuple[str, ...] | dict[str, Any], what: str) -> None:
    if action not in allowed:
        raise UsageError(f"{what}: action {action!r} is not one of {', '.join(allowed)}")


def control_execution(client: Client, execution_id: str, action: str) -> dict[str, Any]:
    """Pause, resume or cancel, as `porch pause|resume|cancel ID` does."""
    _one_of(action, EXECUTION_ACTIONS, "execution")
    check_control(client, action, execution_id)
    seq = client.append(EXECUTION_ACTIONS[action](execution_id=execution_id))
    return {"seq": seq, "message": f"{action} of {execution_id} requested (seq {seq})"}


def control_schedule(client: Client, schedule_id: str, action: str) -> dict[str, Any]:
    """Pause, resume or fire now, as `porch schedule pause|resume|trigger ID` does."""
    from actors.read.schedules import fold_schedules

    _one_of(action, SCHEDULE_ACTIONS, "schedule")
    if action == "trigger":
        eid = schedule_ops.trigger(client, schedule_id, None)
        return {"execution_id": eid, "message": f"schedule {schedule_id} fired: {eid}"}
    core = fold_schedules(client)
    if schedule_id not in core.state.schedules:
        raise ActorError(f"no schedule {schedule_id!r}")
    event = SchedulePaused if action == "pause" else ScheduleResumed
    seq = client.append(event(schedule_id=schedule_id))
    return {"seq": seq, "message": f"{DONE[action]} schedule {schedule_id} (seq {seq})"}


def control_alert(client: Client, alert_id: str, action: str) -> dict[str, Any]:
    """Acknowledge or resolve, as `porch alerts ack|resolve ID` does."""
    _one_of(action, ALERT_ACTIONS, "alert")
    seq = alert_ops.alert_state(client, alert_id, action)
    done = "acknowledged" if action == "ack" else "resolved"
    return {"seq": seq, "message": f"alert {alert_id} {done} (seq {seq})"}

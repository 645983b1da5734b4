"""Alert operations any client performs through the hub: read the folds, add a rule, ack or resolve."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from actors.errors import ActorError
from bus.events import AlertAcknowledged, AlertResolved, AlertRuleAdded


def fold_monitoring(client: Any, retention_hours: float = 24.0) -> tuple[Any, Any]:
    """The metrics and alert folds of the log, as the monitor folds them (from its snapshot)."""
    from actors.read import model as readmodel

    return readmodel.monitoring(client, retention_hours)


def alert_state(client: Any, alert_id: str, verb: str) -> int:
    _, alerts = fold_monitoring(client)
    alert = alerts.alerts.get(alert_id)
    if alert is None:
        raise ActorError(f"no alert {alert_id!r}")
    if alert.resolved:
        raise ActorError(f"alert {alert_id} is already resolved")
    if verb == "ack":
        return int(client.append(AlertAcknowledged(alert_id=alert_id)))
    return int(client.append(AlertResolved(alert_id=alert_id, reason="resolved by hand")))


def add_rule(client: Any, rule: Mapping[str, Any], *, custom: bool = False) -> int:
    """Check a rule at the door (`check_rule`) and append its ``AlertRuleAdded``; the seq."""
    from actors.monitor.alerting import check_rule

    metrics, _ = fold_monitoring(client)
    checked = check_rule(rule, None if custom else set(metrics.by_name))
    return int(client.append(AlertRuleAdded(**checked.to_map())))

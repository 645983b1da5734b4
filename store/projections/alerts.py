"""The alert fold: events -> alert rules and alerts (fired, acknowledged, resolved). Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Final

from store.statecodec import StateCodec

Fields = dict[str, Any]
KEEP_RESOLVED: Final = 10_000  # resolved alerts kept (the oldest go first)


@dataclass(slots=True)
class Rule:
    rule_id: str
    metric_name: str
    condition: str
    threshold: float | str
    severity: str
    cooldown_minutes: float = 5.0
    enabled: bool = True
    description: str = ""
    pending_s: float = 0.0
    scope: dict[str, str] = field(default_factory=dict)
    added_ts: float = 0.0
    version: int = 0


# the defaults of a rule's optional settings, declared once (the rule above): the event, the
# check at the door and the seed API's AlertRule take them from here
RULE_DEFAULTS: Final[dict[str, Any]] = {
    f.name: f.default
    for f in fields(Rule)
    if f.name in ("cooldown_minutes", "enabled", "description", "pending_s")
}


@dataclass(slots=True)
class Alert:
    alert_id: str
    rule_id: str
    metric_name: str
    value: float | str
    threshold: float | str
    severity: str
    message: str
    labels: dict[str, str]
    fired_ts: float
    fired_seq: int
    acknowledged: bool = False
    acknowledged_ts: float = 0.0
    resolved: bool = False
    resolved_ts: float = 0.0
    reason: str = ""


@dataclass(slots=True)
class AlertsState:
    rules: dict[str, Rule] = field(default_factory=dict)
    alerts: dict[str, Alert] = field(default_factory=dict)
    active: dict[tuple[str, str], str] = field(default_factory=dict)  # (rule, series) -> alert
    fired_count: dict[tuple[str, str], int] = field(default_factory=dict)
    last_fired: dict[tuple[str, str], float] = field(default_factory=dict)
    resolved_order: list[str] = field(default_factory=list)
    last_seq: int = 0
    changed_rules: set[str] = field(default_factory=set)
    changed_alerts: list[str] = field(default_factory=list)


def series_text(labels: dict[str, Any]) -> str:
    """A series' labels as one stable string: ``stage=data_cleaning,worker=w1``."""
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def _rule_added(seq: int, f: Fields, state: AlertsState) -> None:
    old = state.rules.get(f["rule_id"])
    scope = f.get("scope") or {}
    state.rules[f["rule_id"]] = Rule(
        rule_id=f["rule_id"],
        metric_name=f["metric_name"],
        condition=f["condition"],
        threshold=f["threshold"],
        severity=f["severity"],
        cooldown_minutes=float(f.get("cooldown_minutes", RULE_DEFAULTS["cooldown_minutes"])),
        enabled=bool(f.get("enabled", RULE_DEFAULTS["enabled"])),
        description=str(f.get("description", RULE_DEFAULTS["description"])),
        pending_s=float(f.get("pending_s", RULE_DEFAULTS["pending_s"])),
        scope={str(k): str(v) for k, v in scope.items()} if isinstance(scope, dict) else {},
        added_ts=f["ts"],
        version=old.version + 1 if old is not None else 0,
    )
    state.changed_rules.add(f["rule_id"])


def _rule_removed(seq: int, f: Fields, state: AlertsState) -> None:
    if state.rules.pop(f["rule_id"], None) is not None:
        state.changed_rules.add(f["rule_id"])


def _fired(seq: int, f: Fields, state: AlertsState) -> None:
    aid = f["alert_id"]
    if aid in state.alerts:
        return
    labels = f.get("labels") or {}
    labels = {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}
    key = (f["rule_id"], series_text(labels))
    state.alerts[aid] = Alert(
        alert_id=aid,
        rule_id=f["rule_id"],
        metric_name=f["metric_name"],
        value=f["value"],
        threshold=f["threshold"],
        severity=f["severity"],
        message=str(f.get("message", "")),
        labels=labels,
        fired_ts=f["ts"],
        fired_seq=seq,
    )
    state.active[key] = aid
    state.fired_count[key] = state.fired_count.get(key, 0) + 1
    state.last_fired[key] = f["ts"]
    state.changed_alerts.append(aid)


def _acknowledged(seq: int, f: Fields, state: AlertsState) -> None:
    alert = state.alerts.get(f["alert_id"])
    if alert is None or alert.acknowledged or alert.resolved:
        return
    alert.acknowledged = True
    alert.acknowledged_ts = f["ts"]
    state.changed_alerts.append(alert.alert_id)


def _resolved(seq: int, f: Fields, state: AlertsState) -> None:
    alert = state.alerts.get(f["alert_id"])
    if alert is None or alert.resolved:
        return
    alert.resolved = True
    alert.resolved_ts = f["ts"]
    alert.reason = str(f.get("reason", ""))
    key = (alert.rule_id, series_text(alert.labels))
    if state.active.get(key) == alert.alert_id:
        del state.active[key]
    state.resolved_order.append(alert.alert_id)
    if len(state.resolved_order) > KEEP_RESOLVED:
        state.alerts.pop(state.resolved_order.pop(0), None)
    state.changed_alerts.append(alert.alert_id)


HANDLERS: Final[dict[str, Callable[[int, Fields, AlertsState], None]]] = {
    "AlertRuleAdded": _rule_added,
    "AlertRuleRemoved": _rule_removed,
    "AlertFired": _fired,
    "AlertAcknowledged": _acknowledged,
    "AlertResolved": _resolved,
}
TYPES: Final = frozenset(HANDLERS)


def evolve(seq: int, fields: Fields, state: AlertsState) -> AlertsState:
    """Fold one event; events must come in seq order."""
    if seq <= state.last_seq:
        raise ValueError(f"alert fold: seq {seq} arrived after {state.last_seq}")
    state.last_seq = seq
    handler = HANDLERS.get(fields["type"])
    if handler is not None:
        handler(seq, fields, state)
    return state


def describe(alert: Alert) -> dict[str, Any]:
    return {
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "metric_name": alert.metric_name,
        "labels": alert.labels,
        "value": alert.value,
        "threshold": alert.threshold,
        "severity": alert.severity,
        "message": alert.message,
        "fired_ts": alert.fired_ts,
        "acknowledged": alert.acknowledged,
        "resolved": alert.resolved,
        "resolved_ts": alert.resolved_ts or None,
        "reason": alert.reason,
    }


FOLD_VERSION: Final = 1
CODEC: Final = StateCodec(
    AlertsState, fold_version=FOLD_VERSION, transient=("changed_rules", "changed_alerts")
)

"""The alert fold: events -> alert rules and alerts (fired, acknowledged, resolved). Pure.

`RuleSpec` declares an alert rule's settings once, with their defaults: the payload of an
``AlertRuleAdded``, the fold's `Rule`, the seed API's ``AlertRule`` and the check at the door
(`RuleSpec.of`) are all made from it.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final, Self

from store.statecodec import StateCodec

Fields = dict[str, Any]
KEEP_RESOLVED: Final = 10_000  # resolved alerts kept (the oldest go first)
CONDITIONS: Final = ("greater_than", "less_than", "equals", "contains")
SEVERITIES: Final = ("info", "low", "medium", "high", "critical")
SCOPES: Final = ("stage", "schedule", "worker", "host")
RULE_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,59}$")


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """An alert rule's settings, in the seed's order, each with its default declared here only.

    Built directly nothing is checked (a rule in the log is kept as it came, and the monitor
    skips one that `of` refuses); `of` parses one at the door."""

    rule_id: str
    metric_name: str
    condition: str
    threshold: float | str
    severity: str = "medium"
    cooldown_minutes: float = 5.0
    enabled: bool = True
    description: str = ""
    pending_s: float = 0.0
    scope: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, rule: Mapping[str, Any]) -> Self:
        """A rule checked and normalised: condition and severity in lower case (an enum gives
        its value), numbers as floats, an ``equals`` threshold a number when it reads as one.
        Raises ValueError, one line naming the field, the value and what is allowed.
        ``pending_seconds`` is read as ``pending_s``; other keys are ignored."""
        rid = str(rule.get("rule_id") or "")
        if not RULE_ID.match(rid):
            raise ValueError(f"rule_id {rid!r} must be 1-60 letters, digits, '_', '.' or '-'")
        metric = str(rule.get("metric_name") or "").strip()
        if not metric:
            raise ValueError("metric_name is required")
        condition = _text(rule.get("condition"), "")
        if condition not in CONDITIONS:
            raise ValueError(f"condition {condition!r} is not one of {', '.join(CONDITIONS)}")
        threshold = _threshold(condition, rule.get("threshold"))
        severity = _text(rule.get("severity"), RULE_DEFAULTS["severity"])
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        cooldown = _number(
            rule.get("cooldown_minutes", RULE_DEFAULTS["cooldown_minutes"]), "cooldown_minutes"
        )
        pending = rule.get("pending_s", rule.get("pending_seconds", RULE_DEFAULTS["pending_s"]))
        pending = _number(pending or RULE_DEFAULTS["pending_s"], "pending_s")
        if cooldown < 0 or pending < 0:
            raise ValueError("cooldown_minutes and pending_s must not be negative")
        scope = rule.get("scope") or {}
        if not isinstance(scope, Mapping) or not all(k in SCOPES for k in scope):
            raise ValueError(f"scope must be a table of {', '.join(SCOPES)}")
        return cls(
            rule_id=rid,
            metric_name=metric,
            condition=condition,
            threshold=threshold,
            severity=severity,
            cooldown_minutes=cooldown,
            enabled=bool(rule.get("enabled", RULE_DEFAULTS["enabled"])),
            description=str(rule.get("description") or RULE_DEFAULTS["description"]),
            pending_s=pending,
            scope={str(k): str(v) for k, v in scope.items()},
        )

    def to_map(self) -> dict[str, Any]:
        """The settings by name, in order: the payload of an ``AlertRuleAdded``."""
        out = {name: getattr(self, name) for name in RULE_FIELDS}
        out["scope"] = dict(self.scope)
        return out


RULE_FIELDS: Final = tuple(f.name for f in fields(RuleSpec))
RULE_DEFAULTS: Final[Mapping[str, Any]] = {
    f.name: f.default for f in fields(RuleSpec) if f.default is not MISSING
}


def _text(value: Any, default: str) -> str:
    return str(getattr(value, "value", value) or default).lower()


def _threshold(condition: str, threshold: Any) -> float | str:
    if condition in ("greater_than", "less_than"):
        return _number(threshold, f"threshold of a {condition} rule")
    if condition == "equals":
        if isinstance(threshold, bool) or threshold is None:
            raise ValueError("threshold of an equals rule must be a number or text")
        if isinstance(threshold, int | float):
            return float(threshold)
        try:
            return float(str(threshold))
        except ValueError:
            return str(threshold)
    if threshold is None or str(threshold) == "":
        raise ValueError("threshold of a contains rule must be some text")
    return str(threshold)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a number, not {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Rule(RuleSpec):
    """A rule as the fold holds it: its settings as logged, when it was added, and how many
    times it was replaced."""

    added_ts: float = 0.0
    version: int = 0


def _text_map(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _as_is(value: Any) -> Any:
    return value


# how the fold reads a setting of a logged AlertRuleAdded (the hub checked its type), by type
_READ: Final[dict[Any, Callable[[Any], Any]]] = {
    float: float, bool: bool, str: str, dict[str, str]: _text_map
}  # fmt: skip
_HINTS: Final = typing.get_type_hints(RuleSpec)
_SETTINGS: Final = tuple(
    (f.name, _READ.get(_HINTS[f.name], _as_is), f.default, f.default_factory)
    for f in fields(RuleSpec)
)


def _logged(f: Fields) -> dict[str, Any]:
    """A rule's settings from an ``AlertRuleAdded`` map; KeyError if a required one is missing."""
    out: dict[str, Any] = {}
    for name, read, default, factory in _SETTINGS:
        if name in f and f[name] is not None:
            out[name] = read(f[name])
        elif default is not MISSING:
            out[name] = default
        elif factory is not MISSING:
            out[name] = factory()
        else:
            raise KeyError(name)
    return out


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
    state.rules[f["rule_id"]] = Rule(
        **_logged(f), added_ts=f["ts"], version=old.version + 1 if old is not None else 0
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

"""Alert rules: checked at the door, evaluated against the metric series. Pure: time is passed in.

A rule watches every series of its metric that matches its scope (``{"stage": "x"}`` matches
``stage_duration_seconds{stage=x}``). Per rule and series:

- the condition must hold for ``pending_s`` before the alert fires (0: at once), so a flapping
  value (true, false, true within the pending time) fires once at most;
- while an alert is active it does not fire again; it resolves by itself when the condition
  clears; ``cooldown_minutes`` after a fire, the same rule and series does not fire again;
- an acknowledged alert stays quiet until it resolves.

Decisions are events (`AlertFired`, `AlertResolved`) with ids made from what they decide, so a
restarted monitor repeating one is a duplicate the hub drops.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from actors.errors import ActorError
from bus.events import AlertFired, AlertResolved, Event
from store.projections import alerts as alert_folds
from store.projections.alerts import AlertsState, RuleSpec, series_text
from store.projections.metrics import BUILTIN, MetricsState, Series


class AlertRuleError(ActorError, ValueError):
    """An alert rule that cannot be used; the message is one line."""


def check_rule(rule: Mapping[str, Any], known_metrics: Iterable[str] | None = None) -> RuleSpec:
    """A rule parsed at the door (`RuleSpec.of`), or `AlertRuleError` naming what is wrong.
    ``known_metrics``: the custom metrics seen so far; None accepts any metric name."""
    try:
        spec = RuleSpec.of(rule)
    except ValueError as exc:
        raise AlertRuleError(str(exc)) from None
    if known_metrics is not None and spec.metric_name not in {*BUILTIN, *known_metrics}:
        raise AlertRuleError(
            f"unknown metric {spec.metric_name!r}: not a built-in metric and no sample of it yet "
            f"(built-ins: {', '.join(sorted(BUILTIN))})"
        )
    return spec


def holds(condition: str, series: Series, threshold: float | str, labels: dict[str, str]) -> bool:
    """Does the series' latest sample meet the condition? Text conditions (``contains``, and
    ``equals`` with text) look at the sample's text (an execution's error) and the label values:
    ``equals`` wants one of them whole, ``contains`` a part of one."""
    value = series.last
    if condition == "greater_than":
        return value > threshold  # type: ignore[operator]
    if condition == "less_than":
        return value < threshold  # type: ignore[operator]
    if condition == "equals":
        if isinstance(threshold, float):
            return value == threshold
        return series.text == threshold or threshold in labels.values()
    return str(threshold) in series.text or any(str(threshold) in v for v in labels.values())


class AlertEngine:
    """The rules and alerts (a fold of the log) and the per-series pending timers.

    Series fed by events are judged on each new sample (`observe`); the sampling tick
    (`tick`) only fires rules whose pending time ran out, so an old sample never fires an
    alert again by itself. A rule any program published that `RuleSpec.of` refuses is skipped.
    """

    def __init__(self) -> None:
        self.state = AlertsState()
        self.by_metric: dict[str, list[RuleSpec]] = {}
        self.true_since: dict[tuple[str, str], float] = {}
        self.held: set[tuple[str, str]] = set()  # resolved by hand: quiet until it clears
        self.invalid: dict[str, str] = {}  # rule id -> why it is skipped
        self._sent: dict[str, float] = {}
        self._matches: dict[tuple[str, tuple[tuple[str, str], ...]], list[Any]] = {}
        self._pending: dict[tuple[str, str], tuple[RuleSpec, Series, dict[str, str]]] = {}
        self._orphans: list[str] = []

    def apply(self, seq: int, fields: dict[str, Any]) -> None:
        alert_folds.evolve(seq, fields, self.state)
        self._sent.pop(fields.get("id", ""), None)
        if fields["type"] == "AlertResolved" and fields.get("reason") == "resolved by hand":
            alert = self.state.alerts.get(fields["alert_id"])
            if alert is not None:
                self.held.add((alert.rule_id, series_text(alert.labels)))
        if self.state.changed_rules:
            self._index_rules()

    def restore(self, state: AlertsState, held: set[tuple[str, str]]) -> None:
        """Start from a snapshot: the alert fold and the series quiet after a hand resolve."""
        self.state = state
        self.held = held
        self._index_rules()

    def _index_rules(self) -> None:
        self.state.changed_rules.clear()
        self.by_metric, self._matches, self._pending, self.invalid = {}, {}, {}, {}
        for logged in self.state.rules.values():
            try:  # as the door would have it: a rule any program published may not be
                rule = RuleSpec.of(logged.to_map())
            except ValueError as exc:
                self.invalid[logged.rule_id] = str(exc)
                continue
            self.by_metric.setdefault(rule.metric_name, []).append(rule)
        # alerts whose rule is gone, disabled or unusable resolve
        usable = {r.rule_id for rules in self.by_metric.values() for r in rules if r.enabled}
        self._orphans = [aid for (rid, _), aid in self.state.active.items() if rid not in usable]

    def _watchers(self, series: Series) -> list[tuple[RuleSpec, tuple[str, str], dict[str, str]]]:
        """The rules watching a series, with their keys: worked out once per series and rule set."""
        key = (series.name, series.labels)
        found = self._matches.get(key)
        if found is None:
            labels = dict(series.labels)
            text = series_text(labels)
            found = [
                (rule, (rule.rule_id, text), labels)
                for rule in self.by_metric.get(series.name, ())
                if all(labels.get(k) == v for k, v in rule.scope.items())
            ]
            self._matches[key] = found
        return found

    def observe(self, series: Series, now: float) -> list[Event]:
        """Evaluate the rules of a series that just got a sample."""
        out = self._resolve_orphans(now) if self._orphans else []
        if series.name not in self.by_metric:
            return out
        watchers = self._watchers(series)
        try:
            for rule, key, labels in watchers:
                if rule.enabled:
                    event = self._evaluate(rule, series, key, labels, now)
                    if event is not None:
                        out.append(event)
        except Exception:  # a rule that cannot be judged: again one by one, skipping it
            out = [e for r, k, lb in watchers if r.enabled
                   for e in [self._guarded(r, series, k, lb, now)] if e is not None]  # fmt: skip
        return out

    def tick(self, metrics: MetricsState, now: float) -> list[Event]:
        """Fire the rules whose condition has now held for their pending time."""
        out = self._resolve_orphans(now)
        for key, (rule, series, labels) in list(self._pending.items()):
            event = self._guarded(rule, series, key, labels, now)
            if event is not None:
                out.append(event)
        return out

    def _resolve_orphans(self, now: float) -> list[Event]:
        out: list[Event] = []
        for aid in self._orphans:
            if self._sent_recently(f"resolved:{aid}", now):
                continue
            self._sent[f"resolved:{aid}"] = now
            out.append(
                AlertResolved(
                    id=f"resolved:{aid}", alert_id=aid, reason="its rule was removed or disabled"
                )
            )
        self._orphans = []
        return out

    def _sent_recently(self, event_id: str, now: float) -> bool:
        sent = self._sent.get(event_id)
        return sent is not None and now - sent < 5.0  # never back in 5 s: decide it again

    def _guarded(self, rule: RuleSpec, series: Series, key: tuple[str, str], labels: dict[str, str],
                 now: float) -> Event | None:  # fmt: skip
        try:
            return self._evaluate(rule, series, key, labels, now)
        except Exception as exc:  # one bad rule never stops the others
            self.invalid[rule.rule_id] = f"{type(exc).__name__}: {exc}"
            return None

    def _evaluate(
        self,
        rule: RuleSpec,
        series: Series,
        key: tuple[str, str],
        labels: dict[str, str],
        now: float,
    ) -> Event | None:
        if not holds(rule.condition, series, rule.threshold, labels):
            if key in self.true_since:
                del self.true_since[key]
                self._pending.pop(key, None)
            if self.held:
                self.held.discard(key)
            active = self.state.active.get(key)
            if active is None or self._sent_recently(f"resolved:{active}", now):
                return None
            self._sent[f"resolved:{active}"] = now
            return AlertResolved(
                id=f"resolved:{active}",
                alert_id=active,
                reason=f"cleared: {rule.metric_name} is {series.last:g}",
            )
        text = key[1]
        active = self.state.active.get(key)
        since = self.true_since.setdefault(key, now)
        if active is not None or key in self.held:
            self._pending.pop(key, None)
            return None
        if now - since < rule.pending_s:
            self._pending[key] = (rule, series, labels)
            return None
        self._pending.pop(key, None)
        last = self.state.last_fired.get(key)
        if last is not None and now - last < rule.cooldown_minutes * 60:
            return None
        n = self.state.fired_count.get(key, 0) + 1
        aid = f"{rule.rule_id}-{n}" + (f"-{_short_hash(text)}" if text else "")
        if self._sent_recently(f"alert:{aid}", now):
            return None
        self._sent[f"alert:{aid}"] = now
        where = f" ({text})" if text else ""
        return AlertFired(
            id=f"alert:{aid}",
            alert_id=aid,
            rule_id=rule.rule_id,
            metric_name=rule.metric_name,
            value=series.last,
            threshold=rule.threshold,
            severity=rule.severity,
            message=f"{rule.metric_name}{where} is {series.last:g}, "
            f"{rule.condition.replace('_', ' ')} {rule.threshold}"
            + (f": {rule.description}" if rule.description else ""),
            labels=dict(labels),
        )


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]

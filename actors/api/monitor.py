"""The seed README's monitoring API: ``PipelineMonitor`` and ``AlertRule``.

The monitor object reads the log of a porch system: the one of ``endpoint`` (an `Endpoints` or a
data dir), else the system of the last `MLPipelineOrchestrator` made in this process, else the
data dir of ``PORCH_DATA_DIR`` (default ``./.porch``). `start_monitoring` starts the monitor actor
in that system (unless one runs there already), which samples the host, evaluates the rules and
notifies; the queries fold the log themselves, so they answer with or without it.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from actors.api import orchestrator as orchestrator_api
from actors.api.alerts import add_rule, alert_state, fold_monitoring
from actors.api.system import spawn_actor, stop_process
from actors.errors import ActorError, UsageError
from actors.monitor.info import monitor_running
from actors.read import monitoring as views
from bus.client import Client
from bus.endpoints import Endpoints, resolve_data_dir
from bus.errors import BusError
from bus.events import AlertRuleRemoved
from store.projections.alerts import RuleSpec


@dataclass(frozen=True, slots=True)
class AlertRule(RuleSpec):
    """The seed's alert rule, plus an optional pending time and scope: the settings of a
    `RuleSpec`, with their defaults. Checked when added (`PipelineMonitor.add_alert_rule`)."""


def _epoch(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    return value.timestamp() if isinstance(value, datetime) else float(value)


class PipelineMonitor:
    def __init__(
        self,
        metrics_retention_hours: float = 24,
        sampling_interval_seconds: float = 10,
        enable_alerting: bool = True,
        endpoint: Endpoints | str | Path | None = None,
        *,
        webhooks: Iterable[str] = (),
        notify_commands: Iterable[str] = (),
        allow_custom_metrics: bool = False,
    ) -> None:
        if not 0 < metrics_retention_hours <= 24 * 366:
            raise UsageError(
                f"metrics_retention_hours must be 0..8784, got {metrics_retention_hours}"
            )
        if not 0.05 <= sampling_interval_seconds <= 3600:
            raise UsageError(
                f"sampling_interval_seconds must be 0.05..3600, got {sampling_interval_seconds}"
            )
        self.metrics_retention_hours = float(metrics_retention_hours)
        self.sampling_interval_seconds = float(sampling_interval_seconds)
        self.enable_alerting = enable_alerting
        self.webhooks = tuple(webhooks)
        self.notify_commands = tuple(notify_commands)
        self.allow_custom_metrics = allow_custom_metrics
        self._endpoint = endpoint
        self._orchestrator: orchestrator_api.MLPipelineOrchestrator | None = None
        self._client: Client | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded = False

    # --- which system ----------------------------------------------------------------------------

    def _bind(self, execution: Any = None) -> Client:
        owner = getattr(execution, "_owner", None)
        if owner is not None and self._orchestrator is None:
            self._orchestrator = owner
        if self._client is not None:
            return self._client
        endpoint = self._endpoint
        if isinstance(endpoint, Endpoints):
            self._client = Client(endpoint)
            return self._client
        if endpoint is None:
            orchestrator = self._orchestrator or orchestrator_api.latest()
            if orchestrator is not None:
                self._orchestrator = orchestrator
                self._client = Client(orchestrator.endpoints)
                self.data_dir = getattr(orchestrator, "data_dir", None)
                return self._client
            endpoint = resolve_data_dir(None, dict(os.environ))
        self.data_dir = Path(endpoint).resolve()
        self._client = Client.local(self.data_dir)
        return self._client

    def _monitor_args(self) -> list[str]:
        args = ["monitor", "--retention-hours", str(self.metrics_retention_hours),
                "--sampling-interval", str(self.sampling_interval_seconds)]  # fmt: skip
        if not self.enable_alerting:
            args.append("--no-alerting")
        for url in self.webhooks:
            args += ["--webhook", url]
        for command in self.notify_commands:
            args += ["--notify-command", command]
        return args

    # --- the monitor process ---------------------------------------------------------------------

    def start_monitoring(self, execution: Any = None) -> None:
        """Start the monitor actor for the system (that of ``execution``, if given)."""
        client = self._bind(execution)
        try:
            client.head()
        except BusError:
            raise ActorError(
                "no porch system answers for this monitor: start one (`porch up`, or an "
                "MLPipelineOrchestrator) first"
            ) from None
        system = self._orchestrator.system if self._orchestrator is not None else None
        if system is not None:
            system.add_child("monitor", *self._monitor_args())
            self._embedded = True
            return
        data_dir = getattr(self, "data_dir", None)
        if data_dir is None:
            raise ActorError(
                "this monitor reads a remote system: start `porch monitor` on its host"
            )
        if monitor_running(data_dir) or self._process is not None:
            return
        self._process = spawn_actor(data_dir, *self._monitor_args())
        atexit.register(self.stop_monitoring)

    def stop_monitoring(self) -> None:
        if (
            self._embedded
            and self._orchestrator is not None
            and self._orchestrator.system is not None
        ):
            self._orchestrator.system.remove_child("monitor")
            self._embedded = False
        if self._process is not None:
            stop_process(self._process)
            self._process = None

    def close(self) -> None:
        self.stop_monitoring()
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> PipelineMonitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- rules and alerts ------------------------------------------------------------------------

    def add_alert_rule(self, rule: RuleSpec | Mapping[str, Any]) -> str:
        fields = rule.to_map() if isinstance(rule, RuleSpec) else dict(rule)
        add_rule(self._bind(), fields, custom=self.allow_custom_metrics)
        return str(fields["rule_id"])

    def remove_alert_rule(self, rule_id: str) -> None:
        client = self._bind()
        _, alerts = fold_monitoring(client)
        if rule_id not in alerts.rules:
            raise ActorError(f"no alert rule {rule_id!r}")
        client.append(AlertRuleRemoved(rule_id=rule_id))

    def get_alerts(
        self, severity: str | None = None, resolved: bool | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        _, alerts = self._fold()
        return views.alert_list(alerts, severity, resolved, limit)

    def acknowledge_alert(self, alert_id: str) -> None:
        alert_state(self._bind(), alert_id, "ack")

    def resolve_alert(self, alert_id: str) -> None:
        alert_state(self._bind(), alert_id, "resolve")

    # --- metrics ---------------------------------------------------------------------------------

    def _fold(self) -> tuple[Any, Any]:
        return fold_monitoring(self._bind(), self.metrics_retention_hours)

    def get_current_metrics(self) -> dict[str, Any]:
        metrics, alerts = self._fold()
        current = views.current_metrics(metrics, alerts, time.time())
        resources = current["resources"]
        if resources["cpu_percent"] is None:  # no monitor sample yet: measure this host now
            resources["cpu_percent"] = psutil.cpu_percent(0.1)
            resources["memory_percent"] = psutil.virtual_memory().percent
            resources["disk_percent"] = psutil.disk_usage(str(Path.cwd())).percent
        return current

    def get_metrics_history(
        self,
        metric_names: Iterable[str] | None = None,
        start_time: datetime | float | None = None,
        end_time: datetime | float | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        metrics, _ = self._fold()
        names = [metric_names] if isinstance(metric_names, str) else metric_names
        return views.history(metrics, names, _epoch(start_time), _epoch(end_time))

    def export_metrics(self, output_path: str | Path, format: str = "json") -> Path:
        if str(format).lower() not in ("json", "csv"):
            raise UsageError(f"format {format!r} is not json or csv")
        metrics, alerts = self._fold()
        return views.export(metrics, alerts, time.time(), Path(output_path), str(format))

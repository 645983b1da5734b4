"""``porch monitor``: folds the event stream into metrics and alerts, serves them over HTTP.

Startup folds the whole log (the history within the retention, the rules and the alerts), then
goes live. Every event is folded as it comes; a series that got a sample has its rules evaluated
at once, and every ``sampling_interval_s`` the monitor samples its host with psutil, publishes the
samples and the workers' liveness as ``MetricSampled`` events (live: not appended to the log),
and evaluates every rule (the pending times). Alerts are events; notifications go out when an ``AlertFired`` comes back
durable, on a thread pool, so a slow webhook never holds the monitor up.

HTTP on loopback (``run/monitor.json`` says the port): ``/metrics`` (Prometheus text),
``/api/metrics``, ``/api/alerts``, ``/api/executions``.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shlex
import socket
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

import psutil
import zmq

from actors.monitor.alerting import AlertEngine
from actors.monitor.info import info_path
from actors.read import monitoring as views
from actors.shared import loop
from actors.shared.loop import Actor, LoopConfig, Now
from actors.shared.snapshotter import MONITOR, SnapshotPolicy
from bus.client import Client, Record
from bus.endpoints import Endpoints
from bus.errors import BusError
from bus.events import Event, MetricSampled
from bus.wire import pack
from store.projections import alerts as alert_folds
from store.projections import metrics as folds

log = logging.getLogger("porch.monitor")
WEBHOOK_TRIES: Final = 3


@dataclass(frozen=True, slots=True, kw_only=True)
class MonitorConfig:
    data_dir: Path
    endpoints: Endpoints
    retention_hours: float = 24.0
    raw_window_s: float = 3600.0
    sampling_interval_s: float = 10.0
    alerting: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 0
    webhooks: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    snapshots: SnapshotPolicy = field(default_factory=SnapshotPolicy)

    def __post_init__(self) -> None:
        if not 0 < self.retention_hours <= 24 * 366:
            raise ValueError(f"retention must be 0..8784 hours, got {self.retention_hours}")
        if not 0 <= self.raw_window_s <= self.retention_hours * 3600:
            raise ValueError(
                f"raw window must be 0..{self.retention_hours * 60:g} minutes (the retention),"
                f" got {self.raw_window_s / 60:g}"
            )
        if not 0.05 <= self.sampling_interval_s <= 3600:
            raise ValueError(
                f"sampling interval must be 0.05..3600 s, got {self.sampling_interval_s}"
            )


@dataclass(slots=True)
class Notifier:
    """Sends each new alert to the log and to every webhook and command, off the main loop."""

    webhooks: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    pool: concurrent.futures.ThreadPoolExecutor = field(
        default_factory=lambda: concurrent.futures.ThreadPoolExecutor(4, "porch-notify")
    )

    def notify(self, alert: dict[str, Any]) -> None:
        log.warning("ALERT %s [%s] %s", alert["alert_id"], alert["severity"], alert["message"])
        body = json.dumps(alert, default=str).encode()
        for url in self.webhooks:
            self.pool.submit(self._post, url, body)
        for command in self.commands:
            self.pool.submit(self._run, command, body)

    @staticmethod
    def _post(url: str, body: bytes) -> None:
        for attempt in range(1, WEBHOOK_TRIES + 1):
            request = urllib.request.Request(
                url, data=body, headers={"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as reply:
                    if 200 <= reply.status < 300:
                        return
            except OSError as exc:
                log.warning("monitor: webhook %s failed (try %d): %s", url, attempt, exc)
            if attempt < WEBHOOK_TRIES:
                threading.Event().wait(0.5 * 2**attempt)
        log.error("monitor: webhook %s gave up after %d tries", url, WEBHOOK_TRIES)

    @staticmethod
    def _run(command: str, body: bytes) -> None:
        try:
            done = subprocess.run(
                shlex.split(command), input=body, capture_output=True, timeout=30, check=False
            )
            if done.returncode:
                log.warning("monitor: notify command %r exited %d", command, done.returncode)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("monitor: notify command %r failed: %s", command, exc)

    def close(self) -> None:
        self.pool.shutdown(wait=False)  # queued notifications still go out


class Monitor(Actor):
    """The monitor actor on the shared loop: the metrics fold and the alert engine, host
    samples every ``sampling_interval_s``, notifications and the HTTP API."""

    name = "monitor"
    lock = "exclusive"  # two monitors would notify every alert twice
    types = frozenset(folds.TYPES | alert_folds.TYPES)
    live_types = frozenset(folds.LIVE_TYPES)
    snapshot_tag = MONITOR
    hears_while_catching_up = False  # samples heard while catching up are stale by then

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        self.metrics = folds.MetricsState(
            retention_s=config.retention_hours * 3600, raw_window_s=config.raw_window_s
        )
        self.engine = AlertEngine()
        self.mutex = threading.Lock()  # the HTTP threads read what the loop folds
        self.notifier = Notifier(config.webhooks, config.commands)
        self.position = 0  # every logged event up to this seq is folded in
        self.host = socket.gethostname()
        self.process = psutil.Process()
        self.next_tick = 0.0
        self._decided: list[Event] = []
        self._fired: list[dict[str, Any]] = []
        self.server: ThreadingHTTPServer | None = None
        self.stats_client: Client | None = None

    # --- the loop's hooks --------------------------------------------------------------------

    def open(self, ctx: zmq.Context[Any], client: Client) -> None:
        # stats are asked each tick; a short wait, so a busy hub never stalls the folding
        self.stats_client = Client(self.config.endpoints, timeout_ms=500, retry_ms=500, context=ctx)
        self.server = self._serve(write_info=True)
        psutil.cpu_percent(None)  # the first call only starts the measurement

    def restore(self, body: Any) -> None:
        """The snapshot holds the live samples too (heartbeats and host figures are in no
        log), up to when it was written."""
        metrics = folds.CODEC.load(body["metrics"])
        alerts = alert_folds.CODEC.load(body["alerts"])
        held = {(str(r), str(s)) for r, s in body["held"]}
        metrics.retention_s = self.config.retention_hours * 3600  # the settings of this start
        metrics.raw_window_s = self.config.raw_window_s
        with self.mutex:  # the HTTP threads already serve
            self.metrics = metrics
            self.engine.restore(alerts, held)

    def snapshot_body(self) -> dict[str, Any]:
        with self.mutex:
            return self._body()

    def _body(self) -> dict[str, Any]:
        return {
            "metrics": folds.CODEC.dump(self.metrics),
            "alerts": alert_folds.CODEC.dump(self.engine.state),
            "held": [list(key) for key in sorted(self.engine.held)],
        }

    def apply(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        live = self.loop.live
        with self.mutex:
            self.position = record.seq
            folds.evolve(record.seq, fields, self.metrics)
            if fields["type"] in alert_folds.TYPES:
                self.engine.apply(record.seq, fields)
                if fields["type"] == "AlertFired" and live:
                    alert = self.engine.state.alerts.get(fields["alert_id"])
                    if alert is not None and alert.fired_seq == record.seq:
                        self._fired.append(alert_folds.describe(alert))
            if live and self.config.alerting:
                for series in self.metrics.changed:
                    self._decided.extend(self.engine.observe(series, now.wall))

    def heard(self, record: Record, fields: dict[str, Any], now: Now) -> None:
        """Live heartbeats and samples: series and rules as for logged events, no history."""
        with self.mutex:
            folds.observe(fields, self.metrics)
            if self.config.alerting:
                for series in self.metrics.changed:
                    self._decided.extend(self.engine.observe(series, now.wall))

    def went_live(self, position: int, now: Now) -> list[Event]:
        with self.mutex:
            self.position = position  # a snapshot with no tail after it folded nothing here
            folds.count_failures_from_here(self.metrics)
        log.info(
            "monitor: live at seq %d after %d events (from snapshot at seq %d), http %s",
            position,
            self.metrics.events,
            self.loop.snapshots.loaded_seq if self.loop.snapshots else 0,
            self.server.server_address if self.server else None,
        )
        # the first sample after a short while: psutil's CPU figure needs an interval
        self.next_tick = now.mono + min(1.0, self.config.sampling_interval_s)
        return []

    def act(self, ready: dict[Any, int], now: Now) -> None:
        for alert in self._fired:  # back durable: notify now
            self.notifier.notify(alert)
        self._fired = []
        # alerts first: the tick's psutil figures and hub stats take a while, so a turn with
        # decisions leaves the tick to the next one, at once
        if now.mono >= self.next_tick and not self._decided:
            self.next_tick = now.mono + self.config.sampling_interval_s
            self._decided.extend(self._tick(now))

    def decide(self, now: Now) -> list[Event]:
        decided, self._decided = self._decided, []
        return decided

    def next_due(self, now: Now) -> float:
        return self.next_tick

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
        self.notifier.close()
        if self.stats_client is not None:
            self.stats_client.close()

    # --- sampling ------------------------------------------------------------------------------

    def _tick(self, now: Now) -> list[Event]:
        events: list[Event] = []
        try:
            disk = psutil.disk_usage(str(self.config.data_dir)).percent
        except OSError:
            disk = 0.0
        host = {"host": self.host}
        events += [
            MetricSampled(name="cpu_percent", value=psutil.cpu_percent(None), labels=host),
            MetricSampled(
                name="memory_percent", value=psutil.virtual_memory().percent, labels=host
            ),
            MetricSampled(name="disk_percent", value=disk, labels=host),
        ]
        events += self._rejections()
        with self.mutex:
            workers = views.worker_view(self.metrics, now.wall)
            for worker, info in workers.items():
                if not info["stopped"]:
                    events.append(
                        MetricSampled(
                            name="worker_missed_heartbeats",
                            value=float(info["missed_heartbeats"]),
                            labels={"worker": worker},
                        )
                    )
            events.append(
                MetricSampled(
                    name="workers_alive", value=float(sum(w["alive"] for w in workers.values()))
                )
            )
            fresh = folds.take_new_failures(self.metrics)  # 0 again once failures stop
            events.append(MetricSampled(name="new_failures", value=float(fresh)))
            if self.config.alerting:
                events += self.engine.tick(self.metrics, now.wall)
        return events

    def _rejections(self) -> list[Event]:
        """The hub's counts of refused messages, by reason, as ``rejected_messages_total``."""
        assert self.stats_client is not None
        try:
            stats = self.stats_client.stats()
        except BusError as exc:
            log.warning("monitor: no hub stats: %s", exc)
            return []
        counts = dict(stats.get("refused") or {})
        counts["auth"] = stats.get("auth_denied", 0)
        return [
            MetricSampled(
                name="rejected_messages_total",
                value=float(count),
                labels={"actor": "hub", "reason": str(reason)},
            )
            for reason, count in sorted(counts.items())
            if type(count) is int
        ]

    # --- HTTP ------------------------------------------------------------------------------------

    def snapshot(self, kind: str) -> Any:
        with self.mutex:
            now = time.time()
            if kind == "metrics":
                return views.current_metrics(self.metrics, self.engine.state, now)
            if kind == "alerts":
                return {
                    "alerts": views.alert_list(self.engine.state, limit=1000),
                    "rules": views.rule_list(self.engine.state),
                }
            if kind == "executions":
                return {
                    "by_status": {k: v for k, v in self.metrics.status_counts.items() if v},
                    "executions": dict(list(self.metrics.statuses.items())[-1000:]),
                }
            if kind == "state":  # the folds as they stand, for a query to read at once
                return pack({"seq": self.position, **self._body()})
            if kind == "prometheus":
                from actors.monitor.prometheus import render

                return render(self.metrics, self.engine.state, now)
        raise KeyError(kind)

    def _serve(self, *, write_info: bool) -> ThreadingHTTPServer:
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                routes = {"/metrics": "prometheus", "/api/metrics": "metrics",
                          "/api/alerts": "alerts", "/api/executions": "executions",
                          "/api/state": "state"}  # fmt: skip
                kind = routes.get(self.path.split("?", 1)[0])
                if kind is None:
                    self._reply(404, b'{"error": "not found"}', "application/json")
                    return
                data = monitor.snapshot(kind)
                if kind == "prometheus":
                    self._reply(200, data, "text/plain; version=0.0.4; charset=utf-8")
                elif kind == "state":
                    self._reply(200, data, "application/msgpack")
                else:
                    body = json.dumps(data, default=str)  # series hold finite values only
                    self._reply(200, body.encode(), "application/json")

            def _reply(self, code: int, body: bytes, kind: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        server = ThreadingHTTPServer((self.config.http_host, self.config.http_port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="porch-http", daemon=True).start()
        if write_info:
            host, port = server.server_address[:2]
            path = info_path(self.config.data_dir)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(
                json.dumps({"host": host, "port": port, "pid": os.getpid()}), encoding="utf-8"
            )
            tmp.replace(path)
        return server


def run_monitor(config: MonitorConfig) -> int:
    """Run until SIGTERM or SIGINT."""
    return loop.run(
        Monitor(config),
        LoopConfig(
            data_dir=config.data_dir, endpoints=config.endpoints, snapshots=config.snapshots
        ),
    )

"""`porch monitor`, `porch metrics` and `porch alerts list|ack|resolve|rules|add-rule|remove-rule`."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from actors.api.alerts import add_rule, alert_state, fold_monitoring
from actors.api.settings import snapshot_policy_of
from actors.commands.common import (
    add_data_dir,
    connect,
    need_hub,
    print_json,
    reading,
    settings_of,
    table,
)
from actors.commands.numbers import real, whole
from actors.errors import ActorError, UsageError
from bus.events import AlertRuleRemoved
from store.projections.alerts import CONDITIONS, SCOPES, SEVERITIES
from store.projections.alerts import RULE_DEFAULTS as DEFAULTS


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mon = sub.add_parser("monitor", help="run the monitor (needs a running hub)")
    add_data_dir(mon)
    add_monitor_flags(mon)
    mon.set_defaults(func=cmd_monitor)

    met = sub.add_parser("metrics", help="current metrics; --export writes the history")
    add_data_dir(met)
    met.add_argument("--json", action="store_true", help="print the current metrics as JSON")
    met.add_argument("--export", metavar="FILE", help="write the history and alerts to FILE")
    met.add_argument("--format", choices=["json", "csv"], default="json", help="with --export")
    met.set_defaults(func=cmd_metrics)

    alerts = sub.add_parser("alerts", help="alerts and alert rules")
    verbs = alerts.add_subparsers(dest="verb", required=True, metavar="VERB")
    lst = verbs.add_parser("list", help="alerts, newest first")
    add_data_dir(lst)
    lst.add_argument("--severity")
    state = lst.add_mutually_exclusive_group()
    state.add_argument("--active", action="store_true", help="only unresolved alerts")
    state.add_argument("--resolved", action="store_true", help="only resolved alerts")
    lst.add_argument("--limit", type=whole(1), default=50)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)
    for verb, helptext in (("ack", "acknowledge an alert: no more notifications until it resolves"),
                           ("resolve", "resolve an alert by hand")):  # fmt: skip
        cmd = verbs.add_parser(verb, help=helptext)
        add_data_dir(cmd)
        cmd.add_argument("alert_id")
        cmd.set_defaults(func=cmd_alert_state, verb=verb)
    rules = verbs.add_parser("rules", help="the alert rules")
    add_data_dir(rules)
    rules.add_argument("--json", action="store_true")
    rules.set_defaults(func=cmd_rules)
    add = verbs.add_parser("add-rule", help="add (or replace) an alert rule")
    add_data_dir(add)
    add.add_argument("rule_id")
    add.add_argument("--metric", required=True, dest="metric_name")
    add.add_argument("--condition", required=True, help=", ".join(CONDITIONS))
    add.add_argument("--threshold", required=True)
    add.add_argument("--severity", help=f"{', '.join(SEVERITIES)} (default {DEFAULTS['severity']})")
    add.add_argument(
        "--cooldown-minutes",
        type=real(0),
        help=f"quiet time after a firing (default {DEFAULTS['cooldown_minutes']:g})",
    )
    add.add_argument(
        "--pending-seconds",
        type=real(0),
        help=f"hold this long before firing (default {DEFAULTS['pending_s']:g})",
    )
    add.add_argument("--scope", action="append", default=[], metavar="KEY=VALUE",
                     help=f"{'=..., '.join(SCOPES)}=... (repeatable)")  # fmt: skip
    add.add_argument("--description")
    add.add_argument("--disabled", action="store_true")
    add.add_argument("--custom", action="store_true", help="allow a metric with no sample yet")
    add.set_defaults(func=cmd_add_rule)
    rm = verbs.add_parser("remove-rule", help="remove an alert rule")
    add_data_dir(rm)
    rm.add_argument("rule_id")
    rm.set_defaults(func=cmd_remove_rule)


def add_monitor_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retention-hours", type=real(0, 8784, above=True), help="history kept (default 24)"
    )
    parser.add_argument("--raw-window-minutes", type=real(0), metavar="MINUTES",
                        help="raw samples kept this long; older ones per minute, then per hour"
                        " (default 60)")  # fmt: skip
    parser.add_argument("--sampling-interval", type=real(0.05, 3600), metavar="SECONDS",
                        help="host samples and rule checks (default 10)")  # fmt: skip
    parser.add_argument(
        "--no-alerting", action="store_true", help="keep metrics, evaluate no rules"
    )
    parser.add_argument(
        "--http-port", type=whole(0, 65535), help="loopback HTTP port (default: any free)"
    )
    parser.add_argument("--webhook", action="append", default=[], metavar="URL",
                        help="POST each new alert as JSON here (repeatable)")  # fmt: skip
    parser.add_argument("--notify-command", action="append", default=[], metavar="CMD",
                        help="run CMD with each new alert as JSON on stdin (repeatable)")  # fmt: skip


def monitor_args(args: argparse.Namespace) -> list[str]:
    """The `porch monitor` flags given to `porch up` (the monitor reads the rest from the
    config file itself)."""
    out: list[str] = []
    for flag, value in (("--retention-hours", args.retention_hours),
                        ("--sampling-interval", args.sampling_interval),
                        ("--raw-window-minutes", args.raw_window_minutes),
                        ("--http-port", args.http_port)):  # fmt: skip
        if value is not None:
            out += [flag, str(value)]
    if args.no_alerting:
        out.append("--no-alerting")
    for url in args.webhook:
        out += ["--webhook", url]
    for command in args.notify_command:
        out += ["--notify-command", command]
    return out


def cmd_monitor(args: argparse.Namespace) -> int:
    from actors.monitor.actor import MonitorConfig, run_monitor

    settings = settings_of(args, "monitor")
    endpoints, _ = need_hub(args, "monitor")
    try:
        config = MonitorConfig(
            data_dir=Path(settings["data_dir"]),
            endpoints=endpoints,
            retention_hours=settings["monitor.retention_hours"],
            raw_window_s=settings["monitor.raw_window_minutes"] * 60,
            sampling_interval_s=settings["monitor.sampling_interval_s"],
            alerting=settings["monitor.alerting"],
            http_port=settings["monitor.http_port"],
            webhooks=tuple(settings["monitor.webhooks"]),
            commands=tuple(settings["monitor.notify_commands"]),
            snapshots=snapshot_policy_of(settings),
        )
    except ValueError as exc:
        raise UsageError(f"monitor: {exc}") from None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return run_monitor(config)


def cmd_metrics(args: argparse.Namespace) -> int:
    from actors.read import monitoring as views

    with reading(args) as reader:
        metrics, alerts = fold_monitoring(reader)
    now = time.time()
    if args.export:
        path = views.export(metrics, alerts, now, Path(args.export), args.format)
        if args.json:
            print_json({"wrote": str(path)})
        else:
            print(f"wrote {path}")
        return 0
    current = views.current_metrics(metrics, alerts, now)
    if args.json:
        print_json(current)
        return 0
    print("\n".join(metrics_lines(current)))
    return 0


def metrics_lines(current: dict[str, Any]) -> list[str]:
    """The current metrics for people: executions, workers and resources, then a table of
    the stages and one of the custom metrics."""
    ex, res, alerts = current["executions"], current["resources"], current["alerts"]
    by_status = ", ".join(f"{s} {n}" for s, n in sorted(ex["by_status"].items()))
    lines = [
        f"executions: {ex['total']}{f' ({by_status})' if by_status else ''}; "
        f"success rate {_pct(ex['success_rate'])}",
        f"workers: {current['workers_alive']} of {len(current['workers'])} alive; "
        f"queue {current['queue_depth']:.0f}; "
        f"active alerts {alerts['active']} ({alerts['unacknowledged']} not acknowledged)",
        f"resources: cpu {_pct_raw(res['cpu_percent'])}, memory {_pct_raw(res['memory_percent'])}, "
        f"disk {_pct_raw(res['disk_percent'])}",
    ]
    rows = []
    for stage, view in current["stages"].items():
        d, r = view["duration_seconds"], view["records_per_second"]
        rows.append([
            stage, d["count"], _num(d.get("p50"), ".3f"), _num(d.get("p99"), ".3f"),
            _num(r.get("p50"), ",.0f"),
            "regression" if view["duration_trend"]["regression"] else "",
        ])  # fmt: skip
    if rows:
        header = ("STAGE", "RUNS", "P50_S", "P99_S", "RECORDS_PER_S", "DURATION_TREND")
        lines += ["", *table(header, rows, right=("P50_S", "P99_S", "RECORDS_PER_S"))]
    if current["custom"]:
        custom = [[name, _num(value, "g")] for name, value in sorted(current["custom"].items())]
        lines += ["", *table(("METRIC", "LAST"), custom, right=("LAST",))]
    return lines


def _num(value: object, spec: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, spec)
    return "-" if value is None else str(value)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _pct_raw(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def cmd_list(args: argparse.Namespace) -> int:
    from actors.read import monitoring as views

    with reading(args) as reader:
        _, alerts = fold_monitoring(reader)
    resolved = True if args.resolved else (False if args.active else None)
    rows = views.alert_list(alerts, args.severity, resolved, args.limit)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no alerts")
        return 0
    lines = table(
        ("ALERT", "STATE", "SEVERITY", "FIRED", "MESSAGE"),
        [
            [
                row["alert_id"],
                "resolved" if row["resolved"] else ("acked" if row["acknowledged"] else "ACTIVE"),
                row["severity"],
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(row["fired_ts"])),
                row["message"],
            ]
            for row in rows
        ],
    )
    print("\n".join(lines))
    return 0


def cmd_alert_state(args: argparse.Namespace) -> int:
    with connect(args) as client:
        seq = alert_state(client, args.alert_id, args.verb)
    print(
        f"{'acknowledged' if args.verb == 'ack' else 'resolved'} alert {args.alert_id} (seq {seq})"
    )
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    from actors.read import monitoring as views

    with reading(args) as reader:
        _, alerts = fold_monitoring(reader)
    rows = views.rule_list(alerts)
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no alert rules; add one with `porch alerts add-rule`")
        return 0
    lines = table(
        ("RULE", "METRIC", "CONDITION", "THRESHOLD", "SCOPE", "SEVERITY", "COOLDOWN_MIN",
         "PENDING_S", "ENABLED"),
        [
            [r["rule_id"], r["metric_name"], r["condition"], r["threshold"],
             ",".join(f"{k}={v}" for k, v in r["scope"].items()) or "all", r["severity"],
             f"{r['cooldown_minutes']:g}", f"{r['pending_s']:g}", "yes" if r["enabled"] else "no"]
            for r in rows
        ],
        right=("COOLDOWN_MIN", "PENDING_S"),
    )  # fmt: skip
    print("\n".join(lines))
    return 0


def cmd_add_rule(args: argparse.Namespace) -> int:
    scope: dict[str, str] = {}
    for item in args.scope:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--scope {item!r} must be KEY=VALUE")
        scope[key.strip()] = value.strip()
    rule = {
        "rule_id": args.rule_id, "metric_name": args.metric_name, "condition": args.condition,
        "threshold": args.threshold, "severity": args.severity,
        "cooldown_minutes": args.cooldown_minutes, "pending_s": args.pending_seconds,
        "scope": scope, "description": args.description, "enabled": not args.disabled,
    }  # fmt: skip
    rule = {k: v for k, v in rule.items() if v is not None}  # unset: the RuleSpec's default
    with connect(args) as client:
        seq = add_rule(client, rule, custom=args.custom)
    print(f"added rule {args.rule_id} (seq {seq})")
    return 0


def cmd_remove_rule(args: argparse.Namespace) -> int:
    with connect(args) as client:
        _, alerts = fold_monitoring(client)
        if args.rule_id not in alerts.rules:
            raise ActorError(f"no alert rule {args.rule_id!r}")
        seq = client.append(AlertRuleRemoved(rule_id=args.rule_id))
    print(f"removed rule {args.rule_id} (seq {seq})")
    return 0

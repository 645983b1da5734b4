"""The web dashboard: executions, their DAGs and timelines, time travel, schedules, metrics and alerts, live."""

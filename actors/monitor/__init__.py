"""The monitor: metrics, alert rules and alerts, served over HTTP."""

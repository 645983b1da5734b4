"""A stage's report for people: a validation's failing rules with their counts and examples,
any other report as one line of JSON. Used by ``porch status``, ``porch logs`` and task logs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

LINE_MAX_CHARS: Final = 240
EXAMPLES_SHOWN: Final = 3


def report_lines(report: Mapping[str, Any], *, failing_only: bool = True) -> list[str]:
    """The report as lines: per rule of a validation report (``rules``) its severity, failing
    count, detail and example rows (with ``failing_only``, the rules that failed); any other
    report as its JSON, cut to `LINE_MAX_CHARS`. An empty report has no lines."""
    if not report:
        return []
    rules = report.get("rules")
    if not isinstance(rules, list) or not all(isinstance(r, Mapping) for r in rules):
        return [_cut(json.dumps(report, default=str, sort_keys=True))]
    lines = [
        f"{report.get('errors', 0)} error rule(s), {report.get('warnings', 0)} warning rule(s) "
        f"failed over {report.get('rows', '?')} rows"
    ]
    for rule in rules:
        if failing_only and rule.get("passed", True):
            continue
        text = f"rule {rule.get('rule')} ({rule.get('severity')}): {rule.get('failing', 0)} failing"
        if rule.get("detail"):
            text += f"; {rule['detail']}"
        lines.append(_cut(text))
        for example in list(rule.get("examples") or [])[:EXAMPLES_SHOWN]:
            lines.append(_cut(f"  e.g. {_example(example)}"))
    return lines


def _example(example: Any) -> str:
    if not isinstance(example, Mapping):
        return str(example)
    if "row" in example and isinstance(example.get("values"), Mapping):
        values = ", ".join(f"{k}={v!r}" for k, v in example["values"].items())
        return f"row {example['row']}: {values}"
    return ", ".join(f"{k}={v!r}" for k, v in example.items())


def _cut(text: str) -> str:
    return text if len(text) <= LINE_MAX_CHARS else text[: LINE_MAX_CHARS - 3] + "..."

"""How an execution reads for people: its summary line, a table of its steps, its outputs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from actors.commands.common import table
from actors.shared.reports import report_lines


def execution_lines(view: dict[str, Any]) -> list[str]:
    """An execution for people: a summary line, its error, a table of its steps, the report of
    a failed step (a validation's failing rules), its outputs, what retention removed, and
    notes."""
    from actors.read.executions import human_bytes

    lines = [
        f"execution {view['execution_id']}: {view['status']} ({view['mode']}), "
        f"{view['records_processed']} records, {view['duration_s']:.2f} s",
    ]
    if view["error"]:
        lines.append(f"  error: {view['error']}")
    if view["traceback_path"]:
        lines.append(f"  traceback: {view['traceback_path']}")
    removed = view.get("removed")
    rows = []
    for step_id, step in view["steps"].items():
        notes = ["reused"] if step["reused"] else []
        notes += ["removed"] if step.get("removed") else []
        rows.append([
            step_id, step["status"], f"{step['parts_done']}/{step['parts']}",
            step["records_in"], step["records_out"], f"{step['duration_s']:.2f}",
            step["attempts"], " ".join(notes),
        ])  # fmt: skip
    if rows:
        header = ("STEP", "STATUS", "PARTS", "RECORDS_IN", "RECORDS_OUT", "DURATION_S",
                  "ATTEMPTS", "NOTE")  # fmt: skip
        lines += ["  " + line for line in table(header, rows, right=("PARTS", "DURATION_S"))]
    for step_id, step in view["steps"].items():
        if progress_text(step):
            lines.append(f"  progress of {step_id}: {progress_text(step)}")
        if step["status"] == "failed" and step.get("report"):
            lines.append(f"  report of {step_id}:")
            lines += [f"    {line}" for line in report_lines(step["report"])]
    for step_id, output in view["outputs"].items():
        gone = " removed" if removed and removed["outputs"] else ""
        lines.append(f"  output {step_id}: {output.get('path')} ({output.get('rows')} rows){gone}")
    if removed:
        when = datetime.fromtimestamp(removed["ts"], UTC).strftime("%Y-%m-%d %H:%M UTC")
        what = f"{len(removed['steps'])} steps' artifacts" if removed["steps"] else ""
        if removed["outputs"]:
            what = f"{what} and the outputs" if what else "the outputs"
        lines.append(
            f"  removed: {what} ({human_bytes(removed['bytes'])}) by "
            f"{', '.join(r for r in removed['reasons'] if r) or 'retention'} on {when}"
        )
    lines.extend(f"  note: {note}" for note in view.get("notes", []))
    return lines


def progress_text(step: dict[str, Any]) -> str:
    """A running step's last progress, ``45% map part 1/2 rule 3/13, 1000 rows``; empty when
    it has none (not running, or no stage said anything yet)."""
    progress = step.get("progress")
    if not progress or not (progress["fraction"] or progress["message"]):
        return ""
    return f"{progress['fraction']:.0%} {progress['message']}".rstrip()
